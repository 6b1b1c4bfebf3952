"""`hotline serve` with Twilio configured, as a real process: it says the front end is on and
where Twilio should send calls, answers a signed call on the SIP front end's send clock, refuses
an unsigned one, and stops cleanly; contradictory Twilio settings stop it at start-up."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest

from .conftest import ACCOUNT_SID, API_KEY, AUTH_TOKEN, TwilioSide, call_sid

START_TIMEOUT = 15.0
STOP_TIMEOUT = 8.0


class Serve:
    """A `hotline serve` process whose JSON log lines are read on a thread."""

    def __init__(self, workdir: Path, **extra: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HOTLINE_", "TWILIO_"))}
        env |= {
            "HOTLINE_WEB_PORT": "0",
            "HOTLINE_SIP_PORT": "0",
            "HOTLINE_LOG_FORMAT": "json",
            "HOTLINE_NODE_ID": "twilio-serve-test",
            "HOTLINE_SHUTDOWN_GRACE_SECONDS": "2",
            **extra,
        }
        script = Path(sys.executable).with_name("hotline")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "ivr"]
        self.proc = subprocess.Popen(
            [*command, "serve"],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.lines: list[dict[str, Any]] = []
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        assert self.proc.stderr is not None
        threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for raw in stream:
            try:
                self._queue.put(json.loads(raw))
            except json.JSONDecodeError:
                self._queue.put({"event": raw.rstrip("\n"), "not_json": True})
        self._queue.put(None)

    def wait_for(self, event: str, within: float) -> dict[str, Any]:
        deadline = time.monotonic() + within
        for line in self.lines:
            if line.get("event") == event:
                return line
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if item is None:
                break
            self.lines.append(item)
            if item.get("event") == event:
                return item
        seen = [line.get("event") for line in self.lines]
        raise AssertionError(f"no {event!r} log line within {within}s; saw {seen}")

    def finish(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=STOP_TIMEOUT)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


TWILIO_ON = {
    "HOTLINE_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
    "HOTLINE_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
    "HOTLINE_TWILIO_PUBLIC_URL": "https://ivr.example.cn",
}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    server = Serve(tmp_path, **TWILIO_ON)
    try:
        yield server
    finally:
        server.finish()


@pytest.mark.slow
async def test_serve_answers_twilio_calls(serve: Serve) -> None:
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
    server = Serve(tmp_path, **TWILIO_ON, HOTLINE_TWILIO_API_KEY=API_KEY)
    try:
        assert server.proc.wait(timeout=START_TIMEOUT) == 1
        line = server.wait_for("twilio front end cannot start", 1.0)
        assert "twilio_api_key is set but twilio_api_secret is not" in line["error"]
    finally:
        server.finish()
