"""Speech recognition in one running node: the configured Vosk model, loaded once off the event
loop, and the recognizer pool every call's listener draws from.

A hotline must answer calls even when its speech model is missing or broken: the model is the
operator's to fix, the caller still has the keypad. So a model that cannot be loaded is one
clear error line and a ``speech`` entry on /healthz saying why, and the node runs DTMF-only
(``hotline models check`` tells the operator the same before a deployment).
"""

from __future__ import annotations

import asyncio

import structlog

from ivr.listening import Speech
from ivr.metrics import REGISTRY
from ivr.settings import Settings
from speech.model import ModelError, SpeechModel, shared_model
from speech.recognizer import RecognizerMetrics, RecognizerPool

log = structlog.get_logger(__name__)

_METRICS: RecognizerMetrics | None = None


def _metrics() -> RecognizerMetrics:
    """The pool's series in the hotline's registry, made once per process (a registry takes
    each name once; tests start several nodes in one process)."""
    global _METRICS  # noqa: PLW0603 - one set of series per process, like the CRM outbox's
    if _METRICS is None:
        _METRICS = RecognizerMetrics(REGISTRY)
    return _METRICS


class SpeechRuntime:
    """The node's model and recognizer pool, or nothing (DTMF-only)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model: SpeechModel | None = None
        self.pool: RecognizerPool | None = None
        self.speech: Speech | None = None
        """What the front ends use; None when the node is DTMF-only."""
        self.description = "not started"
        """What the health page shows."""

    async def start(self) -> Speech | None:
        """Load the model (in a thread: it takes seconds) and start the pool."""
        settings = self.settings
        if settings.vosk_model is None:
            self.description = "off (keypad only): HOTLINE_VOSK_MODEL not set"
            log.info("speech: DTMF-only, HOTLINE_VOSK_MODEL not set")
            return None
        try:
            self.model = await asyncio.to_thread(shared_model, settings.vosk_model)
        except ModelError as exc:
            self.description = f"unavailable (keypad only): {exc}"
            log.error("speech: model cannot be loaded, menus are keypad-only", error=str(exc))
            return None
        self.pool = RecognizerPool(
            self.model.vosk,
            workers=settings.speech_workers,
            max_streams=settings.speech_max_streams,
            max_free_streams=settings.speech_max_free_streams,
            end_silence=settings.speech_end_silence,
            max_utterance=settings.speech_max_utterance,
            metrics=_metrics(),
        )
        await self.pool.start()
        self.speech = Speech(self.pool, self.model.segment)
        self.description = (
            f"vosk {self.model.path.name}, {settings.speech_workers} workers, "
            f"up to {settings.speech_max_streams} calls"
        )
        log.info(
            "speech: listening",
            model=str(self.model.path),
            workers=settings.speech_workers,
            max_streams=settings.speech_max_streams,
        )
        return self.speech

    async def stop(self) -> None:
        """Stop the pool (idempotent); the model stays loaded for the process."""
        if self.pool is not None:
            await self.pool.stop()
            self.pool = None
            self.speech = None
            self.description = "stopped"
