"""Last-agent routing: a returning caller goes back to the agent they talked to last."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ivr.dialog import actions as act
from ivr.dialog.engine import CallContext
from ivr.routing_redis import RedisRouting
from routing.events import EventType
from routing.model import AgentState, NewCall, Offer, QueueConfig, Strategy
from routing.store import RoutingStore

Check = Callable[[RoutingStore], Awaitable[None]]
T0 = 1_800_000_000.0
ALICE = "13900000001"
"""A caller who comes back."""


def call(call_id: str, caller: str = "", skills: dict[str, int] | None = None) -> NewCall:
    return NewCall(call_id, skills or {"billing": 1}, caller=caller, node_id="n1")


def pairs(offers: tuple[Offer, ...] | list[Offer]) -> list[tuple[str, str]]:
    return [(o.call_id, o.agent_id) for o in offers]


async def state(store: RoutingStore, agent_id: str) -> tuple[AgentState, str]:
    agent = await store.agent(agent_id)
    assert agent is not None
    return agent.state, agent.call_id


async def talked(store: RoutingStore, agent_id: str, call_id: str, now: float) -> None:
    """Alice's call ``call_id`` reaches ``agent_id`` (the only one available), talks, ends."""
    result = await store.enqueue(call(call_id, ALICE), now)
    assert pairs(result.offers) == [(call_id, agent_id)]
    await store.accept(agent_id, call_id, now + 1)
    await store.complete(agent_id, now + 60)


async def two_agents(store: RoutingStore) -> None:
    """Alice talks to A2; A1 logs in; A2 takes a break, so A1 is the agent idle longest."""
    await store.configure_queue(QueueConfig("billing", wrap_up_seconds=0), T0)
    await store.login("A2", skills={"billing": 5}, now=T0, ready=True)
    await talked(store, "A2", "first", T0 + 1)
    await store.login("A1", skills={"billing": 5}, now=T0 + 62, ready=True)
    await store.not_ready("A2", "break", T0 + 70)
    await store.ready("A2", T0 + 80)


async def test_a_returning_caller_is_offered_to_the_last_agent(
    store: RoutingStore, consistent: Check
) -> None:
    await two_agents(store)
    result = await store.enqueue(call("again", ALICE), T0 + 3600)
    assert pairs(result.offers) == [("again", "A2")]  # not A1, though idle longest
    assert result.preferred_agent == "A2"
    enter = [e for e in await store.events() if e.type is EventType.ENTERQUEUE][-1]
    assert (enter.fields["pref"], enter.fields["hold"]) == ("A2", "")
    # another caller goes by the strategy as before
    result = await store.enqueue(call("someone", "13800000000"), T0 + 3601)
    assert pairs(result.offers) == [("someone", "A1")]
    assert result.preferred_agent == ""
    assert "pref" not in (await store.events())[-2].fields
    await consistent(store)


async def test_a_busy_last_agent_gets_the_call_first_when_free(
    store: RoutingStore, consistent: Check
) -> None:
    await two_agents(store)
    await store.enqueue(call("x1"), T0 + 100)  # A1, idle longest, takes this one
    await store.enqueue(call("x2"), T0 + 100)  # ... and A2 this one
    await store.accept("A1", "x1", T0 + 100)
    await store.accept("A2", "x2", T0 + 100)
    await store.enqueue(call("ahead"), T0 + 101)
    result = await store.enqueue(call("again", ALICE), T0 + 102)
    assert (result.position.position, result.preferred_agent, result.offers) == (2, "A2", ())
    held = await store.call("again")
    assert held is not None
    assert (held.preferred_agent, held.held_until, held.caller) == ("A2", T0 + 122, ALICE)
    enter = (await store.events())[-1]
    assert (enter.type, enter.fields["pref"], enter.fields["hold"]) == (
        EventType.ENTERQUEUE,
        "A2",
        str(int(T0 + 122)),
    )
    # A2 is free first, and takes Alice though "ahead" waited longer
    assert pairs(await store.complete("A2", T0 + 110)) == [("again", "A2")]
    called = await store.call("again")
    assert called is not None
    assert (called.preferred_agent, called.held_until) == ("", None)  # the hold is over
    assert await store.tick(T0 + 200) == 1  # only the offer's timeout: no hold timer left
    await consistent(store)


async def test_other_agents_skip_a_held_call_but_it_keeps_its_place(
    store: RoutingStore, consistent: Check
) -> None:
    await two_agents(store)
    await store.not_ready("A1", "meeting", T0 + 90)
    await store.enqueue(call("busy"), T0 + 100)
    await store.accept("A2", "busy", T0 + 100)  # the last agent is busy
    await store.enqueue(call("before"), T0 + 101)
    await store.enqueue(call("again", ALICE), T0 + 102)  # held for A2 until T0 + 122
    await store.enqueue(call("after"), T0 + 103)
    assert await store.waiting("billing") == ["before", "again", "after"]
    positions = await store.positions(["again", "after"], T0 + 104)
    assert [p.position for p in positions.values()] == [2, 3]

    assert pairs(await store.ready("A1", T0 + 105)) == [("before", "A1")]
    await store.accept("A1", "before", T0 + 105)
    assert pairs(await store.complete("A1", T0 + 110)) == [("after", "A1")]  # skips Alice
    await consistent(store)

    await store.reject("A1", "after", T0 + 111)  # "after" goes back in place
    assert await store.tick(T0 + 122) == 1  # the hold is over
    expired = (await store.events())[-1]
    assert (expired.type, expired.call_id, expired.fields["pref"]) == (
        EventType.PREF_EXPIRED,
        "again",
        "A2",
    )
    assert await store.waiting("billing") == ["again", "after"]  # Alice's place kept
    assert pairs(await store.ready("A1", T0 + 123)) == [("again", "A1")]
    await consistent(store)


async def test_when_the_hold_runs_out_an_available_agent_takes_the_call(
    store: RoutingStore, consistent: Check
) -> None:
    await two_agents(store)
    await store.enqueue(call("busy"), T0 + 100)
    await store.accept("A1", "busy", T0 + 100)
    await store.not_ready("A2", "lunch", T0 + 100)
    await store.enqueue(call("again", ALICE), T0 + 102)
    await store.complete("A1", T0 + 110)  # A1 is available but must not take Alice yet
    assert await state(store, "A1") == (AgentState.AVAILABLE, "")
    await store.tick(T0 + 122)
    assert await state(store, "A1") == (AgentState.RESERVED, "again")
    await consistent(store)


async def test_the_last_agent_must_be_logged_in_and_able(
    store: RoutingStore, consistent: Check
) -> None:
    await two_agents(store)
    await store.logout("A2", T0 + 100)
    result = await store.enqueue(call("again", ALICE), T0 + 101)
    assert (pairs(result.offers), result.preferred_agent) == ([("again", "A1")], "")
    await store.hangup("again", T0 + 102)  # never connected: A2 stays Alice's last agent
    await store.login("A2", skills={"billing": 5}, now=T0 + 103)  # back, not ready
    result = await store.enqueue(call("needs-more", ALICE, {"billing": 7}), T0 + 104)
    assert result.preferred_agent == ""  # A2 has level 5 only
    result = await store.enqueue(call("again-2", ALICE), T0 + 105)
    assert (result.preferred_agent, result.offers) == ("A2", ())  # held, though A1 is free
    assert await state(store, "A1") == (AgentState.AVAILABLE, "")
    await consistent(store)


async def test_the_memory_lasts_last_agent_hours(store: RoutingStore, consistent: Check) -> None:
    await store.configure_queue(QueueConfig("billing", wrap_up_seconds=0, last_agent_hours=2), T0)
    await store.login("A2", skills={"billing": 5}, now=T0, ready=True)
    await talked(store, "A2", "first", T0 + 1)  # connected at T0 + 2: remembered to T0 + 7202
    await store.not_ready("A2", "break", T0 + 100)  # logged in: a remembered A2 would hold
    await store.login("A1", skills={"billing": 5}, now=T0 + 100, ready=True)
    result = await store.enqueue(call("late", ALICE), T0 + 7203)
    assert (pairs(result.offers), result.preferred_agent) == ([("late", "A1")], "")
    assert await store.redis.hget(store.keys.last_agent, ALICE) == "A2"  # not yet swept
    await store.tick(T0 + 7203)
    assert await store.redis.hget(store.keys.last_agent, ALICE) is None
    assert await store.redis.zcard(store.keys.last_agent_until) == 0
    await consistent(store)


async def test_the_latest_agent_is_remembered(store: RoutingStore) -> None:
    await store.configure_queue(QueueConfig("billing", wrap_up_seconds=0), T0)
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    await talked(store, "A1", "first", T0 + 1)
    await store.logout("A1", T0 + 100)
    await store.login("A2", skills={"billing": 5}, now=T0 + 100, ready=True)
    await talked(store, "A2", "second", T0 + 101)
    await store.login("A1", skills={"billing": 5}, now=T0 + 200, ready=True)
    result = await store.enqueue(call("third", ALICE), T0 + 300)
    assert pairs(result.offers) == [("third", "A2")]


async def test_off_per_queue(store: RoutingStore) -> None:
    await store.configure_queue(QueueConfig("billing", wrap_up_seconds=0), T0)
    await store.configure_queue(QueueConfig("complaint", wrap_up_seconds=0, last_agent_hours=0), T0)
    await store.login("A2", skills={"billing": 5, "complaint": 5}, now=T0, ready=True)
    await talked(store, "A2", "first", T0 + 1)
    await store.not_ready("A2", "break", T0 + 62)
    await store.login("A1", skills={"billing": 5, "complaint": 5}, now=T0 + 62, ready=True)
    # a queue with last-agent routing off does not look: no hold for A2
    result = await store.enqueue(call("c", ALICE, {"complaint": 1}), T0 + 100)
    assert (pairs(result.offers), result.preferred_agent) == ([("c", "A1")], "")
    # and a talk in it is not remembered: Alice's last agent stays A2
    await store.accept("A1", "c", T0 + 101)
    await store.complete("A1", T0 + 102)
    result = await store.enqueue(call("b", ALICE), T0 + 200)
    assert (result.preferred_agent, result.offers) == ("A2", ())


async def test_no_hold_when_last_agent_seconds_is_zero(store: RoutingStore) -> None:
    await store.configure_queue(QueueConfig("billing", wrap_up_seconds=0), T0)
    await store.login("A2", skills={"billing": 5}, now=T0, ready=True)
    await talked(store, "A2", "first", T0 + 1)
    await store.configure_queue(
        QueueConfig("billing", wrap_up_seconds=0, last_agent_seconds=0), T0 + 70
    )
    await store.not_ready("A2", "lunch", T0 + 80)
    await store.login("A1", skills={"billing": 5}, now=T0 + 90)
    result = await store.enqueue(call("again", ALICE), T0 + 100)
    assert result.preferred_agent == ""
    assert pairs(await store.ready("A1", T0 + 101)) == [("again", "A1")]


async def test_callers_without_a_number_and_callbacks_are_not_remembered(
    store: RoutingStore,
) -> None:
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    await store.enqueue(call("anonymous"), T0 + 1)
    await store.accept("A1", "anonymous", T0 + 2)
    assert await store.redis.hlen(store.keys.last_agent) == 0


async def test_a_held_caller_hangs_up(store: RoutingStore, consistent: Check) -> None:
    await two_agents(store)
    await store.not_ready("A2", "lunch", T0 + 90)
    await store.not_ready("A1", "lunch", T0 + 90)
    await store.enqueue(call("again", ALICE), T0 + 100)
    assert await store.hangup("again", T0 + 105) == "abandoned"
    assert await store.ready("A2", T0 + 106) == []  # nothing held any more
    assert await store.redis.scard(store.keys.held("A2")) == 0  # the stale entry was dropped
    assert await store.tick(T0 + 130) == 1  # the hold's timer finds no call: nothing happens
    assert [e.type for e in await store.events()][-2:] == [EventType.ABANDON, EventType.READY]
    await consistent(store)


async def test_a_rejected_last_agent_offer_competes_as_usual(
    store: RoutingStore, consistent: Check
) -> None:
    await two_agents(store)
    await store.not_ready("A1", "lunch", T0 + 90)
    await store.not_ready("A2", "lunch", T0 + 90)
    await store.enqueue(call("again", ALICE), T0 + 100)
    assert pairs(await store.ready("A2", T0 + 101)) == [("again", "A2")]
    await store.reject("A2", "again", T0 + 102)
    assert pairs(await store.ready("A1", T0 + 103)) == [("again", "A1")]
    await consistent(store)


async def test_a_max_wait_during_a_hold(store: RoutingStore, consistent: Check) -> None:
    await store.configure_queue(QueueConfig("billing", wrap_up_seconds=0, max_wait=10), T0)
    await store.login("A2", skills={"billing": 5}, now=T0, ready=True)
    await talked(store, "A2", "first", T0 + 1)
    await store.not_ready("A2", "lunch", T0 + 90)
    await store.enqueue(call("again", ALICE), T0 + 100)
    await store.tick(T0 + 125)  # max wait at T0 + 110, hold end at T0 + 120
    assert await store.call("again") is None
    await consistent(store)


async def test_the_ivr_node_passes_the_callers_number(store: RoutingStore) -> None:
    node = RedisRouting(store, "n1", clock=lambda: T0)
    context = CallContext(call_id="c1", caller=ALICE)
    await node.enqueue(act.Enqueue(1, "billing", 0, 1, {}), context, lambda event: None)
    queued = await store.call("c1")
    assert queued is not None
    assert queued.caller == ALICE


async def test_in_a_ring_all_queue_the_last_agent_is_offered_the_call_alone(
    store: RoutingStore, consistent: Check
) -> None:
    """The hold's offer is the last agent's alone, not a ring others join; only when it ends
    without an accept does the call ring everyone."""
    ring_all = QueueConfig("hazard", strategy=Strategy.RING_ALL, wrap_up_seconds=0)
    await store.configure_queue(ring_all, T0)
    for agent in ("A0", "A2"):
        await store.login(agent, skills={"hazard": 1}, now=T0, ready=True)
    first = await store.enqueue(call("c3", ALICE, {"hazard": 1}), T0)
    assert sorted(pairs(first.offers)) == [("c3", "A0"), ("c3", "A2")]  # a ring
    await store.accept("A0", "c3", T0 + 1)
    again = await store.enqueue(call("c4", ALICE, {"hazard": 1}), T0 + 2)
    assert (again.offers, again.preferred_agent) == ((), "A0")  # held for A0, A2 is free
    assert pairs(await store.complete("A0", T0 + 30)) == [("c4", "A0")]
    held = await store.call("c4")
    assert held is not None
    assert (held.agent_id, held.offered_to) == ("A0", ())  # a single offer, not a ring
    await consistent(store)
    # A0 lets it ring out: now the call rings everyone eligible (A2; A0 is not ready, missed).
    await store.tick(T0 + 30 + ring_all.reservation_timeout)
    rung = await store.call("c4")
    assert rung is not None
    assert (rung.agent_id, rung.offered_to) == ("", ("A2",))
    await consistent(store)
