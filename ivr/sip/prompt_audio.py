"""The audio of a Play: catalog prompts from their WAV files (LRU-cached), dynamic text by TTS.

:func:`render_play` concatenates the items of a :class:`ivr.dialog.actions.Play` into one 8 kHz
16-bit PCM buffer for :meth:`ivr.sip.media.MediaStream.play`. A prompt without a usable WAV is
spoken by TTS from its catalog text when a TTS is given, otherwise skipped with a warning: a
missing recording must not end a call. The TTS may block (espeak-ng takes ~100 ms), so a Play
with :class:`SpokenText` is rendered off the event loop (CONVENTIONS 4); one made of cached
prompts costs a ``stat`` per item.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

import structlog

from ivr.dialog.actions import PlayItem, PromptRef, SpokenText
from sounds.audio import WavFormatError, read_wav
from sounds.catalog import PromptLibrary, UnknownPromptError

log = structlog.get_logger(__name__)

SAMPLE_RATE = 8000
"""What the RTP side plays: G.711 narrowband."""

Tts = Callable[[str], bytes]
"""Mandarin text -> 16-bit little-endian 8 kHz mono PCM."""


class PromptAudioError(Exception):
    """A prompt's WAV cannot be played (not 16-bit mono PCM, or not 8 kHz)."""


@lru_cache(maxsize=128)
def _decoded(path: str, mtime_ns: int, size: int) -> bytes:
    # Keyed by mtime and size too, so a re-recorded prompt is picked up without a restart.
    # 128 entries hold every shipped prompt (82 files, 4.6 MB) with room for studio ones.
    try:
        pcm, rate = read_wav(Path(path))
    except WavFormatError as exc:
        raise PromptAudioError(str(exc)) from exc
    if rate != SAMPLE_RATE:
        raise PromptAudioError(f"{path}: {rate} Hz, prompts must be {SAMPLE_RATE} Hz")
    return pcm[: len(pcm) - len(pcm) % 2]


def prompt_pcm(prompt_id: str, library: PromptLibrary) -> bytes | None:
    """The PCM of one catalog prompt's WAV, or None when there is no usable file.

    Raises UnknownPromptError for an id the catalog does not know.
    """
    path = library.path(prompt_id)
    if path is None:
        return None
    try:
        stat = path.stat()
        return _decoded(str(path), stat.st_mtime_ns, stat.st_size)
    except (OSError, PromptAudioError) as exc:
        log.warning("prompt_unreadable", prompt_id=prompt_id, error=str(exc))
        return None


def clear_prompt_cache() -> None:
    """Forget every decoded prompt (tests; after replacing recordings in place)."""
    _decoded.cache_clear()


def _speak(tts: Tts | None, text: str, what: str) -> bytes:
    if tts is None:
        log.warning("play_item_skipped", item=what, reason="no TTS configured")
        return b""
    try:
        pcm = tts(text)
    except Exception as exc:  # a broken TTS must cost one item, not the call
        log.warning("play_item_skipped", item=what, reason=f"TTS failed: {exc}")
        return b""
    return pcm[: len(pcm) - len(pcm) % 2]


def render_play(items: Iterable[PlayItem], library: PromptLibrary, tts: Tts | None) -> bytes:
    """All items of a Play as one 8 kHz 16-bit PCM buffer, in order; unplayable items skipped."""
    parts: list[bytes] = []
    for item in items:
        if isinstance(item, PromptRef):
            try:
                pcm = prompt_pcm(item.prompt_id, library)
            except UnknownPromptError:
                # The flow checker rejects unknown ids at load; if one slips through, say so
                # loudly but keep the caller's call going.
                log.error("prompt_unknown", prompt_id=item.prompt_id)
                continue
            if pcm is None:
                text = library.catalog.text(item.prompt_id)
                pcm = _speak(tts, text, f"prompt:{item.prompt_id}")
            parts.append(pcm)
        elif isinstance(item, SpokenText):
            parts.append(_speak(tts, item.text, "text"))
    return b"".join(parts)
