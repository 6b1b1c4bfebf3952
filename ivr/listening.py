"""One call's ear: the dialog's collections drive a recognizer stream, its results come back as
dialog events. Shared by the front ends (SIP, Twilio) so speech behaves the same on both.

- ``StartCollecting(speech=True)`` starts an utterance: grammar mode with the collection's
  phrases (menus, yes/no, the universal choices), free-form when it has none (addresses). Flow
  phrases are written as callers say them (电线落地); they are segmented into the model's
  words (电线 落地) and phrases the model cannot say are dropped with one log line, so a
  grammar never silently loses a word (the recognizer would drop it from the phrase).
- ``SpeechStarted`` becomes the dialog's barge-in event; a final result becomes
  ``SpeechRecognized`` with its confidence and n-best alternatives.
- A result of a collection the dialog already stopped is not the dialog's business (a key
  press ended it), and ``SpeechUnavailable`` (free-form recognizers busy, no usable phrase)
  leaves the collection to DTMF: the dialog's no-input timer runs as for a silent caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import structlog

from ivr.dialog import actions as act
from ivr.dialog import events as ev
from speech.recognizer import (
    FinalResult,
    RecognizerPool,
    SpeechEvent,
    SpeechStarted,
    SpeechStream,
    SpeechUnavailable,
)

log = structlog.get_logger(__name__)

Segmenter = Callable[[str], "str | None"]
"""A phrase as the model's words separated by spaces, or None (`SpeechModel.segment`)."""


class CallListener:
    """Speech for one call: `start_collecting`/`stop_collecting` from the transport, `audio`
    for each received frame, `on_event` as the stream's event handler."""

    def __init__(
        self,
        stream: SpeechStream,
        feed: Callable[[ev.Event], None],
        segment: Segmenter,
    ) -> None:
        self.stream = stream
        """The call's recognizer stream."""
        self._feed = feed
        self._segment = lru_cache(maxsize=512)(segment)
        self._log = log.bind(call_id=stream.call_id)
        self.listening = False
        """An utterance is wanted by the dialog."""

    def start_collecting(self, spec: act.StartCollecting) -> None:
        """Listen for this collection (or stop listening if it wants no speech)."""
        if not spec.speech:
            self.stop_collecting()
            return
        grammar = self.grammar(spec.grammar)
        if spec.grammar and not grammar:
            self.stop_collecting()  # nothing the model can say: keys only
            return
        self.listening = True
        self.stream.listen(grammar or None)

    def stop_collecting(self) -> None:
        """The dialog wants no more speech for now."""
        if self.listening:
            self.listening = False
            self.stream.stop()

    def audio(self, pcm: bytes) -> None:
        """One received frame (16-bit mono PCM at the pool's rate)."""
        if self.listening:
            self.stream.feed(pcm)

    def close(self) -> None:
        """The call ended."""
        self.listening = False
        self.stream.close()

    def grammar(self, phrases: Sequence[str]) -> list[str]:
        """`phrases` in the model's words; those it cannot say are logged and left out."""
        words: list[str] = []
        dropped: list[str] = []
        for phrase in phrases:
            segmented = self._segment(phrase)
            if segmented is None:
                dropped.append(phrase)
            elif segmented not in words:
                words.append(segmented)
        if dropped:
            self._log.warning("speech phrases not in the model's vocabulary", phrases=dropped)
        return words

    def on_event(self, event: SpeechEvent) -> None:
        """A stream event, on the event loop."""
        if not self.listening:
            return
        match event:
            case SpeechStarted():
                self._feed(ev.SpeechStarted())
            case FinalResult(reason="stopped"):
                pass
            case FinalResult():
                self.listening = False
                self._feed(
                    ev.SpeechRecognized(
                        "".join(event.text.split()), event.confidence, event.alternatives
                    )
                )
            case SpeechUnavailable():
                self.listening = False
                self._log.info("speech unavailable for this collection", reason=event.reason)


class Speech:
    """The process's speech recognition: one pool, one model; a listener per call that gets
    a stream (None when the pool is saturated: that call is DTMF-only, logged by the pool)."""

    def __init__(self, pool: RecognizerPool, segment: Segmenter) -> None:
        self.pool = pool
        """The recognizer pool (started and stopped by whoever built it)."""
        self.segment = segment
        """Phrases into model words (`SpeechModel.segment`)."""

    def listener(self, call_id: str, feed: Callable[[ev.Event], None]) -> CallListener | None:
        """A listener for a new call, or None if the pool has no room for it."""
        holder: list[CallListener] = []
        stream = self.pool.open(
            call_id, lambda event: holder[0].on_event(event) if holder else None
        )
        if stream is None:
            return None
        holder.append(CallListener(stream, feed, self.segment))
        return holder[0]
