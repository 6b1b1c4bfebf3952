"""Speech over SIP: a SIPp caller speaks (espeak-ng, G.711 RTP) and the IVR follows its words.

The real pipeline end to end: RTP in, µ-law decoded, the recognizer pool on the real Korean
Vosk model in grammar mode, the dialog's barge-in on the first sound of speech, the menu
branch chosen by the recognized word.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ivr.dialog import events as ev
from ivr.dialog.engine import CallContext
from ivr.flow.model import load_flow
from ivr.listening import Speech
from ivr.services import NotConnectedCrm, NotConnectedRouting
from ivr.session import CallSession
from ivr.settings import Settings, load_settings
from ivr.sip.server import SipCall, SipServer
from sounds.catalog import Catalog, PromptLibrary, shipped_dir
from speech.model import SpeechModel, shared_model
from speech.recognizer import RecognizerPool
from tests.speech.conftest import silence, speak

sys.path.insert(0, str(Path(__file__).parent))
from sipp import key_pcaps, run_sipp, sipp_available, uac_scenario, write_rtp_pcap

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not sipp_available() and not os.environ.get("CI"), reason="needs Debian sip-tester"
    ),
]

FLOW = Path(__file__).parent / "data" / "korean_flow.toml"
WELCOME_SECONDS = 4.6
"""The shipped welcome prompt (a play node: no barge-in, no listening)."""


class RecordingSession(CallSession):
    """The real session, keeping what the transport fed it and when."""

    fed: list[tuple[float, ev.Event]]

    def feed(self, event: ev.Event) -> None:
        self.fed.append((time.monotonic(), event))
        super().feed(event)


@pytest.fixture(scope="module")
def model(korean_model_path: Path) -> SpeechModel:
    return shared_model(korean_model_path)


@pytest.fixture
async def speech(model: SpeechModel) -> AsyncIterator[Speech]:
    pool = RecognizerPool(model.vosk, workers=1, max_streams=4)
    await pool.start()
    yield Speech(pool, model.segment)
    await pool.stop()


@pytest.fixture
async def server(speech: Speech) -> AsyncIterator[tuple[SipServer, list[RecordingSession]]]:
    base = load_settings()
    settings = Settings(**{**base.model_dump(), "sip_port": 0, "flow_file": FLOW})
    flow = load_flow(FLOW)
    sessions: list[RecordingSession] = []

    def session(context: CallContext, call: SipCall) -> CallSession:
        recording = RecordingSession(flow, context, call, NotConnectedCrm(), NotConnectedRouting())
        recording.fed = []
        sessions.append(recording)
        return recording

    srv = SipServer(
        settings,
        flow,
        PromptLibrary(Catalog.shipped(), [shipped_dir()]),
        crm=NotConnectedCrm(),
        routing=NotConnectedRouting(),
        session_factory=session,
        speech=speech,
    )
    await srv.start()
    yield srv, sessions
    await srv.stop(0)


def said(tmp_path: Path, name: str, text: str) -> Path:
    """A pcap of `text` spoken in Korean, with a little silence around it."""
    path = tmp_path / f"{name}.pcap"
    write_rtp_pcap(path, silence(0.2) + speak(text) + silence(1.2))
    return path


async def finished(srv: SipServer) -> Any:
    async with asyncio.timeout(15):
        while not srv.completed:  # noqa: ASYNC110 - the server appends as sessions end
            await asyncio.sleep(0.05)
    [summary] = srv.completed
    return summary


async def test_spoken_menu_choice_and_yes_reach_the_branch(
    server: tuple[SipServer, list[RecordingSession]], tmp_path: Path
) -> None:
    srv, sessions = server
    word, yes = said(tmp_path, "word", "단전"), said(tmp_path, "yes", "네")
    # Speak 2 s into the 32 s main menu (barge-in), then answer the confirmation.
    scenario = uac_scenario(
        [WELCOME_SECONDS + 2.0, "word", 4.0, "yes", 0.2],
        codecs=(0,),
        pcaps=[word, yes],
        hangup=False,
    )
    run: Any = await asyncio.to_thread(run_sipp, scenario, srv.address, tmp_path, timeout=60)
    assert run.returncode == 0, run.stdout[-2000:] + run.errors
    summary = await finished(srv)
    assert summary.path == ["welcome", "menu", "outage_confirm", "outage"]
    [session] = sessions
    heard = [e for _, e in session.fed if isinstance(e, ev.SpeechRecognized)]
    assert [h.text for h in heard] == ["단전", "네"]
    assert all(h.confidence >= srv.settings.speech_min_confidence for h in heard)
    # Barge-in: the menu prompt stopped at the first sound of the word, before its result.
    started = [t for t, e in session.fed if isinstance(e, ev.SpeechStarted)]
    recognized = [t for t, e in session.fed if isinstance(e, ev.SpeechRecognized)]
    assert len(started) >= 2
    assert started[0] < recognized[0] - 0.3  # the word and the end-of-speech silence


async def test_keys_still_work_when_the_caller_does_not_speak(
    server: tuple[SipServer, list[RecordingSession]], tmp_path: Path
) -> None:
    srv, sessions = server
    pcaps = key_pcaps("2", tmp_path)
    scenario = uac_scenario(
        [WELCOME_SECONDS + 1.0, "2", 0.2], codecs=(0,), pcaps=pcaps, hangup=False
    )
    run: Any = await asyncio.to_thread(run_sipp, scenario, srv.address, tmp_path, timeout=60)
    assert run.returncode == 0, run.stdout[-2000:] + run.errors
    summary = await finished(srv)
    assert summary.path == ["welcome", "menu", "billing"]
    [session] = sessions
    assert not [e for _, e in session.fed if isinstance(e, ev.SpeechRecognized)]


async def test_a_full_pool_leaves_the_call_on_keys(model: SpeechModel, tmp_path: Path) -> None:
    """No room in the recognizer pool: the call is answered keypad-only, never refused."""
    pool = RecognizerPool(model.vosk, workers=1, max_streams=1)
    await pool.start()
    speech = Speech(pool, model.segment)
    taken = pool.open("someone-else", lambda _event: None)
    assert taken is not None
    base = load_settings()
    settings = Settings(**{**base.model_dump(), "sip_port": 0, "flow_file": FLOW})
    srv = SipServer(
        settings,
        load_flow(FLOW),
        PromptLibrary(Catalog.shipped(), [shipped_dir()]),
        crm=NotConnectedCrm(),
        routing=NotConnectedRouting(),
        speech=speech,
    )
    await srv.start()
    try:
        scenario = uac_scenario(
            [WELCOME_SECONDS + 1.0, "3", 0.2],
            codecs=(0,),
            pcaps=key_pcaps("3", tmp_path),
            hangup=False,
        )
        run: Any = await asyncio.to_thread(run_sipp, scenario, srv.address, tmp_path, timeout=60)
        assert run.returncode == 0, run.stdout[-2000:] + run.errors
        summary = await finished(srv)
        assert summary.path == ["welcome", "menu", "meter"]
        assert srv.answered  # answered, keypad-only
    finally:
        await srv.stop(0)
        taken.close()
        await pool.stop()
