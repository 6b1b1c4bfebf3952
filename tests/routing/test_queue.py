"""Queues: order (priority, aging, FIFO), position and wait, limits, callbacks, leaving."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from routing.errors import AlreadyQueuedError
from routing.events import EventType
from routing.model import AgentState, CallState, ItemKind, NewCall, Position, QueueConfig
from routing.store import RoutingStore

Check = Callable[[RoutingStore], Awaitable[None]]
T0 = 1_800_000_000.0


def call(call_id: str, priority: int = 0, skill: str = "billing", level: int = 1) -> NewCall:
    return NewCall(call_id, {skill: level}, priority=priority, node_id="n1", request_id=1)


async def test_priority_first_then_fifo(store: RoutingStore, consistent: Check) -> None:
    for i, (cid, prio) in enumerate([("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", 9)]):
        await store.enqueue(call(cid, prio), T0 + i)
    assert await store.waiting("billing") == ["e", "b", "d", "a", "c"]
    await consistent(store)


async def test_fifo_within_the_same_instant(store: RoutingStore) -> None:
    ids = [f"c{i:02d}" for i in range(30)][::-1]  # ids sort the other way round
    for cid in ids:
        await store.enqueue(call(cid), T0)
    assert await store.waiting("billing") == ids


async def test_aging_lets_a_long_wait_overtake_a_higher_priority(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(QueueConfig("billing", aging_seconds_per_priority=60), T0)
    await store.enqueue(call("old-low", 0), T0)
    await store.enqueue(call("new-high", 2), T0 + 119)  # worth 120 s of waiting: ahead
    await store.enqueue(call("newer-high", 2), T0 + 121)  # 1 s behind old-low
    assert await store.waiting("billing") == ["new-high", "old-low", "newer-high"]
    await store.login("A1", skills={"billing": 1}, now=T0 + 200, ready=True)
    assert (await store.agent("A1")).call_id == "new-high"  # type: ignore[union-attr]
    await consistent(store)


async def test_position_counts_every_level_and_only_waiting_calls(
    store: RoutingStore, consistent: Check
) -> None:
    await store.enqueue(call("a", level=1), T0)
    await store.enqueue(call("b", level=7), T0 + 1)
    await store.enqueue(call("c", level=3), T0 + 2)
    await store.enqueue(call("x", skill="complaint"), T0 + 3)
    got = await store.positions(["a", "b", "c", "x", "gone"], T0 + 4)
    assert {k: p.position for k, p in got.items()} == {"a": 1, "b": 2, "c": 3, "x": 1, "gone": 0}
    await store.login("A1", skills={"billing": 5}, now=T0 + 5, ready=True)  # takes a, can't b
    got = await store.positions(["a", "b", "c"], T0 + 6)
    assert [p.position for p in got.values()] == [0, 1, 2]
    await consistent(store)


async def test_estimated_wait(store: RoutingStore) -> None:
    await store.configure_queue(
        QueueConfig("billing", wrap_up_seconds=0, default_handle_seconds=200), T0
    )
    result = await store.enqueue(call("a"), T0)
    assert result.position == Position(1, None)  # nobody logged in with the skill
    await store.login("A1", skills={"billing": 5}, now=T0)
    await store.login("A2", skills={"billing": 5}, now=T0)
    await store.enqueue(call("b"), T0)
    await store.enqueue(call("c"), T0)
    got = await store.positions(["a", "b", "c"], T0)
    assert [p.wait_seconds for p in got.values()] == [100, 200, 300]  # pos * 200 s / 2 agents
    # one call of 60 s handle time (talk, no wrap-up) replaces the default
    await store.ready("A1", T0 + 1)
    await store.accept("A1", "a", T0 + 1)
    await store.complete("A1", T0 + 61)  # A1 takes b at once
    got = await store.positions(["c"], T0 + 61)
    assert got["c"] == Position(1, 30)


async def test_handle_time_includes_wrap_up(store: RoutingStore) -> None:
    await store.configure_queue(QueueConfig("billing", wrap_up_seconds=30), T0)
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    await store.enqueue(call("a"), T0)
    await store.accept("A1", "a", T0)
    await store.complete("A1", T0 + 100)
    await store.tick(T0 + 130)
    await store.not_ready("A1", "x", T0 + 131)
    result = await store.enqueue(call("b"), T0 + 140)
    assert result.position == Position(1, 130)


async def test_average_handle_time_of_the_last_50_calls(store: RoutingStore) -> None:
    """The script keeps the sum of the samples next to them, so a wait needs no pass over them;
    the oldest sample leaves the sum when it leaves the list, and a missing sum (data written
    before it existed) is the sum of the list."""
    await store.configure_queue(QueueConfig("billing", wrap_up_seconds=0), T0)
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    handle = [10.0 + i * 1.5 for i in range(60)]
    now = T0
    for i, seconds in enumerate(handle):
        await store.enqueue(call(f"h{i}"), now)
        await store.accept("A1", f"h{i}", now)
        now += seconds
        await store.complete("A1", now)
    key, total = store.keys.handle_times("billing"), store.keys.handle_total("billing")
    samples = [float(v) for v in await store.redis.lrange(key, 0, -1)]
    assert samples == handle[:-51:-1]  # the last 50, newest first
    assert float(await store.redis.get(total)) == pytest.approx(sum(samples))
    await store.not_ready("A1", "x", now)
    average = sum(handle[-50:]) / 50  # 61.75 s
    assert (await store.enqueue(call("w"), now)).position == Position(1, 62)
    await store.redis.delete(total)
    assert (await store.positions(["w"], now))["w"] == Position(1, 62)
    await store.ready("A1", now)
    await store.accept("A1", "w", now)
    await store.complete("A1", now + 200.0)
    samples = [float(v) for v in await store.redis.lrange(key, 0, -1)]
    assert samples[0] == 200.0
    assert len(samples) == 50
    assert float(await store.redis.get(total)) == pytest.approx(sum(samples))
    assert sum(samples) / 50 == pytest.approx(average + (200.0 - handle[-50]) / 50)


async def test_max_length(store: RoutingStore, consistent: Check) -> None:
    await store.configure_queue(QueueConfig("billing", max_length=2), T0)
    assert (await store.enqueue(call("a"), T0)).accepted
    assert (await store.enqueue(call("b", level=4), T0)).accepted
    result = await store.enqueue(call("c"), T0)
    assert not result.accepted
    assert await store.call("c") is None
    full = (await store.events())[-1]
    assert (full.type, full.call_id, full.fields["reason"]) == (EventType.FULL, "c", "queue_full")
    assert (await store.enqueue(call("x", skill="complaint"), T0)).accepted
    await consistent(store)


async def test_max_wait(store: RoutingStore, consistent: Check) -> None:
    await store.configure_queue(QueueConfig("billing", max_wait=300), T0)
    await store.enqueue(call("a"), T0)
    await store.enqueue(call("b"), T0 + 100)
    assert await store.tick(T0 + 299) == 0
    assert await store.tick(T0 + 300) == 1
    assert await store.waiting("billing") == ["b"]
    (message,) = await store.drain_inbox("n1")
    assert (message.kind, message.call_id, message.reason) == ("exited", "a", "max_wait")
    event = (await store.events())[-1]
    assert (event.type, event.fields["wait"]) == (EventType.EXITWITHTIMEOUT, "300")
    await consistent(store)


async def test_max_wait_while_offered_waits_for_the_offer(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(QueueConfig("billing", max_wait=60), T0)
    await store.enqueue(call("a"), T0)
    await store.login("A1", skills={"billing": 5}, now=T0 + 50, ready=True)
    await store.tick(T0 + 61)  # max wait passes while A1 is being offered the call
    assert (await store.call("a")).state is CallState.OFFERED  # type: ignore[union-attr]
    await store.tick(T0 + 65)  # the offer times out: the caller leaves instead of requeueing
    assert await store.call("a") is None
    types = [e.type for e in await store.events()][-2:]
    assert types == [EventType.RONA, EventType.EXITWITHTIMEOUT]
    await consistent(store)


async def test_max_wait_does_not_cut_a_connected_call(store: RoutingStore) -> None:
    await store.configure_queue(QueueConfig("billing", max_wait=60), T0)
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    await store.enqueue(call("a"), T0 + 50)
    await store.accept("A1", "a", T0 + 55)
    assert await store.tick(T0 + 500) == 0
    assert (await store.call("a")).state is CallState.CONNECTED  # type: ignore[union-attr]


async def test_second_enqueue_of_the_same_call(store: RoutingStore) -> None:
    await store.enqueue(call("a"), T0)
    with pytest.raises(AlreadyQueuedError):
        await store.enqueue(call("a"), T0)
    assert len(await store.events()) == 1


async def test_context_for_the_screen_pop(store: RoutingStore) -> None:
    ctx = {"intent": "故障报修", "account": "3201234567", "address": "鼓楼区中山北路100号"}
    await store.enqueue(NewCall("a", {"hazard": 2}, priority=9, context=ctx, node_id="n1"), T0)
    queued = await store.call("a")
    assert queued is not None
    assert dict(queued.context) == ctx
    assert (queued.priority, queued.enqueued_at, queued.node_id, queued.request_id) == (
        9,
        T0,
        "n1",
        None,
    )


async def test_hangup_while_waiting_and_while_talking(
    store: RoutingStore, consistent: Check
) -> None:
    await store.enqueue(call("a"), T0)
    assert await store.hangup("a", T0 + 30) == "abandoned"
    assert await store.hangup("a", T0 + 31) == "none"
    abandon = (await store.events())[-1]
    assert (abandon.type, abandon.fields["wait"]) == (EventType.ABANDON, "30")
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    await store.enqueue(call("b"), T0 + 40)
    await store.accept("A1", "b", T0 + 41)
    assert await store.hangup("b", T0 + 100) == "completed"
    complete = (await store.events())[-1]
    assert (complete.type, complete.fields["by"], complete.fields["talk"]) == (
        EventType.COMPLETE,
        "caller",
        "59",
    )
    assert (await store.agent("A1")).state is AgentState.WRAP_UP  # type: ignore[union-attr]
    await consistent(store)


# ---------------------------------------------------------------------- callbacks


def callback(call_id: str, skill: str = "billing", priority: int = 0) -> NewCall:
    return NewCall(
        "cb:" + call_id,
        {skill: 1},
        priority=priority,
        kind=ItemKind.CALLBACK,
        number="13912345678",
        node_id="n1",
    )


async def test_callback_keeps_the_callers_place(store: RoutingStore, consistent: Check) -> None:
    for i, cid in enumerate(["a", "b", "c", "d"]):
        await store.enqueue(call(cid, level=2 if cid == "b" else 1), T0 + i)
    assert await store.leave_for_callback("b", T0 + 60) == "parked"
    assert await store.waiting("billing") == ["a", "c", "d"]
    await store.enqueue(call("e"), T0 + 70)
    result = await store.add_callback(callback("b"), T0 + 80, from_call="b")
    assert result.kept_place
    assert result.position.position == 2
    assert await store.waiting("billing") == ["a", "cb:b", "c", "d", "e"]
    queued = await store.call("cb:b")
    assert queued is not None
    assert (queued.kind, queued.number, queued.enqueued_at, dict(queued.skills)) == (
        ItemKind.CALLBACK,
        "13912345678",
        T0 + 1,
        {"billing": 2},
    )
    types = [e.type for e in await store.events()]
    assert EventType.EXITWITHKEY in types
    assert types[-1] is EventType.CALLBACK
    await consistent(store)


async def test_callback_without_a_parked_place_joins_at_the_back(store: RoutingStore) -> None:
    await store.enqueue(call("a"), T0)
    result = await store.add_callback(callback("z"), T0 + 10, from_call="z")
    assert not result.kept_place
    assert await store.waiting("billing") == ["a", "cb:z"]


async def test_parked_place_expires(store: RoutingStore) -> None:
    await store.enqueue(call("a"), T0)
    await store.enqueue(call("b"), T0 + 1)
    await store.leave_for_callback("a", T0 + 10, park_seconds=120)
    await store.tick(T0 + 130)
    result = await store.add_callback(callback("a"), T0 + 131, from_call="a")
    assert not result.kept_place
    assert await store.waiting("billing") == ["b", "cb:a"]


async def test_callback_in_another_queue_does_not_take_the_place(store: RoutingStore) -> None:
    await store.enqueue(call("a"), T0)
    await store.leave_for_callback("a", T0 + 10)
    result = await store.add_callback(callback("a", skill="complaint"), T0 + 11, from_call="a")
    assert not result.kept_place


async def test_leaving_for_a_callback_while_offered(store: RoutingStore, consistent: Check) -> None:
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    await store.enqueue(call("a"), T0 + 1)
    assert await store.leave_for_callback("a", T0 + 2) == "parked"
    assert (await store.agent("A1")).state is AgentState.AVAILABLE  # type: ignore[union-attr]
    result = await store.add_callback(callback("a"), T0 + 3, from_call="a")
    assert [(o.call_id, o.agent_id) for o in result.offers] == [("cb:a", "A1")]
    assert await store.accept("A1", "cb:a", T0 + 4) == ""
    # The callback's node is told, to dial the agent and then the customer.
    [dial] = await store.drain_inbox("n1")
    assert (dial.kind, dial.call_id, dial.agent_id, dial.request_id) == (
        "connected",
        "cb:a",
        "A1",
        None,
    )
    connect = (await store.events())[-1]
    assert (connect.type, connect.fields["kind"]) == (EventType.CONNECT, "callback")
    await consistent(store)


async def test_too_late_to_leave_for_a_callback(store: RoutingStore) -> None:
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    await store.enqueue(call("a"), T0 + 1)
    await store.accept("A1", "a", T0 + 2)
    assert await store.leave_for_callback("a", T0 + 3) == "connected"
    assert await store.leave_for_callback("nope", T0 + 3) == "none"


async def test_callback_expires(store: RoutingStore, consistent: Check) -> None:
    await store.configure_queue(QueueConfig("billing", callback_window=3600, max_wait=60), T0)
    await store.add_callback(callback("a"), T0, from_call="a")
    assert await store.tick(T0 + 3599) == 0  # max wait is for callers on the line
    assert await store.tick(T0 + 3600) == 1
    assert await store.call("cb:a") is None
    event = (await store.events())[-1]
    assert (event.type, event.fields["reason"]) == (EventType.CALLBACK_EXPIRED, "expired")
    assert await store.drain_inbox("n1") == []
    await consistent(store)


async def test_add_callback_needs_a_callback(store: RoutingStore) -> None:
    with pytest.raises(ValueError, match="callback"):
        await store.add_callback(call("a"), T0)
