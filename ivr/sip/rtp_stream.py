"""Sans-I/O RTP for one call: G.711 frames out on a shared 20 ms tick, audio and keys in.

No sockets and no clock here (CONVENTIONS 3): :class:`RtpStream` is told the tick number and the
time, takes datagrams in and hands datagrams out; :mod:`ivr.sip.media` is the asyncio pump.

Outgoing (RFC 3550, RFC 3551): prompts are queued as 16-bit 8 kHz PCM, encoded with the
negotiated codec once (and cached for every other call that plays the same audio), and sent
160 samples per tick. SSRC, sequence number and timestamp
start random (RFC 3550 §5.1) and run on across prompts, re-INVITEs and holds; the timestamp is
tied to the shared clock's tick number, so it advances with real time even when nothing is sent,
and the marker bit flags the first packet after any pause in sending (RFC 3551 §4.1).

Incoming: only the RTP header fields we use are read (:func:`payload_bounds`; garbage is counted
and dropped), with no packet object per datagram: at 400 calls 13 000 packets a second arrive,
most of them audio nobody listens to. G.711 audio is decoded only for a listener (the speech
recognizer, the in-band detector); RFC 4733 telephone-events become one key per event. Nothing
received is kept: every packet is handled and dropped at once.
"""

from __future__ import annotations

import secrets
import struct
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from aiortp.codecs.g711 import PcmaCodec, PcmuCodec
from aiortp.dtmf import EVENT_TO_DIGIT

from ivr.sip.rtp_loss import SequenceGaps

PCMU = 0
"""Static payload type of G.711 µ-law (RFC 3551 §6)."""

PCMA = 8
"""Static payload type of G.711 A-law (RFC 3551 §6)."""

CLOCK_RATE = 8000
FRAME_SAMPLES = 160
"""20 ms at 8 kHz: the ptime every trunk accepts."""

FRAME_BYTES = 2 * FRAME_SAMPLES
"""One frame of 16-bit PCM."""

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
"""SDP direction attributes (RFC 3264 §5.1), always as the *peer* declared them."""


class G711(Protocol):
    """A G.711 codec: 16-bit little-endian PCM <-> one byte per sample."""

    def encode(self, pcm: bytes) -> bytes:
        """PCM -> payload."""

    def decode(self, payload: bytes) -> bytes:
        """Payload -> PCM."""


_FLIP_SIGN = bytes(b ^ 0x80 for b in range(256))


class ItuPcma:
    """G.711 A-law with the sign bit of ITU-T G.711 (1 = positive), on aiortp's tables.

    aiortp 0.8.0 inverts the A-law sign bit: +1000 encodes as 0x7A where G.711, sox and the
    Sun reference code give 0xFA, and silence is 0x55 instead of 0xD5. Its encoder and decoder
    agree with each other, so its own round trip is clean, but against a real A-law trunk every
    sample comes out with its polarity inverted, both ways. Inaudible in speech, yet wrong on
    the wire; flipping the bit with one ``bytes.translate`` makes it G.711.
    """

    _aiortp = PcmaCodec()

    def encode(self, pcm: bytes) -> bytes:
        """PCM -> A-law bytes."""
        return self._aiortp.encode(pcm).translate(_FLIP_SIGN)

    def decode(self, payload: bytes) -> bytes:
        """A-law bytes -> PCM."""
        return self._aiortp.decode(payload.translate(_FLIP_SIGN))


_CODECS: dict[int, G711] = {PCMU: PcmuCodec(), PCMA: ItuPcma()}
_HEADER = struct.Struct("!BBHII")
_TIMESTAMP_SSRC = struct.Struct("!II")
_SEQ_SSRC = struct.Struct("!H4xI")
"""Sequence number and SSRC of a received packet (the timestamp between them skipped)."""
_VERSION_BYTE = 0x80  # V=2, no padding, no extension, no CSRC
_RECENT_EVENTS = 16


class UnsupportedPayloadType(ValueError):  # noqa: N818 - names the condition, like ValueError
    """A payload type other than PCMU (0) or PCMA (8) was asked for as the audio codec."""


def codec_for(payload_type: int) -> G711:
    """The G.711 codec of a static payload type; UnsupportedPayloadType for anything else."""
    try:
        return _CODECS[payload_type]
    except KeyError:
        raise UnsupportedPayloadType(
            f"payload type {payload_type} is not G.711 (0 PCMU or 8 PCMA)"
        ) from None


@dataclass(frozen=True)
class KeyPressed:
    """The first packet of a new RFC 4733 telephone-event for a key arrived."""

    digit: str
    """One of ``0123456789*#ABCD``."""
    at: float
    """When its first packet arrived (the caller of :meth:`RtpStream.receive` passes the time)."""


@dataclass(frozen=True)
class AudioReceived:
    """Caller audio, decoded to 16-bit little-endian 8 kHz PCM, one RTP packet's worth."""

    pcm: bytes
    """Usually 320 bytes (20 ms); whatever the peer's ptime gives."""
    at: float
    """Arrival time of the packet."""


Inbound = KeyPressed | AudioReceived


class Outbound(NamedTuple):
    """What one tick produces.

    A NamedTuple rather than a frozen dataclass: one is made per call per tick (20 000 a second
    at 400 calls) and a frozen dataclass's ``__init__`` costs several times a tuple's.
    """

    datagram: bytes | None
    """The RTP packet to send now, or None."""
    finished: tuple[int, ...] = ()
    """Plays whose last frame is in this tick's packet (or that were empty), in queue order."""


_NOTHING = Outbound(None)


@dataclass
class RtpCounters:
    """Per-call packet counts, for the call's summary log line and the benchmark."""

    sent: int = 0
    """RTP packets produced."""
    received: int = 0
    """Valid RTP packets accepted."""
    audio: int = 0
    """Received packets decoded as audio."""
    keys: int = 0
    """Keys reported (one per RFC 4733 event)."""
    event_packets: int = 0
    """Telephone-event packets, including the repeats of an event already reported."""
    other_events: int = 0
    """Telephone-events that are not keys (16 = hook flash, tones): ignored."""
    stale_events: int = 0
    """Telephone-event packets of an older event that arrived late: ignored."""
    other_payload: int = 0
    """Packets of another payload type (comfort noise, a codec not negotiated): ignored."""
    rtcp: int = 0
    """RTCP arriving on the RTP port (rtcp-mux): ignored."""
    garbage: int = 0
    """Datagrams that are not RTP at all: dropped."""
    lost: int = 0
    """Packets missing from the peer's sequence numbers (`ivr.sip.rtp_loss`)."""
    extra: dict[str, int] = field(default_factory=dict)
    """Counts the transport adds (wrong source, send errors)."""


@dataclass
class _Queued:
    play_id: int
    pcm: bytes
    """16-bit PCM, kept to re-encode the rest if a re-INVITE changes the codec mid-prompt."""
    payload: bytes
    """`pcm` encoded with `payload_type`, one byte per sample."""
    payload_type: int
    offset: int = 0
    """Samples (= payload bytes) already sent."""


class _EncodedCache:
    """Encoded prompt audio by (payload type, PCM content), LRU, bounded in bytes.

    aiortp's encoder costs ~70 ns a sample in pure Python (11 µs a frame): at 400 calls,
    encoding every frame on the clock would take half of each 20 ms tick. Plays are
    mostly the same shipped prompts, so each is encoded once at ``play()`` and every later
    call's ticks only slice the cached payload. ``bytes`` caches its hash, and a hit costs
    one ``memcmp`` of the PCM.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, bytes], bytes] = OrderedDict()
        self._size = 0
        self.hits = 0
        self.misses = 0

    def encode(self, payload_type: int, pcm: bytes) -> bytes:
        key = (payload_type, pcm)
        payload = self._entries.get(key)
        if payload is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return payload
        self.misses += 1
        payload = codec_for(payload_type).encode(pcm)
        cost = len(pcm) + len(payload)
        if cost <= self.max_bytes // 8:  # one huge play must not flush everything else
            self._entries[key] = payload
            self._size += cost
            while self._size > self.max_bytes:
                (_, old_pcm), old = self._entries.popitem(last=False)
                self._size -= len(old_pcm) + len(old)
        return payload

    def clear(self) -> None:
        self._entries.clear()
        self._size = 0


ENCODED_CACHE = _EncodedCache(max_bytes=32 * 1024 * 1024)
"""Process-wide: the shipped prompts (4.6 MB of PCM) fit many times over."""


_STALE_SPAN = 10 * CLOCK_RATE
"""How far back a telephone-event may start and still be a late repeat of an old event (10 s).

Further back is a timestamp discontinuity (a media relay switched sources under one SSRC), and
the event is taken as new: a key must never be lost to a clock jump.
"""


def payload_bounds(data: bytes) -> tuple[int, int] | None:
    """Where an RTP packet's payload starts and ends; None if `data` is not RTP (RFC 3550 §5.1).

    Checks what makes a packet unreadable — version 2, the CSRC list, the header extension's
    length and the padding count all inside the datagram — and nothing else: the extension's
    contents (RFC 8285 elements) are skipped unread, as §5.3.1 lets a receiver that does not
    use them do.
    """
    size = len(data)
    if size < 12:
        return None
    first = data[0]
    if first == _VERSION_BYTE:  # the usual packet: no CSRC, no extension, no padding
        return 12, size
    if first >> 6 != 2:
        return None
    start = 12 + 4 * (first & 0x0F)
    if first & 0x10:  # extension: 16-bit profile, 16-bit length in 32-bit words (§5.3.1)
        if size < start + 4:
            return None
        start += 4 + 4 * ((data[start + 2] << 8) | data[start + 3])
    if size < start:
        return None
    end = size
    if first & 0x20:  # padding: the last byte counts the padding bytes, itself included
        padding = data[-1]
        if not padding or padding > size - start:
            return None
        end = size - padding
    return start, end


def _late_repeat(newest: int, timestamp: int) -> bool:
    """Whether an event starting at `timestamp` began shortly before the `newest` one seen."""
    behind = (newest - timestamp) & 0xFFFFFFFF  # modulo wrap-around (RFC 3550 §A.1)
    return 0 < behind <= _STALE_SPAN


class RtpStream:
    """One call's RTP state, outgoing and incoming; drive it with `tick` and `receive`."""

    def __init__(
        self,
        *,
        payload_type: int = PCMU,
        dtmf_payload_type: int | None = 101,
        direction: str = "sendrecv",
        now: float = 0.0,
        silence_when_idle: bool = True,
        ssrc: int | None = None,
        sequence: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        self._codec = codec_for(payload_type)
        self.payload_type = payload_type
        """The negotiated audio payload type (0 or 8)."""
        self.dtmf_payload_type = dtmf_payload_type
        """The negotiated telephone-event payload type, None when the peer offered none."""
        self.direction = "sendrecv"
        """The peer's SDP direction."""
        self.silence_when_idle = silence_when_idle
        """Send encoded silence between prompts (True) or nothing (False); see ivr.sip.media."""
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc
        self._seq = secrets.randbits(16) if sequence is None else sequence
        self._ts_origin = secrets.randbits(32) if timestamp is None else timestamp
        self._first_tick: int | None = None
        self._last_sent_tick: int | None = None
        self._silence = self._codec.encode(bytes(FRAME_BYTES))
        self._queue: deque[_Queued] = deque()
        self._recent_events: deque[tuple[int, int, int]] = deque(maxlen=_RECENT_EVENTS)
        self._newest_event_ts: dict[int, int] = {}
        self._idle_since = now
        self.last_received: float | None = None
        """Arrival time of the last valid RTP packet, None before the first."""
        self.counters = RtpCounters()
        self._gaps = SequenceGaps()
        self.update(
            payload_type=payload_type,
            dtmf_payload_type=dtmf_payload_type,
            direction=direction,
            now=now,
        )

    # --- session ---

    def update(
        self, *, payload_type: int, dtmf_payload_type: int | None, direction: str, now: float
    ) -> None:
        """Apply a new offer/answer (re-INVITE, UPDATE): codec, event type, hold.

        SSRC, sequence and timestamp carry on (RFC 3264 §8: the same stream continues).
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown SDP direction {direction!r}")
        codec = codec_for(payload_type)
        if payload_type != self.payload_type:
            self._codec = codec
            self._silence = codec.encode(bytes(FRAME_BYTES))
        self.payload_type = payload_type
        self.dtmf_payload_type = dtmf_payload_type
        was_expecting = self.expects_audio
        self.direction = direction
        if self.expects_audio and not was_expecting:
            # Back from hold: the peer gets a full inactivity timeout again.
            self._idle_since = now

    @property
    def sends(self) -> bool:
        """Whether we may send: the peer receives (sendrecv/recvonly; RFC 3264 §6.1)."""
        return self.direction in ("sendrecv", "recvonly")

    @property
    def expects_audio(self) -> bool:
        """Whether the peer should be sending to us (sendrecv/sendonly)."""
        return self.direction in ("sendrecv", "sendonly")

    def idle_seconds(self, now: float) -> float:
        """How long the peer has been silent at the RTP level; 0 while it is not meant to send.

        The owner hangs up when this passes its RTP timeout (a dead peer, a lost BYE).
        """
        if not self.expects_audio:
            return 0.0
        since = self._idle_since if self.last_received is None else self.last_received
        return max(0.0, now - max(since, self._idle_since))

    # --- outgoing ---

    def play(self, pcm: bytes, play_id: int, *, cache: bool = True) -> None:
        """Queue 16-bit little-endian 8 kHz mono PCM after whatever is queued.

        ``cache=False`` for live audio (a bridged agent leg): it would only evict prompts.
        """
        pcm = bytes(pcm[: len(pcm) - len(pcm) % 2])
        if cache:
            payload = ENCODED_CACHE.encode(self.payload_type, pcm)
        else:
            payload = codec_for(self.payload_type).encode(pcm)
        self._queue.append(_Queued(play_id, pcm, payload, self.payload_type))

    def stop_playback(self) -> tuple[int, ...]:
        """Discard every queued play at once (barge-in); returns their ids, which never finish."""
        dropped = tuple(q.play_id for q in self._queue)
        self._queue.clear()
        return dropped

    @property
    def playing(self) -> bool:
        """Whether audio is queued."""
        return bool(self._queue)

    @property
    def queued(self) -> tuple[int, ...]:
        """Play ids in the queue, oldest first."""
        return tuple(q.play_id for q in self._queue)

    def tick(self, tick: int) -> Outbound:
        """The packet for shared-clock tick number `tick`, and the plays it finishes.

        While the peer holds us (sendonly/inactive) nothing is sent and the queue waits: a
        prompt the caller could not hear has not finished.
        """
        if self._first_tick is None:
            self._first_tick = tick
        if not self.sends:
            return _NOTHING
        if not self._queue:  # idle, the usual tick while a caller keys in or is heard
            if not self.silence_when_idle:
                return _NOTHING
            return Outbound(self._packet(tick, self._silence))
        finished: list[int] = []
        self._pop_empty(finished)
        if self._queue:
            current = self._queue[0]
            if current.payload_type != self.payload_type:
                # The codec changed mid-prompt (re-INVITE): re-encode what is left.
                left = current.pcm[2 * current.offset :]
                current.payload = current.payload[: current.offset] + self._codec.encode(left)
                current.payload_type = self.payload_type
            start = current.offset
            payload = current.payload[start : start + FRAME_SAMPLES]
            current.offset = start + FRAME_SAMPLES
            if len(payload) < FRAME_SAMPLES:
                payload += self._silence[len(payload) :]  # pad the last frame with silence
            if current.offset >= len(current.payload):
                finished.append(self._queue.popleft().play_id)
                self._pop_empty(finished)
        elif self.silence_when_idle:
            payload = self._silence
        else:
            return Outbound(None, tuple(finished)) if finished else _NOTHING
        return Outbound(self._packet(tick, payload), tuple(finished))

    def _pop_empty(self, finished: list[int]) -> None:
        while self._queue and not self._queue[0].payload:
            finished.append(self._queue.popleft().play_id)

    def _packet(self, tick: int, payload: bytes) -> bytes:
        assert self._first_tick is not None
        # Marker: first packet of a talkspurt, i.e. after any tick we did not send (RFC 3551 §4.1).
        marker = self._last_sent_tick is None or tick != self._last_sent_tick + 1
        self._last_sent_tick = tick
        timestamp = (self._ts_origin + FRAME_SAMPLES * (tick - self._first_tick)) & 0xFFFFFFFF
        header = _HEADER.pack(
            _VERSION_BYTE,
            (0x80 if marker else 0) | self.payload_type,
            self._seq,
            timestamp,
            self.ssrc,
        )
        self._seq = (self._seq + 1) & 0xFFFF
        self.counters.sent += 1
        return header + payload

    # --- incoming ---

    def receive(self, data: bytes, now: float, *, decode: bool = True) -> Inbound | None:
        """Take one datagram from the peer; return the key or the audio it carries, if any.

        ``decode=False`` when nobody listens to the caller's audio: decoding is most of the
        receive cost, and at hundreds of calls the receive path is what limits a process.
        """
        counters = self.counters
        if len(data) >= 2 and 192 <= data[1] <= 208:  # RTCP types 192-208 (RFC 5761 §4)
            counters.rtcp += 1
            return None
        bounds = payload_bounds(data)
        if bounds is None:
            counters.garbage += 1
            return None
        start, end = bounds
        counters.received += 1
        # Sequence number and SSRC straight from the fixed header (RFC 3550 §5.1).
        sequence, ssrc = _SEQ_SSRC.unpack_from(data, 2)
        counters.lost += self._gaps.push(ssrc, sequence)
        self.last_received = now
        pt = data[1] & 0x7F
        if pt == self.dtmf_payload_type:
            return self._telephone_event(data, start, end, now)
        codec = _CODECS.get(pt)
        if codec is None or end <= start:
            counters.other_payload += 1
            return None
        counters.audio += 1
        if not decode:
            return None
        # Decode by the packet's own static type: a peer that switches between PCMU and PCMA
        # mid-call (some gateways do after a re-INVITE) is still heard correctly.
        return AudioReceived(codec.decode(data[start:end]), now)

    def _telephone_event(self, data: bytes, start: int, end: int, now: float) -> KeyPressed | None:
        counters = self.counters
        counters.event_packets += 1
        if end - start < 4:  # RFC 4733 §2.3: event, E/R/volume, 16-bit duration
            counters.garbage += 1
            return None
        event = data[start]
        digit = EVENT_TO_DIGIT.get(event)
        if digit is None:
            # RFC 4733 §3.2: 16 is hook flash; 32-49 are fax/modem tones. Not keys, never fatal.
            counters.other_events += 1
            return None
        timestamp, ssrc = _TIMESTAMP_SSRC.unpack_from(data, 4)
        # RFC 4733 §2.5.1: every packet of one event carries the event's start timestamp, and
        # the end packet is sent three times. A key is one event: report it on the first packet
        # seen (whichever it is), never again for the same (SSRC, timestamp, event).
        key = (ssrc, timestamp, event)
        if key in self._recent_events:
            return None
        newest = self._newest_event_ts.get(ssrc)
        if newest is not None and _late_repeat(newest, timestamp):
            counters.stale_events += 1  # a late repeat of an event older than the last one
            return None
        self._recent_events.append(key)
        if len(self._newest_event_ts) > _RECENT_EVENTS:
            self._newest_event_ts.clear()  # SSRCs churning: stay bounded
        self._newest_event_ts[ssrc] = timestamp
        counters.keys += 1
        return KeyPressed(digit, now)
