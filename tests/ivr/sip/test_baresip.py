"""baresip 1.0.0 against the in-process SIP server: an agent softphone registering with its
password, a caller keying through the 95598 menu, and the prompt audio the caller hears.

Every baresip runs headless on loopback with its own config folder (`baresip.py`); its blocking
helpers run in threads so the server's event loop keeps answering.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import sys
import wave
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from ivr.sip.prompt_audio import prompt_pcm
from ivr.sip.registrar import digest_ha1
from ivr.sip.server import SipServer
from sounds.audio import rms_dbfs
from sounds.catalog import Catalog, PromptLibrary, shipped_dir

sys.path.insert(0, str(Path(__file__).parent))
from baresip import Baresip, write_tone
from sipp import make_server

pytestmark = [
    pytest.mark.slow,
    # CI installs baresip (scripts/test); only a developer without it may skip these.
    pytest.mark.skipif(
        not shutil.which("baresip") and not os.environ.get("CI"), reason="needs Debian baresip"
    ),
]

AGENT, AGENT_PASSWORD = "1001", "agent-1001-pw"
CALLER = "13800138000"
TONE_HZ = 1000.0


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[SipServer]:
    """The hotline with its registrar: agent 1001 stored as an HA1, never as a password."""
    agents = tmp_path / "agents.toml"
    ha1 = digest_ha1(AGENT, "hotline", AGENT_PASSWORD)
    agents.write_text(f'realm = "hotline"\n[agents.{AGENT}]\nha1 = "{ha1}"\n')
    srv = make_server(sip_agents_file=agents)
    await srv.start()
    yield srv
    await srv.stop(0)


PhoneFactory = Callable[..., Awaitable[Baresip]]


@pytest.fixture
async def phone(tmp_path: Path) -> AsyncIterator[PhoneFactory]:
    """Start baresips (in a thread: the server must keep running); all stopped afterwards."""
    started: list[Baresip] = []

    async def start(name: str, account: str, **options: Any) -> Baresip:
        ua = Baresip(tmp_path / name, account, **options)
        started.append(ua)
        await asyncio.to_thread(ua.start)
        return ua

    yield start
    for ua in started:
        await asyncio.to_thread(ua.stop)


async def wait_for(ua: Baresip, pattern: str, within: float = 10.0) -> str:
    match = await asyncio.to_thread(ua.wait_for, pattern, within)
    return match.group(0)


async def wait_until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        # The server changes state as datagrams arrive; polling is the simplest wait.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def now() -> float:
    return asyncio.get_running_loop().time()


# ---------------------------------------------------------------------- the agent softphone


async def test_agent_softphone_registers_with_its_password(
    server: SipServer, phone: PhoneFactory
) -> None:
    registrar = server.registrar
    assert registrar is not None
    host, port = server.address
    account = f"<sip:{AGENT}@{host}:{port}>;auth_pass={AGENT_PASSWORD};regint=60;answermode=auto"
    agent = await phone("agent", account)
    await wait_for(agent, r"200 OK")
    (binding,) = registrar.lookup(AGENT, now())
    assert binding.source == ("127.0.0.1", agent.sip_port)
    # baresip's contact user is "<user>-<pointer>": what matters is where it leads.
    assert binding.contact.startswith(f"sip:{AGENT}")
    assert binding.contact.endswith(f"@127.0.0.1:{agent.sip_port}")
    assert 0 < binding.expires_in(now()) <= 60
    assert "baresip" in binding.user_agent
    # /quit unregisters (Expires: 0) before baresip exits.
    assert await asyncio.to_thread(agent.stop) == 0
    assert registrar.lookup(AGENT, now()) == []


async def test_agent_softphone_with_a_wrong_password_is_refused(
    server: SipServer, phone: PhoneFactory
) -> None:
    registrar = server.registrar
    assert registrar is not None
    host, port = server.address
    with structlog.testing.capture_logs() as logs:
        agent = await phone("intruder", f"<sip:{AGENT}@{host}:{port}>;auth_pass=guess;regint=60")
        await wait_for(agent, r"403 Forbidden")
    assert registrar.lookup(AGENT, now()) == []
    refused = [e for e in logs if e["event"] == "register refused"]
    assert refused
    assert refused[0]["reason"] == "wrong-password"


# ---------------------------------------------------------------------- a caller


async def dial(ua: Baresip, server: SipServer) -> None:
    host, port = server.address
    ua.command(f"/dial sip:95598@{host}:{port}")
    await wait_for(ua, r"Call established")


async def test_caller_keys_through_the_menu_with_rfc4733(
    server: SipServer, phone: PhoneFactory, tmp_path: Path
) -> None:
    """2 = fault repair, # = no account number: the flow walks on to its service steps."""
    tone = write_tone(tmp_path / "tone.wav", TONE_HZ, 30.0)
    caller = await phone("caller", f"<sip:{CALLER}@127.0.0.1>;regint=0", audio_source=tone)
    await dial(caller, server)
    await asyncio.sleep(6.0)  # the welcome prompt (4.6 s) is not interruptible
    caller.command("/sndcode 2")
    await asyncio.sleep(1.5)
    caller.command("/sndcode #")
    await asyncio.sleep(2.0)
    caller.command("/hangup")
    await wait_until(lambda: len(server.completed) == 1)
    [summary] = server.completed
    assert summary.path[:4] == ["welcome", "main_menu", "fault_account", "fault_address"]
    assert summary.slots["intent"] == "fault"
    assert summary.caller == CALLER
    assert summary.outcomes[-1].kind == "abandoned"  # the caller's BYE ended the call
    await wait_until(lambda: not server.calls)
    assert "audio: send DTMF digit: '2'" in caller.log()


# ---------------------------------------------------------------------- what the caller hears


FRAME = 80  # 10 ms at 8 kHz


def samples_of(path: Path) -> array[int]:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        samples = array("h", wav.readframes(wav.getnframes()))
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def envelope(samples: array[int] | list[int]) -> list[float]:
    """RMS per 10 ms frame."""
    return [
        math.sqrt(sum(s * s for s in samples[i : i + FRAME]) / FRAME)
        for i in range(0, len(samples) - FRAME + 1, FRAME)
    ]


def correlation(a: list[float] | array[int], b: list[float] | array[int]) -> float:
    """Normalized cross-correlation of two equal-length sequences (1.0 = same shape)."""
    n = len(b)
    ma, mb = sum(a) / n, sum(b) / n
    num = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    da = math.sqrt(sum((x - ma) ** 2 for x in a))
    db = math.sqrt(sum((y - mb) ** 2 for y in b))
    return num / (da * db) if da and db else 0.0


def find(reference: array[int], recording: array[int]) -> tuple[float, int]:
    """Where ``reference`` best lines up in ``recording``: (correlation, sample offset).

    Coarse by 10 ms envelopes, then sample-exact around the best frame; pure Python, about a
    second for a 5 s prompt in a 10 s recording.
    """
    ref_env, rec_env = envelope(reference), envelope(recording)
    span = len(ref_env)
    assert len(rec_env) >= span, "the recording is shorter than the prompt"
    _, frame = max(
        (correlation(rec_env[lag : lag + span], ref_env), lag)
        for lag in range(len(rec_env) - span + 1)
    )
    n, start = len(reference), frame * FRAME
    candidates = [
        at for at in range(start - FRAME, start + FRAME + 1) if at >= 0 and at + n <= len(recording)
    ]
    return max((correlation(recording[at : at + n], reference), at) for at in candidates)


def dominant_share(samples: array[int], frequency: float) -> float:
    """Share of the signal's power at ``frequency`` (Goertzel); a pure tone gives ~1."""
    n = len(samples)
    coeff = 2 * math.cos(2 * math.pi * frequency / 8000)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    total = sum(x * x for x in samples)
    return 2 * power / (n * total) if total else 0.0


async def test_caller_hears_the_welcome_prompt_intact(
    server: SipServer, phone: PhoneFactory, tmp_path: Path
) -> None:
    """baresip records what it hears: the IVR's welcome prompt, sample for sample (G.711 aside),
    at full length and speed; and the IVR hears the caller's tone."""
    tone = write_tone(tmp_path / "tone.wav", TONE_HZ, 30.0)
    caller = await phone(
        "listener", f"<sip:{CALLER}@127.0.0.1>;regint=0", audio_source=tone, record=True
    )
    with structlog.testing.capture_logs() as logs:
        await dial(caller, server)
        await asyncio.sleep(7.0)  # welcome (4.6 s), then the start of the main menu
        caller.command("/hangup")
        await wait_until(lambda: len(server.completed) == 1)
        await asyncio.to_thread(caller.stop)  # sndfile closes its WAVs
    [heard] = caller.recorded("dec")
    [sent] = caller.recorded("enc")
    recording = samples_of(heard)

    # Non-silent, and speech-like: the level moves (syllables, pauses), unlike a tone or noise.
    assert rms_dbfs(recording.tobytes()) > -35.0
    levels = [e for e in envelope(recording) if e > 0]
    mean = sum(levels) / len(levels)
    spread = math.sqrt(sum((e - mean) ** 2 for e in levels) / len(levels)) / mean
    assert spread > 0.5, f"level spread {spread:.2f}: not speech-like"

    # The welcome prompt is in there, whole and at the right speed: one alignment of the entire
    # 4.6 s prompt correlates almost perfectly (double-speed or clipped playback would not).
    library = PromptLibrary(Catalog.shipped(), [shipped_dir()])
    welcome_pcm = prompt_pcm("welcome", library)
    assert welcome_pcm is not None
    welcome = array("h", welcome_pcm)
    if sys.byteorder == "big":
        welcome.byteswap()
    score, offset = await asyncio.to_thread(find, welcome, recording)
    assert score > 0.95, f"welcome prompt correlation {score:.3f}"
    assert offset < 8000, "the welcome prompt starts within the first second of the call"
    assert len(recording) - offset > len(welcome), "the whole prompt was heard"
    # Nothing but the prompt before it: the first speech in the recording is the welcome.
    onset = next(i for i, e in enumerate(envelope(recording)) if e > 100) * FRAME
    assert abs(onset - offset) < 400

    # The other way: baresip sent the tone, and the IVR received a packet per 20 ms.
    assert dominant_share(samples_of(sent)[8000:16000], TONE_HZ) > 0.9
    closed = [e for e in logs if e["event"] == "media_closed"]
    assert closed
    assert closed[0]["received"] > 250  # 7 s at 50 packets/s, less setup
