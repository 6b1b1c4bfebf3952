"""The session driver: timers, service failures, transport failures, logs and metrics."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from ivr import metrics
from ivr.dialog import actions as act
from ivr.dialog import events as ev
from ivr.dialog.engine import CallContext
from ivr.flow.model import Flow, load_flow, parse_flow
from ivr.logs import configure_logging
from ivr.services import LookupReply, NotConnectedCrm, NotConnectedRouting, ServiceError
from ivr.session import CallSession, ManualClock, MonotonicClock
from ivr.settings import load_settings
from ivr.transports.sim import SimTransport
from sounds.catalog import Catalog

CALLER = "13912345678"


def shipped_flow() -> Flow:
    return load_flow(load_settings().resolved_flow_file())


def tiny_flow(timeout: float) -> Flow:
    """One menu with a short timeout, escalating to an end node."""
    return parse_flow(
        {
            "flow": {
                "name": "tiny",
                "start": "menu",
                "escalate": "bye",
                "timeout": timeout,
                "no_input_prompt": "no_input",
                "no_match_prompt": "no_match",
                "max_failures": 2,
            },
            "nodes": {
                "menu": {
                    "type": "menu",
                    "prompts": ["main_menu"],
                    "choices": [{"key": "1", "goto": "bye"}],
                },
                "bye": {"type": "end", "outcome": "hangup", "prompts": ["goodbye"]},
            },
        }
    )


def context(call_id: str = "call-1", speech: bool = False) -> CallContext:
    return CallContext(call_id=call_id, caller=CALLER, speech_available=speech)


def session_for(
    flow: Flow, crm: Any = None, routing: Any = None, **kw: Any
) -> tuple[CallSession, SimTransport, io.StringIO]:
    out = io.StringIO()
    transport = SimTransport(Catalog.shipped(), out, show_collect=False)
    session = CallSession(
        flow, context(), transport, crm or NotConnectedCrm(), routing or NotConnectedRouting(), **kw
    )
    transport.feed = session.feed
    return session, transport, out


async def test_real_timers_drive_no_input_to_escalation() -> None:
    session, transport, _ = session_for(tiny_flow(0.05), clock=MonotonicClock())
    summary = await asyncio.wait_for(session.run(), timeout=5)
    assert transport.played == ["main_menu", "no_input", "main_menu", "goodbye"]
    assert summary.failures == {"no_input": 2, "escalated": 1}
    assert transport.hung_up == "completed"


async def test_not_connected_services_take_error_paths() -> None:
    session, transport, _ = session_for(shipped_flow(), clock=ManualClock())
    task = asyncio.create_task(session.run())
    await asyncio.sleep(0.05)
    for key in "31":  # billing, balance
        session.feed(ev.DigitPressed(key))
    for key in "1234567890#1":  # account, confirm
        session.feed(ev.DigitPressed(key))
    await asyncio.sleep(0.05)
    # The lookup failed (no CRM): the caller hears so and is sent to the billing queue, which
    # also fails (no routing), so the caller is offered a callback or a message.
    assert "service_unavailable" in transport.played
    assert session.dialog.node_id == "queue_busy_menu"
    session.feed(ev.CallerHungUp())
    summary = await asyncio.wait_for(task, timeout=5)
    assert summary.slots["service_error"] == "not_connected"
    assert [o.kind for o in summary.outcomes] == ["enqueue", "abandoned"]


class CrashingCrm(NotConnectedCrm):
    async def lookup(self, request: act.Lookup, context: CallContext) -> LookupReply:
        raise RuntimeError("bug in the CRM adapter")


async def test_a_crashing_service_fails_the_request_not_the_call() -> None:
    session, _transport, _ = session_for(shipped_flow(), crm=CrashingCrm(), clock=ManualClock())
    task = asyncio.create_task(session.run())
    await asyncio.sleep(0.05)
    for key in "6" + "202611270001#":
        session.feed(ev.DigitPressed(key))
    with capture_logs() as logs:
        await asyncio.sleep(0.05)
    assert any(e["event"] == "service crashed" and e["service"] == "lookup" for e in logs)
    assert session.dialog.slots["service_error"] == "internal_error"
    session.feed(ev.CallerHungUp())
    summary = await asyncio.wait_for(task, timeout=5)
    assert "lookup crashed" in summary.errors


class BrokenTransport(SimTransport):
    async def play(self, play: act.Play) -> None:
        raise OSError("socket closed")


async def test_a_failing_transport_ends_the_call_as_hung_up() -> None:
    out = io.StringIO()
    transport = BrokenTransport(Catalog.shipped(), out)
    session = CallSession(
        shipped_flow(),
        context(),
        transport,
        NotConnectedCrm(),
        NotConnectedRouting(),
        clock=ManualClock(),
    )
    transport.feed = session.feed
    summary = await asyncio.wait_for(session.run(), timeout=5)
    assert summary.outcomes[-1].kind == "abandoned"
    assert "transport play failed" in summary.errors


async def test_cancelling_a_call_hangs_it_up() -> None:
    session, transport, _ = session_for(shipped_flow(), clock=ManualClock())
    task = asyncio.create_task(session.run())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert transport.hung_up == "shutdown"


class SlowTicketCrm(NotConnectedCrm):
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.tickets: list[act.CreateTicket] = []

    async def create_ticket(self, request: act.CreateTicket, context: CallContext) -> str:
        self.tickets.append(request)
        await self.release.wait()
        return "202611270042"


class WaitingRouting(NotConnectedRouting):
    """A queue that accepts the call and never finds an agent."""

    def __init__(self) -> None:
        self.left: list[act.LeaveQueue] = []

    async def enqueue(self, request: act.Enqueue, context: CallContext, feed: Any) -> None:
        return None

    async def leave_queue(self, request: act.LeaveQueue, context: CallContext) -> None:
        self.left.append(request)


async def test_partial_ticket_after_hangup_is_delivered_before_the_session_ends() -> None:
    crm, routing = SlowTicketCrm(), WaitingRouting()
    session, _, _ = session_for(shipped_flow(), crm=crm, routing=routing, clock=ManualClock())
    task = asyncio.create_task(session.run())
    await asyncio.sleep(0.05)
    session.feed(ev.DigitPressed("1"))  # hazard: the report must not be lost
    await asyncio.sleep(0.05)
    assert session.dialog.node_id == "hazard_queue"
    session.feed(ev.CallerHungUp())
    await asyncio.sleep(0.05)
    assert not task.done()  # still delivering the work order
    crm.release.set()
    summary = await asyncio.wait_for(task, timeout=5)
    assert [t.complete for t in crm.tickets] == [False]
    assert crm.tickets[0].priority == 100
    assert [r.reason for r in routing.left] == ["abandoned"]
    assert summary.errors == []


async def test_hangup_while_a_ticket_is_in_flight_makes_no_duplicate() -> None:
    crm = SlowTicketCrm()
    session, _, _ = session_for(shipped_flow(), crm=crm, clock=ManualClock())
    task = asyncio.create_task(session.run())
    await asyncio.sleep(0.05)
    session.feed(ev.DigitPressed("1"))  # hazard; no routing -> the hazard ticket is requested
    await asyncio.sleep(0.05)
    assert session.dialog.node_id == "hazard_ticket"
    session.feed(ev.CallerHungUp())
    await asyncio.sleep(0.05)
    crm.release.set()
    await asyncio.wait_for(task, timeout=5)
    assert [t.complete for t in crm.tickets] == [True]


async def test_service_work_that_outlives_the_grace_is_reported() -> None:
    crm = SlowTicketCrm()
    session, _, _ = session_for(shipped_flow(), crm=crm, clock=ManualClock(), service_grace=0.05)
    task = asyncio.create_task(session.run())
    await asyncio.sleep(0.05)
    session.feed(ev.DigitPressed("1"))
    await asyncio.sleep(0.05)
    with capture_logs() as logs:
        session.feed(ev.CallerHungUp())
        summary = await asyncio.wait_for(task, timeout=5)
    assert summary.errors == ["service work abandoned at call end"]
    assert any(e["event"] == "service work abandoned at call end" for e in logs)


async def test_summary_line_binds_call_id_and_masks_the_caller() -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    try:
        session, _, _ = session_for(tiny_flow(0.01), clock=MonotonicClock())
        await asyncio.wait_for(session.run(), timeout=5)
    finally:
        structlog.reset_defaults()
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    call_lines = [e for e in lines if e.get("logger") == "ivr.session"]
    assert call_lines, stream.getvalue()
    assert all(e["call_id"] == "call-1" for e in call_lines)
    summary = next(e for e in call_lines if e["event"] == "call ended")
    assert summary["path"] == ["menu", "bye"]
    assert summary["outcome"] == "hangup"
    assert CALLER not in stream.getvalue()
    assert summary["caller"] == "139****5678"


async def test_metrics_count_calls_by_channel_and_outcome() -> None:
    started = metrics.CALLS_STARTED.labels(channel="sim")._value.get()
    ended = metrics.CALLS_ENDED.labels(outcome="hangup")._value.get()
    session, _, _ = session_for(tiny_flow(0.01), clock=MonotonicClock())
    await asyncio.wait_for(session.run(), timeout=5)
    assert metrics.CALLS_STARTED.labels(channel="sim")._value.get() == started + 1
    assert metrics.CALLS_ENDED.labels(outcome="hangup")._value.get() == ended + 1
    assert metrics.CALLS_ACTIVE._value.get() == 0


async def test_late_events_after_the_end_are_dropped() -> None:
    session, _, _ = session_for(tiny_flow(0.01), clock=MonotonicClock())
    await asyncio.wait_for(session.run(), timeout=5)
    session.feed(ev.DigitPressed("1"))
    session.feed(ev.TicketCreated(99, "x"))
    assert not session.queued


async def test_lookup_reply_reaches_the_dialog() -> None:
    class BillCrm(NotConnectedCrm):
        async def lookup(self, request: act.Lookup, context: CallContext) -> LookupReply:
            assert request.params == {"account": "1234567890"}
            return LookupReply("found", {"balance": "5.00", "due_date": "2026-12-01"})

    session, transport, _ = session_for(shipped_flow(), crm=BillCrm(), clock=ManualClock())
    task = asyncio.create_task(session.run())
    await asyncio.sleep(0.05)
    for key in "31" + "1234567890#" + "1":
        session.feed(ev.DigitPressed(key))
    await asyncio.sleep(0.05)
    assert session.dialog.node_id == "bill_report"
    start = transport.played.index("bill_balance")
    assert transport.played[start:] == [
        "bill_balance",
        "digit_5",
        "unit_yuan",
        "bill_due",
        "digit_2",
        "digit_0",
        "digit_2",
        "digit_6",
        "unit_year",
        "num_10",
        "digit_2",
        "unit_month",
        "digit_1",
        "unit_day",
        "bill_menu",
    ]
    session.feed(ev.DigitPressed("1"))
    summary = await asyncio.wait_for(task, timeout=5)
    assert [o.kind for o in summary.outcomes] == ["self_service"]


def test_service_error_keeps_its_reason() -> None:
    err = ServiceError("not_connected", "no CRM")
    assert err.reason == "not_connected"
    assert str(err) == "no CRM"
