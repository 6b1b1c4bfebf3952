"""One call's speech input on the recognizer pool: the inbox between the event loop and a worker.

The loop side (``listen``, ``feed``, ``stop``, ``close``) only appends to the inbox under a lock
held for a few list operations, and puts the stream on the pool's run queue when it is not
there yet; the worker side (``work``) takes the whole inbox as one batch, runs it through the
current `Utterance` and posts the events back to the loop, where ``_dispatch`` drops those of a
replaced ``listen()`` or a closed stream before calling the transport's handler.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from speech.utterance import FinalResult, SpeechEvent, SpeechUnavailable, Utterance

if TYPE_CHECKING:
    from speech.recognizer import RecognizerPool

log = structlog.get_logger(__name__)

EventHandler = Callable[[SpeechEvent], None]
"""Called on the event loop with each event of a stream."""


# ---------------------------------------------------------------------- inbox items


@dataclass(frozen=True, slots=True)
class _Audio:
    pcm: bytes
    queued_at: float


@dataclass(frozen=True, slots=True)
class _Listen:
    generation: int
    phrases: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Stop:
    generation: int


@dataclass(frozen=True, slots=True)
class _Close:
    final: bool
    """Deliver the current utterance's result ("stopped") instead of dropping it."""
    done: asyncio.Future[None] | None = None


_Item = _Audio | _Listen | _Stop | _Close


# ---------------------------------------------------------------------- the stream


class SpeechStream:
    """One call's speech input: ``listen`` for an utterance, ``feed`` it audio, get events.

    Methods are called on the event loop and never block. One final per ``listen()``: after a
    `FinalResult` or `SpeechUnavailable` the stream ignores audio until the next ``listen()``.
    A ``listen()`` during an utterance replaces it (no result for the old one).
    """

    def __init__(self, pool: RecognizerPool, call_id: str, on_event: EventHandler) -> None:
        self.call_id = call_id
        """The call this stream listens to."""
        self._pool = pool
        self._on_event = on_event
        self._log = log.bind(call_id=call_id)
        # loop side
        self._generation = 0
        self._listening = False
        self._accepting = True
        self._delivering = True
        # shared with the worker, under _lock
        self._lock = threading.Lock()
        self._inbox: list[_Item] = []
        self._scheduled = False
        self._backlog_samples = 0
        self._dropping = False
        self._dropped = 0
        # worker side (one worker at a time holds the stream)
        self._utterance: Utterance | None = None
        self._last_generation = 0
        self._finished = False

    @property
    def listening(self) -> bool:
        """An utterance is wanted: fed audio goes to the recognizer."""
        return self._listening

    @property
    def closed(self) -> bool:
        """``close()`` was called (or the pool stopped)."""
        return not self._accepting

    @property
    def backlog_seconds(self) -> float:
        """Audio queued for a worker and not yet taken."""
        with self._lock:
            return self._backlog_samples / self._pool.sample_rate

    def listen(self, grammar: Sequence[str] | None = None) -> None:
        """Start an utterance: recognize one of the ``grammar`` phrases (words separated by
        spaces), or free-form speech when it is None or empty."""
        if not self._accepting:
            return
        self._generation += 1
        self._listening = True
        self._post(_Listen(self._generation, tuple(grammar or ())))

    def feed(self, pcm: bytes) -> None:
        """Audio of the call (16-bit mono PCM at the pool's rate, typically 20 ms); ignored
        when not listening; dropped when the stream's backlog is full."""
        if not self._listening:
            return
        samples = len(pcm) // 2
        with self._lock:
            dropped = self._backlog_samples + samples > self._pool.max_backlog_samples
            if dropped:
                first = not self._dropping
                self._dropping = True
                self._dropped += 1
                backlog = self._backlog_samples
            else:
                self._inbox.append(_Audio(pcm, time.monotonic()))
                self._backlog_samples += samples
                schedule = not self._scheduled
                self._scheduled = True
        if dropped:
            self._pool.metrics.frames_dropped.inc()
            if first:
                self._log.warning(
                    "speech frames dropped",
                    backlog_seconds=round(backlog / self._pool.sample_rate, 3),
                )
        elif schedule:
            self._pool.schedule(self)

    def stop(self) -> None:
        """End the current utterance now; its `FinalResult` comes with reason ``stopped``."""
        if self._listening:
            self._listening = False
            self._post(_Stop(self._generation))

    def close(self) -> None:
        """Done with the stream: queued audio is dropped, no more events are delivered."""
        if not self._accepting:
            return
        self._accepting = self._delivering = self._listening = False
        self._pool.forget(self)
        self._post(_Close(final=False), replace=True)

    # ---- loop side, internal

    def _shutdown(self, done: asyncio.Future[None]) -> None:
        """The pool stops: finish the utterance with a result, then stop taking input."""
        self._accepting = self._listening = False
        self._post(_Close(final=True, done=done), replace=True)

    def _post(self, item: _Item, *, replace: bool = False) -> None:
        with self._lock:
            if replace:
                self._inbox.clear()
                self._backlog_samples = 0
            self._inbox.append(item)
            schedule = not self._scheduled
            self._scheduled = True
        if schedule:
            self._pool.schedule(self)

    def _dispatch(self, generation: int, event: SpeechEvent) -> None:
        if not self._delivering or generation != self._generation:
            return  # closed, or an answer to a listen() that a newer one replaced
        if isinstance(event, FinalResult | SpeechUnavailable):
            self._listening = False
        try:
            self._on_event(event)
        except Exception:
            self._log.exception("speech event handler failed", speech_event=type(event).__name__)

    # ---- worker side

    def work(self) -> None:
        """Process the inbox (on a worker thread); then requeue the stream if more arrived."""
        with self._lock:
            items, self._inbox = self._inbox, []
            self._backlog_samples = 0
            self._dropping = False
            dropped, self._dropped = self._dropped, 0
        if self._utterance is not None:
            self._utterance.dropped_frames += dropped
        try:
            self._process(items)
        except Exception:
            self._log.exception("speech recognition failed")
            self._fail()
            for item in items:  # a close in the failed batch still closes
                if isinstance(item, _Close):
                    self._finished = True
                    if item.done is not None:
                        self._pool.resolve(item.done)
        with self._lock:
            again = bool(self._inbox)
            self._scheduled = again
        if again:
            self._pool.schedule(self)

    def _process(self, items: list[_Item]) -> None:
        audio: list[bytes] = []
        for item in items:
            if isinstance(item, _Audio):
                if not audio:
                    self._pool.metrics.lag.observe(time.monotonic() - item.queued_at)
                audio.append(item.pcm)
                continue
            self._feed(audio)
            audio = []
            if isinstance(item, _Listen):
                self._begin(item)
            elif isinstance(item, _Stop):
                if self._utterance is not None and self._utterance.generation == item.generation:
                    self._end(self._utterance.stop())
            else:
                self._close(item)
        self._feed(audio)

    def _feed(self, audio: list[bytes]) -> None:
        utterance = self._utterance
        if utterance is None or self._finished or not audio:
            return
        events = utterance.feed(audio)
        if utterance.final is not None:
            self._utterance = None
            self._pool.record(utterance, self._log)  # logged before the transport hears of it
        for event in events:
            self._pool.deliver(self, utterance.generation, event)

    def _begin(self, item: _Listen) -> None:
        if self._finished:
            return
        self._last_generation = item.generation
        if self._utterance is not None:
            self._utterance.abandon()
            self._utterance = None
        started = self._pool.begin(item.generation, item.phrases, self._log)
        if isinstance(started, Utterance):
            self._utterance = started
        else:
            self._pool.deliver(self, item.generation, started)

    def _end(self, final: FinalResult) -> None:
        utterance = self._utterance
        assert utterance is not None
        self._utterance = None
        self._pool.record(utterance, self._log)
        self._pool.deliver(self, utterance.generation, final)

    def _close(self, item: _Close) -> None:
        if self._utterance is not None:
            if item.final:
                self._end(self._utterance.stop())
            else:
                self._utterance.abandon()
                self._utterance = None
        self._finished = True
        if item.done is not None:
            self._pool.resolve(item.done)

    def _fail(self) -> None:
        utterance, self._utterance = self._utterance, None
        if utterance is not None:
            try:
                utterance.abandon()
            except Exception:
                self._log.exception("speech recognizer release failed")
        if self._finished:
            return
        self._pool.metrics.unavailable.labels(reason="error").inc()
        self._pool.deliver(self, self._last_generation, SpeechUnavailable("error"))
