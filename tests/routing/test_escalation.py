"""Escalation and overflow: a call that waits too long asks for less, or moves to another queue,
without losing its place; with max wait, max length, offers, rejects and callbacks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from routing.events import EventType, RoutingEvent
from routing.model import AgentState, CallState, ItemKind, NewCall, QueueConfig, QueuedCall
from routing.store import RoutingStore

Check = Callable[[RoutingStore], Awaitable[None]]
T0 = 1_800_000_000.0


def call(call_id: str, skills: dict[str, int], priority: int = 0) -> NewCall:
    return NewCall(call_id, skills, priority=priority, node_id="n1", request_id=1)


async def queued(store: RoutingStore, call_id: str) -> QueuedCall:
    found = await store.call(call_id)
    assert found is not None
    return found


async def last(store: RoutingStore, n: int = 1) -> list[RoutingEvent]:
    return (await store.events())[-n:]


async def agent_call(store: RoutingStore, agent_id: str) -> tuple[AgentState, str, str]:
    agent = await store.agent(agent_id)
    assert agent is not None
    return agent.state, agent.reason, agent.call_id


ESCALATING = QueueConfig("billing", escalate_after=60, escalate_min_level=2)
OVERFLOWING = QueueConfig("billing", overflow_after=60, overflow_queue="general")


# ---------------------------------------------------------------------- settings


def test_settings_round_trip() -> None:
    config = QueueConfig(
        "billing",
        escalate_after=45.5,
        escalate_min_level=3,
        overflow_after=120,
        overflow_queue="故障报修",
    )
    assert QueueConfig.from_fields("billing", config.as_fields()) == config
    default = QueueConfig("billing")
    assert (default.escalate_after, default.overflow_after, default.overflow_queue) == (0, 0, "")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"escalate_after": -1}, "negative"),
        ({"overflow_after": -1, "overflow_queue": "general"}, "negative"),
        ({"escalate_min_level": 0}, "level"),
        ({"escalate_min_level": 11}, "level"),
        ({"overflow_after": 60}, "together"),
        ({"overflow_queue": "general"}, "together"),
        ({"overflow_after": 60, "overflow_queue": "a:b"}, "bad skill"),
        ({"overflow_after": 60, "overflow_queue": "billing"}, "itself"),
    ],
)
def test_settings_checks(bad: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QueueConfig("billing", **bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- escalation


async def test_escalation_lowers_the_level_and_drops_extras_in_place(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(ESCALATING, T0)
    await store.login("junior", skills={"billing": 2}, now=T0)
    await store.enqueue(call("a", {"billing": 5, "english": 3}), T0)
    await store.enqueue(call("b", {"billing": 4}), T0 + 30)
    assert await store.tick(T0 + 59) == 0
    assert await store.tick(T0 + 60) == 1
    a = await queued(store, "a")
    assert (dict(a.skills), a.escalated, a.entered_queue, a.enqueued_at) == (
        {"billing": 2},
        True,
        "billing",
        T0,
    )
    assert await store.waiting("billing") == ["a", "b"]  # kept its place
    (event,) = await last(store)
    assert (event.type, event.call_id, event.fields["min"], event.fields["from_min"]) == (
        EventType.ESCALATE,
        "a",
        "2",
        "5",
    )
    assert event.fields["wait"] == "60"
    assert [o.call_id for o in await store.ready("junior", T0 + 61)] == ["a"]
    await consistent(store)


async def test_an_escalated_call_is_offered_at_once(store: RoutingStore, consistent: Check) -> None:
    await store.configure_queue(ESCALATING, T0)
    await store.enqueue(call("a", {"billing": 4}), T0)
    await store.login("junior", skills={"billing": 2}, now=T0 + 10, ready=True)
    assert await agent_call(store, "junior") == (AgentState.AVAILABLE, "", "")
    await store.tick(T0 + 60)
    assert await agent_call(store, "junior") == (AgentState.RESERVED, "", "a")
    assert [e.type for e in await last(store, 2)] == [EventType.ESCALATE, EventType.OFFER]
    await consistent(store)


async def test_escalation_never_raises_a_level_and_skips_calls_asking_little(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(QueueConfig("billing", escalate_after=60, escalate_min_level=3), T0)
    await store.enqueue(call("low", {"billing": 1}), T0)  # nothing to relax: no timer at all
    await store.enqueue(call("extra", {"billing": 2, "english": 1}), T0)
    assert await store.tick(T0 + 60) == 1
    assert dict((await queued(store, "extra")).skills) == {"billing": 2}
    low = await queued(store, "low")
    assert (dict(low.skills), low.escalated) == ({"billing": 1}, False)
    await consistent(store)


async def test_escalation_rereads_the_setting_when_it_fires(store: RoutingStore) -> None:
    await store.configure_queue(ESCALATING, T0)
    await store.enqueue(call("a", {"billing": 5}), T0)
    await store.configure_queue(QueueConfig("billing", escalate_after=120), T0 + 1)
    await store.tick(T0 + 60)  # due later now: re-armed, nothing happens
    assert dict((await queued(store, "a")).skills) == {"billing": 5}
    await store.tick(T0 + 120)
    assert dict((await queued(store, "a")).skills) == {"billing": 1}
    await store.enqueue(call("b", {"billing": 5}), T0 + 130)
    await store.configure_queue(QueueConfig("billing"), T0 + 131)  # turned off
    await store.tick(T0 + 1000)
    assert dict((await queued(store, "b")).skills) == {"billing": 5}
    assert (await last(store))[0].type is EventType.CONFIG  # no escalation event for b


async def test_an_offered_call_escalates_when_the_offer_times_out(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(
        QueueConfig("billing", escalate_after=10, reservation_timeout=15), T0
    )
    await store.login("senior", skills={"billing": 5}, now=T0, ready=True)
    await store.login("junior", skills={"billing": 1}, now=T0, ready=True)
    await store.enqueue(call("a", {"billing": 5}), T0)
    await store.tick(T0 + 10)  # the offer to senior is not taken away from under it
    assert await agent_call(store, "senior") == (AgentState.RESERVED, "", "a")
    assert dict((await queued(store, "a")).skills) == {"billing": 5}
    await store.tick(T0 + 15)  # RONA: back in line, escalated, offered to junior
    types = [e.type for e in await last(store, 3)]
    assert types == [EventType.RONA, EventType.ESCALATE, EventType.OFFER]
    assert await agent_call(store, "junior") == (AgentState.RESERVED, "", "a")
    await consistent(store)


async def test_an_escalated_call_rejected_goes_back_to_its_escalated_place(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(ESCALATING, T0)
    await store.login("junior", skills={"billing": 2}, now=T0)
    await store.enqueue(call("a", {"billing": 5}), T0)
    await store.enqueue(call("b", {"billing": 2}), T0 + 1)
    await store.tick(T0 + 60)
    await store.ready("junior", T0 + 61)
    await store.reject("junior", "a", T0 + 62)
    assert await store.waiting("billing") == ["a", "b"]
    a = await queued(store, "a")
    assert (a.state, dict(a.skills)) == (CallState.WAITING, {"billing": 2})
    await consistent(store)


# ---------------------------------------------------------------------- overflow


async def test_overflow_keeps_the_enqueue_time_and_priority(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(OVERFLOWING, T0)
    await store.enqueue(call("g1", {"general": 1}), T0 - 500)
    await store.enqueue(call("a", {"billing": 3, "english": 2}, priority=1), T0)
    assert await store.tick(T0 + 60) == 1
    await store.enqueue(call("g2", {"general": 1}), T0 + 61)
    # a's priority is worth 600 s in general too: ahead of g1, who came 500 s earlier
    assert await store.waiting("general") == ["a", "g1", "g2"]
    assert await store.waiting("billing") == []
    a = await queued(store, "a")
    assert (dict(a.skills), a.entered_queue, a.enqueued_at, a.priority, a.escalated) == (
        {"general": 1},
        "billing",
        T0,
        1,
        True,
    )
    overflow = next(e for e in await store.events() if e.type is EventType.OVERFLOW)
    assert (overflow.call_id, overflow.fields["from"], overflow.fields["to"]) == (
        "a",
        "billing",
        "general",
    )
    assert overflow.fields["wait"] == "60"
    assert (await store.positions(["a"], T0 + 62))["a"].position == 1
    await consistent(store)


async def test_an_overflowed_call_is_offered_at_once(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(OVERFLOWING, T0)
    await store.enqueue(call("a", {"billing": 1}), T0)
    await store.login("G1", skills={"general": 1}, now=T0 + 1, ready=True)
    await store.tick(T0 + 60)
    assert await agent_call(store, "G1") == (AgentState.RESERVED, "", "a")
    offer = (await last(store))[0]
    assert (offer.type, offer.fields["skill"], offer.fields["wait"]) == (
        EventType.OFFER,
        "general",
        "60",
    )
    await consistent(store)


async def test_a_call_overflows_once(store: RoutingStore, consistent: Check) -> None:
    await store.configure_queue(OVERFLOWING, T0)
    await store.configure_queue(
        QueueConfig("general", overflow_after=30, overflow_queue="billing"), T0
    )
    await store.enqueue(call("a", {"billing": 1}), T0)
    await store.enqueue(call("g", {"general": 1}), T0)
    await store.tick(T0 + 30)
    await store.tick(T0 + 60)
    await store.tick(T0 + 1000)
    assert (await queued(store, "a")).skill == "general"
    assert (await queued(store, "g")).skill == "billing"
    moves = [e for e in await store.events() if e.type is EventType.OVERFLOW]
    assert [(e.call_id, e.fields["to"]) for e in moves] == [("g", "billing"), ("a", "general")]
    await consistent(store)


async def test_a_full_overflow_queue_refuses_and_the_call_stays(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(OVERFLOWING, T0)
    await store.configure_queue(QueueConfig("general", max_length=1), T0)
    await store.enqueue(call("a", {"billing": 1}), T0)
    await store.enqueue(call("b", {"billing": 1}), T0 + 1)
    await store.enqueue(call("g", {"general": 1}), T0 + 2)
    await store.tick(T0 + 60)
    assert await store.waiting("billing") == ["a", "b"]
    (refused,) = await last(store)
    assert (refused.type, refused.call_id, refused.fields["to"], refused.fields["reason"]) == (
        EventType.OVERFLOW_FULL,
        "a",
        "general",
        "queue_full",
    )
    await store.hangup("g", T0 + 61)  # room again: b, due later, moves; a tried once
    await store.tick(T0 + 61)
    assert await store.waiting("billing") == ["a"]
    assert await store.waiting("general") == ["b"]
    await consistent(store)


async def test_max_length_counts_calls_where_they_wait(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(
        QueueConfig("billing", max_length=1, overflow_after=60, overflow_queue="general"), T0
    )
    assert (await store.enqueue(call("a", {"billing": 1}), T0)).accepted
    assert not (await store.enqueue(call("b", {"billing": 1}), T0 + 1)).accepted
    await store.tick(T0 + 60)  # a moved out: room in billing
    assert (await store.enqueue(call("c", {"billing": 1}), T0 + 61)).accepted
    await consistent(store)


async def test_max_wait_runs_from_the_original_enqueue(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(
        QueueConfig(
            "billing",
            max_wait=100,
            escalate_after=30,
            overflow_after=60,
            overflow_queue="general",
        ),
        T0,
    )
    await store.configure_queue(QueueConfig("general", max_wait=1000), T0)
    await store.enqueue(call("a", {"billing": 4}), T0)
    await store.tick(T0 + 30)
    await store.tick(T0 + 60)
    assert await store.tick(T0 + 99) == 0
    assert await store.tick(T0 + 100) == 1
    assert await store.call("a") is None
    types = [e.type for e in await store.events()]
    assert types == [
        EventType.CONFIG,
        EventType.CONFIG,
        EventType.ENTERQUEUE,
        EventType.ESCALATE,
        EventType.OVERFLOW,
        EventType.EXITWITHTIMEOUT,
    ]
    (message,) = await store.drain_inbox("n1")
    assert (message.kind, message.reason) == ("exited", "max_wait")
    assert (await last(store))[0].fields["wait"] == "100"
    assert await store.tick(T0 + 2000) == 0  # no timer left behind
    await consistent(store)


async def test_an_offered_call_overflows_only_if_the_offer_fails(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(
        QueueConfig("billing", reservation_timeout=90, overflow_after=60, overflow_queue="general"),
        T0,
    )
    await store.login("B1", skills={"billing": 1}, now=T0, ready=True)
    await store.login("G1", skills={"general": 1}, now=T0, ready=True)
    await store.enqueue(call("a", {"billing": 1}), T0)  # offered to B1 at once
    await store.enqueue(call("b", {"billing": 1}), T0 + 1)
    await store.tick(T0 + 60)  # a's overflow waits for B1's answer
    assert await agent_call(store, "B1") == (AgentState.RESERVED, "", "a")
    await store.accept("B1", "a", T0 + 60.5)
    assert (await queued(store, "a")).skill == "billing"  # stayed with the agent who took it
    await store.tick(T0 + 61)  # b overflows: G1 gets it
    assert await agent_call(store, "G1") == (AgentState.RESERVED, "", "b")
    await store.reject("G1", "b", T0 + 62)  # back to its place in its current queue
    assert await store.waiting("general") == ["b"]
    assert (await queued(store, "b")).state is CallState.WAITING
    await consistent(store)


async def test_an_overflow_due_while_offered_happens_when_the_offer_times_out(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(
        QueueConfig("billing", reservation_timeout=90, overflow_after=60, overflow_queue="general"),
        T0,
    )
    await store.login("B1", skills={"billing": 1}, now=T0, ready=True)
    await store.login("G1", skills={"general": 1}, now=T0, ready=True)
    await store.enqueue(call("a", {"billing": 1}), T0)
    await store.tick(T0 + 90)  # overflow due (T0+60) while offered, then the offer times out
    types = [e.type for e in await last(store, 3)]
    assert types == [EventType.RONA, EventType.OVERFLOW, EventType.OFFER]
    assert await agent_call(store, "G1") == (AgentState.RESERVED, "", "a")
    assert await agent_call(store, "B1") == (AgentState.NOT_READY, "missed", "")
    await consistent(store)


async def test_a_timed_out_overflowed_call_returns_to_the_overflow_queue(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(OVERFLOWING, T0)
    await store.login("G1", skills={"general": 1}, now=T0, ready=True)
    await store.enqueue(call("a", {"billing": 1}), T0)
    await store.tick(T0 + 60)
    await store.tick(T0 + 75)  # general's 15 s reservation timeout
    assert await store.waiting("general") == ["a"]
    assert await agent_call(store, "G1") == (AgentState.NOT_READY, "missed", "")
    await consistent(store)


async def test_a_callback_takes_the_place_in_the_overflow_queue(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(OVERFLOWING, T0)
    await store.enqueue(call("a", {"billing": 3, "english": 1}), T0)
    await store.enqueue(call("g", {"general": 1}), T0 + 10)
    await store.tick(T0 + 60)
    assert await store.leave_for_callback("a", T0 + 70) == "parked"
    callback = NewCall("cb:a", {"billing": 3, "english": 1}, kind=ItemKind.CALLBACK, number="1")
    result = await store.add_callback(callback, T0 + 80, from_call="a")
    assert result.kept_place
    assert await store.waiting("general") == ["cb:a", "g"]
    cb = await queued(store, "cb:a")
    assert (dict(cb.skills), cb.entered_queue, cb.escalated, cb.enqueued_at) == (
        {"general": 1},
        "billing",
        True,
        T0,
    )
    await store.tick(T0 + 1000)  # no second overflow for the callback either
    assert (await queued(store, "cb:a")).skill == "general"
    await consistent(store)


async def test_callbacks_escalate_too(store: RoutingStore, consistent: Check) -> None:
    await store.configure_queue(ESCALATING, T0)
    callback = NewCall("cb:a", {"billing": 6}, kind=ItemKind.CALLBACK, number="1")
    await store.add_callback(callback, T0)
    await store.tick(T0 + 60)
    assert dict((await queued(store, "cb:a")).skills) == {"billing": 2}
    await consistent(store)


async def test_hangup_after_overflow_leaves_nothing_behind(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(
        QueueConfig(
            "billing", escalate_after=100, max_wait=500, overflow_after=60, overflow_queue="general"
        ),
        T0,
    )
    await store.enqueue(call("a", {"billing": 4}), T0)
    await store.tick(T0 + 60)
    assert await store.hangup("a", T0 + 70) == "abandoned"
    assert await store.waiting("general") == []
    assert await store.tick(T0 + 10_000) == 0
    await consistent(store)
