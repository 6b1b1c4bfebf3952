"""Media bridge between a caller's RTP stream and an agent leg's: the IVR stays in the path.

The hotline is a B2BUA: the caller's audio reaches the agent and the agent's the caller through
two :class:`ivr.sip.media.MediaStream` objects, never peer to peer. So the IVR can record the
conversation (``tap``) and, once the agent hangs up, play the satisfaction survey to the caller
on the same stream.

How audio moves, with MediaStream's public API only:

- each stream's ``on_audio`` delivers decoded 16-bit PCM per received packet, whatever its
  codec (MediaStream decodes by the packet's own payload type) and whatever its ptime;
- :class:`FrameQueue` re-frames it to 20 ms (160 samples) behind a small jitter buffer;
- the bridge is one more member of the shared send clock: on every tick it hands the next
  frame of each direction to the other stream's ``play``, which encodes it with that stream's
  negotiated codec. A PCMU caller and a PCMA agent are transcoded on the way by construction
  (G.711 both ways through 16-bit PCM, ITU-correct A-law from `ivr.sip.rtp_stream`). Like
  the streams it runs on the clock's thread (``clock_thread_safe``); the receive side pushes
  into the :class:`FrameQueue` from the event loop, so the queue locks, and a ``tap`` is
  called on the clock's thread.

When a direction has nothing to send (underrun, or the far side is silent) the stream sends
its idle silence, so RTP never stops (see `ivr.sip.media`). A direction that runs ahead (the
peer's clock is faster than ours) is trimmed back to the jitter target: bounded delay, never
unbounded memory.

Not forwarded, on purpose: RFC 4733 telephone-events. The caller's keys keep going to the IVR
(the stream's ``on_key`` is untouched) and are not relayed to the agent; the agent's keys are
dropped (the agent leg's stream has no ``on_key``): a key pressed on the agent's phone must
not reach the caller's menu or bank card prompt, and RtpStream has no telephone-event sender.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import structlog

from ivr.sip.media import OnAudio, OnDone
from ivr.sip.rtp_clock import Clocked
from ivr.sip.rtp_stream import FRAME_BYTES

log = structlog.get_logger(__name__)

BRIDGE_PLAY_ID = -1
"""The play id of bridged frames: never a dialog's (they count up from 0), never reported."""

Direction = Literal["caller_to_agent", "agent_to_caller"]
"""Which way a bridged frame goes."""

Tap = Callable[[Direction, bytes], None]
"""Sees every 20 ms frame the bridge forwards (16-bit PCM), e.g. to record the call."""


class BridgedStream(Protocol):
    """What the bridge needs of a stream; :class:`ivr.sip.media.MediaStream` fits."""

    on_audio: OnAudio | None
    """Called with each received packet's decoded PCM; the bridge chains itself in."""

    def play(self, pcm16_8k: bytes, play_id: int, on_done: OnDone, *, cache: bool = True) -> None:
        """Queue 16-bit 8 kHz PCM for sending on the shared clock."""

    @property
    def playing(self) -> bool:
        """Whether audio is still queued (the last frame not sent yet)."""


class SendClockLike(Protocol):
    """The shared send clock (:class:`ivr.sip.rtp_clock.SendClock` fits)."""

    def add(self, stream: Clocked) -> None:
        """Call ``stream.send_tick`` on every tick from now on."""

    def remove(self, stream: Clocked) -> None:
        """Stop calling it."""


@dataclass
class FrameStats:
    """What happened to one direction's audio (for the call's summary log line)."""

    frames: int = 0
    """20 ms frames forwarded."""
    underruns: int = 0
    """Ticks that found the buffer empty after it had started (the peer paused or was late)."""
    trimmed_bytes: int = 0
    """PCM dropped because the peer ran ahead of the jitter budget."""
    blocked: int = 0
    """Frames dropped because the other stream had not sent the previous one (on hold, no
    address yet, or a prompt playing into it)."""


class FrameQueue:
    """One direction's PCM, re-framed to 20 ms behind a small jitter buffer (sans-I/O).

    Output starts once ``prefill_frames`` are buffered, and again after every underrun, so a
    peer's jitter costs a little delay instead of a choppy frame every tick. More than
    ``max_frames`` buffered is cut back to ``prefill_frames`` by dropping the oldest audio.
    """

    def __init__(self, *, prefill_frames: int = 2, max_frames: int = 8) -> None:
        if not 1 <= prefill_frames < max_frames:
            raise ValueError("need 1 <= prefill_frames < max_frames")
        self._prefill = prefill_frames * FRAME_BYTES
        self._max = max_frames * FRAME_BYTES
        self._buffer = bytearray()
        self._running = False
        self._lock = threading.Lock()  # pushed on the loop, popped on the clock's thread
        self.stats = FrameStats()

    def __len__(self) -> int:
        """Buffered PCM bytes."""
        return len(self._buffer)

    def push(self, pcm: bytes) -> None:
        """Add one packet's PCM (any length; an odd trailing byte is dropped)."""
        with self._lock:
            self._buffer += pcm[: len(pcm) - len(pcm) % 2]
            if len(self._buffer) > self._max:
                excess = len(self._buffer) - self._prefill
                del self._buffer[:excess]
                self.stats.trimmed_bytes += excess

    def pop(self) -> bytes | None:
        """The next 20 ms frame, or ``None`` while (re)filling."""
        with self._lock:
            if not self._running:
                if len(self._buffer) < self._prefill:
                    return None
                self._running = True
            if len(self._buffer) < FRAME_BYTES:
                self._running = False
                self.stats.underruns += 1
                return None
            frame = bytes(self._buffer[:FRAME_BYTES])
            del self._buffer[:FRAME_BYTES]
            self.stats.frames += 1
            return frame

    def clear(self) -> None:
        """Forget everything buffered."""
        with self._lock:
            self._buffer.clear()
            self._running = False


def _played(play_id: int) -> None:
    """A bridged frame went out: nothing to report (it is not a prompt)."""


class Bridge:
    """Caller ↔ agent audio through the IVR, on the shared send clock (see the module doc).

    ``start`` chains the bridge into both streams' ``on_audio`` (the previous callbacks keep
    getting the audio when ``keep_listening``: the IVR's own listeners stay in the path) and
    joins the clock; ``stop`` undoes both. Neither stream is closed by the bridge: stop it
    before closing one. A stream never holds more than one bridged frame (see ``_forward``).
    """

    clock_thread_safe = True
    """``send_tick`` may run on the send clock's thread: it only pops the frame queues (which
    lock) and calls the streams' ``play`` (which locks); ``start`` and ``stop`` belong to the
    event loop."""

    def __init__(
        self,
        caller: BridgedStream,
        agent: BridgedStream,
        clock: SendClockLike,
        *,
        tap: Tap | None = None,
        keep_listening: bool = True,
        prefill_frames: int = 2,
        max_frames: int = 8,
        call_id: str = "",
    ) -> None:
        self.caller = caller
        self.agent = agent
        self._clock = clock
        self._tap = tap
        self._keep_listening = keep_listening
        self.to_agent = FrameQueue(prefill_frames=prefill_frames, max_frames=max_frames)
        """Caller audio on its way to the agent."""
        self.to_caller = FrameQueue(prefill_frames=prefill_frames, max_frames=max_frames)
        """Agent audio on its way to the caller."""
        self.call_id = call_id
        self._saved: tuple[OnAudio | None, OnAudio | None] | None = None
        self._from_caller_cb: OnAudio = self._from_caller
        self._from_agent_cb: OnAudio = self._from_agent

    @property
    def running(self) -> bool:
        """Whether the bridge is started."""
        return self._saved is not None

    def start(self) -> None:
        """Bridge the two streams from the next tick on (a no-op if already started)."""
        if self._saved is not None:
            return
        self._saved = (self.caller.on_audio, self.agent.on_audio)
        self.caller.on_audio = self._from_caller_cb
        self.agent.on_audio = self._from_agent_cb
        self._clock.add(self)
        log.info("bridge_started", call_id=self.call_id)

    def stop(self) -> None:
        """Unbridge: leave the clock, give the streams their callbacks back, drop buffers."""
        if self._saved is None:
            return
        self._clock.remove(self)
        caller_cb, agent_cb = self._saved
        self._saved = None
        # Only undo our own hook: someone may have replaced it meanwhile.
        if self.caller.on_audio is self._from_caller_cb:
            self.caller.on_audio = caller_cb
        if self.agent.on_audio is self._from_agent_cb:
            self.agent.on_audio = agent_cb
        self.to_agent.clear()
        self.to_caller.clear()
        up, down = self.to_agent.stats, self.to_caller.stats
        log.info(
            "bridge_stopped",
            call_id=self.call_id,
            to_agent_frames=up.frames,
            to_agent_underruns=up.underruns,
            to_agent_trimmed=up.trimmed_bytes,
            to_agent_blocked=up.blocked,
            to_caller_frames=down.frames,
            to_caller_underruns=down.underruns,
            to_caller_trimmed=down.trimmed_bytes,
            to_caller_blocked=down.blocked,
        )

    # --- the streams' side ---

    def _from_caller(self, pcm: bytes) -> None:
        self.to_agent.push(pcm)
        if self._keep_listening and self._saved is not None and self._saved[0] is not None:
            self._saved[0](pcm)

    def _from_agent(self, pcm: bytes) -> None:
        self.to_caller.push(pcm)
        if self._keep_listening and self._saved is not None and self._saved[1] is not None:
            self._saved[1](pcm)

    # --- the clock's side ---

    def send_tick(self, tick: int) -> None:
        """Hand each direction's next frame to the other stream (called by the send clock).

        The clock calls the bridge after the streams it already had, so a frame queued at tick
        n leaves at tick n+1: 20 ms of delay, and never more than one frame queued in a stream.
        """
        del tick
        self._forward(self.to_agent, self.agent, "caller_to_agent")
        self._forward(self.to_caller, self.caller, "agent_to_caller")

    def _forward(self, queue: FrameQueue, stream: BridgedStream, direction: Direction) -> None:
        frame = queue.pop()
        if frame is None:
            return
        if stream.playing:
            # The stream did not send the frame of the last tick: the peer holds it (nothing
            # is sent), it has no address yet, or the IVR plays a prompt into it. Drop rather
            # than pile up: after a 5-minute hold the agent must hear the caller now, not
            # 5 minutes ago.
            queue.stats.blocked += 1
            return
        try:
            stream.play(frame, BRIDGE_PLAY_ID, _played, cache=False)
            if self._tap is not None:
                self._tap(direction, frame)
        except Exception:
            # One broken direction or tap must not take the bridge off the clock.
            log.exception("bridge_forward_failed", call_id=self.call_id, direction=direction)
