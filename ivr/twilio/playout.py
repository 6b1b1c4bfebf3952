"""What one Twilio call hears, sans-I/O: prompts cut into 20 ms µ-law frames, sent one per tick
of the shared send clock, a mark after each prompt, ``clear`` for barge-in.

Why paced rather than sent at once: Twilio plays whatever it has buffered, and a ``clear`` is
the only way to stop it. Sent at real time (plus :data:`LEAD_FRAMES` of cushion against a late
tick), a barge-in stops the prompt within a frame or two, exactly like the SIP front end; a
32-second menu dumped in one burst would also leave Twilio the whole menu to throw away.

Why marks: Twilio echoes a ``mark`` once the audio sent before it has *played* to the caller, so
``PromptFinished`` follows the caller's ear, not our send queue; the no-input timer starts when
the caller has heard the question. Mark names are ``play-<play_id>``; an echo for a play that was
stopped (Twilio echoes pending marks after a ``clear``) carries a stale id the dialog ignores.

The playout belongs to the call, not to one stream: a caller handed to an agent leaves the
stream and comes back on a new one for the survey, and the survey prompt queued in between waits
here (:meth:`Playout.attach`).
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from aiortp.codecs.g711 import PcmuCodec

from ivr.twilio import messages as msg

FRAME_BYTES = 160
"""20 ms of µ-law at 8 kHz: one frame per tick of the send clock."""

LEAD_FRAMES = 3
"""Frames sent ahead of real time when playback starts (60 ms): Twilio's playout buffer gets a
cushion against one late tick on our side, yet a ``clear`` drops at most this much audio Twilio
already had."""

MARK_PREFIX = "play-"
"""Mark names are this prefix and the Play's ``play_id``."""

_MULAW_SILENCE = b"\xff"
"""µ-law zero (G.711): pads a prompt's last frame to a full 20 ms."""

_PCMU = PcmuCodec()


@lru_cache(maxsize=128)
def encode_frames(pcm16_8k: bytes) -> tuple[str, ...]:
    """16-bit little-endian 8 kHz PCM as base64 µ-law frames of 20 ms, ready for ``media``.

    Cached by content: the same rendered prompt played to many callers is encoded once (128
    entries hold every shipped prompt and the usual readback combinations).
    """
    ulaw = _PCMU.encode(pcm16_8k[: len(pcm16_8k) - len(pcm16_8k) % 2])
    frames: list[str] = []
    for start in range(0, len(ulaw), FRAME_BYTES):
        frame = ulaw[start : start + FRAME_BYTES]
        frame += _MULAW_SILENCE * (FRAME_BYTES - len(frame))
        frames.append(base64.b64encode(frame).decode("ascii"))
    return tuple(frames)


def mark_name(play_id: int) -> str:
    """The mark sent after the last frame of a Play."""
    return f"{MARK_PREFIX}{play_id}"


def play_id_of(name: str) -> int | None:
    """The ``play_id`` a mark name carries, or None when it is not one of ours."""
    if not name.startswith(MARK_PREFIX):
        return None
    digits = name[len(MARK_PREFIX) :]
    return int(digits) if digits.isascii() and digits.isdigit() and len(digits) < 12 else None


@dataclass
class _Queued:
    play_id: int
    frames: tuple[str, ...]
    sent: int = 0


@dataclass
class PlayoutCounters:
    """What one call sent, for its summary log line."""

    frames: int = 0
    """``media`` messages sent."""
    marks: int = 0
    """``mark`` messages sent."""
    clears: int = 0
    """``clear`` messages sent (barge-ins)."""
    marks_echoed: int = 0
    """Marks Twilio echoed that finished a prompt."""


class Playout:
    """The outbound queue of one call: prompts waiting, the one playing, marks awaiting echo."""

    def __init__(self, *, lead_frames: int = LEAD_FRAMES) -> None:
        self.lead_frames = lead_frames
        self.stream_sid: str | None = None
        """The stream frames go to; None while the call has no stream (the queue waits)."""
        self.counters = PlayoutCounters()
        self._queue: deque[_Queued] = deque()
        self._marks: set[int] = set()
        self._running = False

    @property
    def playing(self) -> bool:
        """Whether audio waits to be sent."""
        return bool(self._queue)

    @property
    def awaiting_marks(self) -> frozenset[int]:
        """Plays whose last frame and mark were sent, not yet echoed."""
        return frozenset(self._marks)

    def attach(self, stream_sid: str) -> None:
        """Frames go to this stream from the next tick; queued prompts start playing."""
        self.stream_sid = stream_sid
        self._running = False

    def detach(self) -> None:
        """The stream ended: what was playing on it is gone, and so are its marks."""
        self.stream_sid = None
        self._queue.clear()
        self._marks.clear()
        self._running = False

    def play(self, frames: Sequence[str], play_id: int) -> None:
        """Queue a prompt's frames (never empty: an empty Play finishes at once, elsewhere)."""
        assert frames, "an empty play has nothing to mark"
        self._queue.append(_Queued(play_id, tuple(frames)))

    def stop_playback(self) -> list[str]:
        """Barge-in: drop queued audio; the messages to send now (a ``clear``, if needed)."""
        busy = bool(self._queue or self._marks)
        self._queue.clear()
        self._running = False
        if self.stream_sid is None or not busy:
            return []
        self.counters.clears += 1
        return [msg.clear(self.stream_sid)]

    def marked(self, name: str) -> int | None:
        """Twilio echoed a mark: the ``play_id`` it finishes, or None (not ours, or seen)."""
        play_id = play_id_of(name)
        if play_id is None or play_id not in self._marks:
            return None
        self._marks.discard(play_id)
        self.counters.marks_echoed += 1
        return play_id

    def tick(self) -> list[str]:
        """The messages due at this tick: one frame (more when playback starts), and a mark
        after the last frame of each prompt."""
        stream = self.stream_sid
        if stream is None or not self._queue:
            self._running = False
            return []
        budget = 1 if self._running else 1 + self.lead_frames
        self._running = True
        out: list[str] = []
        while budget and self._queue:
            head = self._queue[0]
            out.append(msg.media(stream, head.frames[head.sent]))
            head.sent += 1
            budget -= 1
            self.counters.frames += 1
            if head.sent == len(head.frames):
                self._queue.popleft()
                self._marks.add(head.play_id)
                out.append(msg.mark(stream, mark_name(head.play_id)))
                self.counters.marks += 1
        return out
