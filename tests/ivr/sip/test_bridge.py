"""The caller ↔ agent media bridge: re-framing and the jitter buffer on their own, then two real
MediaStreams on loopback (a PCMU caller, a PCMA agent) with a tone in on each side and the same
tone out on the other."""

from __future__ import annotations

import asyncio
import math
import struct
import sys
from array import array
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aiortp.packet import RtpPacket

from ivr.sip.bridge import BRIDGE_PLAY_ID, Bridge, Direction, FrameQueue
from ivr.sip.media import MediaConfig, MediaStream, OnAudio, OnDone, RemoteMedia
from ivr.sip.rtp_clock import Clocked, SendClock
from ivr.sip.rtp_stream import FRAME_BYTES, PCMA, PCMU, codec_for
from speech.dtmf import goertzel_power

LOOPBACK = "127.0.0.1"


def tone_pcm(freq: float, seconds: float, amplitude: float = 8000.0) -> bytes:
    n = round(8000 * seconds)
    samples = array(
        "h", (round(amplitude * math.sin(2 * math.pi * freq * i / 8000)) for i in range(n))
    )
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def samples_of(pcm: bytes) -> list[float]:
    values = array("h")
    values.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    if sys.byteorder == "big":
        values.byteswap()
    return [float(v) for v in values]


def dominant(pcm: bytes, lo: int = 100, hi: int = 3500, step: int = 10) -> tuple[float, float]:
    """(frequency with the most power, share of the total power within ±20 Hz of it)."""
    samples = samples_of(pcm)
    powers = {f: goertzel_power(samples, f) for f in range(lo, hi + 1, step)}
    peak = max(powers, key=lambda f: powers[f])
    total = sum(x * x for x in samples) / len(samples)
    near = max(goertzel_power(samples, peak + d) for d in range(-20, 21, 2))
    return float(peak), near / total if total else 0.0


# --------------------------------------------------------------------------- FrameQueue


def test_frame_queue_reframes_after_prefill():
    queue = FrameQueue(prefill_frames=2, max_frames=8)
    queue.push(bytes(240))  # a 15 ms packet
    assert queue.pop() is None  # prefilling
    queue.push(bytes(480))  # 30 ms: 45 ms in all
    assert queue.pop() == bytes(FRAME_BYTES)
    assert queue.pop() == bytes(FRAME_BYTES)
    assert len(queue) == 720 - 2 * FRAME_BYTES
    assert queue.pop() is None  # underrun: 5 ms left, fill again
    assert queue.stats.underruns == 1
    queue.push(bytes(FRAME_BYTES))
    assert queue.pop() is None  # 25 ms < 40 ms of prefill
    queue.push(bytes(FRAME_BYTES))
    assert queue.pop() is not None
    assert queue.stats.frames == 3


def test_frame_queue_keeps_order_and_trims_a_peer_that_runs_ahead():
    queue = FrameQueue(prefill_frames=2, max_frames=4)
    frames = [bytes([i]) * FRAME_BYTES for i in range(6)]
    for frame in frames:
        queue.push(frame)
    # The 5th frame is one too many: back to the 2 newest, the oldest audio dropped.
    assert queue.stats.trimmed_bytes == 3 * FRAME_BYTES
    assert [queue.pop() for _ in range(3)] == frames[3:]
    queue.push(b"\x01\x02\x03")  # an odd byte is dropped, the samples stay aligned
    assert len(queue) == 2


def test_frame_queue_rejects_a_silly_budget():
    with pytest.raises(ValueError, match="prefill"):
        FrameQueue(prefill_frames=4, max_frames=4)


# --------------------------------------------------------------------------- the Bridge, faked


@dataclass
class FakeStream:
    on_audio: OnAudio | None = None
    played: list[bytes] = field(default_factory=list)
    playing: bool = False

    def play(self, pcm16_8k: bytes, play_id: int, on_done: OnDone, *, cache: bool = True) -> None:
        assert play_id == BRIDGE_PLAY_ID
        assert cache is False  # live audio must not evict cached prompts
        self.played.append(pcm16_8k)


@dataclass
class FakeClock:
    members: list[Clocked] = field(default_factory=list)

    def add(self, stream: Clocked) -> None:
        self.members.append(stream)

    def remove(self, stream: Clocked) -> None:
        self.members.remove(stream)

    def tick(self, n: int) -> None:
        for member in list(self.members):
            member.send_tick(n)


def test_bridge_forwards_both_ways_chains_listeners_and_restores_them():
    heard: list[bytes] = []
    caller, agent = FakeStream(on_audio=heard.append), FakeStream()
    clock = FakeClock()
    tapped: list[tuple[Direction, bytes]] = []
    bridge = Bridge(caller, agent, clock, tap=lambda d, f: tapped.append((d, f)), prefill_frames=1)
    bridge.start()
    bridge.start()  # twice is harmless
    assert clock.members == [bridge]
    hello, there = b"\x01\x00" * 160, b"\x02\x00" * 160
    assert caller.on_audio is not None
    assert agent.on_audio is not None
    caller.on_audio(hello)
    agent.on_audio(there)
    clock.tick(0)
    assert agent.played == [hello]
    assert caller.played == [there]
    assert heard == [hello]  # the IVR still hears the caller while bridged
    assert tapped == [("caller_to_agent", hello), ("agent_to_caller", there)]
    clock.tick(1)  # nothing buffered: nothing played (the streams send their idle silence)
    assert len(agent.played) == len(caller.played) == 1
    bridge.stop()
    assert clock.members == []
    assert caller.on_audio == heard.append
    assert agent.on_audio is None
    bridge.stop()


def test_a_stream_that_does_not_send_gets_no_backlog():
    """On hold (or with a prompt playing) a stream keeps its queue: the bridge drops frames
    instead of piling them up, so after the hold the agent hears the caller live."""
    caller, agent = FakeStream(), FakeStream(playing=True)
    bridge = Bridge(caller, agent, FakeClock(), prefill_frames=1)
    bridge.start()
    assert caller.on_audio is not None
    for tick in range(50):
        caller.on_audio(bytes([tick]) * FRAME_BYTES)
        bridge.send_tick(tick)
    assert agent.played == []
    assert bridge.to_agent.stats.blocked == 50
    assert len(bridge.to_agent) == 0
    agent.playing = False  # back from hold
    caller.on_audio(bytes([99]) * FRAME_BYTES)
    bridge.send_tick(50)
    assert agent.played == [bytes([99]) * FRAME_BYTES]
    bridge.stop()


def test_a_failing_stream_does_not_stop_the_other_direction():
    class Broken(FakeStream):
        def play(
            self, pcm16_8k: bytes, play_id: int, on_done: OnDone, *, cache: bool = True
        ) -> None:
            raise RuntimeError("boom")

    caller, agent = FakeStream(), Broken()
    bridge = Bridge(caller, agent, FakeClock(), prefill_frames=1)
    bridge.start()
    assert caller.on_audio is not None
    assert agent.on_audio is not None
    caller.on_audio(bytes(FRAME_BYTES))
    agent.on_audio(bytes(FRAME_BYTES))
    bridge.send_tick(0)
    assert caller.played == [bytes(FRAME_BYTES)]
    bridge.stop()


# --------------------------------------------------------------------------- real streams


@dataclass
class Phone(asyncio.DatagramProtocol):
    """A far end on a bare UDP socket: sends paced RTP, keeps what arrives."""

    received: list[RtpPacket] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.received.append(RtpPacket.parse(data))

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    async def send_tone(
        self, to: tuple[str, int], pt: int, freq: float, seconds: float, ptime_ms: int
    ) -> None:
        """Paced like a phone: one packet every `ptime_ms`, on an absolute schedule."""
        assert self.transport is not None
        codec = codec_for(pt)
        samples = 8 * ptime_ms
        pcm = tone_pcm(freq, seconds)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n, offset in enumerate(range(0, len(pcm) - 2 * samples + 1, 2 * samples)):
            payload = codec.encode(pcm[offset : offset + 2 * samples])
            header = struct.pack("!BBHII", 0x80, pt, n, n * samples, 0x1234)
            self.transport.sendto(header + payload, to)
            await asyncio.sleep(max(0.0, start + (n + 1) * ptime_ms / 1000 - loop.time()))

    def audio(self, pt: int) -> bytes:
        """The decoded audio of the packets of payload type `pt`, in arrival order."""
        codec = codec_for(pt)
        return b"".join(codec.decode(p.payload) for p in self.received if p.payload_type == pt)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@pytest.fixture
async def clock() -> AsyncIterator[SendClock]:
    clock = SendClock()
    clock.start()
    yield clock
    await clock.stop()


async def open_phone() -> Phone:
    _, phone = await asyncio.get_running_loop().create_datagram_endpoint(
        Phone, local_addr=(LOOPBACK, 0)
    )
    return phone


async def wait_for(condition: Callable[[], bool], within: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_pcmu_caller_and_pcma_agent_hear_each_other_through_the_ivr(clock):
    caller_phone, agent_phone = await open_phone(), await open_phone()
    config = MediaConfig(host=LOOPBACK, silence_when_idle=True)
    keys: list[str] = []
    caller = await MediaStream.open(
        RemoteMedia(caller_phone.address, PCMU, 101), clock=clock, config=config
    )
    agent = await MediaStream.open(
        RemoteMedia(agent_phone.address, PCMA, 101),
        clock=clock,
        config=config,
        on_key=lambda digit, _at: keys.append(digit),
    )
    bridge = Bridge(caller, agent, clock, call_id="bridge-test")
    try:
        bridge.start()
        # The caller speaks 440 Hz in 30 ms µ-law packets, the agent 1 kHz in 20 ms A-law.
        await asyncio.gather(
            caller_phone.send_tone(caller.local_address, PCMU, 440.0, 1.5, ptime_ms=30),
            agent_phone.send_tone(agent.local_address, PCMA, 1000.0, 1.5, ptime_ms=20),
        )
        await asyncio.sleep(0.2)
    finally:
        bridge.stop()
        caller.close()
        agent.close()
        caller_phone.close()
        agent_phone.close()
        await asyncio.sleep(0)
    # Each phone gets its own codec, in 20 ms packets, whatever the other side sent.
    assert {p.payload_type for p in agent_phone.received} == {PCMA}
    assert {p.payload_type for p in caller_phone.received} == {PCMU}
    assert {len(p.payload) for p in agent_phone.received} == {160}
    to_agent = agent_phone.audio(PCMA)
    to_caller = caller_phone.audio(PCMU)
    # Skip the idle silence before the bridged audio; analyse one second of tone.
    for heard, freq in ((to_agent, 440.0), (to_caller, 1000.0)):
        samples = samples_of(heard)
        first = next(i for i, v in enumerate(samples) if abs(v) > 1000)
        window = heard[2 * first + 1600 : 2 * first + 1600 + 2 * 8000]
        assert len(window) == 16000, "less than a second of bridged tone"
        peak, purity = dominant(window)
        assert abs(peak - freq) <= 10, (freq, peak)
        assert purity > 0.9, (freq, purity)  # re-framing and transcoding leave it clean
    assert bridge.to_agent.stats.frames >= 70
    assert bridge.to_caller.stats.frames >= 70
    assert keys == []


async def test_agent_keys_are_not_forwarded_to_the_caller(clock):
    caller_phone, agent_phone = await open_phone(), await open_phone()
    config = MediaConfig(host=LOOPBACK, silence_when_idle=True)
    caller = await MediaStream.open(
        RemoteMedia(caller_phone.address, PCMU, 101), clock=clock, config=config
    )
    agent = await MediaStream.open(
        RemoteMedia(agent_phone.address, PCMA, 101), clock=clock, config=config
    )
    bridge = Bridge(caller, agent, clock)
    bridge.start()
    try:
        assert agent_phone.transport is not None
        # RFC 4733 "5" from the agent's phone (start, then the end packet three times).
        for end in (0x00, 0x80, 0x80, 0x80):
            header = struct.pack("!BBHII", 0x80, 101, 7, 8000, 0x55)
            agent_phone.transport.sendto(header + bytes([5, end | 10, 0, 160]), agent.local_address)
        await wait_for(lambda: agent.counters.keys == 1)
        await asyncio.sleep(0.2)
    finally:
        bridge.stop()
        caller.close()
        agent.close()
        caller_phone.close()
        agent_phone.close()
        await asyncio.sleep(0)
    assert caller_phone.received  # idle silence flows...
    assert {p.payload_type for p in caller_phone.received} == {PCMU}  # ...and no event
    assert bridge.to_caller.stats.frames == 0
