"""A call's listener between the dialog and the real recognizer pool (Korean model)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from ivr.dialog import actions as act
from ivr.dialog import events as ev
from ivr.listening import CallListener, Speech
from speech.model import SpeechModel, shared_model
from speech.recognizer import RecognizerPool
from tests.speech.conftest import frames, silence, speak


@pytest.fixture(scope="module")
def model(korean_model_path: Path) -> SpeechModel:
    return shared_model(korean_model_path)


@pytest.fixture
async def speech(model: SpeechModel) -> AsyncIterator[Speech]:
    pool = RecognizerPool(model.vosk, workers=1, max_streams=2, end_silence=0.5)
    await pool.start()
    yield Speech(pool, model.segment)
    await pool.stop()


def listener(speech: Speech, fed: list[ev.Event], call_id: str = "c1") -> CallListener:
    made = speech.listener(call_id, fed.append)
    assert made is not None
    return made


async def say(listener: CallListener, pcm: bytes) -> None:
    """Feed `pcm` four times faster than real time (the pool drops a backlog over 1 s)."""
    for frame in frames(pcm):
        listener.audio(frame)
        await asyncio.sleep(0.005)


async def until(fed: list[ev.Event], kind: type) -> None:
    async with asyncio.timeout(10):
        while not any(isinstance(e, kind) for e in fed):  # noqa: ASYNC110 - pool posts events
            await asyncio.sleep(0.02)


async def test_flow_phrases_become_grammar_and_words_become_dialog_events(
    speech: Speech,
) -> None:
    fed: list[ev.Event] = []
    ear = listener(speech, fed)
    ear.start_collecting(act.StartCollecting(dtmf=True, speech=True, grammar=("단전", "미납")))
    await say(ear, silence(0.3) + speak("미납") + silence(1.0))
    await until(fed, ev.SpeechRecognized)
    assert isinstance(fed[0], ev.SpeechStarted)
    [result] = [e for e in fed if isinstance(e, ev.SpeechRecognized)]
    assert result.text == "미납"
    assert not ear.listening  # one result per collection: the dialog asks again if it wants


async def test_phrases_the_model_cannot_say_are_dropped_with_a_log_line(speech: Speech) -> None:
    fed: list[ev.Event] = []
    ear = listener(speech, fed)
    with capture_logs() as logs:
        grammar = ear.grammar(["停电", "단전", "단전", "단전미납"])
    assert grammar == ["단전", "단전 미납"]  # unknown dropped, duplicates once, runs segmented
    [line] = [entry for entry in logs if entry["event"].startswith("speech phrases not")]
    assert line["phrases"] == ["停电"]
    assert line["log_level"] == "warning"


async def test_a_grammar_of_only_unknown_phrases_leaves_the_collection_to_keys(
    speech: Speech,
) -> None:
    fed: list[ev.Event] = []
    ear = listener(speech, fed)
    ear.start_collecting(act.StartCollecting(dtmf=True, speech=True, grammar=("停电", "没电")))
    assert not ear.listening
    await say(ear, speak("단전") + silence(1.0))
    await asyncio.sleep(0.5)
    assert fed == []


async def test_words_after_the_dialog_stopped_listening_are_not_fed(speech: Speech) -> None:
    """A key press ended the collection while the caller was still talking."""
    fed: list[ev.Event] = []
    ear = listener(speech, fed)
    ear.start_collecting(act.StartCollecting(dtmf=True, speech=True, grammar=("단전",)))
    await say(ear, silence(0.2) + speak("단전"))
    ear.stop_collecting()
    await say(ear, silence(1.0))
    await asyncio.sleep(1.0)
    assert not any(isinstance(e, ev.SpeechRecognized) for e in fed)


async def test_a_full_pool_gives_no_listener(speech: Speech) -> None:
    first = listener(speech, [], "c1")
    second = listener(speech, [], "c2")
    assert speech.listener("c3", [].append) is None  # max_streams=2: keypad only
    first.close()
    third = speech.listener("c3", [].append)
    assert third is not None
    second.close()
    third.close()
