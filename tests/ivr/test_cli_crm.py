"""`hotline tickets`, `hotline outages` and `hotline crm`: the real CLI against a real server over
a real embedded store and a real outbox."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from crm_bridge.embedded import EmbeddedCrm
from crm_bridge.model import Address, Survey, Ticket, TicketStatus
from crm_bridge.outbox import DeliveryWorker, Outbox
from ivr.cli import main
from ivr.cli_crm import time_option
from ivr.cli_routing import clock_time
from ivr.settings import Settings
from ivr.web import create_app

Serving = Callable[..., AbstractAsyncContextManager[str]]
"""The ``serving`` fixture (tests/conftest.py): ``async with serving(app) as url``."""

TOKEN = "cli-crm-token-0123456789"  # noqa: S105 - a test's token, not a credential


class Clock:
    """The server's ``now``: the real time when the test starts, then moved by hand only."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads HOTLINE_* settings; none from the test's environment."""
    for name in ("HOTLINE_CONFIG", "HOTLINE_API_TOKEN", "HOTLINE_WEB_HOST", "HOTLINE_WEB_PORT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def crm(tmp_path: Path, clock: Clock) -> AsyncIterator[EmbeddedCrm]:
    store = await EmbeddedCrm.open(tmp_path / "crm" / "crm.sqlite3", clock=clock)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def outbox(tmp_path: Path, clock: Clock) -> AsyncIterator[Outbox]:
    box = await Outbox.open(tmp_path / "crm" / "outbox.sqlite3", clock=clock)
    try:
        yield box
    finally:
        await box.close()


@pytest.fixture
async def url(
    crm: EmbeddedCrm, outbox: Outbox, clock: Clock, serving: Serving
) -> AsyncIterator[str]:
    async with serving(create_app(Settings(), crm=crm, outbox=outbox, clock=clock)) as base:
        yield base


async def deliver(outbox: Outbox, crm: EmbeddedCrm, clock: Clock) -> None:
    """One round of the real delivery worker at the clock's time."""
    jitter = random.Random(7)  # noqa: S311 — retry jitter, seeded so runs repeat
    await DeliveryWorker(outbox, crm, 5, 300.0, clock, rng=jitter).run_once(clock.now)


async def hotline(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the `hotline` entry point (its own event loop, on a thread: the server runs on
    this one); returns the exit code, stdout and stderr."""
    capsys.readouterr()
    with capture_logs():  # the in-process server's log lines stay out of the output
        code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def fault(n: int, now: float, **changes: object) -> Ticket:
    values: dict[str, object] = {
        "ticket_id": f"26112701{n:05d}",
        "idempotency_key": f"call-{n}:fault",
        "ticket_type": "故障报修",
        "priority": 50,
        "created_at": now,
        "caller": "13800138000",
        "account": "1234567890",
        "address": Address("江苏省", "南京市", "鼓楼区", "中山北路", "100号"),
        "description": "家里停电了",
        "call_id": f"call-{n}",
        "fields": {"intent": "fault"},
    }
    values.update(changes)
    return Ticket(**values)  # type: ignore[arg-type]


def columns(line: str) -> list[str]:
    return line.split()


async def test_tickets_list_show_and_status(
    url: str, crm: EmbeddedCrm, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await hotline(capsys, "tickets", "list", "--url", url)
    assert (code, out, err) == (0, "no tickets\n", "")

    await crm.create_ticket(fault(1, clock.now))
    await crm.create_ticket(fault(2, clock.now + 1, urgent=True, priority=100, caller=""))
    code, out, err = await hotline(capsys, "tickets", "list", "--url", url)
    assert (code, err) == (0, "")
    header, first, second = out.splitlines()
    assert columns(header) == [
        "TICKET",
        "TYPE",
        "STATUS",
        "PRI",
        "CREATED",
        "CALLER",
        "ACCOUNT",
        "ADDRESS",
    ]
    assert columns(first)[:4] == ["2611270100002", "故障报修", "submitted", "100!"]
    assert columns(first)[5] == "-"
    assert columns(second)[0] == "2611270100001"
    assert columns(second)[-1] == "江苏省南京市鼓楼区中山北路100号"

    code, out, _ = await hotline(capsys, "tickets", "list", "--limit", "1", "--url", url)
    assert (code, len(out.splitlines())) == (0, 2)

    clock.now += 60
    code, out, err = await hotline(
        capsys,
        "tickets",
        "status",
        "2611270100001",
        "in_progress",
        "--note",
        "已派单",
        "--url",
        url,
    )
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert columns(lines[0]) == ["ticket", "2611270100001"]
    assert columns(lines[2]) == ["status", "in_progress"]
    assert lines[-1].split()[1:] == ["in_progress", "已派单"]
    stored = await crm.get_ticket("2611270100001")
    assert stored is not None
    assert stored.status is TicketStatus.IN_PROGRESS

    code, out, _ = await hotline(capsys, "tickets", "list", "--status", "in_progress", "--url", url)
    assert [columns(line)[0] for line in out.splitlines()[1:]] == ["2611270100001"]

    code, out, err = await hotline(capsys, "tickets", "show", "2611270100001", "--url", url)
    assert (code, err) == (0, "")
    shown = dict(line.split(None, 1) for line in out.splitlines()[:12])
    assert shown["description"] == "家里停电了"
    assert shown["source"] == "ivr"
    history = out.split("history:\n", 1)[1].splitlines()
    assert columns(history[0]) == ["AT", "STATUS", "NOTE"]
    assert [columns(line)[1:] for line in history[1:]] == [
        ["new"],
        ["submitted", "received"],
        ["in_progress", "已派单"],
    ]
    assert "field intent" in out

    code, out, err = await hotline(
        capsys, "tickets", "show", "2611270100001", "--json", "--url", url
    )
    assert code == 0
    answer = json.loads(out)
    assert answer["ticket_id"] == "2611270100001"
    assert [h["status"] for h in answer["history"]] == ["new", "submitted", "in_progress"]


async def test_errors_exit_1_with_the_error_id(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await hotline(capsys, "tickets", "show", "2611270199999", "--url", url)
    assert (code, out) == (1, "")
    assert err == "hotline: no-such-ticket: no ticket 2611270199999\n"
    code, out, err = await hotline(capsys, "tickets", "list", "--limit", "0", "--url", url)
    assert (code, out) == (1, "")
    assert err.startswith("hotline: invalid-request: limit: ")
    code, _, err = await hotline(capsys, "outages", "end", "42", "--url", url)
    assert code == 1
    assert err == "hotline: no-such-outage: no outage 42\n"
    code, _, err = await hotline(
        capsys, "outages", "post", "--kind", "fault", "--cause", "抢修", "--url", url
    )
    assert code == 1
    assert err.startswith("hotline: invalid-request: area: ")


async def test_outages_post_list_end(
    url: str, crm: EmbeddedCrm, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await hotline(capsys, "outages", "list", "--url", url)
    assert (code, out) == (0, "no outage notices\n")
    code, out, err = await hotline(
        capsys,
        *("outages", "post", "--province", "江苏省", "--city", "南京市", "--district", "鼓楼区"),
        *("--kind", "fault", "--cause", "线路故障抢修", "--restore-at", "+3h", "--url", url),
    )
    assert (code, err) == (0, "")
    assert out.startswith("outage 1: fault in 江苏省南京市鼓楼区 (线路故障抢修), from ")
    assert out.endswith(": active\n")
    posted = await crm.list_outages()
    assert len(posted) == 1
    assert posted[0].starts_at == clock.now  # the server's now, when not given
    assert posted[0].restore_at is not None
    assert abs(posted[0].restore_at - (time.time() + 3 * 3600)) < 600

    code, out, _ = await hotline(
        capsys,
        *("outages", "post", "--province", "江苏省", "--district", "玄武区"),
        *("--kind", "planned", "--cause", "线路检修", "--starts-at", "+1d", "--url", url),
    )
    assert code == 0
    assert out.rstrip().endswith(": upcoming")

    code, out, _ = await hotline(capsys, "outages", "list", "--url", url)
    header, *rows = out.splitlines()
    assert columns(header) == ["ID", "KIND", "AREA", "CAUSE", "STARTS", "RESTORE", "STATE"]
    assert [(columns(r)[0], columns(r)[-1]) for r in rows] == [("2", "upcoming"), ("1", "active")]
    code, out, _ = await hotline(capsys, "outages", "list", "--active", "--url", url)
    assert [columns(r)[0] for r in out.splitlines()[1:]] == ["1"]

    clock.now += 60
    code, out, err = await hotline(capsys, "outages", "end", "1", "--url", url)
    assert (code, err) == (0, "")
    assert " ended " in out
    code, out, _ = await hotline(capsys, "outages", "list", "--active", "--json", "--url", url)
    assert json.loads(out) == {"outages": []}


async def test_seed_demo(url: str, crm: EmbeddedCrm, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await hotline(capsys, "crm", "seed-demo", "--url", url)
    assert (code, err) == (0, "")
    assert out.startswith("demo data loaded: 3 customers, 3 bills, 2 outage notices added")
    code, out, _ = await hotline(capsys, "crm", "seed-demo", "--json", "--url", url)
    assert json.loads(out) == {"customers": 3, "bills": 3, "outages_added": 0}
    assert await crm.find_customer(phone="13800138000") is not None


async def test_the_token_goes_with_changes(
    crm: EmbeddedCrm,
    clock: Clock,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    serving: Serving,
) -> None:
    app = create_app(Settings(api_token=TOKEN), crm=crm, clock=clock)
    async with serving(app) as url:
        code, _, err = await hotline(capsys, "crm", "seed-demo", "--url", url)
        assert code == 1
        assert err.startswith("hotline: unauthorized: ")
        config = tmp_path / "hotline.toml"
        config.write_text(f'api_token = "{TOKEN}"\n')
        code, out, err = await hotline(
            capsys, "--config", str(config), "crm", "seed-demo", "--url", url
        )
        assert (code, err) == (0, "")
        assert out.startswith("demo data loaded")


async def test_tickets_outbox_and_retry(
    url: str,
    crm: EmbeddedCrm,
    outbox: Outbox,
    clock: Clock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = await hotline(capsys, "tickets", "outbox", "--url", url)
    assert (code, out, err) == (0, "outbox: 0 waiting, 0 dead letters, 0 delivered\n", "")

    # Two tickets of a type the store does not take (dead letters), one delivered, one waiting,
    # and a survey on its way too.
    for n in (1, 2):
        await outbox.submit(replace(fault(n, clock.now), ticket_type="未知类型"))
    await outbox.submit(fault(3, clock.now))
    await deliver(outbox, crm, clock)
    await outbox.submit(fault(4, clock.now))
    survey = Survey("call-4", 5, clock.now, caller="13800138000")
    await outbox.submit_survey(survey)
    clock.now += 125

    code, out, err = await hotline(capsys, "tickets", "outbox", "--url", url)
    assert (code, err) == (0, "")
    summary, header, first, second, hint = out.splitlines()
    assert summary == (
        "outbox: 2 waiting (1 ticket, 1 survey), the oldest waiting 2m05s, 2 dead letters,"
        " 1 delivered"
    )
    assert columns(header) == [
        "ID", "KIND", "TYPE", "TRIES", "SUBMITTED", "DEAD", "LAST", "ERROR"
    ]  # fmt: skip
    assert columns(first)[:4] == ["2611270100001", "ticket", "未知类型", "1"]
    assert "invalid-ticket: ticket_type: " in first
    assert columns(second)[0] == "2611270100002"
    assert hint == "replay with `hotline tickets retry [ID]`"
    code, out, _ = await hotline(capsys, "tickets", "outbox", "--json", "--url", url)
    answer = json.loads(out)
    assert answer["stats"] == {
        "backlog": 2,
        "oldest_age_seconds": 125.0,
        "dead_letters": 2,
        "delivered": 1,
        "backlog_by_kind": {"ticket": 1, "survey": 1},
    }
    assert [d["id"] for d in answer["dead_letters"]] == ["2611270100001", "2611270100002"]

    # `tickets show` right after the call, before the CRM has it: from the outbox.
    code, out, err = await hotline(capsys, "tickets", "show", "2611270100004", "--url", url)
    assert (code, err) == (0, "")
    shown = dict(line.split(None, 1) for line in out.split("history:", 1)[0].splitlines())
    assert shown["status"] == "new"
    submitted = clock_time(clock.now - 125)
    assert shown["delivery"] == f"waiting in the outbox, 0 attempts so far, next at {submitted}"
    code, out, _ = await hotline(capsys, "tickets", "show", "2611270100001", "--url", url)
    shown = dict(line.split(None, 1) for line in out.split("history:", 1)[0].splitlines())
    assert shown["delivery"].startswith("a dead letter since ")
    assert shown["delivery"].endswith(" after 1 attempt: `hotline tickets retry 2611270100001`")
    assert out.count("invalid-ticket: ticket_type: ") == 1  # the "last error" line

    code, out, err = await hotline(capsys, "tickets", "retry", "2611270100001", "--url", url)
    assert (code, out, err) == (0, "1 dead letter replayed: due for delivery now\n", "")
    code, out, err = await hotline(capsys, "tickets", "retry", "2611270100001", "--url", url)
    assert (code, out) == (1, "")
    assert err == (
        "hotline: no-such-dead-letter: 2611270100001 is not a dead letter in this node's outbox\n"
    )
    code, out, _ = await hotline(capsys, "tickets", "retry", "--url", url)
    assert (code, out) == (0, "1 dead letter replayed: due for delivery now\n")
    code, out, _ = await hotline(capsys, "tickets", "retry", "--json", "--url", url)
    assert (code, json.loads(out)) == (0, {"replayed": 0})
    code, out, _ = await hotline(capsys, "tickets", "retry", "--url", url)
    assert (code, out) == (0, "no dead letters to replay\n")
    stats = await outbox.stats(clock.now)
    assert (stats.backlog, stats.dead_letters) == (4, 0)
    # Delivered, the survey is in the store.
    await deliver(outbox, crm, clock)
    assert await crm.get_survey("call-4") == survey


async def test_tickets_retry_sends_the_token(
    crm: EmbeddedCrm,
    outbox: Outbox,
    clock: Clock,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    *,
    serving: Serving,
) -> None:
    await outbox.submit(replace(fault(1, clock.now), ticket_type="未知类型"))
    await deliver(outbox, crm, clock)
    app = create_app(Settings(api_token=TOKEN), crm=crm, outbox=outbox, clock=clock)
    async with serving(app) as url:
        code, out, err = await hotline(capsys, "tickets", "retry", "--url", url)
        assert (code, out) == (1, "")
        assert err.startswith("hotline: unauthorized: ")
        assert (await outbox.stats(clock.now)).dead_letters == 1
        config = tmp_path / "hotline.toml"
        config.write_text(f'api_token = "{TOKEN}"\n')
        code, out, err = await hotline(
            capsys, "--config", str(config), "tickets", "retry", "--url", url
        )
        assert (code, out, err) == (0, "1 dead letter replayed: due for delivery now\n", "")


async def test_without_an_outbox_the_outbox_commands_say_so(
    crm: EmbeddedCrm, clock: Clock, capsys: pytest.CaptureFixture[str], serving: Serving
) -> None:
    async with serving(create_app(Settings(), crm=crm, clock=clock)) as url:
        for argv in (("tickets", "outbox"), ("tickets", "retry")):
            code, out, err = await hotline(capsys, *argv, "--url", url)
            assert (code, out) == (1, ""), argv
            assert err == "hotline: crm-unavailable: no CRM outbox is open on this node\n"


async def test_unreachable_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on the port now.
    code, out, err = await hotline(capsys, "tickets", "list", "--url", f"http://127.0.0.1:{port}")
    assert (code, out) == (2, "")
    assert "cannot reach the hotline" in err


def test_time_option() -> None:
    before = time.time()
    assert before <= time_option("now") <= time.time()
    assert before + 7200 <= time_option("+2h") <= time.time() + 7200
    assert before - 1800 <= time_option("-30m") <= time.time() - 1800
    assert before + 86400 <= time_option("+1d") <= time.time() + 86400
    beijing = timezone(timedelta(hours=8))
    expected = datetime(2026, 11, 27, 14, 0, tzinfo=beijing).timestamp()
    assert time_option("2026-11-27T14:00+08:00") == expected
    # Without an offset: this machine's local time.
    assert time_option("2026-11-27T14:00") == datetime(2026, 11, 27, 14, 0).timestamp()
    for bad in ("tomorrow", "+2", "2h", "27/11/2026"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected now"):
            time_option(bad)
