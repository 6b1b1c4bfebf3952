"""An outbound agent leg to a real softphone: baresip 1.0.0 (headless, auto-answer) on loopback.

The hotline's UAC (`ivr.sip.uac.SipClient`, pumped over a real UDP socket by a small asyncio
harness) calls baresip directly at its ``sip_listen`` address, no registrar in between. The leg
must stay up past 35 s — pyVoIP's agent legs dropped at 32 s because its ACK carried a made-up
To-tag, so the phone never saw an ACK and gave up after 64*T1 — with audio both ways: baresip
plays a 1 kHz tone from a WAV (``audio_source aufile``) that our MediaStream must hear, and
records with ``sndfile`` the 440 Hz tone we send. Then we hang up with a BYE that baresip
answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import socket
import subprocess
import sys
import wave
from array import array
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from aiosipua import SipMessage, SipResponse

from ivr.sip.events import Addr
from ivr.sip.media import MediaConfig, MediaStream, RemoteMedia
from ivr.sip.rtp_clock import SendClock
from ivr.sip.uac import SipClient
from ivr.sip.uac_events import LegAnswered, LegEnded, LegEvent, LegRinging
from ivr.sip.uac_messages import sdp_offer
from speech.dtmf import goertzel_power

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("baresip") is None, reason="needs Debian baresip"),
]

LOOPBACK = "127.0.0.1"
HOLD_SECONDS = 36.0
"""Longer than 64*T1 = 32 s, when a phone that never got its ACK gives up."""


# --------------------------------------------------------------------------- audio helpers


def tone_pcm(freq: float, seconds: float, amplitude: float = 8000.0) -> bytes:
    n = round(8000 * seconds)
    samples = array(
        "h", (round(amplitude * math.sin(2 * math.pi * freq * i / 8000)) for i in range(n))
    )
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def write_wav(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(pcm)


def read_wav(path: Path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        return wav.readframes(wav.getnframes())


def dominant(pcm: bytes) -> tuple[float, float]:
    """(frequency 100-3500 Hz with the most power, share of all power within ±20 Hz of it)."""
    values = array("h")
    values.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    if sys.byteorder == "big":
        values.byteswap()
    samples = [float(v) for v in values]
    powers = {f: goertzel_power(samples, f) for f in range(100, 3501, 10)}
    peak = max(powers, key=lambda f: powers[f])
    total = sum(x * x for x in samples) / len(samples)
    near = max(goertzel_power(samples, peak + d) for d in range(-20, 21, 2))
    return float(peak), near / total if total else 0.0


def loud_second(pcm: bytes, skip_seconds: float) -> bytes:
    """One second of audio starting `skip_seconds` after the first loud sample."""
    values = array("h")
    values.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    first = next((i for i, v in enumerate(values) if abs(v) > 1000), None)
    assert first is not None, "no tone at all"
    start = 2 * (first + round(8000 * skip_seconds))
    window = pcm[start : start + 16000]
    assert len(window) == 16000, "less than a second of tone"
    return window


# --------------------------------------------------------------------------- baresip


def free_port() -> int:
    """A port free for both UDP and TCP on loopback (baresip listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


@dataclass
class Baresip:
    """A running baresip agent phone and where to find its output."""

    sip: Addr
    console: Addr
    folder: Path
    log: Path
    process: subprocess.Popen[bytes]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def command(self, text: str) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(text.encode(), self.console)

    def recordings(self, kind: str) -> list[Path]:
        """sndfile's WAVs: ``dec`` is what the phone heard, ``enc`` what it sent."""
        return sorted((self.folder / "rec").glob(f"dump-*-{kind}.wav"))


@pytest.fixture
def baresip(tmp_path: Path) -> Iterator[Baresip]:
    """baresip as an auto-answering agent phone that plays a 1 kHz tone and records."""
    folder = tmp_path / "baresip"
    (folder / "rec").mkdir(parents=True)
    tone = folder / "tone_1khz.wav"
    write_wav(tone, tone_pcm(1000.0, 90.0))  # longer than the call: aufile stops at its end
    sip_port, console_port = free_port(), free_port()
    config = {
        "poll_method": "epoll",
        "sip_listen": f"{LOOPBACK}:{sip_port}",
        "audio_source": f"aufile,{tone}",
        "audio_player": "aufile,/dev/null",  # no player: sndfile still sees the decoded audio
        "audio_alert": "aufile,/dev/null",
        "ausrc_srate": "8000",
        "auplay_srate": "8000",
        "ausrc_channels": "1",
        "auplay_channels": "1",
        "rtcp_mux": "no",
        "module_path": "/usr/lib/baresip/modules",
        "cons_listen": f"{LOOPBACK}:{console_port}",
        "snd_path": str(folder / "rec"),
    }
    lines = [f"{key}\t{value}" for key, value in config.items()]
    lines += [f"module\t{m}" for m in ("g711.so", "aufile.so", "sndfile.so", "cons.so")]
    lines += [f"module_app\t{m}" for m in ("account.so", "menu.so")]
    (folder / "config").write_text("\n".join(lines) + "\n")
    (folder / "accounts").write_text(f"<sip:agent@{LOOPBACK}>;regint=0;answermode=auto\n")
    log = folder / "baresip.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["baresip", "-f", str(folder), "-n", LOOPBACK, "-t", "120"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    phone = Baresip((LOOPBACK, sip_port), (LOOPBACK, console_port), folder, log, process)
    try:
        for _ in range(100):
            if "baresip is ready" in phone.output():
                break
            assert process.poll() is None, phone.output()
            with contextlib.suppress(Exception):
                process.wait(0.05)
        else:
            raise AssertionError(f"baresip did not start:\n{phone.output()}")
        yield phone
    finally:
        if process.poll() is None:
            phone.command("q")  # the menu's quit key (a UDP "/quit" is ignored by 1.0.0)
            try:
                process.wait(3)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(3)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


# --------------------------------------------------------------------------- the UAC's pump


@dataclass
class Endpoint(asyncio.DatagramProtocol):
    """The hotline's SIP socket in miniature: pumps a SipClient (what server.py will do)."""

    client: SipClient | None = None
    transport: asyncio.DatagramTransport | None = None
    events: asyncio.Queue[LegEvent] = field(default_factory=asyncio.Queue)
    received: list[SipMessage] = field(default_factory=list)
    foreign: int = 0
    _timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        assert self.client is not None
        with contextlib.suppress(ValueError):
            self.received.append(SipMessage.parse(data))
        now = asyncio.get_running_loop().time()
        if not self.client.receive_datagram(data, (str(addr[0]), int(addr[1])), now):
            self.foreign += 1  # the server would hand it to the UAS core
        self.pump()

    def pump(self) -> None:
        assert self.client is not None
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        for data, addr in self.client.datagrams_to_send(loop.time()):
            self.transport.sendto(data, addr)
        while (event := self.client.next_event()) is not None:
            self.events.put_nowait(event)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.client.get_timer()
        if when is not None:
            self._timer = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        assert self.client is not None
        self._timer = None
        self.client.handle_timer(asyncio.get_running_loop().time())
        self.pump()

    @property
    def address(self) -> Addr:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def responses(self, method: str) -> list[SipResponse]:
        return [
            m
            for m in self.received
            if isinstance(m, SipResponse)
            and (m.headers.get_first("cseq") or "").split()[-1:] == [method]
        ]

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    loop = asyncio.get_running_loop()
    _, endpoint = await loop.create_datagram_endpoint(Endpoint, local_addr=(LOOPBACK, 0))
    endpoint.client = SipClient(local_addr=endpoint.address)
    yield endpoint
    endpoint.close()
    await asyncio.sleep(0)


@pytest.fixture
async def clock() -> AsyncIterator[SendClock]:
    clock = SendClock()
    clock.start()
    yield clock
    await clock.stop()


async def next_event(endpoint: Endpoint, within: float = 5.0) -> LegEvent:
    return await asyncio.wait_for(endpoint.events.get(), within)


# --------------------------------------------------------------------------- the test


async def test_agent_leg_to_baresip_stays_up_past_35_s_with_audio_both_ways(
    baresip: Baresip, endpoint: Endpoint, clock: SendClock
) -> None:
    loop = asyncio.get_running_loop()
    client = endpoint.client
    assert client is not None
    heard: list[bytes] = []
    media = await MediaStream.open(
        RemoteMedia(None, 0, 101), clock=clock, config=MediaConfig(host=LOOPBACK),
        on_audio=heard.append, call_id="agent-leg",
    )  # fmt: skip
    try:
        target = f"sip:agent@{baresip.sip[0]}:{baresip.sip[1]}"
        offer = sdp_offer(LOOPBACK, media.local_address[1])
        leg = client.invite(target, baresip.sip, offer, loop.time(), from_user="95598")
        endpoint.pump()
        first = await next_event(endpoint)
        assert isinstance(first, LegRinging | LegAnswered), first
        answered = first if isinstance(first, LegAnswered) else await next_event(endpoint)
        assert isinstance(answered, LegAnswered), answered
        up_at = loop.time()
        media.update(RemoteMedia.from_sdp(answered.remote_sdp))
        media.play(tone_pcm(440.0, HOLD_SECONDS + 5), 1, lambda _id: None)

        # Hold the leg past 64*T1. Nothing may end it, and the agent's RTP must keep coming.
        received_at_30 = 0
        while (elapsed := loop.time() - up_at) < HOLD_SECONDS:
            with contextlib.suppress(TimeoutError):
                event = await asyncio.wait_for(endpoint.events.get(), 1.0)
                raise AssertionError(f"the leg did not stay up: {event} after {elapsed:.1f} s")
            if received_at_30 == 0 and elapsed >= 30.0:
                received_at_30 = media.counters.received
        assert loop.time() - up_at >= 35.0
        assert "terminated" not in baresip.output()  # the phone still has the call
        assert media.counters.received - received_at_30 >= 200  # ≥ 4 s of RTP after 30 s
        assert media.idle_seconds() < 1.0
        # The phone got our ACK the first time: it never resent its 2xx.
        assert [r.status_code for r in endpoint.responses("INVITE") if r.status_code >= 200] == [
            200
        ]
        assert endpoint.foreign == 0

        client.bye(leg, loop.time())
        endpoint.pump()
        assert await next_event(endpoint) == LegEnded(leg, "local_bye")
        for _ in range(100):
            if endpoint.responses("BYE") and "terminated" in baresip.output():
                break
            await asyncio.sleep(0.05)
        assert [r.status_code for r in endpoint.responses("BYE")] == [200]
        assert "terminated" in baresip.output()
    finally:
        media.close()

    # The agent's 1 kHz tone reached our MediaStream...
    peak, purity = dominant(loud_second(b"".join(heard), skip_seconds=10.0))
    assert abs(peak - 1000.0) <= 10, peak
    assert purity > 0.9, purity
    # ...and baresip's recorder heard our 440 Hz tone.
    (recording,) = baresip.recordings("dec")
    for _ in range(40):  # sndfile closes the file when the call is torn down
        with contextlib.suppress(wave.Error, EOFError):
            pcm = read_wav(recording)
            if len(pcm) > 16000 * 20:
                break
        await asyncio.sleep(0.05)
    peak, purity = dominant(loud_second(pcm, skip_seconds=10.0))
    assert abs(peak - 440.0) <= 10, peak
    assert purity > 0.9, purity
    assert endpoint.events.empty()
