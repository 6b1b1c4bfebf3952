"""`hotline agents` and `hotline queues`: the real CLI against a real server over real Redis."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from ivr.api_client import base_url
from ivr.cli import main
from ivr.settings import Settings
from ivr.web import create_app
from routing.model import NewCall
from routing.store import RoutingStore

Serving = Callable[..., AbstractAsyncContextManager[str]]
"""The ``serving`` fixture (tests/conftest.py): ``async with serving(app) as url``."""

TOKEN = "cli-test-token-0123456789"  # noqa: S105 - a test's token, not a credential
T0 = 1_700_000_000.0


class Clock:
    """A manual clock for routing's ``now``."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads HOTLINE_* settings; none from the test's environment."""
    for name in ("HOTLINE_CONFIG", "HOTLINE_API_TOKEN", "HOTLINE_WEB_HOST", "HOTLINE_WEB_PORT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def store(redis_client: Redis) -> RoutingStore:
    return RoutingStore(redis_client, tenant="t1")


@pytest.fixture
async def url(store: RoutingStore, serving: Serving) -> AsyncIterator[str]:
    async with serving(create_app(Settings(), routing=store, clock=Clock())) as base:
        yield base


async def hotline(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the `hotline` entry point (its own event loop, on a thread: the server runs on
    this one); returns the exit code, stdout and stderr."""
    capsys.readouterr()
    # The in-process server's log lines would otherwise print among the command's output.
    with capture_logs():
        code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_login_offer_accept_complete(
    url: str, store: RoutingStore, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await hotline(
        capsys,
        *("agents", "login", "1001", "--skill", "fault_repair=5", "--skill", "billing=2"),
        *("--name", "王芳", "--contact", "sip:1001@10.0.0.5:5062", "--ready", "--url", url),
    )
    assert (code, err) == (0, "")
    assert out == "1001: available\n"
    agent = await store.agent("1001")
    assert agent is not None
    assert agent.skills == {"fault_repair": 5, "billing": 2}
    assert agent.name == "王芳"

    await store.enqueue(NewCall("c1", {"fault_repair": 3}, node_id="node-a"), T0)
    code, out, err = await hotline(capsys, "agents", "show", "1001", "--url", url)
    assert code == 0
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert lines["state"] == "reserved"
    assert lines["call"] == "c1"
    assert lines["contact"] == "sip:1001@10.0.0.5:5062"
    assert lines["skills"] == "billing=2,fault_repair=5"

    code, out, err = await hotline(capsys, "agents", "accept", "1001", "c1", "--url", url)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "1001: on_call",
        "accepted c1: bridge the caller to sip:1001@10.0.0.5:5062",
    ]
    call = await store.call("c1")
    assert call is not None
    assert call.state == "connected"

    code, out, _ = await hotline(capsys, "agents", "complete", "1001", "--url", url)
    assert (code, out) == (0, "1001: wrap_up\n")
    code, out, _ = await hotline(
        capsys, "agents", "not-ready", "1001", "--reason", "lunch", "--url", url
    )
    assert (code, out) == (0, "1001: not_ready (lunch)\n")
    code, out, _ = await hotline(capsys, "agents", "logout", "1001", "--url", url)
    assert (code, out) == (0, "1001: logged_out\n")


async def test_reject_and_ready_report_offers(
    url: str, store: RoutingStore, capsys: pytest.CaptureFixture[str]
) -> None:
    await store.login("1001", skills={"fault_repair": 5}, now=T0)
    await store.enqueue(NewCall("c1", {"fault_repair": 3}, node_id="node-a"), T0)
    code, out, _ = await hotline(capsys, "agents", "ready", "1001", "--url", url)
    assert code == 0
    assert out.splitlines() == ["1001: reserved", "offered c1 to 1001"]
    code, out, _ = await hotline(capsys, "agents", "reject", "1001", "c1", "--url", url)
    assert (code, out) == (0, "1001: not_ready (rejected)\n")
    code, out, _ = await hotline(
        capsys, "agents", "skills", "1001", "--skill", "billing=4", "--url", url
    )
    assert (code, out) == (0, "1001: not_ready (rejected)\n")
    agent = await store.agent("1001")
    assert agent is not None
    assert agent.skills == {"billing": 4}


async def test_agents_list_table_and_json(
    url: str, store: RoutingStore, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await hotline(capsys, "agents", "list", "--url", url)
    assert (code, out) == (0, "no agents have logged in\n")
    await store.login("1002", skills={"billing": 3}, now=T0, name="李雷", ready=True)
    await store.login("1001", skills={"fault_repair": 5}, now=T0)
    await store.not_ready("1001", "training", T0)

    code, out, _ = await hotline(capsys, "agents", "list", "--url", url)
    assert code == 0
    header, first, second = out.splitlines()
    assert header.split() == ["AGENT", "NAME", "STATE", "SINCE", "CALL", "CALLS", "TALK", "SKILLS"]
    assert first.split()[:4] == ["1001", "-", "not_ready", "(training)"]
    assert second.split()[:3] == ["1002", "李雷", "available"]
    assert second.split()[-1] == "billing=3"
    # Columns line up although 李雷 takes two terminal columns per character.
    assert first.index("not_ready") == second.index("available") + len("李雷")

    code, out, _ = await hotline(capsys, "agents", "list", "--json", "--url", url)
    assert code == 0
    agents = json.loads(out)["agents"]
    assert [(a["agent_id"], a["state"], a["reason"]) for a in agents] == [
        ("1001", "not_ready", "training"),
        ("1002", "available", ""),
    ]


async def test_queues_list_and_show(
    url: str, store: RoutingStore, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await hotline(capsys, "queues", "list", "--url", url)
    assert code == 0
    assert out.startswith("no queues yet")
    await store.login("1001", skills={"billing": 5}, now=T0)
    await store.enqueue(NewCall("b1", {"billing": 3}, node_id="node-a"), T0)
    await store.enqueue(NewCall("b2", {"billing": 3}, priority=5, node_id="node-a"), T0)

    code, out, _ = await hotline(capsys, "queues", "list", "--url", url)
    assert code == 0
    assert [line.split() for line in out.splitlines()] == [
        ["SKILL", "WAITING", "AVAILABLE", "LOGGED", "IN", "STRATEGY"],
        ["billing", "2", "0", "1", "longest_idle"],
    ]

    code, out, _ = await hotline(capsys, "queues", "show", "billing", "--url", url)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "queue billing"
    assert ["strategy", "longest_idle"] in [line.split() for line in lines]
    assert ["reservation_timeout", "15.0"] in [line.split() for line in lines]
    assert "available agents: none" in lines
    table = lines[lines.index("available agents: none") + 1 :]
    assert table[0].split() == ["POS", "CALL", "KIND", "PRIORITY", "WAITED", "EST.", "WAIT"]
    assert [row.split()[:4] for row in table[1:]] == [
        ["1", "b2", "call", "5"],
        ["2", "b1", "call", "0"],
    ]

    code, out, _ = await hotline(capsys, "queues", "show", "billing", "--json", "--url", url)
    assert code == 0
    assert [c["call_id"] for c in json.loads(out)["waiting"]] == ["b2", "b1"]


async def test_api_errors_exit_1_with_the_error_id(
    url: str, store: RoutingStore, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await hotline(capsys, "agents", "ready", "9999", "--url", url)
    assert (code, out) == (1, "")
    assert err.startswith("hotline: no-such-agent: ")
    code, out, err = await hotline(capsys, "agents", "show", "9999", "--url", url)
    assert code == 1
    assert "no-such-agent" in err
    await store.login("1001", skills={"billing": 5}, now=T0)
    code, _, err = await hotline(capsys, "agents", "accept", "1001", "c9", "--url", url)
    assert code == 1
    assert err.startswith("hotline: no-such-reservation: ")


def test_bad_skill_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    for skill in ("fault_repair", "fault_repair=11", "fault_repair=x", "a:b=3"):
        with pytest.raises(SystemExit) as info:
            main(["agents", "login", "1001", "--skill", skill])
        assert info.value.code == 2
        assert "SKILL=LEVEL" in capsys.readouterr().err


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_not_running_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    nowhere = f"http://127.0.0.1:{_closed_port()}"
    code, out, err = await hotline(capsys, "agents", "list", "--url", nowhere)
    assert (code, out) == (2, "")
    assert nowhere in err
    assert "is `hotline serve` running?" in err


async def test_port_0_needs_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOTLINE_WEB_PORT", "0")
    code, _, err = await hotline(capsys, "queues", "list")
    assert code == 2
    assert "--url" in err


def test_base_url_from_settings() -> None:
    assert base_url(Settings()) == "http://127.0.0.1:8080"
    assert base_url(Settings(web_host="0.0.0.0", web_port=9000)) == "http://127.0.0.1:9000"
    assert base_url(Settings(web_host="::", web_port=9000)) == "http://[::1]:9000"
    assert base_url(Settings(web_host="fe80::1", web_port=81)) == "http://[fe80::1]:81"
    assert base_url(Settings(web_host="hotline.local")) == "http://hotline.local:8080"


async def test_address_and_token_from_settings(
    store: RoutingStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    serving: Serving,
) -> None:
    app = create_app(Settings(api_token=TOKEN), routing=store, clock=Clock())
    async with serving(app) as url:
        port = url.rsplit(":", 1)[1]
        monkeypatch.setenv("HOTLINE_WEB_HOST", "127.0.0.1")
        monkeypatch.setenv("HOTLINE_WEB_PORT", port)
        login = ("agents", "login", "1001", "--skill", "billing=5")
        code, _, err = await hotline(capsys, *login)
        assert code == 1
        assert err.startswith("hotline: unauthorized: ")
        monkeypatch.setenv("HOTLINE_API_TOKEN", TOKEN)
        code, out, err = await hotline(capsys, *login)
        assert (code, out, err) == (0, "1001: not_ready (login)\n", "")
        assert TOKEN not in out + err
    assert await store.agent_ids() == {"1001"}


async def test_python_m_ivr(url: str, store: RoutingStore) -> None:
    await store.login("1001", skills={"billing": 5}, now=T0)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "ivr", "agents", "show", "1001", "--json", "--url", url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out)["state"] == "not_ready"
