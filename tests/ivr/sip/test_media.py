"""MediaStream and the shared send clock over real UDP on loopback, against a plain socket peer."""

from __future__ import annotations

import asyncio
import itertools
import math
import socket
import sys
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aiortp.dtmf import DtmfEvent
from aiortp.packet import RtpPacket
from aiosipua import SdpMessage, parse_sdp
from structlog.testing import capture_logs

from ivr.sip.media import MediaConfig, MediaStream, RemoteMedia, RtpPorts
from ivr.sip.rtp_clock import AnyClock, SendClock, ThreadSendClock
from ivr.sip.rtp_stream import PCMA, PCMU, codec_for
from speech.dtmf import DtmfDetector, goertzel_power

LOOPBACK = "127.0.0.1"


def tone_pcm(freq: float, seconds: float, amplitude: float = 10000.0) -> bytes:
    n = round(8000 * seconds)
    samples = array(
        "h", (round(amplitude * math.sin(2 * math.pi * freq * i / 8000)) for i in range(n))
    )
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


@dataclass
class Peer(asyncio.DatagramProtocol):
    """The far end: a bare UDP socket that records what arrives and when."""

    received: list[tuple[float, RtpPacket, tuple[str, int]]] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        now = asyncio.get_running_loop().time()
        self.received.append((now, RtpPacket.parse(data), (addr[0], addr[1])))
        self.arrived.set()

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, to)

    def packets(self) -> list[RtpPacket]:
        return [p for _, p, _ in self.received]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_peer() -> Peer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(Peer, local_addr=(LOOPBACK, 0))
    return peer


@pytest.fixture(params=["thread", "loop"])
async def clock(request: pytest.FixtureRequest) -> AsyncIterator[AnyClock]:
    """Both send clocks: a node's own thread, and the task on the loop."""
    clock: AnyClock = ThreadSendClock() if request.param == "thread" else SendClock()
    clock.start()
    yield clock
    await clock.stop()


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    peer = await open_peer()
    yield peer
    peer.close()
    await asyncio.sleep(0)  # let the transports finish closing before the loop ends


OpenStream = Callable[..., Awaitable[MediaStream]]


@pytest.fixture
async def open_stream(clock: AnyClock, peer: Peer) -> AsyncIterator[OpenStream]:
    """Open MediaStreams towards `peer` (PCMU, no idle silence unless asked); closed after."""
    streams: list[MediaStream] = []

    async def factory(
        pt: int = PCMU, *, silence: bool = False, remote: Peer | None = None, **kwargs: Any
    ) -> MediaStream:
        config = kwargs.pop("config", MediaConfig(silence_when_idle=silence))
        target = (remote or peer).address
        stream = await MediaStream.open(
            RemoteMedia(target, pt, 101), clock=clock, config=config, **kwargs
        )
        streams.append(stream)
        return stream

    yield factory
    for stream in streams:
        stream.close()
    await asyncio.sleep(0)


async def wait_for(condition: Callable[[], bool], within: float = 3.0) -> None:
    """Poll `condition` (packets arrive on their own schedule; there is no event to await)."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - polling loopback sockets, bounded by the timeout
            await asyncio.sleep(0.005)


def purity(pcm: bytes, freq: float) -> float:
    """Share of the signal's power at `freq` (1.0 = a pure tone)."""
    samples = [float(x) for x in array("h", pcm)]
    total = sum(x * x for x in samples) / len(samples)
    return goertzel_power(samples, freq) / total


# --- outgoing audio ---


@pytest.mark.parametrize("pt", [PCMU, PCMA], ids=["PCMU", "PCMA"])
async def test_a_tone_prompt_arrives_whole_at_50_packets_a_second(
    clock: AnyClock, open_stream: OpenStream, peer: Peer, pt: int
) -> None:
    # A loaded machine may stall the loop: catch every missed tick up rather than skip it, so
    # the packets below are the prompt's own, whatever the load. (Skipping is pinned in
    # test_media_clock.py.)
    clock.max_catch_up = 1_000_000
    stream = await open_stream(pt)
    done: list[int] = []
    stream.play(tone_pcm(1000, 1.0), 1, done.append)
    await wait_for(lambda: done == [1])
    await wait_for(lambda: len(peer.received) >= 50)
    await asyncio.sleep(0.1)  # nothing more comes: no idle silence in this test
    packets = peer.packets()
    assert len(packets) == 50
    assert {p.payload_type for p in packets} == {pt}
    seqs = [p.sequence_number for p in packets]
    assert [(b - a) & 0xFFFF for a, b in itertools.pairwise(seqs)] == [1] * 49
    # 50 packets a second: one per 20 ms tick, 160 samples apart, in one talkspurt. (Arrival
    # times are not asserted: pacing on real time is the benchmark's to measure; on virtual
    # time it is pinned in test_media_clock.py.)
    stamps = [p.timestamp for p in packets]
    assert [(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(stamps)] == [160] * 49
    assert [p.marker for p in packets] == [1] + [0] * 49
    assert len({p.ssrc for p in packets}) == 1
    # What the caller hears is a clean 1 kHz tone.
    pcm = codec_for(pt).decode(b"".join(p.payload for p in packets))
    assert purity(pcm, 1000) > 0.99
    for other in (500, 1500, 2000, 3000):
        assert purity(pcm, other) < 0.001


async def test_idle_silence_keeps_packets_flowing(open_stream: OpenStream, peer: Peer) -> None:
    stream = await open_stream(PCMA, silence=True)
    await wait_for(lambda: len(peer.received) >= 10)
    assert {p.payload for p in peer.packets()} == {b"\xd5" * 160}
    assert stream.counters.sent >= 10


async def test_stop_playback_stops_the_audio_within_one_tick(
    open_stream: OpenStream, peer: Peer
) -> None:
    stream = await open_stream()
    done: list[int] = []
    stream.play(tone_pcm(1000, 5.0), 1, done.append)
    stream.play(tone_pcm(1000, 1.0), 2, done.append)
    await wait_for(lambda: len(peer.received) >= 10)
    stream.stop_playback()
    assert not stream.playing
    sent = stream.counters.sent
    await asyncio.sleep(0.2)  # ten more ticks
    # Nothing from a later tick: the peer got only what was sent before the stop (counted,
    # not timed by arrival, which a loaded machine delays).
    assert stream.counters.sent == sent
    assert len(peer.received) == sent
    assert done == []


async def test_on_done_fires_once_per_play_in_order(open_stream: OpenStream, peer: Peer) -> None:
    stream = await open_stream()
    done: list[tuple[int, int]] = []

    def on_done(play_id: int) -> None:
        done.append((play_id, stream.counters.sent))

    stream.play(tone_pcm(1000, 0.06), 1, on_done)  # 3 frames
    stream.play(b"", 2, on_done)  # nothing to say: done with the next tick
    stream.play(tone_pcm(500, 0.1), 3, on_done)  # 5 frames
    await wait_for(lambda: len(done) == 3)
    await asyncio.sleep(0.1)
    assert done == [(1, 3), (2, 3), (3, 8)]  # (play, packets sent when it finished)
    assert len(peer.received) == 8


async def test_a_failing_on_done_is_logged_and_the_call_goes_on(
    open_stream: OpenStream, peer: Peer
) -> None:
    stream = await open_stream()
    done: list[int] = []

    def broken(play_id: int) -> None:
        raise RuntimeError("boom")

    with capture_logs() as logs:
        stream.play(tone_pcm(1000, 0.02), 1, broken)
        stream.play(tone_pcm(1000, 0.02), 2, done.append)
        await wait_for(lambda: done == [2])
    assert any(e["event"] == "media_callback_failed" for e in logs)


async def test_hold_stops_sending_and_resume_continues(open_stream: OpenStream, peer: Peer) -> None:
    stream = await open_stream(silence=True)
    await wait_for(lambda: len(peer.received) >= 3)
    stream.update(RemoteMedia(peer.address, PCMU, 101, "sendonly"))
    await asyncio.sleep(0.03)
    count = len(peer.received)
    await asyncio.sleep(0.15)
    assert len(peer.received) == count  # on hold: not a packet
    stream.update(RemoteMedia(peer.address, PCMU, 101, "sendrecv"))
    await wait_for(lambda: len(peer.received) >= count + 3)
    first_after = peer.packets()[count]
    assert first_after.marker == 1
    assert first_after.sequence_number == (peer.packets()[count - 1].sequence_number + 1) & 0xFFFF


async def test_c_0_0_0_0_hold_sends_nowhere(open_stream: OpenStream, peer: Peer) -> None:
    stream = await open_stream(silence=True)
    await wait_for(lambda: len(peer.received) >= 2)
    stream.update(RemoteMedia(("0.0.0.0", 4000), PCMU, 101, "sendrecv"))
    assert stream.send_address is None
    await asyncio.sleep(0.03)
    count = len(peer.received)
    await asyncio.sleep(0.1)
    assert len(peer.received) == count


async def test_re_invite_moves_the_stream_to_a_new_address(
    open_stream: OpenStream, peer: Peer
) -> None:
    stream = await open_stream(silence=True)
    await wait_for(lambda: len(peer.received) >= 2)
    other = await open_peer()
    try:
        stream.update(RemoteMedia(other.address, PCMA, 101, "sendrecv"))
        await wait_for(lambda: len(other.received) >= 3)
        assert {p.payload_type for p in other.packets()} == {PCMA}
        assert other.packets()[0].ssrc == peer.packets()[0].ssrc
    finally:
        other.close()


# --- incoming ---


def event_packets(event: int, timestamp: int, *, seq: int = 0) -> list[bytes]:
    """3 progress packets with one timestamp, then the end packet three times (RFC 4733)."""
    datagrams = []
    for i in range(6):
        end = i >= 3
        payload = DtmfEvent(event=event, end=end, volume=10, duration=160 * min(i + 1, 4))
        packet = RtpPacket(
            payload_type=101,
            marker=int(i == 0),
            sequence_number=seq + i,
            timestamp=timestamp,
            ssrc=4242,
            payload=payload.serialize(),
        )
        datagrams.append(packet.serialize())
    return datagrams


async def test_rfc4733_keys_over_udp(open_stream: OpenStream, peer: Peer) -> None:
    keys: list[str] = []
    stream = await open_stream(on_key=lambda digit, at: keys.append(digit))
    target = stream.local_address

    async def send(datagrams: list[bytes]) -> None:
        for d in datagrams:
            peer.send(d, target)
        await asyncio.sleep(0.05)

    five = event_packets(5, 16000)
    await send(five)
    assert keys == ["5"]
    await send(five)  # the same event again: still one key
    assert keys == ["5"]
    await send(event_packets(16, 17600, seq=6))  # hook flash: ignored, nothing breaks
    await send([b"\x00garbage", bytes(3), b"\x80" * 11, b"\x40" * 40])  # not RTP: ignored
    assert keys == ["5"]
    await send(event_packets(5, 19200, seq=12))  # a new timestamp: a second press
    await send(event_packets(11, 20800, seq=18))
    assert keys == ["5", "5", "#"]
    c = stream.counters
    assert (c.keys, c.other_events, c.garbage) == (3, 6, 4)


def key_burst(count: int) -> tuple[list[bytes], list[str]]:
    """`count` one-packet key presses, each its own event (a newer timestamp), and their digits."""
    digits = "0123456789*#"
    datagrams = [
        RtpPacket(
            payload_type=101,
            sequence_number=i,
            timestamp=8000 * (i + 1),
            ssrc=4242,
            payload=DtmfEvent(event=i % 12, end=True, volume=10, duration=640).serialize(),
        ).serialize()
        for i in range(count)
    ]
    return datagrams, [digits[i % 12] for i in range(count)]


async def test_a_burst_of_queued_datagrams_is_read_in_one_wake_up(
    open_stream: OpenStream, peer: Peer
) -> None:
    keys: list[tuple[str, float]] = []
    stream = await open_stream(on_key=lambda digit, at: keys.append((digit, at)))
    datagrams, digits = key_burst(40)
    # A blocking socket: on loopback every datagram is in the stream's queue when sendto returns.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for d in datagrams:
            sender.sendto(d, stream.local_address)
    # Two rounds of the loop: the first polls the socket and queues its reader after this task,
    # the second runs it. asyncio's datagram transport reads one datagram per round; the
    # stream's reader takes the whole queue in its one wake-up, in order, at one arrival time.
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [digit for digit, _ in keys] == digits
    assert len({at for _, at in keys}) == 1
    assert stream.counters.received == 40


async def test_a_burst_longer_than_one_wake_up_is_all_delivered_in_order(
    open_stream: OpenStream, peer: Peer
) -> None:
    keys: list[str] = []
    stream = await open_stream(on_key=lambda digit, at: keys.append(digit))
    datagrams, digits = key_burst(150)  # more than one wake-up reads; within the socket buffer
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for d in datagrams:
            sender.sendto(d, stream.local_address)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert 0 < len(keys) < 150  # one wake-up is bounded: other calls' sockets get their turn
    await wait_for(lambda: len(keys) == 150)
    assert keys == digits
    c = stream.counters
    assert (c.received, c.keys, c.garbage, c.extra) == (150, 150, 0, {})


async def test_a_callback_that_closes_the_call_mid_burst_stops_the_reading(
    open_stream: OpenStream, peer: Peer
) -> None:
    keys: list[str] = []
    holder: list[MediaStream] = []

    def on_key(digit: str, at: float) -> None:
        keys.append(digit)
        if len(keys) == 3:
            holder[0].close()  # the caller hung up on the third key: the rest is never read

    stream = await open_stream(on_key=on_key)
    holder.append(stream)
    datagrams, digits = key_burst(10)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for d in datagrams:
            sender.sendto(d, stream.local_address)
    await asyncio.sleep(0.05)
    assert keys == digits[:3]
    assert stream.counters.received == 3


async def test_garbage_inside_a_burst_loses_none_of_the_rest(
    open_stream: OpenStream, peer: Peer
) -> None:
    keys: list[str] = []
    stream = await open_stream(on_key=lambda digit, at: keys.append(digit))
    datagrams, digits = key_burst(6)
    mixed = [datagrams[0], b"\x00garbage", datagrams[1], bytes(3), *datagrams[2:]]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for d in mixed:
            sender.sendto(d, stream.local_address)
    await wait_for(lambda: len(keys) == 6)
    assert keys == digits
    assert stream.counters.garbage == 2


async def test_caller_audio_reaches_on_audio_and_the_inband_detector(
    open_stream: OpenStream, peer: Peer
) -> None:
    detector = DtmfDetector()
    heard: list[str] = []
    chunks: list[bytes] = []

    def on_audio(pcm: bytes) -> None:
        chunks.append(pcm)
        heard.extend(detector.feed(pcm))

    stream = await open_stream(PCMA, on_audio=on_audio)
    codec = codec_for(PCMA)
    # Key "7" (852 + 1209 Hz) as audio, 100 ms, then silence: a trunk without RFC 4733.
    n = 800
    tone = array(
        "h",
        (
            round(6000 * math.sin(2 * math.pi * 852 * i / 8000))
            + round(6000 * math.sin(2 * math.pi * 1209 * i / 8000))
            for i in range(n)
        ),
    ).tobytes()
    audio = bytes(640) + tone + bytes(1600)
    for seq, start in enumerate(range(0, len(audio), 320)):
        packet = RtpPacket(
            payload_type=PCMA,
            sequence_number=seq,
            timestamp=160 * seq,
            ssrc=9,
            payload=codec.encode(audio[start : start + 320]),
        )
        peer.send(packet.serialize(), stream.local_address)
    await wait_for(lambda: len(chunks) == len(audio) // 320)
    assert heard == ["7"]
    assert all(len(c) == 320 for c in chunks)
    assert stream.idle_seconds() < 0.5


async def test_packets_from_a_stranger_are_dropped_once_latched(
    open_stream: OpenStream, peer: Peer
) -> None:
    keys: list[str] = []
    stream = await open_stream(on_key=lambda d, at: keys.append(d))
    stranger = await open_peer()
    try:
        for d in event_packets(1, 1000):
            peer.send(d, stream.local_address)
        await wait_for(lambda: keys == ["1"])
        with capture_logs() as logs:
            for d in event_packets(2, 3000):
                stranger.send(d, stream.local_address)
            await asyncio.sleep(0.05)
        assert keys == ["1"]
        assert stream.counters.extra["wrong_source"] == 6
        # One log line for the burst, not six (rate-limited).
        assert [e["kind"] for e in logs if e["event"] == "rtp_dropped"] == ["wrong_source"]
    finally:
        stranger.close()


async def test_symmetric_rtp_latches_onto_a_natted_source(
    open_stream: OpenStream, peer: Peer
) -> None:
    # The SDP names `peer`, but the phone's packets come from another address (NAT).
    stream = await open_stream(silence=True)
    natted = await open_peer()
    try:
        for d in event_packets(3, 1000):
            natted.send(d, stream.local_address)
        await wait_for(lambda: len(natted.received) >= 3)
        assert stream.send_address == natted.address
    finally:
        natted.close()


async def test_strict_source_checking_without_symmetric_rtp(
    open_stream: OpenStream, peer: Peer
) -> None:
    keys: list[str] = []
    stream = await open_stream(
        config=MediaConfig(symmetric_rtp=False), on_key=lambda d, at: keys.append(d)
    )
    stranger = await open_peer()
    try:
        for d in event_packets(3, 1000):
            stranger.send(d, stream.local_address)
        await asyncio.sleep(0.05)
        assert keys == []
        assert stream.send_address == peer.address
    finally:
        stranger.close()


async def test_idle_seconds_grows_without_rtp(open_stream: OpenStream) -> None:
    stream = await open_stream()
    await asyncio.sleep(0.1)
    assert stream.idle_seconds() >= 0.09


async def test_close_is_idempotent_and_logs_one_summary(
    clock: AnyClock, open_stream: OpenStream
) -> None:
    stream = await open_stream(call_id="c-1")
    assert len(clock) == 1
    with capture_logs() as logs:
        stream.close()
        stream.close()
    assert len(clock) == 0
    assert [e["call_id"] for e in logs if e["event"] == "media_closed"] == ["c-1"]


async def test_ports_come_from_the_configured_range(clock: AnyClock, peer: Peer) -> None:
    ports = RtpPorts(41000, 41010)
    config = MediaConfig(ports=ports)
    streams = [
        await MediaStream.open(RemoteMedia(peer.address), clock=clock, config=config)
        for _ in range(3)
    ]
    try:
        got = [s.local_address[1] for s in streams]
        assert len(set(got)) == 3
        assert all(41000 <= p <= 41010 and p % 2 == 0 for p in got)
    finally:
        for s in streams:
            s.close()


async def test_a_full_port_range_is_an_error(clock: AnyClock, peer: Peer) -> None:
    config = MediaConfig(ports=RtpPorts(41100, 41101))
    first = await MediaStream.open(RemoteMedia(peer.address), clock=clock, config=config)
    try:
        with pytest.raises(OSError, match="no free RTP port"):
            await MediaStream.open(RemoteMedia(peer.address), clock=clock, config=config)
    finally:
        first.close()


# --- the send clock under load ---


class CountingPeer(asyncio.DatagramProtocol):
    """A far end for many streams that only counts packets per SSRC (parsing costs loop time)."""

    def __init__(self) -> None:
        self.per_ssrc: Counter[bytes] = Counter()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.per_ssrc[data[8:12]] += 1


@pytest.mark.parametrize("calls", [50, 200])
async def test_send_clock_serves_every_stream_every_tick(clock: AnyClock, calls: int) -> None:
    loop = asyncio.get_running_loop()
    transport, sink = await loop.create_datagram_endpoint(CountingPeer, local_addr=(LOOPBACK, 0))
    target = transport.get_extra_info("sockname")[:2]
    streams = [
        await MediaStream.open(RemoteMedia(target, PCMU if i % 2 else PCMA), clock=clock)
        for i in range(calls)
    ]
    try:
        for i, s in enumerate(streams):
            s.play(tone_pcm(1000, 3.0), i, lambda play_id: None)
        await asyncio.sleep(0.2)
        clock.reset_stats()
        sink.per_ssrc.clear()
        await asyncio.sleep(2.0)
        stats = clock.stats()
        received = dict(sink.per_ssrc)
    finally:
        for s in streams:
            s.close()
        transport.close()
        await asyncio.sleep(0)
    print(
        f"\n{calls} streams: ticks={stats.ticks} gap p50={stats.p50_ms:.2f} ms "
        f"p99={stats.p99_ms:.2f} ms max={stats.max_ms:.2f} ms "
        f"busy p99={stats.busy_p99_ms:.2f} ms skipped={stats.skipped}"
    )
    # Correctness only; how regular the gaps are is measured by bench/sip_load, not asserted
    # here (a loaded CI machine would make a timing bound flaky).
    # Every stream is served: none starves while others send (the receiver shares this loop
    # and a loaded machine may drop some datagrams on loopback, so no exact counts).
    assert len(received) == calls
    assert min(received.values()) >= max(received.values()) // 2
    # (Drift and catch-up are pinned deterministically in test_media_clock.py.)


# --- negotiated parameters and ports (no sockets) ---


def sdp(media: str, *, connection: str = "127.0.0.1", extra: str = "") -> SdpMessage:
    return parse_sdp(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"
        f"c=IN IP4 {connection}\r\nt=0 0\r\n{media}\r\n{extra}"
    )


def test_remote_media_from_an_offer() -> None:
    offer = sdp(
        "m=audio 40000 RTP/AVP 8 0 101",
        extra="a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n",
    )
    assert RemoteMedia.from_sdp(offer) == RemoteMedia(("127.0.0.1", 40000), PCMA, 101, "sendrecv")
    # A re-INVITE that still offers the codec in use keeps it.
    assert RemoteMedia.from_sdp(offer, PCMU).payload_type == PCMU


def test_remote_media_hold_and_no_telephone_event() -> None:
    held = sdp("m=audio 40000 RTP/AVP 0", extra="a=sendonly\r\n")
    assert RemoteMedia.from_sdp(held) == RemoteMedia(("127.0.0.1", 40000), PCMU, None, "sendonly")
    old_style = sdp("m=audio 40000 RTP/AVP 0", connection="0.0.0.0")  # RFC 2543 hold
    assert RemoteMedia.from_sdp(old_style) == RemoteMedia(None, PCMU, None, "inactive")


def test_remote_media_needs_g711() -> None:
    with pytest.raises(ValueError, match="neither PCMU nor PCMA"):
        RemoteMedia.from_sdp(sdp("m=audio 40000 RTP/AVP 9 18"))


def test_rtp_ports_are_even_and_handed_out_round_robin() -> None:
    ports = RtpPorts(10001, 10010)
    assert ports.first == 10002
    assert list(ports.candidates()) == [10002, 10004, 10006, 10008, 10010]
    assert next(ports.candidates()) == 10004
    assert next(ports.candidates()) == 10006
    for bad in ((0, 10), (20000, 10000), (7, 7)):
        with pytest.raises(ValueError, match="port"):
            RtpPorts(*bad)
