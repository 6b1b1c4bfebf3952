"""Speech on Twilio calls through the listener the front ends share (`ivr.listening`): a stream
per call when the pool has room, listening with the node's grammar, the caller's audio decoded
to 16-bit 8 kHz PCM, barge-in at the first sound and the recognized words steering the dialog;
keypad-only when the pool is full or broken. The last test runs the real recognizer pool on the
Korean test model and the Korean test flow, the caller's words spoken by espeak-ng and carried
as µ-law Media Streams frames."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from aiortp.codecs.g711 import PcmuCodec
from structlog.testing import capture_logs

from ivr.flow.model import load_flow
from ivr.listening import Speech
from speech.model import SpeechModel, shared_model
from speech.recognizer import RecognizerPool
from speech.utterance import FinalResult, SpeechStarted

from .conftest import MakeHotline, call_sid, short_prompts

KOREAN_FLOW = Path(__file__).parents[1] / "sip" / "data" / "korean_flow.toml"


class FakeStream:
    """What the pool's ``open`` gives a call, recording what the listener asks of it."""

    def __init__(self, call_id: str, on_event: Callable[[Any], None]) -> None:
        self.call_id = call_id
        self.on_event = on_event
        self.calls: list[tuple[str, object]] = []
        self.fed: list[bytes] = []

    def listen(self, grammar: Sequence[str] | None) -> None:
        self.calls.append(("listen", tuple(grammar) if grammar is not None else None))

    def feed(self, pcm: bytes) -> None:
        self.fed.append(pcm)

    def stop(self) -> None:
        self.calls.append(("stop", None))

    def close(self) -> None:
        self.calls.append(("close", None))


class FakePool:
    """A pool with room for `room` calls (0: saturated); `broken` raises instead."""

    def __init__(self, room: int = 1, *, broken: bool = False) -> None:
        self.room = room
        self.broken = broken
        self.streams: list[FakeStream] = []

    def open(self, call_id: str, on_event: Callable[[Any], None]) -> FakeStream | None:
        if self.broken:
            raise RuntimeError("the recognizer workers are gone")
        if len(self.streams) >= self.room:
            return None
        self.streams.append(FakeStream(call_id, on_event))
        return self.streams[-1]


def fake_speech(pool: FakePool) -> Speech:
    return Speech(cast(RecognizerPool, pool), lambda phrase: phrase)


async def test_speech_steers_the_menu_and_hears_the_caller(
    make_hotline: MakeHotline, tmp_path: Path
) -> None:
    pool = FakePool()
    hotline = await make_hotline(
        speech=fake_speech(pool), library=short_prompts(tmp_path / "p", main_menu=3.0)
    )
    sid = call_sid(1)
    stream = await hotline.twilio.connect_call(sid)
    stream.caller_speaks()
    await stream.wait_mark(1)
    await stream.wait_for(lambda: len(stream.events("media")) > 15, what="the menu playing")
    [recognizer] = pool.streams
    assert recognizer.call_id == f"twilio-{sid}"
    call = hotline.front.calls[sid]
    assert call.session is not None
    assert call.session.context.speech_available is True
    [grammar] = [arg for op, arg in recognizer.calls if op == "listen"]
    assert isinstance(grammar, tuple)
    assert {"停电", "电费", "转人工", "电线落地"} <= set(grammar)
    # The caller's audio arrives as 20 ms of 16-bit 8 kHz PCM (µ-law silence decodes to 0s).
    await stream.wait_for(lambda: len(recognizer.fed) >= 5, what="audio fed")
    assert {len(p) for p in recognizer.fed} == {320}
    assert recognizer.fed[0] == PcmuCodec().decode(b"\xff" * 160)

    # The caller starts to speak over the menu: barge-in at the first sound.
    recognizer.on_event(SpeechStarted(audio_seconds=1.2))
    await stream.wait_for(lambda: stream.events("clear"), what="clear")
    recognizer.on_event(FinalResult("电费", 0.92))
    await stream.wait_mark(2)  # the billing menu
    await stream.stop()
    await hotline.wait_idle()
    assert hotline.front.completed[0].path == ["welcome", "main_menu", "billing_menu"]
    assert recognizer.calls[-1] == ("close", None)


@pytest.mark.parametrize("pool", [FakePool(room=0), FakePool(broken=True)], ids=["full", "broken"])
async def test_no_recognizer_means_a_keypad_only_call(
    make_hotline: MakeHotline, pool: FakePool
) -> None:
    hotline = await make_hotline(speech=fake_speech(pool))
    sid = call_sid(2)
    with capture_logs() as logs:
        stream = await hotline.twilio.connect_call(sid)
        await stream.wait_mark(2)
    call = hotline.front.calls[sid]
    assert call.session is not None
    assert call.session.context.speech_available is False
    if pool.broken:
        assert any(e["event"] == "speech listener failed, keypad only" for e in logs)
    await stream.press("3")  # keys work as ever
    await stream.wait_mark(3)
    await stream.stop()
    await hotline.wait_idle()


# ---------------------------------------------------------------------- the real Korean model


@pytest.fixture
async def korean_speech(korean_model_path: Path) -> AsyncIterator[Speech]:
    model: SpeechModel = shared_model(korean_model_path)
    pool = RecognizerPool(model.vosk, workers=1, max_streams=2)
    await pool.start()
    yield Speech(pool, model.segment)
    await pool.stop()


def spoken_ulaw(text: str) -> list[bytes]:
    """`text` said by espeak-ng in Korean, as Twilio would carry it: 20 ms µ-law frames."""
    for tool in ("espeak-ng", "sox"):
        assert shutil.which(tool), f"{tool} is missing (scripts/test installs it)"
    wav = subprocess.run(
        ["espeak-ng", "-v", "ko", "-s", "140", "--stdout", text], check=True, capture_output=True
    ).stdout
    raw = ["-t", "raw", "-e", "signed", "-b", "16", "-c", "1", "-r", "8000", "-"]
    pcm = subprocess.run(
        ["sox", "-t", "wav", "-", *raw], input=wav, check=True, capture_output=True
    ).stdout
    ulaw = PcmuCodec().encode(b"\x00" * 4800 + pcm)
    ulaw += b"\xff" * (-len(ulaw) % 160)
    return [ulaw[i : i + 160] for i in range(0, len(ulaw), 160)]


@pytest.mark.slow
@pytest.mark.tts
@pytest.mark.parametrize(("said", "kind"), [("미납", "billing"), ("단전", "outage_confirm")])
async def test_the_korean_test_flow_by_voice(
    make_hotline: MakeHotline, korean_speech: Speech, said: str, kind: str
) -> None:
    hotline = await make_hotline(the_flow=load_flow(KOREAN_FLOW), speech=korean_speech)
    stream = await hotline.twilio.connect_call(call_sid(3))
    stream.caller_speaks()
    await stream.wait_mark(2)  # the welcome, then the menu's question: now it listens
    stream.caller_speaks(spoken_ulaw(said))
    await stream.wait_for(
        lambda: hotline.front.completed or len(stream.marks()) >= 3,
        within=20.0,
        what=f"{said} recognized",
    )
    await stream.stop()
    await hotline.wait_idle()
    [summary] = hotline.front.completed
    assert summary.path[:3] == ["welcome", "menu", kind]
