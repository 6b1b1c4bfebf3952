"""Scripted fault-repair calls through the HTTP CRM while it fails half its requests: each caller
hears a ticket number at once, every ticket reaches the CRM exactly once, and `hotline tickets
show` finds it there — before delivery too, from this node's outbox."""

from __future__ import annotations

import asyncio
import io
import json
import random
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from crm_bridge.http import HttpCrm
from crm_bridge.numbers import TicketNumbers
from crm_bridge.outbox import DeliveryWorker, Outbox
from ivr.cli import main
from ivr.crm_service import CrmService
from ivr.flow.model import load_flow
from ivr.session import ManualClock
from ivr.settings import Settings
from ivr.transports.script import ScriptRunner
from ivr.web import create_app
from sounds.catalog import Catalog
from speech.understand import Understander

sys.path.insert(0, str(Path(__file__).parents[1] / "crm_bridge"))
# The CRM played by a real server, shared with the crm_bridge tests.
from fake_crm import FakeCrm

Serving = Callable[..., AbstractAsyncContextManager[str]]
"""The ``serving`` fixture (tests/conftest.py): ``async with serving(app) as url``."""

START = 1_800_000_000.0
CALL = [
    "speech on",
    "press 2",
    "press 3201234567#",
    "press 1",
    "say 鼓楼区中山北路一百号",
    "expect fault_ticket_created",
    "hangup",
]


async def hotline(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """The `hotline` entry point on a thread (the web server runs on this loop)."""
    capsys.readouterr()
    with capture_logs():
        code = await asyncio.to_thread(main, list(argv))
    return code, capsys.readouterr().out


async def test_fault_calls_reach_a_crm_failing_half_its_requests_exactly_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], serving: Serving
) -> None:
    fake = await FakeCrm().start()
    # Every other ticket request fails, in every way a CRM fails.
    fake.script("500", "ok", "drop-before", "ok", "timeout", "ok", "429", "ok", "drop", "ok")
    crm = HttpCrm(fake.url, timeout=1.0)
    clock = ManualClock(START)
    outbox = await Outbox.open(tmp_path / "outbox.sqlite3", clock=clock.now)
    numbers = await TicketNumbers.attach(outbox.connection, 3, lock=outbox.lock)
    region = ("江苏省", "南京市")
    service = CrmService(crm, outbox, numbers, clock=clock.now, region=region)
    try:
        told = []
        for _ in range(3):
            runner = ScriptRunner(
                load_flow(Settings().resolved_flow_file()),
                Catalog.shipped(),
                io.StringIO(),
                caller="13812345678",
                dialed="95598",
                crm=service,
                clock=clock,
                understander=Understander(*region),  # the hotline the CRM serves
            )
            await runner.step(CALL)
            told.append((await runner.finish()).slots["ticket_id"])
        assert len(set(told)) == 3

        async with serving(create_app(Settings(), crm=crm, outbox=outbox)) as url:
            # Before delivery `hotline tickets show` answers from the outbox.
            code, out = await hotline(capsys, "tickets", "show", told[0], "--url", url, "--json")
            assert code == 0
            assert json.loads(out)["delivery"]["state"] == "pending"

            jitter = random.Random(5)  # noqa: S311 — retry jitter, seeded so runs repeat
            worker = DeliveryWorker(outbox, crm, clock=clock.now, rng=jitter)
            for _ in range(30):
                clock.advance(600)
                await worker.run_once(clock.now())
                await fake.idle()
                if (await outbox.stats(clock.now())).backlog == 0:
                    break
            assert (await outbox.stats(clock.now())).backlog == 0
            assert {number: fake.created[number] for number in told} == dict.fromkeys(told, 1)
            assert len(fake.attempts) > len(told)  # failures were retried

            code, out = await hotline(capsys, "tickets", "show", told[2], "--url", url, "--json")
            assert code == 0
            shown = json.loads(out)
            assert (shown["ticket_id"], shown["ticket_type"]) == (told[2], "故障报修")
            assert shown["address"]["district"] == "鼓楼区"
            assert "delivery" not in shown  # the CRM's own answer now
    finally:
        await crm.close()
        await outbox.close()
        await fake.stop()
