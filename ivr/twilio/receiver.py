"""What arrives on one Media Streams WebSocket, sans-I/O: frames in, stream events out.

The order Twilio promises is ``connected``, ``start``, then ``media``/``dtmf``/``mark`` until
``stop``. A frame that breaks it (media before start, a second start, another stream's sid) or
that does not parse is reported as :class:`ProtocolError` and otherwise ignored: one bad frame
never ends a call (CONVENTIONS 7). Only ``stop`` (or the socket closing) ends the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ivr.twilio import messages as msg


class StreamState(StrEnum):
    """Where a stream is in Twilio's message order."""

    NEW = "new"
    """The socket is open; nothing received yet."""
    CONNECTED = "connected"
    """``connected`` arrived."""
    STARTED = "started"
    """``start`` arrived: media, keys and marks belong to a call now."""
    STOPPED = "stopped"
    """``stop`` arrived; everything after it is ignored."""


@dataclass(frozen=True)
class Started:
    """The stream started; ``start`` says for which call."""

    start: msg.Start
    """The ``start`` message."""


@dataclass(frozen=True)
class CallerAudio:
    """20 ms (usually) of the caller's voice, µ-law."""

    ulaw: bytes
    """The payload."""


@dataclass(frozen=True)
class KeyPressed:
    """The caller pressed a key."""

    digit: str
    """One of ``0123456789*#ABCD``."""


@dataclass(frozen=True)
class MarkEchoed:
    """Twilio echoed one of our marks (the audio before it played, or was cleared)."""

    name: str
    """The mark's name."""


@dataclass(frozen=True)
class Stopped:
    """The stream ended (``stop``)."""

    started: bool
    """False for a ``stop`` that came without a ``start`` (no call was ever attached)."""


@dataclass(frozen=True)
class ProtocolError:
    """A frame that was dropped, and why (malformed, or out of Twilio's order)."""

    kind: str
    """``malformed``, ``before_start``, ``second_start``, ``wrong_stream``, ``after_stop``,
    ``binary`` or ``unknown_event``: the metrics label."""
    detail: str
    """What exactly was wrong."""


StreamEvent = Started | CallerAudio | KeyPressed | MarkEchoed | Stopped | ProtocolError


@dataclass
class ReceiverCounters:
    """What one stream received, for its summary log line."""

    media: int = 0
    """Caller audio frames."""
    keys: int = 0
    """DTMF keys."""
    marks: int = 0
    """Mark echoes."""
    dropped: int = 0
    """Frames dropped as protocol errors."""


class StreamReceiver:
    """The inbound side of one Media Streams WebSocket."""

    def __init__(self) -> None:
        self.state = StreamState.NEW
        self.start: msg.Start | None = None
        """The ``start`` message, once it came."""
        self.counters = ReceiverCounters()

    def receive_text(self, text: str | bytes) -> StreamEvent | None:
        """One text frame; the event it makes, or None (``connected``, an outbound echo)."""
        if self.state is StreamState.STOPPED:
            return self._error("after_stop", "frame after stop")
        try:
            message = msg.parse(text)
        except msg.MalformedMessage as exc:
            return self._error("malformed", str(exc))
        match message:
            case msg.Connected():
                if self.state is StreamState.NEW:
                    self.state = StreamState.CONNECTED
                return None
            case msg.Start():
                if self.start is not None:
                    return self._error("second_start", f"second start ({message.stream_sid})")
                self.start = message
                self.state = StreamState.STARTED
                return Started(message)
            case msg.Stop():
                started = self.start is not None
                if started and not self._ours(message.stream_sid):
                    return self._error("wrong_stream", f"stop for {message.stream_sid}")
                self.state = StreamState.STOPPED
                return Stopped(started)
            case msg.OtherEvent():
                return self._error("unknown_event", f"event {message.event!r}")
            case _:
                pass
        # media, dtmf and mark belong to a started stream
        if self.start is None:
            return self._error("before_start", f"{type(message).__name__.lower()} before start")
        if not self._ours(message.stream_sid):
            return self._error("wrong_stream", f"frame for {message.stream_sid}")
        match message:
            case msg.Media():
                if message.track != "inbound":
                    return None  # our own audio, if Twilio ever echoes an outbound track
                self.counters.media += 1
                return CallerAudio(message.payload)
            case msg.Dtmf():
                self.counters.keys += 1
                return KeyPressed(message.digit)
            case msg.Mark():
                self.counters.marks += 1
                return MarkEchoed(message.name)
        return None  # pragma: no cover - every message type is handled above

    def receive_binary(self, size: int) -> ProtocolError:
        """A binary frame: Media Streams speaks JSON text only."""
        return self._error("binary", f"binary frame of {size} bytes")

    def _ours(self, stream_sid: str) -> bool:
        return self.start is not None and stream_sid == self.start.stream_sid

    def _error(self, kind: str, detail: str) -> ProtocolError:
        self.counters.dropped += 1
        return ProtocolError(kind, detail)
