"""`hotline serve` as a real process: it starts, answers /healthz, and stops cleanly on a signal."""

from __future__ import annotations

import json
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ivr.serve_process import ServeProcess, start_serve

START_TIMEOUT = 15.0
MODEL_START_TIMEOUT = 60.0
"""Loading the speech model takes seconds of CPU (20 s seen on a loaded 2-core machine)."""
STOP_TIMEOUT = 5.0


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeProcess]:
    server = start_serve(tmp_path)
    try:
        yield server
    finally:
        server.finish()


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 — loopback http URL
        body: dict[str, object] = json.load(resp)
        return body


def test_serve_answers_health_and_stops_on_sigterm(serve: ServeProcess) -> None:
    listening = serve.wait_for("web listening", START_TIMEOUT)
    port = listening["port"]
    assert isinstance(port, int)
    assert port > 0  # the port the OS picked, not the 0 we asked for
    assert listening["url"] == f"http://127.0.0.1:{port}/"

    health = get_json(f"http://127.0.0.1:{port}/healthz")
    assert health["status"] == "ok"
    assert health["node_id"] == "serve-test"
    assert health["speech"] == "off (keypad only): HOTLINE_VOSK_MODEL not set"
    sip = serve.wait_for("sip listening", 0)
    # Start-up's objects are out of the garbage collector's full collections (ivr/heap.py).
    assert serve.wait_for("heap frozen", STOP_TIMEOUT)["objects"] > 100_000
    # glibc's free pages go back to the OS every 5 minutes (ivr/malloc.py).
    assert serve.wait_for("heap trimmer", STOP_TIMEOUT)["trim"] == "every 300 s"
    assert health["sip"] == f"listening on udp 127.0.0.1:{sip['port']}"
    assert str(health["routing"]).startswith("redis 6.2")
    assert str(health["routing"]).endswith("(embedded), tenant default")
    assert health["crm"] == "embedded"
    assert health["outbox"] == {"backlog": 0, "oldest_age_seconds": 0.0, "dead_letters": 0}
    assert serve.wait_for("crm bridge started", 0)["outbox"] == "var/crm/outbox.sqlite3"
    redis_pid = serve.wait_for("embedded redis started", 0)["pid"]
    assert isinstance(redis_pid, int)
    # The agents API reaches routing on the embedded Redis.
    login = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/agents/A1/login",
        data=json.dumps({"skills": {"general": 3}, "ready": True}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(login, timeout=5) as resp:  # noqa: S310 — loopback http URL
        assert json.load(resp)["agent"]["state"] == "available"
    agents = get_json(f"http://127.0.0.1:{port}/api/agents")
    assert [a["agent_id"] for a in agents["agents"]] == ["A1"]
    # ... and the tickets API the embedded CRM store.
    assert get_json(f"http://127.0.0.1:{port}/api/tickets")["tickets"] == []
    assert get_json(f"http://127.0.0.1:{port}/api/outbox")["dead_letters"] == []

    serve.proc.send_signal(signal.SIGTERM)
    assert serve.proc.wait(timeout=STOP_TIMEOUT) == 0
    serve.drain(STOP_TIMEOUT)
    events = [line.get("event") for line in serve.lines]
    assert events.count("speech: DTMF-only, HOTLINE_VOSK_MODEL not set") == 1
    assert "sip stopped" in events
    stopping = serve.wait_for("stopping", 0)
    assert stopping["signal"] == "SIGTERM"
    stopped = serve.wait_for("stopped", 0)
    assert stopped["forced"] is False
    assert events[-1] == "stopped"
    assert not [line for line in serve.lines if line.get("not_json")]
    # The embedded Redis went with it, its data kept for the next start.
    assert events.index("sip stopped") < events.index("node left routing")
    assert events.index("node left routing") < events.index("embedded redis stopped")
    assert not Path(f"/proc/{redis_pid}").exists() or _zombie(redis_pid)


def test_serve_stops_on_sigint(serve: ServeProcess) -> None:
    serve.wait_for("web listening", START_TIMEOUT)
    serve.proc.send_signal(signal.SIGINT)
    assert serve.proc.wait(timeout=STOP_TIMEOUT) == 0
    serve.drain(STOP_TIMEOUT)
    assert serve.wait_for("stopping", 0)["signal"] == "SIGINT"
    serve.wait_for("stopped", 0)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize("clock", ["thread", "loop"])
def test_serve_says_which_send_clock_it_runs(tmp_path: Path, clock: str) -> None:
    server = start_serve(tmp_path, HOTLINE_SIP_SEND_CLOCK=clock)
    try:
        starting = server.wait_for("hotline starting", START_TIMEOUT)
        assert starting["event_loop"] == "asyncio"
        assert starting["send_clock"] == clock
        listening = server.wait_for("web listening", START_TIMEOUT)
        assert get_json(f"http://127.0.0.1:{listening['port']}/healthz")["status"] == "ok"
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=STOP_TIMEOUT) == 0
    finally:
        server.finish()


def test_serve_uses_a_configured_redis(tmp_path: Path, redis_server: Any) -> None:
    server = start_serve(tmp_path, HOTLINE_REDIS_URL=redis_server.url, HOTLINE_ROUTING_TENANT="t9")
    try:
        listening = server.wait_for("web listening", START_TIMEOUT)
        health = get_json(f"http://127.0.0.1:{listening['port']}/healthz")
        assert health["routing"] == (
            f"redis {redis_server.version} (redis://127.0.0.1:{redis_server.port}/0), tenant t9"
        )
        assert not (tmp_path / "var" / "redis").exists()  # no embedded server was started
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=STOP_TIMEOUT) == 0
    finally:
        server.finish()


def test_serve_refuses_a_bad_redis_url(tmp_path: Path) -> None:
    server = start_serve(tmp_path, HOTLINE_REDIS_URL="http://127.0.0.1:1/")
    try:
        assert server.proc.wait(timeout=START_TIMEOUT) == 1
        server.drain(STOP_TIMEOUT)
        failed = server.wait_for("routing cannot start", 0)
        assert "not a Redis URL" in str(failed["error"])
    finally:
        server.finish()


def test_serve_refuses_an_http_crm_without_its_url(tmp_path: Path) -> None:
    server = start_serve(tmp_path, HOTLINE_CRM_BACKEND="http")
    try:
        assert server.proc.wait(timeout=START_TIMEOUT) == 1
        server.drain(STOP_TIMEOUT)
        failed = server.wait_for("crm bridge cannot start", 0)
        assert "HOTLINE_CRM_URL" in str(failed["error"])
        events = [line.get("event") for line in server.lines]
        assert "embedded redis stopped" in events  # what had started was stopped again
    finally:
        server.finish()


def test_serve_listens_with_the_configured_model(tmp_path: Path, korean_model_path: Path) -> None:
    server = start_serve(tmp_path, HOTLINE_VOSK_MODEL=str(korean_model_path))
    try:
        listening = server.wait_for("web listening", MODEL_START_TIMEOUT)
        health = get_json(f"http://127.0.0.1:{listening['port']}/healthz")
        assert health["speech"] == "vosk model, 2 workers, up to 60 calls"
        assert server.wait_for("speech: listening", 0)["model"] == str(korean_model_path)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=STOP_TIMEOUT) == 0
        server.drain(STOP_TIMEOUT)
        assert server.wait_for("speech pool stopped", 0)
    finally:
        server.finish()


def test_serve_answers_keypad_only_when_the_model_is_broken(tmp_path: Path) -> None:
    """A missing model is the operator's to fix; callers still get the keypad menus."""
    missing = tmp_path / "no-such-model"
    server = start_serve(tmp_path, HOTLINE_VOSK_MODEL=str(missing))
    try:
        listening = server.wait_for("web listening", START_TIMEOUT)
        failed = server.wait_for("speech: model cannot be loaded, menus are keypad-only", 0)
        assert str(missing) in str(failed["error"])
        health = get_json(f"http://127.0.0.1:{listening['port']}/healthz")
        assert str(health["speech"]).startswith("unavailable (keypad only): ")
        assert str(health["sip"]).startswith("listening on udp")
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=STOP_TIMEOUT) == 0
    finally:
        server.finish()
