"""Speech recognition for live calls: a bounded pool of worker threads running Vosk, fed from
the event loop through per-call streams.

The loop never waits on Vosk (CONVENTIONS 4). ``SpeechStream.feed`` appends a 20 ms frame to
the stream's inbox and, if the stream is not already waiting for a worker, puts the stream on
the pool's run queue; a worker takes a stream, processes everything in its inbox as one batch
(one ``AcceptWaveform`` call per batch), and posts the resulting events back to the loop with
``call_soon_threadsafe``. A stream is on the run queue at most once, so one stream is never on
two workers and the queue is bounded by the number of streams.

Back-pressure: ``open`` refuses a stream past ``max_streams`` (log line ``speech pool
saturated``; the transport collects DTMF instead), ``listen`` in free-form past
``max_free_streams`` is answered `SpeechUnavailable`, and a stream whose queued audio passes
``max_backlog`` seconds drops frames (one log line per episode, a metric per frame) instead of
growing without bound.

Vosk releases the GIL inside ``AcceptWaveform`` (a cffi call; measured: a Python thread keeps
running with no gap over 4 ms during a 0.55 s call), so ``workers`` threads use that many cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import queue
import threading
from collections.abc import Callable
from typing import Any

import structlog
import vosk
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from speech.endpoint import EndpointConfig, Endpointer
from speech.stream import EventHandler, SpeechStream
from speech.utterance import (
    FinalReason,
    FinalResult,
    FreeRecognizers,
    Mode,
    PartialResult,
    SpeechEvent,
    SpeechStarted,
    SpeechUnavailable,
    UnavailableReason,
    Utterance,
    Vocabulary,
    grammar_json,
)

__all__ = [
    "EventHandler",
    "FinalReason",
    "FinalResult",
    "Mode",
    "PartialResult",
    "RecognizerMetrics",
    "RecognizerPool",
    "SpeechEvent",
    "SpeechStarted",
    "SpeechStream",
    "SpeechUnavailable",
    "UnavailableReason",
]

log = structlog.get_logger(__name__)


class RecognizerMetrics:
    """Prometheus series of the speech pool, in the registry given (the ivr layer passes the
    hotline's; by default a private one, so tests can make many pools)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.streams = Gauge(
            "hotline_speech_streams",
            "Speech streams open on this node.",
            registry=registry,
        )
        """Open streams."""
        self.saturated = Counter(
            "hotline_speech_pool_saturated",
            "Speech streams refused because the pool was full (the call falls back to DTMF).",
            registry=registry,
        )
        """Refused opens."""
        self.frames_dropped = Counter(
            "hotline_speech_frames_dropped",
            "Audio frames dropped because a stream's queued audio passed its limit.",
            registry=registry,
        )
        """Dropped frames."""
        self.utterances = Counter(
            "hotline_speech_utterances",
            "Utterances recognized, by mode (grammar, free) and reason (endpoint, max_length, "
            "stopped).",
            ["mode", "reason"],
            registry=registry,
        )
        """Finished utterances."""
        self.unavailable = Counter(
            "hotline_speech_unavailable",
            "listen() calls answered without a recognizer, by reason (free_form_busy, "
            "no_valid_phrases, error).",
            ["reason"],
            registry=registry,
        )
        """Refused listens."""
        self.real_time_factor = Histogram(
            "hotline_speech_real_time_factor",
            "Worker CPU seconds per second of audio, per utterance, by mode.",
            ["mode"],
            buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
            registry=registry,
        )
        """CPU cost of recognition."""
        self.lag = Histogram(
            "hotline_speech_lag_seconds",
            "How long audio waited in a stream's queue before a worker took it.",
            buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0),
            registry=registry,
        )
        """Queueing delay (the workers keep up while this stays near one batch)."""
        for mode in ("grammar", "free"):
            for reason in ("endpoint", "max_length", "stopped"):
                self.utterances.labels(mode=mode, reason=reason)
        for unavailable in ("free_form_busy", "no_valid_phrases", "error"):
            self.unavailable.labels(reason=unavailable)


# ---------------------------------------------------------------------- the pool


class RecognizerPool:
    """Worker threads running Vosk for up to ``max_streams`` calls.

    ``await start()`` before ``open``; ``await stop()`` finishes listening streams (their
    results come with reason ``stopped``), joins the threads and frees the recognizers.

    Sizing (docs/benchmarks.md, "Speech"): a grammar stream costs about 0.03 of a core while
    its caller talks, so ``workers`` x ~30 grammar streams; a free-form stream 0.13 of a core
    once its recognizer is warm. ``free_reuse_seconds`` bounds a free-form recognizer's memory
    (+73 MiB after 30 s of audio, +115 MiB after 120 s, still growing) against the CPU of
    warming a new one (about 3 s).
    """

    def __init__(
        self,
        model: Any,
        *,
        sample_rate: int = 8000,
        workers: int = 2,
        max_streams: int = 60,
        max_free_streams: int = 2,
        end_silence: float = 0.8,
        max_utterance: float = 15.0,
        max_backlog: float = 1.0,
        max_alternatives: int = 5,
        partial_interval: float = 0.2,
        free_reuse_seconds: float = 120.0,
        endpoint: EndpointConfig | None = None,
        registry: CollectorRegistry | None = None,
        metrics: RecognizerMetrics | None = None,
    ) -> None:
        if workers < 1 or max_streams < 1 or max_free_streams < 0 or max_alternatives < 1:
            raise ValueError("workers, max_streams, max_alternatives >= 1; max_free_streams >= 0")
        if max_backlog <= 0 or end_silence <= 0 or max_utterance <= 0:
            raise ValueError("max_backlog, end_silence and max_utterance must be positive")
        self.model = model
        """The loaded ``vosk.Model`` (shared by all recognizers; read-only)."""
        self.sample_rate = sample_rate
        """Samples per second of the audio fed (Vosk resamples to the model's rate)."""
        self.workers = workers
        """Worker threads (each uses up to one core: Vosk releases the GIL)."""
        self.max_streams = max_streams
        """Open streams at most; ``open`` returns None beyond."""
        self.max_backlog_samples = round(max_backlog * sample_rate)
        """Audio a stream may have queued before its frames are dropped."""
        self.max_alternatives = max_alternatives
        """Size of the n-best list of grammar results."""
        self.partial_interval = partial_interval
        """Audio between two looks at the partial result."""
        self.endpoint = dataclasses.replace(
            endpoint or EndpointConfig(), end_silence=end_silence, max_utterance=max_utterance
        )
        """The endpointer's settings."""
        self.metrics = metrics or RecognizerMetrics(registry or CollectorRegistry())
        """The pool's Prometheus series."""
        self.vocabulary = Vocabulary(model)
        """The model's words, for checking grammars."""
        self.free = FreeRecognizers(model, sample_rate, max_free_streams, free_reuse_seconds)
        """The shared warm free-form recognizers."""
        self._streams: set[SpeechStream] = set()
        self._threads: list[threading.Thread] = []
        self._runq: queue.SimpleQueue[SpeechStream | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False

    @property
    def running(self) -> bool:
        """Between ``start()`` and ``stop()``."""
        return self._running

    @property
    def streams(self) -> int:
        """Open streams."""
        return len(self._streams)

    async def start(self) -> None:
        """Start the worker threads (idempotent)."""
        if self._running:
            return
        self._loop = asyncio.get_running_loop()
        self._threads = [
            threading.Thread(target=self._work, name=f"speech-{i}", daemon=True)
            for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()
        self._running = True
        log.info(
            "speech pool started",
            workers=self.workers,
            max_streams=self.max_streams,
            max_free_streams=self.free.limit,
        )

    async def stop(self) -> None:
        """Finish every stream (listening ones get a ``stopped`` result), join the workers,
        free the recognizers (idempotent)."""
        if not self._running:
            return
        self._running = False
        assert self._loop is not None
        streams = list(self._streams)
        done: list[asyncio.Future[None]] = []
        for stream in streams:
            future = self._loop.create_future()
            done.append(future)
            stream._shutdown(future)
        if done:
            await asyncio.wait(done, timeout=10.0)
        for _ in self._threads:
            self._runq.put(None)
        threads, self._threads = self._threads, []
        await asyncio.to_thread(_join_all, threads)
        for stream in streams:
            stream._delivering = False
        self._streams.clear()
        self.metrics.streams.set(0)
        self.free.close()
        log.info("speech pool stopped", streams=len(streams))

    def open(self, call_id: str, on_event: EventHandler) -> SpeechStream | None:
        """A stream for one call, or None when the pool is full or not running (the caller
        falls back to DTMF)."""
        if not self._running:
            log.warning("speech pool not running", call_id=call_id)
            return None
        if len(self._streams) >= self.max_streams:
            self.metrics.saturated.inc()
            log.warning(
                "speech pool saturated",
                call_id=call_id,
                streams=len(self._streams),
                max_streams=self.max_streams,
            )
            return None
        stream = SpeechStream(self, call_id, on_event)
        self._streams.add(stream)
        self.metrics.streams.set(len(self._streams))
        return stream

    # ---- used by the streams

    def forget(self, stream: SpeechStream) -> None:
        """A stream closed: its place is free (loop side)."""
        self._streams.discard(stream)
        self.metrics.streams.set(len(self._streams))

    def schedule(self, stream: SpeechStream) -> None:
        """Put a stream with work on the run queue (any thread)."""
        self._runq.put(stream)

    def deliver(self, stream: SpeechStream, generation: int, event: SpeechEvent) -> None:
        """Hand an event to the loop (worker side)."""
        self._call_soon(stream._dispatch, generation, event)

    def resolve(self, future: asyncio.Future[None]) -> None:
        """Complete a loop future from a worker."""
        self._call_soon(lambda: None if future.done() else future.set_result(None))

    def begin(
        self, generation: int, phrases: tuple[str, ...], stream_log: Any
    ) -> Utterance | SpeechUnavailable:
        """A recognizer for a ``listen()`` (worker side): grammar phrases checked against the
        vocabulary, or a shared free-form recognizer."""
        endpointer = Endpointer(self.endpoint, self.sample_rate)
        valid: list[str] = []
        for phrase in dict.fromkeys(" ".join(p.split()) for p in phrases):
            missing = self.vocabulary.missing(phrase)
            if missing or not phrase:
                stream_log.warning("speech grammar phrase dropped", phrase=phrase, missing=missing)
            else:
                valid.append(phrase)
        if phrases and not valid:
            self.metrics.unavailable.labels(reason="no_valid_phrases").inc()
            return SpeechUnavailable("no_valid_phrases")
        if valid:
            recognizer = vosk.KaldiRecognizer(
                self.model, self.sample_rate, grammar_json(valid, self.vocabulary.garbage)
            )
            recognizer.SetMaxAlternatives(self.max_alternatives)
            return Utterance(
                generation=generation,
                mode="grammar",
                recognizer=recognizer,
                phrases=valid,
                endpointer=endpointer,
                release=lambda _seconds: None,
                partial_interval=self.partial_interval,
            )
        warm = self.free.acquire()
        if warm is None:
            self.metrics.unavailable.labels(reason="free_form_busy").inc()
            stream_log.warning("speech free-form unavailable", in_use=self.free.in_use)
            return SpeechUnavailable("free_form_busy")
        return Utterance(
            generation=generation,
            mode="free",
            recognizer=warm.recognizer,
            phrases=(),
            endpointer=endpointer,
            release=lambda seconds: self.free.release(warm, seconds),
            partial_interval=self.partial_interval,
        )

    def record(self, utterance: Utterance, stream_log: Any) -> None:
        """Metrics and the summary line of a finished utterance (worker side)."""
        final = utterance.final
        assert final is not None
        self.metrics.utterances.labels(mode=utterance.mode, reason=final.reason).inc()
        rtf = utterance.cpu_seconds / final.audio_seconds if final.audio_seconds else 0.0
        speech_at = utterance.endpointer.speech_at
        if final.audio_seconds:
            self.metrics.real_time_factor.labels(mode=utterance.mode).observe(rtf)
        stream_log.info(
            "speech utterance",
            mode=utterance.mode,
            reason=final.reason,
            text=final.text,
            confidence=round(final.confidence, 3),
            alternatives=list(final.alternatives),
            audio_seconds=final.audio_seconds,
            speech_at=None if speech_at is None else round(speech_at, 3),
            cpu_ms=round(utterance.cpu_seconds * 1000, 1),
            dropped_frames=utterance.dropped_frames,
        )

    # ---- internals

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        # RuntimeError: the loop closed under us (interpreter shutdown): nobody to tell.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(callback, *args)

    def _work(self) -> None:
        while True:
            stream = self._runq.get()
            if stream is None:
                return
            stream.work()


def _join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join()
