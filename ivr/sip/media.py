"""RTP media for many calls in one process: one shared 20 ms send clock, one UDP socket per call.

The protocol work is in :class:`ivr.sip.rtp_stream.RtpStream` (sans-I/O); this module is the
asyncio pump around it:

- the send clock (:mod:`ivr.sip.rtp_clock`) is ONE thread or task for all calls that calls
  every stream's ``send_tick`` every 20 ms.
- :class:`MediaStream` is one call's socket: it sends its :class:`RtpStream`'s packet on every
  tick and turns received datagrams into ``on_audio`` and ``on_key`` callbacks.

A node's clock is a thread (:class:`ivr.sip.rtp_clock.ThreadSendClock`): ``send_tick`` runs
there, everything else on the event loop. One lock per stream keeps the two apart: the clock
holds it while it takes the next frame and sends it; the loop holds it to queue or drop audio,
renegotiate, and close (so a socket is never closed, or its number reused, under a send). The
"play finished" callbacks are posted back to the loop; a play dropped meanwhile (barge-in)
never reports, as before.

The socket is a plain non-blocking one watched with ``loop.add_reader``, not an asyncio datagram
transport. asyncio's transport reads ONE datagram per ready socket per loop round and wraps each
send in checks a media socket never needs; at 400 calls (13 000 packets a second in, 20 000
out) that per-packet Python was the largest cost of the process. Here a wake-up reads the socket
until it is empty (at most ``_READS_PER_WAKE`` datagrams, so one flooded socket cannot starve
the others; the selector wakes us again for the rest), all with one arrival time, and the send
clock calls the socket's ``sendto`` itself. A full send buffer drops the frame (late audio is
worse than none); a send error is counted, never fatal.

Between prompts a stream sends encoded silence (``MediaConfig.silence_when_idle``): SBCs and
PBXs hang up calls whose RTP stops for 30-60 s, NAT bindings expire, and some phones report
one-way audio — while a caller types an account number the IVR says nothing for a long time.
The payload is precomputed, so silence costs a header and a ``sendto``.

A callback that raises is logged and the call goes on; nothing one call does can stop the clock.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiosipua import SdpMessage

from ivr.sip.rtp_clock import AnyClock
from ivr.sip.rtp_stream import (
    PCMA,
    PCMU,
    AudioReceived,
    KeyPressed,
    RtpCounters,
    RtpStream,
)
from ivr.sip.udp_send import Destination, UdpSender, error_name, is_full

log = structlog.get_logger(__name__)

_LOG_EVERY = 10.0
"""Seconds between two log lines about the same kind of bad input on one call."""

_READS_PER_WAKE = 64
"""Most datagrams one wake-up takes from one call's socket (a caller sends 33-50 a second)."""

_MAX_DATAGRAM = 8192
"""Receive buffer per datagram: G.711 at the longest usual ptime (200 ms) is 1612 bytes.
asyncio's transports ask for 256 KiB, an allocation per packet that costs more than the packet."""

SENDER = UdpSender()
"""How the clock's thread sends (libc ``sendto`` with the GIL held, where it can)."""

OnDone = Callable[[int], None]
OnAudio = Callable[[bytes], None]
OnKey = Callable[[str, float], None]


# --- configuration and negotiated parameters ---


class RtpPorts:
    """Even UDP ports for RTP from a configured range, handed out round-robin (RFC 3550 §11).

    Nothing is reserved: the OS refuses a port in use and the next one is tried. Round-robin
    keeps a just-freed port idle for as long as possible, so late packets of an ended call do
    not reach the next call that gets the port.
    """

    def __init__(self, first: int, last: int) -> None:
        if not 0 < first <= last <= 65535:
            raise ValueError(f"bad RTP port range {first}-{last}")
        self.first = first + first % 2
        self.last = last
        self._ports = [*range(self.first, last + 1, 2)]
        if not self._ports:
            raise ValueError(f"no even port in {first}-{last}")
        self._cursor = itertools.count()

    def candidates(self) -> Iterator[int]:
        """Every port of the range once, starting after the one handed out last."""
        start = next(self._cursor) % len(self._ports)
        for i in range(len(self._ports)):
            yield self._ports[(start + i) % len(self._ports)]


@dataclass(frozen=True)
class MediaConfig:
    """Where media sockets bind and how they behave; built once from the settings."""

    host: str = "127.0.0.1"
    """Local address of the RTP sockets."""
    ports: RtpPorts | None = None
    """A port range, or None for ephemeral ports (tests, the embedded run)."""
    silence_when_idle: bool = True
    """Send silence between prompts (see the module docstring) rather than nothing."""
    symmetric_rtp: bool = True
    """Send to where the peer's first valid RTP packet came from (NAT; RFC 4961) and accept
    only that source from then on; off = only the SDP address, from the start."""


class NegotiatedMedia(Protocol):
    """The remote side of an offer/answer (``ivr.sip.sdp.Negotiated`` fits)."""

    @property
    def remote(self) -> tuple[str, int] | None:
        """Where to send RTP; None or 0.0.0.0 = nowhere (hold)."""

    @property
    def payload_type(self) -> int:
        """0 = PCMU, 8 = PCMA."""

    @property
    def dtmf_payload_type(self) -> int | None:
        """The telephone-event payload type, None if not negotiated."""

    @property
    def direction(self) -> str:
        """The peer's SDP direction."""


@dataclass(frozen=True)
class RemoteMedia:
    """The peer's media parameters (the fields of :class:`NegotiatedMedia`)."""

    remote: tuple[str, int] | None
    """Where to send RTP; None or 0.0.0.0 = nowhere (hold)."""
    payload_type: int = PCMU
    """0 = PCMU, 8 = PCMA."""
    dtmf_payload_type: int | None = 101
    """The telephone-event payload type, None if not negotiated."""
    direction: str = "sendrecv"
    """The peer's SDP direction."""

    @classmethod
    def from_sdp(cls, sdp: SdpMessage, payload_type: int | None = None) -> RemoteMedia:
        """Read a peer's SDP (e.g. a re-INVITE's): keep `payload_type` if still offered.

        Otherwise the first G.711 type of the offer is taken (ValueError if there is none).
        c=0.0.0.0 is RFC 2543 hold and reads as direction ``inactive``.
        """
        audio = sdp.audio
        if audio is None:
            raise ValueError("SDP has no audio stream")
        offered = [int(f) for f in audio.formats if f.isdigit()]
        g711 = [pt for pt in offered if pt in (PCMU, PCMA)]
        if payload_type not in g711:
            if not g711:
                raise ValueError("SDP offers neither PCMU nor PCMA")
            payload_type = g711[0]
        assert payload_type is not None
        dtmf = next(
            (c.payload_type for c in audio.codecs if c.encoding_name.lower() == "telephone-event"),
            None,
        )
        remote = sdp.rtp_address
        direction = audio.direction
        if remote is None or remote[0] == "0.0.0.0" or remote[1] == 0:  # noqa: S104 - SDP hold
            remote, direction = None, "inactive"
        return cls(remote, payload_type, dtmf, direction)


# --- one call's socket ---


class MediaStream:
    """One call's RTP: a UDP socket, the call's :class:`RtpStream`, and its callbacks."""

    clock_thread_safe = True
    """``send_tick`` may run on the send clock's thread (see the module doc)."""

    def __init__(
        self,
        params: NegotiatedMedia,
        *,
        clock: AnyClock,
        config: MediaConfig,
        on_audio: OnAudio | None = None,
        on_key: OnKey | None = None,
        call_id: str = "",
    ) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._lock = threading.Lock()
        """Held by the clock while it sends, by the loop while it changes what is sent."""
        self._clock = clock
        self._config = config
        self.on_audio = on_audio
        """Called with each received packet's decoded PCM (speech, in-band DTMF)."""
        self.on_key = on_key
        """Called with (digit, arrival time) once per RFC 4733 event."""
        self.call_id = call_id
        self.rtp = RtpStream(
            payload_type=params.payload_type,
            dtmf_payload_type=params.dtmf_payload_type,
            direction=params.direction,
            now=loop.time(),
            silence_when_idle=config.silence_when_idle,
        )
        """The sans-I/O state (counters, direction, queue)."""
        self._sdp_remote: tuple[str, int] | None = None
        self._send_to: tuple[str, int] | None = None
        self._target: tuple[socket.socket, Destination] | None = None
        """What the clock sends from and to (set in one assignment: read without the lock)."""
        self._latched = False
        self._may_latch = False
        """Symmetric RTP may still move the send address (see :meth:`_set_remote`)."""
        self._sock: socket.socket | None = None
        self._on_done: dict[int, tuple[int, OnDone]] = {}
        """Per queued play, by a token of ours: the caller's play id and its callback."""
        self._tokens = itertools.count()
        self._last_logged: dict[str, float] = {}
        self._count_lock = threading.Lock()
        self._extra = self.rtp.counters.extra
        self._closed = False
        self._set_remote(params.remote)

    @classmethod
    async def open(
        cls,
        params: NegotiatedMedia,
        *,
        clock: AnyClock,
        config: MediaConfig | None = None,
        on_audio: OnAudio | None = None,
        on_key: OnKey | None = None,
        call_id: str = "",
    ) -> MediaStream:
        """Bind a socket (from the port range, or ephemeral) and join the send clock."""
        config = config or MediaConfig()
        stream = cls(
            params,
            clock=clock,
            config=config,
            on_audio=on_audio,
            on_key=on_key,
            call_id=call_id,
        )
        candidates = [0] if config.ports is None else config.ports.candidates()
        last_error: OSError | None = None
        for port in candidates:
            sock = socket.socket(_family(config.host), socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.bind((config.host, port))
            except OSError as exc:  # in use: try the next one
                sock.close()
                last_error = exc
                continue
            stream._attach(sock)
            clock.add(stream)
            return stream
        raise OSError(f"no free RTP port on {config.host}") from last_error

    def _attach(self, sock: socket.socket) -> None:
        self._sock = sock
        self._retarget()
        self._loop.add_reader(sock.fileno(), self._readable)

    # --- the socket's side ---

    def _readable(self) -> None:
        """The socket has datagrams: read them until it is empty, or `_READS_PER_WAKE` of them."""
        now = self._loop.time()  # one arrival time per wake-up: they came within microseconds
        for _ in range(_READS_PER_WAKE):
            sock = self._sock
            if sock is None:
                return  # a callback closed the call
            try:
                data, addr = sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return  # drained
            except OSError as exc:
                # A queued ICMP error (the peer's port is gone): it is consumed by this read,
                # so count it and read on; the RTP timeout or the BYE ends the call.
                self._count("send_errors", error=type(exc).__name__)
                continue
            self.receive_datagram(data, addr, now)

    def receive_datagram(self, data: bytes, addr: tuple[Any, ...], now: float) -> None:
        """Handle one datagram that arrived at `now` from `addr` (what a wake-up does per read)."""
        if self._closed:
            return
        source = addr if len(addr) == 2 else (addr[0], addr[1])  # IPv6: (host, port, flow, scope)
        if source != self._send_to and not self._may_latch:
            self._count("wrong_source", source=f"{source[0]}:{source[1]}")
            return
        rtp = self.rtp
        counters = rtp.counters
        garbage, valid = counters.garbage, counters.received
        received = rtp.receive(data, now, decode=self.on_audio is not None)
        if received is None:
            if counters.garbage != garbage:
                self._maybe_log("garbage", counters.garbage, size=len(data))
            elif self._may_latch and counters.received != valid:
                self._latch(source)  # only a valid RTP packet may move the send address
            return
        if self._may_latch:
            self._latch(source)
        if isinstance(received, AudioReceived):
            if self.on_audio is not None:
                self._call("on_audio", self.on_audio, received.pcm)
        elif isinstance(received, KeyPressed) and self.on_key is not None:
            self._call("on_key", self.on_key, received.digit, received.at)

    # --- what the call does ---

    @property
    def local_address(self) -> tuple[str, int]:
        """(host, port) the socket is bound to: the port for our SDP."""
        if self._sock is None:
            raise RuntimeError("media stream is not open")
        sockname = self._sock.getsockname()
        return str(sockname[0]), int(sockname[1])

    @property
    def send_address(self) -> tuple[str, int] | None:
        """Where packets go now (the SDP address, or the latched source)."""
        return self._send_to

    def update(self, params: NegotiatedMedia) -> None:
        """Apply a re-INVITE/UPDATE: new address, codec, hold or resume; the stream continues."""
        with self._lock:
            self.rtp.update(
                payload_type=params.payload_type,
                dtmf_payload_type=params.dtmf_payload_type,
                direction=params.direction,
                now=self._loop.time(),
            )
        if params.remote != self._sdp_remote:
            self._set_remote(params.remote)

    def play(self, pcm16_8k: bytes, play_id: int, on_done: OnDone, *, cache: bool = True) -> None:
        """Queue audio; `on_done(play_id)` runs once, when its last frame has been sent.

        Never called for a play discarded by :meth:`stop_playback` or :meth:`close`.
        """
        token = next(self._tokens)
        with self._lock:
            self.rtp.play(pcm16_8k, token, cache=cache)
            self._on_done[token] = (play_id, on_done)

    def stop_playback(self) -> None:
        """Barge-in: drop all queued audio now; the next tick sends silence (or nothing)."""
        with self._lock:
            self.rtp.stop_playback()
            self._on_done.clear()

    @property
    def playing(self) -> bool:
        """Whether audio is queued."""
        return self.rtp.playing

    def idle_seconds(self) -> float:
        """Seconds since the peer's last RTP (0 while it holds us): compare to the RTP timeout."""
        return self.rtp.idle_seconds(self._loop.time())

    @property
    def counters(self) -> RtpCounters:
        """Packet counts of this call."""
        return self.rtp.counters

    def close(self) -> None:
        """Leave the clock, close the socket, drop queued audio; log one summary line."""
        if self._closed:
            return
        self._closed = True
        self._clock.remove(self)
        with self._lock:  # no send is under way on this socket after this
            self.rtp.stop_playback()
            self._on_done.clear()
            self._target = None
            sock, self._sock = self._sock, None
        if sock is not None:
            self._loop.remove_reader(sock.fileno())
            sock.close()
        c = self.rtp.counters
        log.info(
            "media_closed",
            call_id=self.call_id,
            sent=c.sent,
            received=c.received,
            keys=c.keys,
            other_events=c.other_events,
            garbage=c.garbage,
            **c.extra,
        )

    # --- the clock's side ---

    def send_tick(self, tick: int) -> None:
        """Send the frame of `tick` (called by the send clock, on its thread or the loop)."""
        error = 0
        with self._lock:
            target = self._target
            if target is None:
                return  # closed, or nowhere to send: the queue waits, like a hold
            datagram, finished = self.rtp.tick(tick)
            if datagram is not None:
                error = SENDER.send(target[0], datagram, target[1])
        if error:
            if is_full(error):
                # The kernel's send buffer is full: drop the frame rather than queue late audio.
                self._count("dropped_frames")
            else:
                # ICMP port unreachable from an earlier send, no route: count, keep going;
                # the RTP timeout or the BYE ends the call.
                self._count("send_errors", error=error_name(error))
        if finished:
            self._clock.defer(self._finished, finished)  # on the loop

    def _finished(self, tokens: tuple[int, ...]) -> None:
        """Plays whose last frame went out: their callbacks, on the loop."""
        for token in tokens:
            entry = self._on_done.pop(token, None)
            if entry is not None:  # else dropped by stop_playback or close meanwhile
                self._call("on_done", entry[1], entry[0])

    # --- helpers ---

    def _set_remote(self, remote: tuple[str, int] | None) -> None:
        if remote is not None and (remote[0] == "0.0.0.0" or remote[1] == 0):  # noqa: S104
            remote = None  # RFC 2543 hold, or a rejected stream
        self._sdp_remote = remote
        self._send_to = remote
        self._retarget()
        self._latched = False
        # Symmetric RTP: the first valid packet, from wherever it comes, fixes the address we
        # send to and accept from (a NATed phone's real address); after that, only it counts.
        # Never while on hold with no address: that would start sending to a stranger.
        self._may_latch = self._config.symmetric_rtp and remote is not None

    def _latch(self, source: tuple[str, int]) -> None:
        self._latched = True
        self._may_latch = False
        if source != self._send_to:
            log.info(
                "rtp_latched",
                call_id=self.call_id,
                sdp=f"{self._sdp_remote}",
                source=f"{source[0]}:{source[1]}",
            )
            self._send_to = source
            self._retarget()

    def _retarget(self) -> None:
        sock, send_to = self._sock, self._send_to
        self._target = None if sock is None or send_to is None else (sock, SENDER.address(*send_to))

    def _count(self, kind: str, **fields: object) -> None:
        with self._count_lock:  # the loop and the clock's thread both count
            self._extra[kind] = count = self._extra.get(kind, 0) + 1
        self._maybe_log(kind, count, **fields)

    def _maybe_log(self, kind: str, count: int, **fields: object) -> None:
        now = self._loop.time()
        last = self._last_logged.get(kind)
        if last is None or now - last >= _LOG_EVERY:
            self._last_logged[kind] = now
            log.warning("rtp_dropped", call_id=self.call_id, kind=kind, count=count, **fields)

    def _call(self, what: str, callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("media_callback_failed", call_id=self.call_id, callback=what)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
