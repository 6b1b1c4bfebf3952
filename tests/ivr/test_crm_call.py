"""Scripted calls through the real CRM bridge: the embedded store answers the outage lookup (by
the spoken address, the account or the caller's customer record) and the bill, tickets and
surveys go through this node's outbox (tickets with a locally allocated number, found by
`hotline tickets show`), and a CRM that is down costs the caller nothing: the number is told at
once and the ticket or survey arrives later, once."""

from __future__ import annotations

import asyncio
import io
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from crm_bridge.embedded import EmbeddedCrm
from crm_bridge.http import HttpCrm
from crm_bridge.model import Address, BillSummary, Customer, OutageKind, Survey, TicketStatus
from crm_bridge.numbers import TicketNumbers
from crm_bridge.outbox import DeliveryWorker, Outbox, OutboxKind
from ivr.cli import main
from ivr.crm_service import CrmService
from ivr.dialog import actions as act
from ivr.dialog.engine import CallContext
from ivr.flow.model import load_flow
from ivr.services import ServiceError
from ivr.session import ManualClock
from ivr.settings import Settings
from ivr.transports.script import ScriptError, ScriptRunner
from ivr.web import create_app
from sounds.catalog import Catalog
from speech.streets import StreetList
from speech.understand import Understander

START = float(int(time.time()))
REGION = ("江苏省", "南京市")


@dataclass
class Bridge:
    crm: EmbeddedCrm
    outbox: Outbox
    service: CrmService
    clock: ManualClock


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[Bridge]:
    clock = ManualClock(START)
    crm = await EmbeddedCrm.open(tmp_path / "crm.sqlite3", clock=clock.now)
    outbox = await Outbox.open(tmp_path / "outbox.sqlite3", clock=clock.now)
    numbers = await TicketNumbers.attach(outbox.connection, 7, lock=outbox.lock)
    service = CrmService(crm, outbox, numbers, clock=clock.now, region=REGION)
    try:
        yield Bridge(crm, outbox, service, clock)
    finally:
        await outbox.close()
        await crm.close()


def _spoken_time(at: float) -> str:
    """How the IVR says a restoration time (China time): 今天/明天 H点M分."""
    china = timezone(timedelta(hours=8))
    moment, today = datetime.fromtimestamp(at, china), datetime.fromtimestamp(START, china)
    day = "今天" if moment.date() == today.date() else "明天"
    return f"{day}{moment.hour}点" + (f"{moment.minute}分" if moment.minute else "")


def _runner(service: CrmService, clock: ManualClock, out: io.StringIO) -> ScriptRunner:
    return ScriptRunner(
        load_flow(Settings().resolved_flow_file()),
        Catalog.shipped(),
        out,
        caller="13812345678",
        dialed="95598",
        crm=service,
        clock=clock,
        understander=Understander(*REGION),  # the same 南京 hotline as the CRM's region
    )


FAULT_TO_ADDRESS = [
    "speech on",
    "press 2",
    "expect fault_account",
    "press 3201234567#",
    "press 1",
    "expect fault_address",
    "say 鼓楼区中山北路一百号",
]


async def test_known_outage_is_announced_and_the_report_registered_without_queueing(
    bridge: Bridge,
) -> None:
    outage = await bridge.crm.post_outage(
        Address(province="江苏省", city="南京市", district="鼓楼区"),
        OutageKind.FAULT,
        "线路故障",
        START - 600,
        START + 3 * 3600,
    )
    out = io.StringIO()
    runner = _runner(bridge.service, bridge.clock, out)
    await runner.step(
        [
            *FAULT_TO_ADDRESS,
            "expect-text 鼓楼区",
            "expect-text 线路故障",
            f"expect-text {_spoken_time(START + 3 * 3600)}",
            "expect outage_known outage_cause outage_restore outage_known_menu",
            "expect-slot outage.outage_id " + outage.outage_id,
            "press 1",
            "expect fault_ticket_created",
            "expect goodbye",
            "expect-ended completed",
        ]
    )
    summary = await runner.finish()
    assert ("ticket", "故障报修") in [(o.kind, o.detail) for o in summary.outcomes]
    number = summary.slots["ticket_id"]
    assert number.startswith(time.strftime("%y%m%d", time.gmtime(START + 8 * 3600)) + "07")

    # Queued on this node before the caller heard it; the worker brings it to the store.
    entry = await bridge.outbox.get(number)
    assert entry is not None
    worker = DeliveryWorker(bridge.outbox, bridge.crm, clock=bridge.clock.now)
    assert await worker.run_once(bridge.clock.now()) == 1
    ticket = await bridge.crm.get_ticket(number)
    assert ticket is not None
    assert (ticket.ticket_type, ticket.priority, ticket.urgent) == ("故障报修", 40, False)
    assert (ticket.account, ticket.caller) == ("3201234567", "13812345678")
    address = ticket.address
    assert (address.province, address.city, address.district) == (*REGION, "鼓楼区")
    assert (address.street, address.number) == ("中山北路", "100号")
    assert ticket.status is TicketStatus.SUBMITTED
    assert ticket.ivr_path[-2:] == ("fault_outage_known", "fault_outage_ticket")


async def test_ticket_status_self_service_reads_the_store(bridge: Bridge) -> None:
    runner = _runner(bridge.service, bridge.clock, io.StringIO())
    # No outage there: the report is filed, then the caller hangs up while queued.
    await runner.step([*FAULT_TO_ADDRESS, "expect fault_ticket_created", "hangup"])
    summary = await runner.finish()
    [filed] = [o for o in summary.outcomes if o.kind == "ticket"]
    assert filed.detail == "故障报修"
    [entry] = await bridge.outbox.due(bridge.clock.now() + 1)
    number = entry.item_id
    # Before delivery the caller already hears that it was received...
    reply = await bridge.service._ticket_status(number)
    assert reply.data["status_text"].startswith("已受理")
    worker = DeliveryWorker(bridge.outbox, bridge.crm, clock=bridge.clock.now)
    await worker.run_once(bridge.clock.now())
    await bridge.crm.set_status(number, TicketStatus.IN_PROGRESS, "抢修人员已出发", START + 60)
    # ... and afterwards what the crew did.
    reply = await bridge.service._ticket_status(number)
    assert reply.data == {"status_text": "正在处理中：抢修人员已出发", "status": "in_progress"}


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_crm_that_is_down_costs_the_caller_nothing(tmp_path: Path, bridge: Bridge) -> None:
    down = HttpCrm(f"http://127.0.0.1:{_dead_port()}/crm", timeout=1.0)
    numbers = await TicketNumbers.attach(bridge.outbox.connection, 7, lock=bridge.outbox.lock)
    service = CrmService(down, bridge.outbox, numbers, clock=bridge.clock.now, region=REGION)
    out = io.StringIO()
    runner = _runner(service, bridge.clock, out)
    # The outage lookup fails: the flow files the report anyway, and the caller hears its number.
    await runner.step([*FAULT_TO_ADDRESS, "expect fault_ticket_created"])
    with pytest.raises(ScriptError, match="the CRM is real in this run"):
        await runner.step(["reply ticket 123"])
    await runner.step(["hangup"])
    summary = await runner.finish()
    number = summary.slots["ticket_id"]
    assert "CRM ▶ failed: crm_unavailable" in out.getvalue()

    worker = DeliveryWorker(bridge.outbox, down, clock=bridge.clock.now)
    await worker.run_once(bridge.clock.now())
    stats = await bridge.outbox.stats(bridge.clock.now())
    assert stats.backlog == 1
    # The CRM is back (here: the store): the ticket arrives once, under the number told.
    back = DeliveryWorker(bridge.outbox, bridge.crm, clock=bridge.clock.now)
    assert await back.run_once(bridge.clock.now() + 3600) == 1
    assert await back.run_once(bridge.clock.now() + 7200) == 0
    ticket = await bridge.crm.get_ticket(number)
    assert ticket is not None
    assert ticket.complete
    await down.close()


async def test_an_unknown_ticket_type_is_refused_with_a_clear_reason(bridge: Bridge) -> None:
    context = CallContext(call_id="c1", caller="13812345678", dialed="95598", channel="sim")
    with pytest.raises(ServiceError) as caught:
        await bridge.service.create_ticket(act.CreateTicket(1, "闲聊", 10), context)
    assert caught.value.reason == "invalid_ticket"
    assert "ticket_type" in str(caught.value)
    assert await bridge.outbox.due(START + 10) == []


async def test_a_survey_given_while_the_crm_is_down_is_kept_and_arrives_once(
    bridge: Bridge,
) -> None:
    down = HttpCrm(f"http://127.0.0.1:{_dead_port()}/crm", timeout=1.0)
    numbers = await TicketNumbers.attach(bridge.outbox.connection, 7, lock=bridge.outbox.lock)
    service = CrmService(down, bridge.outbox, numbers, clock=bridge.clock.now, region=REGION)
    out = io.StringIO()
    runner = _runner(service, bridge.clock, out)
    await runner.step(
        [
            "speech on",
            "press 4",
            "expect new_connection_info new_connection_menu",
            "press 1",
            "expect-request enqueue skill=new_connection priority=30",
            "reply agent A2002",
            "reply agent-hangup",
            "say 非常满意",
            # Thanked: the rating is safe in this node's outbox, whatever the CRM does.
            "expect survey_thanks",
            "expect-ended completed",
            "expect-outcome survey 5",
        ]
    )
    summary = await runner.finish()
    [entry] = await bridge.outbox.due(bridge.clock.now())
    assert entry.kind is OutboxKind.SURVEY
    assert entry.item == Survey(
        summary.call_id, 5, bridge.clock.now(), agent_id="A2002", caller="13812345678"
    )

    await DeliveryWorker(bridge.outbox, down, clock=bridge.clock.now).run_once(bridge.clock.now())
    assert (await bridge.outbox.stats(bridge.clock.now())).backlog == 1
    # The CRM is back (here: the store): the survey arrives once.
    back = DeliveryWorker(bridge.outbox, bridge.crm, clock=bridge.clock.now)
    assert await back.run_once(bridge.clock.now() + 3600) == 1
    assert await back.run_once(bridge.clock.now() + 7200) == 0
    assert await bridge.crm.get_survey(summary.call_id) == entry.item
    await down.close()


async def test_billing_reads_back_the_balance_the_store_holds(bridge: Bridge) -> None:
    await bridge.crm.set_bill(BillSummary("1234567890", 12850, 0, "2026-12-15"))
    runner = _runner(bridge.service, bridge.clock, io.StringIO())
    await runner.step(
        [
            "speech off",
            "press 3",
            "expect billing_menu",
            "press 1",
            "press 1234567890#",
            "press 1",
            "expect please_wait",
            "expect bill_balance digit_1 num_100 digit_2 num_10 digit_8 unit_yuan digit_5"
            " unit_jiao bill_due",
            "expect digit_2 digit_0 digit_2 digit_6 unit_year num_10 digit_2 unit_month num_10"
            " digit_5 unit_day bill_menu",
            "press 1",
            "expect-ended completed",
        ]
    )
    await runner.finish()


def _lookup(service: str, **params: str) -> act.Lookup:
    return act.Lookup(1, service, params)


async def test_an_outage_is_found_by_the_account_or_by_the_callers_customer_record(
    bridge: Bridge,
) -> None:
    """Without a usable spoken address: the account's address, else that of the customer
    calling from this number; an anonymous caller is nobody to look up."""
    await bridge.crm.post_outage(
        Address(province="江苏省", city="南京市", district="玄武区"),
        OutageKind.PLANNED,
        "计划检修",
        START - 60,
        START + 7200,
    )
    await bridge.crm.upsert_customer(
        Customer(
            "C-1",
            "王五",
            phones=("13812345678",),
            accounts=("3201234567",),
            address=Address("江苏省", "南京市", "玄武区", "中山路", "1号"),
        )
    )
    service = bridge.service
    known = CallContext(call_id="c1", caller="13812345678")
    stranger = CallContext(call_id="c2", caller="13900000000")
    anonymous = CallContext(call_id="c3", caller="anonymous")
    by_account = await service.lookup(_lookup("outage_by_address", account="3201234567"), stranger)
    assert (by_account.status, by_account.data["cause"]) == ("found", "计划检修")
    by_caller = await service.lookup(_lookup("outage_by_address", address="听不清"), known)
    assert (by_caller.status, by_caller.data["area"]) == ("found", "玄武区")
    assert (await service.lookup(_lookup("outage_by_address"), stranger)).status == "not_found"
    assert (await service.lookup(_lookup("outage_by_address"), anonymous)).status == "not_found"
    found = await service.lookup(_lookup("customer_by_phone"), known)
    assert found.data == {"customer_id": "C-1", "account": "3201234567"}
    assert (await service.lookup(_lookup("customer_by_phone"), anonymous)).status == "not_found"
    # Not even asked: a CRM that cannot be reached does not make it an error.
    down = HttpCrm(f"http://127.0.0.1:{_dead_port()}/crm", timeout=1.0)
    numbers = await TicketNumbers.attach(bridge.outbox.connection, 7, lock=bridge.outbox.lock)
    unreachable = CrmService(down, bridge.outbox, numbers, clock=bridge.clock.now, region=REGION)
    try:
        for name in ("customer_by_phone", "outage_by_address"):
            assert (await unreachable.lookup(_lookup(name), anonymous)).status == "not_found"
    finally:
        await down.close()


async def test_a_scripted_fault_call_leaves_a_ticket_hotline_tickets_show_finds(
    bridge: Bridge, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = _runner(bridge.service, bridge.clock, io.StringIO())
    await runner.step([*FAULT_TO_ADDRESS, "expect fault_ticket_created", "hangup"])
    number = (await runner.finish()).slots["ticket_id"]
    await DeliveryWorker(bridge.outbox, bridge.crm, clock=bridge.clock.now).run_once(
        bridge.clock.now()
    )
    app = create_app(Settings(), crm=bridge.crm, outbox=bridge.outbox, clock=bridge.clock.now)
    runner_web = web.AppRunner(app)
    await runner_web.setup()
    site = web.TCPSite(runner_web, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner_web.addresses[0][1]}"
    try:
        capsys.readouterr()
        with capture_logs():
            code = await asyncio.to_thread(main, ["tickets", "show", number, "--url", url])
        out = capsys.readouterr().out
    finally:
        await runner_web.cleanup()
    assert code == 0
    shown = dict(line.split(None, 1) for line in out.split("history:", 1)[0].splitlines())
    assert (shown["ticket"], shown["type"], shown["status"]) == (number, "故障报修", "submitted")
    assert shown["address"] == "江苏省南京市鼓楼区中山北路100号"
    assert shown["crm"].split() == ["ref", "emb-1"]


async def test_an_address_said_with_the_problem_reaches_the_ticket_in_parts(
    bridge: Bridge,
) -> None:
    # A 济南 hotline with the shipped street list: the street written as a homophone is
    # corrected, read back and confirmed; the work order gets the parts, not a re-parse.
    runner = ScriptRunner(
        load_flow(Settings().resolved_flow_file()),
        Catalog.shipped(),
        io.StringIO(),
        caller="13812345678",
        dialed="95598",
        crm=bridge.service,
        clock=bridge.clock,
        understander=Understander("山东省", "济南市", StreetList.shipped()),
    )
    await runner.step(
        [
            "speech on",
            "say 我家停电了 历下区京十路八十八号",
            "expect fault_account",
            "press #",
            "expect address_readback confirm_or_resay",
            "press 1",
            "expect fault_ticket_created",
            "hangup",
        ]
    )
    summary = await runner.finish()
    worker = DeliveryWorker(bridge.outbox, bridge.crm, clock=bridge.clock.now)
    assert await worker.run_once(bridge.clock.now()) == 1
    ticket = await bridge.crm.get_ticket(summary.slots["ticket_id"])
    assert ticket is not None
    address = ticket.address
    assert (address.province, address.city, address.district) == ("山东省", "济南市", "历下区")
    assert (address.street, address.number) == ("经十路", "88号")
    assert address.raw == "我家停电了 历下区京十路八十八号"
    assert ticket.fields["address.status"] == "confirmed"
    assert ticket.fields["address.corrections"] == "京十路→经十路"
