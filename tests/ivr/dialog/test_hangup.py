"""The caller hangs up at every node of the shipped flow: the call ends cleanly, once."""

from __future__ import annotations

from pathlib import Path

import pytest

import ivr
from ivr.dialog import events as ev
from ivr.dialog.actions import CreateTicket, Enqueue, LeaveQueue
from ivr.dialog.engine import Outcome
from ivr.flow.model import EndNode, EnqueueNode, load_flow
from ivr.settings import SHIPPED_FLOW

FLOW = load_flow(Path(ivr.__file__).parent / SHIPPED_FLOW)
ALL_NODES = list(FLOW.nodes)

PARTIAL_TICKET_PRIORITY = {
    # A hazard (key 1 or a hazard phrase) before its work order was created...
    "hazard_queue": 100,
    "hazard_recorded": 100,  # the ticket service failed
    # ... and a fault report (key 2) before its work order was created.
    "fault_account": 50,
    "fault_account_confirm": 50,
    "fault_address": 50,
    "fault_outage_lookup": 50,
    "fault_outage_known": 50,
}
"""Nodes where a hang-up must leave a partial 故障报修 ticket, at that priority. Not in the list:
hazard_ticket and fault_ticket (the complete CreateTicket is already in flight), goodbye_outage
(the caller heard the known outage and declined to report) and fault_queue (the ticket was
created before queueing)."""

LATER_EVENTS = [
    ev.CallStarted(),
    ev.DigitPressed("1"),
    ev.DigitPressed("9"),
    ev.SpeechRecognized("转人工"),
    ev.SpeechRecognized("电线落地了"),
    *[ev.PromptFinished(i) for i in range(12)],
    ev.DeadlineReached(),
    *[ev.LookupResult(i, "found", {"balance": "1"}) for i in range(6)],
    *[ev.TicketCreated(i, "1234") for i in range(6)],
    *[ev.ServiceDone(i) for i in range(6)],
    *[ev.ServiceFailed(i, "down") for i in range(6)],
    *[ev.QueuePosition(i, 1, 60) for i in range(6)],
    *[ev.AgentConnected(i, "A1") for i in range(6)],
    *[ev.AgentDisconnected(i) for i in range(6)],
    *[ev.CallTransferred(i) for i in range(6)],
    *[ev.QueueExited(i, "max_wait") for i in range(6)],
    ev.CallerHungUp(),
]


AFTER_AN_AGENT = {"survey", "goodbye_thanks"}
"""Nodes the walk table reaches after an agent answered."""


def test_the_walk_table_covers_every_node(paths):
    assert set(paths) == set(FLOW.nodes)
    assert "hazard_notice" not in paths


@pytest.mark.parametrize("node_id", ALL_NODES)
def test_the_walks_after_an_agent(walk_to, node_id):
    d = walk_to(node_id)
    assert ("agent_id" in d.dialog.slots) == (node_id in AFTER_AN_AGENT)


@pytest.mark.parametrize("node_id", ALL_NODES)
def test_hang_up_at_every_node(walk_to, node_id):
    d = walk_to(node_id)
    queued = d.dialog.phase == "queued"
    assert queued == isinstance(FLOW.node(node_id), EnqueueNode)
    tickets_before = len(d.of(d.actions, CreateTicket))
    outcomes_before = list(d.dialog.outcomes)

    out = d.hang_up()

    assert d.dialog.ended
    assert d.dialog.deadline is None
    assert not d.dialog.playing

    leaves = d.of(out, LeaveQueue)
    if queued:
        assert leaves == [LeaveQueue(d.last(Enqueue).request_id, "abandoned")]
    else:
        assert leaves == []

    partial = [t for t in d.of(out, CreateTicket) if not t.complete]
    assert len(d.of(out, CreateTicket)) == len(partial)  # a hang-up files nothing complete
    if node_id in PARTIAL_TICKET_PRIORITY:
        [ticket] = partial
        assert ticket.ticket_type == "故障报修"
        assert ticket.priority == PARTIAL_TICKET_PRIORITY[node_id]
        assert ticket.fields["caller"] == d.dialog.context.caller
        assert ticket.fields["intent"] in {"hazard", "fault"}
        assert ticket.path == tuple(d.dialog.path)
        assert ticket.path[-1] == node_id
        assert ticket.request_id not in {
            t.request_id for t in d.actions[: -len(out)] if isinstance(t, CreateTicket)
        }
        assert d.dialog.outcomes[len(outcomes_before)] == Outcome("ticket", "故障报修 (partial)")
    else:
        assert partial == []

    # Abandoned: left before the call was done. Not during an end node's goodbye (the call
    # was done), nor after an agent answered (the caller was served).
    abandoned = [o for o in d.dialog.outcomes if o.kind == "abandoned"]
    if isinstance(FLOW.node(node_id), EndNode) or node_id in AFTER_AN_AGENT:
        assert abandoned == []
    else:
        assert abandoned == [Outcome("abandoned", node_id)]
        assert d.dialog.outcomes[-1] == abandoned[0]

    outcomes_after = list(d.dialog.outcomes)
    for event in LATER_EVENTS:
        d.advance(100.0)
        assert d.send(event) == [], event
    assert d.dialog.outcomes == outcomes_after
    assert len(d.of(d.actions, CreateTicket)) == tickets_before + len(partial)


@pytest.mark.parametrize("node_id", ["hazard_queue", "agent_general"])
def test_hang_up_while_talking_to_an_agent(walk_to, node_id):
    d = walk_to(node_id)
    d.connect()
    out = d.hang_up()
    # Routing hears it (the agent goes to wrap-up); the agent files the report, no ticket here.
    assert out == [LeaveQueue(d.last(Enqueue).request_id, "hangup")]
    assert d.dialog.ended
    assert not any(o.kind == "abandoned" for o in d.dialog.outcomes)


@pytest.mark.parametrize("node_id", ["hazard_queue", "agent_general"])
def test_hang_up_while_the_agent_phone_rings_is_an_abandon(walk_to, node_id):
    """The transport said the accepting agent's phone rings: until it answers, a hang-up is an
    abandon for routing (the agent free again), and for the call's outcomes."""
    d = walk_to(node_id)
    d.connect()
    rid = d.last(Enqueue).request_id
    assert d.send(ev.AgentRinging(rid)) == []
    out = d.hang_up()
    assert out[0] == LeaveQueue(rid, "abandoned_ringing")
    assert d.dialog.ended
    assert any(o.kind == "abandoned" for o in d.dialog.outcomes)


@pytest.mark.parametrize("node_id", ["hazard_queue", "agent_general"])
def test_hang_up_once_the_agent_phone_answered_completes(walk_to, node_id):
    d = walk_to(node_id)
    d.connect()
    rid = d.last(Enqueue).request_id
    d.send(ev.AgentRinging(rid))
    assert d.send(ev.AgentAnswered(rid)) == []
    assert d.hang_up() == [LeaveQueue(rid, "hangup")]
    assert not any(o.kind == "abandoned" for o in d.dialog.outcomes)


def test_hang_up_in_the_fault_queue_after_the_ticket_failed_leaves_a_partial_ticket(walk_to):
    d = walk_to("fault_ticket")
    d.fail("crm_down")
    d.finish_prompts()
    assert d.dialog.node_id == "fault_queue"
    out = d.hang_up()
    assert out[0] == LeaveQueue(d.last(Enqueue).request_id, "abandoned")
    [ticket] = d.of(out, CreateTicket)
    assert (ticket.ticket_type, ticket.priority, ticket.complete) == ("故障报修", 50, False)
    assert ticket.fields["service_error"] == "crm_down"


def test_hang_up_after_the_known_outage_leaves_no_ticket(walk_to):
    d = walk_to("goodbye_outage")
    assert d.hang_up() == []


def test_hang_up_before_the_call_started(make_driver):
    d = make_driver()
    assert d.hang_up() == []
    assert d.dialog.ended
    assert d.dialog.outcomes == [Outcome("abandoned", "")]
    assert d.start() == []


@pytest.mark.parametrize(
    ("node_id", "kind"),
    [
        ("goodbye_bill", "bill_summary"),
        ("goodbye_outage", "outage_notice"),
        ("goodbye_status", "ticket_status"),
        ("goodbye_new_connection", "new_connection_info"),
    ],
)
def test_hang_up_during_the_self_service_goodbye_is_not_abandoned(walk_to, node_id, kind):
    d = walk_to(node_id)
    assert d.dialog.phase == "ending"
    assert d.hang_up() == []
    assert d.dialog.outcomes == [Outcome("self_service", kind)]
    assert d.dialog.ended


def test_hang_up_in_the_survey_after_an_agent_took_the_hazard(walk_to):
    d = walk_to("hazard_queue")
    d.connect()
    d.disconnect()
    d.finish_prompts()
    assert d.dialog.node_id == "survey"
    out = d.hang_up()
    assert out == []  # no partial ticket: the agent took the report
    assert d.dialog.outcomes == [Outcome("enqueue", "hazard/100")]
    assert d.dialog.ended


def test_hang_up_in_the_survey_after_an_agent_took_the_fault(walk_to):
    d = walk_to("fault_ticket")
    d.fail("crm_down")  # no work order: the agent is told to file it
    d.finish_prompts()
    d.connect()
    d.disconnect()
    d.finish_prompts()
    assert d.dialog.node_id == "survey"
    assert d.hang_up() == []
    assert not any(o.kind in ("abandoned", "ticket") for o in d.dialog.outcomes)


def test_hazard_said_in_the_survey_after_an_agent_then_hang_up_leaves_a_partial_ticket(walk_to):
    d = walk_to("survey")  # a general agent answered and hung up
    d.say("我家门口电线落地了")
    d.finish_prompts()
    assert d.dialog.node_id == "hazard_queue"
    out = d.hang_up()
    assert out[0] == LeaveQueue(d.last(Enqueue).request_id, "abandoned")
    tickets = [(t.ticket_type, t.priority, t.complete) for t in d.of(out, CreateTicket)]
    assert tickets == [("故障报修", 100, False)]
    assert d.dialog.outcomes[-2:] == [
        Outcome("ticket", "故障报修 (partial)"),
        Outcome("abandoned", "hazard_queue"),
    ]


def test_hazard_said_after_the_fault_ticket_then_hang_up_leaves_a_partial_ticket(walk_to):
    d = walk_to("fault_queue")  # the fault ticket 20261127 was created
    d.exit_queue("no_agents")
    d.finish_prompts()
    assert d.dialog.node_id == "queue_busy_menu"
    d.say("电线掉了，在冒火花")
    d.finish_prompts()
    assert d.dialog.node_id == "hazard_queue"
    assert d.dialog.slots["pending_priority"] == "100"
    out = d.hang_up()
    tickets = [(t.ticket_type, t.priority, t.complete) for t in d.of(out, CreateTicket)]
    assert tickets == [("故障报修", 100, False)]


@pytest.mark.parametrize("node_id", ["hazard_ticket", "fault_ticket"])
def test_hang_up_while_the_ticket_is_being_created_files_no_second_one(walk_to, node_id):
    d = walk_to(node_id)
    out = d.hang_up()
    assert d.of(out, CreateTicket) == []
    [ticket] = d.of(d.actions, CreateTicket)
    assert ticket.complete
    # A late reply changes nothing either.
    assert d.ticket("20261127") == []


def test_no_partial_ticket_beside_one_whose_answer_timed_out(walk_to):
    """The CRM bridge was slow to number the work order (the flow's service timeout passed):
    the caller goes on to the queue without a number, but the bridge may still file it, so a
    hang-up there files no second, partial one for the same report."""
    d = walk_to("fault_ticket")
    [handed_over] = d.of(d.actions, CreateTicket)
    assert handed_over.complete
    d.timeout()  # no answer within the service timeout: on_error, to the queue
    assert d.dialog.node_id == "fault_queue"
    out = d.hang_up()
    assert d.of(out, CreateTicket) == []
    assert Outcome("ticket", "故障报修 (partial)") not in d.dialog.outcomes


def test_a_partial_ticket_when_the_work_order_was_refused(walk_to):
    """A refusal (not a timeout) means no work order exists: the hang-up still files one."""
    d = walk_to("fault_ticket")
    d.fail("invalid_ticket")
    assert d.dialog.node_id == "fault_queue"
    [partial] = d.of(d.hang_up(), CreateTicket)
    assert not partial.complete
