"""`hotline serve` with Twilio configured, as a real process: it says the front end is on and
where Twilio should send calls, answers a signed call on the SIP front end's send clock, refuses
an unsigned one, and stops cleanly; contradictory Twilio settings stop it at start-up."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.ivr.serve_process import ServeProcess, start_serve

from .conftest import ACCOUNT_SID, API_KEY, AUTH_TOKEN, TwilioSide, call_sid

START_TIMEOUT = 15.0
STOP_TIMEOUT = 8.0


def start_twilio_serve(workdir: Path, **extra: str) -> ServeProcess:
    """`hotline serve` with this test's Twilio settings (TWILIO_* of this shell ignored)."""
    return start_serve(
        workdir, node_id="twilio-serve-test", ignore=("HOTLINE_", "TWILIO_"), **extra
    )


TWILIO_ON = {
    "HOTLINE_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
    "HOTLINE_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
    "HOTLINE_TWILIO_PUBLIC_URL": "https://ivr.example.cn",
}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeProcess]:
    server = start_twilio_serve(tmp_path, **TWILIO_ON)
    try:
        yield server
    finally:
        server.finish()


@pytest.mark.slow
async def test_serve_answers_twilio_calls(serve: ServeProcess) -> None:
    on = await asyncio.to_thread(serve.wait_for, "twilio front end on", START_TIMEOUT)
    assert on["voice_url"] == "https://ivr.example.cn/twilio/voice"
    assert on["status_url"] == "https://ivr.example.cn/twilio/status"
    listening = await asyncio.to_thread(serve.wait_for, "web listening", START_TIMEOUT)
    local = f"http://127.0.0.1:{listening['port']}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{local}/healthz") as response:
            health = await response.json()
        assert health["twilio"] == "on: voice webhook https://ivr.example.cn/twilio/voice"
        twilio = TwilioSide(http, local)
        sid = call_sid(0x5E7E)
        code, _ = await twilio.post("/twilio/voice", twilio.voice_params(sid), signature=None)
        assert code == 403
        stream = await twilio.connect_call(sid)
        # The real welcome (4.6 s), paced on the SIP front end's send clock.
        assert await stream.wait_mark(1, within=10.0) == "play-1"
        frames = stream.events("media")
        assert len(frames) > 100  # 4.5 s of prompt
        assert frames[-1].at - frames[0].at > 2.0
        await stream.stop()
        await stream.wait_closed()
        await twilio.close()
    serve.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(serve.proc.wait, STOP_TIMEOUT) == 0
    await asyncio.to_thread(serve.wait_for, "stopped", STOP_TIMEOUT)
    events = [line.get("event") for line in serve.lines]
    assert "twilio front end stopped" in events
    assert events.index("twilio front end stopped") < events.index("node left routing")
    ended = [line for line in serve.lines if line.get("event") == "call ended"]
    assert [line["channel"] for line in ended] == ["twilio"]


@pytest.mark.slow
def test_serve_refuses_an_api_key_without_its_secret(tmp_path: Path) -> None:
    server = start_twilio_serve(tmp_path, **TWILIO_ON, HOTLINE_TWILIO_API_KEY=API_KEY)
    try:
        assert server.proc.wait(timeout=START_TIMEOUT) == 1
        line = server.wait_for("twilio front end cannot start", 1.0)
        assert "twilio_api_key is set but twilio_api_secret is not" in line["error"]
    finally:
        server.finish()
