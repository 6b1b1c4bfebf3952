"""Ring-all queues: a call rings every eligible available agent at once, the first accept wins,
the others go back to available; rejects, timeouts, hang-ups and late joiners."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from routing.errors import NoSuchReservationError
from routing.events import EventType, Replay, RoutingEvent
from routing.model import (
    AgentState,
    CallState,
    ItemKind,
    NewCall,
    Offer,
    QueueConfig,
    QueuedCall,
    Strategy,
)
from routing.store import RoutingStore

Check = Callable[[RoutingStore], Awaitable[None]]
T0 = 1_800_000_000.0
RING_ALL = QueueConfig("billing", strategy=Strategy.RING_ALL)


def call(call_id: str, skills: dict[str, int] | None = None) -> NewCall:
    return NewCall(call_id, skills or {"billing": 1}, node_id="n1", request_id=7)


def pairs(offers: list[Offer] | tuple[Offer, ...]) -> list[tuple[str, str]]:
    return [(o.call_id, o.agent_id) for o in offers]


async def queued(store: RoutingStore, call_id: str) -> QueuedCall:
    found = await store.call(call_id)
    assert found is not None
    return found


async def agent_state(store: RoutingStore, agent_id: str) -> tuple[AgentState, str, str]:
    agent = await store.agent(agent_id)
    assert agent is not None
    return agent.state, agent.reason, agent.call_id


async def since(store: RoutingStore, after: str) -> list[RoutingEvent]:
    return await store.events(after=after)


async def mark(store: RoutingStore) -> str:
    events = await store.events()
    return events[-1].event_id if events else "-"


async def two_ringing(store: RoutingStore) -> None:
    """c1 rings A1 and A2 (billing, ring-all); A3 is not ready."""
    await store.configure_queue(RING_ALL, T0)
    await store.login("A1", skills={"billing": 3}, now=T0, ready=True)
    await store.login("A2", skills={"billing": 5}, now=T0 + 1, ready=True)
    await store.login("A3", skills={"billing": 5}, now=T0 + 2)
    await store.enqueue(call("c1"), T0 + 10)


async def test_a_call_rings_every_eligible_available_agent(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(RING_ALL, T0)
    await store.login("A1", skills={"billing": 3, "english": 2}, now=T0, ready=True)
    await store.login("A2", skills={"billing": 5, "english": 4}, now=T0 + 1, ready=True)
    await store.login("low", skills={"billing": 2, "english": 4}, now=T0 + 2, ready=True)
    await store.login("mono", skills={"billing": 9}, now=T0 + 3, ready=True)
    await store.login("away", skills={"billing": 9, "english": 9}, now=T0 + 4)
    result = await store.enqueue(call("c1", {"billing": 3, "english": 2}), T0 + 10)
    assert pairs(result.offers) == [("c1", "A1"), ("c1", "A2")]  # longest idle first
    assert result.position.position == 0
    c1 = await queued(store, "c1")
    assert (c1.state, c1.agent_id, c1.offered_to) == (CallState.OFFERED, "", ("A1", "A2"))
    assert await agent_state(store, "A1") == (AgentState.RESERVED, "", "c1")
    assert await agent_state(store, "A2") == (AgentState.RESERVED, "", "c1")
    assert await store.available("billing") == {"low", "mono"}
    offers = (await store.events())[-2:]
    assert [(e.type, e.agent_id, e.fields["ringall"]) for e in offers] == [
        (EventType.OFFER, "A1", "1"),
        (EventType.OFFER, "A2", "1"),
    ]
    await consistent(store)


async def test_the_first_accept_wins_and_the_others_go_back_to_available(
    store: RoutingStore, consistent: Check
) -> None:
    await two_ringing(store)
    before = await mark(store)
    assert await store.accept("A2", "c1", T0 + 12) == ""
    c1 = await queued(store, "c1")
    assert (c1.state, c1.agent_id, c1.offered_to) == (CallState.CONNECTED, "A2", ())
    assert await agent_state(store, "A1") == (AgentState.AVAILABLE, "", "")
    events = await since(store, before)
    assert [(e.type, e.agent_id) for e in events] == [
        (EventType.CONNECT, "A2"),
        (EventType.RINGCANCEL, "A1"),
    ]
    assert events[0].fields["ring"] == "2"  # seconds since the ring started
    (message,) = await store.drain_inbox("n1")
    assert (message.kind, message.agent_id) == ("connected", "A2")
    with pytest.raises(NoSuchReservationError):
        await store.accept("A1", "c1", T0 + 13)
    assert await store.tick(T0 + 100) == 0  # A1's ring timer went with the ring
    await consistent(store)


async def test_a_cancelled_agent_keeps_its_idle_place(
    store: RoutingStore, consistent: Check
) -> None:
    await two_ringing(store)
    await store.ready("A3", T0 + 11)  # joins the ring
    await store.accept("A3", "c1", T0 + 12)
    result = await store.enqueue(call("c2"), T0 + 13)
    assert pairs(result.offers) == [("c2", "A1"), ("c2", "A2")]  # in their old idle order
    await consistent(store)


async def test_cancelled_agents_take_the_next_call_together(
    store: RoutingStore, consistent: Check
) -> None:
    await two_ringing(store)
    await store.enqueue(call("c2"), T0 + 11)  # everyone eligible is ringing: c2 waits
    await store.ready("A3", T0 + 12)  # joins c1's ring, not c2: c1 is ahead
    assert await agent_state(store, "A3") == (AgentState.RESERVED, "", "c1")
    await store.accept("A3", "c1", T0 + 13)
    c2 = await queued(store, "c2")
    assert (c2.state, c2.offered_to) == (CallState.OFFERED, ("A1", "A2"))
    await consistent(store)


async def test_a_reject_releases_only_that_agent(store: RoutingStore, consistent: Check) -> None:
    await two_ringing(store)
    await store.enqueue(call("c2"), T0 + 11)
    assert await store.reject("A1", "c1", T0 + 12) == []
    assert await agent_state(store, "A1") == (AgentState.NOT_READY, "rejected", "")
    c1 = await queued(store, "c1")
    assert (c1.state, c1.offered_to) == (CallState.OFFERED, ("A2",))
    reject = (await store.events())[-1]
    assert (reject.type, reject.fields["cstate"], reject.fields["ringall"]) == (
        EventType.REJECT,
        "offered",
        "1",
    )
    await store.reject("A2", "c1", T0 + 13)  # nobody left: back in its place, ahead of c2
    assert await store.waiting("billing") == ["c1", "c2"]
    assert (await store.events())[-1].fields["cstate"] == "waiting"
    await consistent(store)


async def test_timeout_makes_everyone_still_ringing_miss(
    store: RoutingStore, consistent: Check
) -> None:
    await two_ringing(store)
    await store.enqueue(call("c2"), T0 + 11)
    assert await store.tick(T0 + 24.9) == 0
    assert await store.tick(T0 + 25) == 2  # one reservation timer per agent rung
    assert await agent_state(store, "A1") == (AgentState.NOT_READY, "missed", "")
    assert await agent_state(store, "A2") == (AgentState.NOT_READY, "missed", "")
    assert await store.waiting("billing") == ["c1", "c2"]
    ronas = (await store.events())[-2:]
    assert [(e.type, e.agent_id, e.fields["cstate"]) for e in ronas] == [
        (EventType.RONA, "A1", "offered"),
        (EventType.RONA, "A2", "waiting"),
    ]
    await store.ready("A3", T0 + 26)
    assert (await queued(store, "c1")).offered_to == ("A3",)
    await consistent(store)


async def test_a_late_joiner_rings_for_its_full_time(
    store: RoutingStore, consistent: Check
) -> None:
    await two_ringing(store)
    assert pairs(await store.ready("A3", T0 + 20)) == [("c1", "A3")]
    joined = (await store.events())[-1]
    assert (joined.type, joined.fields["ringall"], joined.fields["wait"]) == (
        EventType.OFFER,
        "1",
        "10",
    )
    assert await store.tick(T0 + 25) == 2  # A1 and A2 miss; the call still rings A3
    c1 = await queued(store, "c1")
    assert (c1.state, c1.offered_to) == (CallState.OFFERED, ("A3",))
    assert await store.tick(T0 + 34.9) == 0
    assert await store.accept("A3", "c1", T0 + 34.9) == ""
    await consistent(store)


async def test_hangup_while_ringing_releases_everyone(
    store: RoutingStore, consistent: Check
) -> None:
    await two_ringing(store)
    before = await mark(store)
    assert await store.hangup("c1", T0 + 12) == "abandoned"
    events = await since(store, before)
    assert [(e.type, e.agent_id) for e in events] == [
        (EventType.ABANDON, ""),
        (EventType.RINGCANCEL, "A1"),
        (EventType.RINGCANCEL, "A2"),
    ]
    assert events[0].fields["wait"] == "2"
    assert await store.available("billing") == {"A1", "A2"}
    assert await store.tick(T0 + 100) == 0
    await consistent(store)


async def test_a_callback_instead_of_ringing_keeps_the_place_and_rings_again(
    store: RoutingStore, consistent: Check
) -> None:
    await two_ringing(store)
    assert await store.leave_for_callback("c1", T0 + 12) == "parked"
    assert [e.type for e in await store.events()][-3:] == [
        EventType.EXITWITHKEY,
        EventType.RINGCANCEL,
        EventType.RINGCANCEL,
    ]
    callback = NewCall("cb:c1", {"billing": 1}, kind=ItemKind.CALLBACK, number="1")
    result = await store.add_callback(callback, T0 + 13, from_call="c1")
    assert result.kept_place
    assert pairs(result.offers) == [("cb:c1", "A1"), ("cb:c1", "A2")]
    await consistent(store)


@pytest.mark.parametrize("leave", ["logout", "not_ready"])
async def test_an_agent_leaving_the_ring(
    store: RoutingStore, consistent: Check, leave: str
) -> None:
    await two_ringing(store)

    async def go(agent_id: str, now: float) -> None:
        if leave == "logout":
            await store.logout(agent_id, now)
        else:
            await store.not_ready(agent_id, "break", now)

    await go("A1", T0 + 11)
    release = (await store.events())[-2]
    assert (release.type, release.agent_id, release.fields["cstate"]) == (
        EventType.RELEASE,
        "A1",
        "offered",
    )
    assert (await queued(store, "c1")).offered_to == ("A2",)
    await go("A2", T0 + 12)
    assert await store.waiting("billing") == ["c1"]
    await consistent(store)


async def test_a_waiting_call_ahead_goes_before_joining_a_ring(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(RING_ALL, T0)
    await store.login("A1", skills={"billing": 1}, now=T0, ready=True)
    await store.login("both", skills={"billing": 1, "complaint": 1}, now=T0)
    await store.enqueue(call("k1", {"complaint": 1}), T0 + 1)
    await store.enqueue(call("b1"), T0 + 2)  # rings A1
    await store.enqueue(call("k2", {"complaint": 1}), T0 + 3)
    assert pairs(await store.ready("both", T0 + 4)) == [("k1", "both")]  # k1 came before b1
    await store.not_ready("both", "x", T0 + 5)  # k1 back in place, ahead of everything
    await store.hangup("k1", T0 + 6)
    assert pairs(await store.ready("both", T0 + 7)) == [("b1", "both")]  # b1 before k2: joins
    assert (await queued(store, "b1")).offered_to == ("A1", "both")
    await consistent(store)


async def test_an_agent_gaining_the_skill_joins_the_ring(
    store: RoutingStore, consistent: Check
) -> None:
    await two_ringing(store)
    await store.login("A4", skills={"complaint": 1}, now=T0 + 11, ready=True)
    assert pairs(await store.set_skills("A4", {"billing": 1}, T0 + 12)) == [("c1", "A4")]
    await consistent(store)


async def test_an_offer_timeout_then_escalation_rings_everyone_now_eligible(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(
        QueueConfig("billing", strategy=Strategy.RING_ALL, escalate_after=10), T0
    )
    await store.login("senior", skills={"billing": 5}, now=T0, ready=True)
    await store.login("J1", skills={"billing": 1}, now=T0, ready=True)
    await store.login("J2", skills={"billing": 2}, now=T0, ready=True)
    await store.enqueue(call("c1", {"billing": 5}), T0)
    assert (await queued(store, "c1")).offered_to == ("senior",)
    await store.tick(T0 + 10)  # escalation waits for the ring
    await store.tick(T0 + 15)
    c1 = await queued(store, "c1")
    assert (c1.offered_to, dict(c1.skills)) == (("J1", "J2"), {"billing": 1})
    await consistent(store)


async def test_an_overflow_into_a_ring_all_queue_rings_everyone(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(
        QueueConfig("billing", overflow_after=60, overflow_queue="general"), T0
    )
    await store.configure_queue(QueueConfig("general", strategy=Strategy.RING_ALL), T0)
    await store.login("G1", skills={"general": 1}, now=T0, ready=True)
    await store.login("G2", skills={"general": 4}, now=T0, ready=True)
    await store.enqueue(call("c1"), T0)
    await store.tick(T0 + 60)
    assert (await queued(store, "c1")).offered_to == ("G1", "G2")
    await consistent(store)


async def test_strategy_changes_while_a_call_rings(store: RoutingStore, consistent: Check) -> None:
    await two_ringing(store)
    await store.configure_queue(QueueConfig("billing"), T0 + 11)
    await store.ready("A3", T0 + 12)  # no longer a ring-all queue: no joining
    assert await agent_state(store, "A3") == (AgentState.AVAILABLE, "", "")
    await store.reject("A1", "c1", T0 + 13)  # the ring itself goes on as it started
    assert (await queued(store, "c1")).offered_to == ("A2",)
    await consistent(store)
    await store.configure_queue(RING_ALL, T0 + 14)  # ring-all again: A3 joins
    assert (await queued(store, "c1")).offered_to == ("A2", "A3")
    await consistent(store)


async def test_replay_follows_the_ring(store: RoutingStore) -> None:
    await two_ringing(store)
    replay = Replay().apply_all(await store.events())
    assert (replay.offered_to, replay.agent_of) == ({"c1": {"A1", "A2"}}, {})
    await store.accept("A1", "c1", T0 + 12)
    replay = Replay().apply_all(await store.events())
    assert (replay.offered_to, replay.agent_of) == ({}, {"c1": "A1"})
    assert replay.agents["A2"] == (AgentState.AVAILABLE, "")


async def test_max_wait_during_a_ring_ends_the_call_when_the_ring_fails(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(QueueConfig("billing", strategy=Strategy.RING_ALL, max_wait=12), T0)
    await store.login("A1", skills={"billing": 1}, now=T0, ready=True)
    await store.login("A2", skills={"billing": 1}, now=T0, ready=True)
    await store.enqueue(call("c1"), T0 + 10)
    assert await store.tick(T0 + 22) == 1  # max wait passes while the call rings
    assert (await queued(store, "c1")).offered_to == ("A1", "A2")
    await store.reject("A1", "c1", T0 + 23)
    assert (await queued(store, "c1")).offered_to == ("A2",)
    await store.tick(T0 + 25)  # A2's ring times out: the caller leaves instead of waiting
    assert await store.call("c1") is None
    types = [e.type for e in await store.events()][-2:]
    assert types == [EventType.RONA, EventType.EXITWITHTIMEOUT]
    (message,) = await store.drain_inbox("n1")
    assert (message.kind, message.reason) == ("exited", "max_wait")
    await consistent(store)
