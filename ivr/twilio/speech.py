"""The seam between a Twilio call and a speech recognizer: what the call needs of one.

The recognizer pool (`speech/recognizer.py`) opens one stream per call:
``RecognizerPool.open(call_id, on_event) -> SpeechStream | None`` (None: the pool is saturated,
the call is DTMF-only). :data:`SpeechOpener` is that signature, so the pool's ``open`` plugs in
as it is; nothing here imports the pool. The call

- opens a stream when its media starts, and says ``speech_available`` only when it got one;
- calls ``listen(grammar)`` when the dialog collects speech (None: free-form, e.g. an address),
  ``stop()`` when it stops collecting, ``close()`` when the call ends;
- feeds the caller's audio, 20 ms frames of 16-bit 8 kHz PCM, while it listens;
- turns the recognizer's events into dialog events with :func:`dialog_event`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ivr.dialog import events as ev


class SpeechStream(Protocol):
    """One call's recognizer stream."""

    def listen(self, grammar: Sequence[str] | None) -> None:
        """Start (or restart) recognizing: these phrases, or free speech when None."""

    def feed(self, pcm: bytes) -> None:
        """Caller audio: one 20 ms frame of 16-bit little-endian 8 kHz PCM."""

    def stop(self) -> None:
        """Stop recognizing (audio fed later is ignored until the next ``listen``)."""

    def close(self) -> None:
        """The call ended: release the recognizer."""


SpeechCallback = Callable[[Any], None]
"""Receives the recognizer's events: speech started, and final results."""

SpeechOpener = Callable[[str, SpeechCallback], SpeechStream | None]
"""Opens a stream for a call id, or answers None when no recognizer is free."""


def dialog_event(event: object) -> ev.SpeechStarted | ev.SpeechRecognized | None:
    """A recognizer event as the dialog's event, or None for one the dialog has no use for.

    Matched by shape, not by class, so the pool's own event types need no import here: a final
    result has ``text`` (and ``confidence``, ``alternatives``); the start of speech is a class
    named ``SpeechStarted``. The dialog's own event types pass through unchanged.
    """
    if isinstance(event, (ev.SpeechStarted, ev.SpeechRecognized)):
        return event
    text = getattr(event, "text", None)
    if isinstance(text, str):
        confidence = getattr(event, "confidence", 1.0)
        alternatives = getattr(event, "alternatives", ())
        return ev.SpeechRecognized(
            text,
            float(confidence) if isinstance(confidence, (int, float)) else 1.0,
            tuple(str(a) for a in alternatives) if isinstance(alternatives, (list, tuple)) else (),
        )
    if type(event).__name__ == "SpeechStarted":
        return ev.SpeechStarted()
    return None
