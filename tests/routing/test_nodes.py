"""Several IVR nodes: heartbeats, and what routing does with the calls of a node that is lost,
leaves, or restarts."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from ivr.dialog import actions as act
from ivr.dialog import events as ev
from ivr.dialog.engine import CallContext
from ivr.routing_redis import RedisRouting
from routing.events import EventType, RoutingEvent
from routing.model import AgentState, CallState, ItemKind, NewCall
from routing.store import RoutingStore

Check = Callable[[RoutingStore], Awaitable[None]]
T0 = 1_800_000_000.0
TIMEOUT = 20.0


def call(call_id: str, node: str, priority: int = 0) -> NewCall:
    return NewCall(call_id, {"billing": 1}, priority=priority, node_id=node, request_id=1)


def callback(call_id: str, node: str) -> NewCall:
    return NewCall(
        "cb:" + call_id, {"billing": 1}, kind=ItemKind.CALLBACK, number="139", node_id=node
    )


async def agent_state(store: RoutingStore, agent_id: str) -> tuple[AgentState, str, str]:
    agent = await store.agent(agent_id)
    assert agent is not None
    return agent.state, agent.reason, agent.call_id


def summary(events: list[RoutingEvent]) -> list[tuple[str, str, str]]:
    """(type, call, why) of each event: why is the reason, or who ended a talk."""
    return [
        (e.type.value, e.call_id, e.fields.get("by") or e.fields.get("reason", "")) for e in events
    ]


async def n2_holds_four_kinds(store: RoutingStore) -> None:
    """Node n2 holds a call offered to A1, one connected with A2, one waiting, one callback."""
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    await store.enqueue(call("offered", "n2"), T0 + 1)
    await store.login("A2", skills={"billing": 5}, now=T0 + 2, ready=True)
    await store.enqueue(call("talking", "n2"), T0 + 3)
    await store.accept("A2", "talking", T0 + 4)
    await store.enqueue(call("waiting", "n2"), T0 + 5)
    await store.add_callback(callback("x", "n2"), T0 + 6)
    await store.enqueue(call("other", "n1"), T0 + 7)


# ---------------------------------------------------------------------- heartbeats


async def test_heartbeats_keep_a_node_alive(store: RoutingStore) -> None:
    assert not await store.heartbeat("n1", T0, TIMEOUT)  # joined
    assert await store.heartbeat("n1", T0 + 5, TIMEOUT)  # known
    assert not await store.heartbeat("n2", T0 + 6, TIMEOUT)
    assert await store.nodes(T0 + 6) == {"n1": T0 + 25, "n2": T0 + 26}
    assert await store.nodes(T0 + 25.5) == {"n2": T0 + 26}
    assert await store.nodes(T0 + 27) == {}
    assert await store.event_count() == 0  # heartbeats are not events


async def test_bad_heartbeats(store: RoutingStore) -> None:
    with pytest.raises(ValueError, match="bad node"):
        await store.heartbeat("n:1", T0, TIMEOUT)
    with pytest.raises(ValueError, match="positive"):
        await store.heartbeat("n1", T0, 0)


# ---------------------------------------------------------------------- a lost node


async def test_a_lost_nodes_calls_end_and_its_callbacks_move(
    store: RoutingStore, consistent: Check
) -> None:
    await store.heartbeat("n2", T0 - 10, TIMEOUT)
    await store.heartbeat("n1", T0, TIMEOUT)
    await n2_holds_four_kinds(store)
    before = await store.event_count()
    await store.tick(T0 + 10, "n1")  # n2 is alive until T0 + 10 inclusive
    assert await store.event_count() == before
    await store.tick(T0 + 11, "n1")

    events = (await store.events())[before:]
    assert summary(events) == [
        ("ABANDON", "offered", "node_lost"),
        ("ABANDON", "waiting", "node_lost"),
        ("COMPLETE", "talking", "node_lost"),
        # A1, released, takes the best waiting call: the callback (ahead of n1's caller)
        ("OFFER", "cb:x", ""),
        ("NODELOST", "", ""),
    ]
    assert dict(events[0].fields) | {"wait": ""} == {
        "call": "offered",
        "agent": "A1",
        "skill": "billing",
        "cstate": "ended",
        "astate": "available",
        "reason": "node_lost",
        "wait": "",
    }
    assert dict(events[-1].fields) == {
        "node": "n2",
        "cause": "timeout",
        "to": "n1",
        "abandoned": "2",
        "completed": "1",
        "rehomed": "1",
    }
    # A1 was not at fault: never made not ready; A2 wraps up as after any call
    assert await agent_state(store, "A1") == (AgentState.RESERVED, "", "cb:x")
    assert await agent_state(store, "A2") == (AgentState.WRAP_UP, "", "")
    assert await store.call_ids() == {"cb:x", "other"}
    moved = await store.call("cb:x")
    assert moved is not None
    assert moved.node_id == "n1"
    assert await store.nodes(T0 + 11) == {"n1": T0 + 20}
    assert not await store.redis.exists(store.keys.inbox("n2"))
    await consistent(store)


async def test_the_moved_callback_messages_go_to_the_new_node(store: RoutingStore) -> None:
    await store.heartbeat("n1", T0, TIMEOUT)
    await store.heartbeat("n2", T0, TIMEOUT)
    await store.add_callback(callback("x", "n2"), T0 + 1)
    await store.heartbeat("n1", T0 + 19, TIMEOUT)
    await store.tick(T0 + 30, "n1")
    moved = await store.call("cb:x")
    assert moved is not None
    assert (moved.node_id, moved.state) == ("n1", CallState.WAITING)


async def test_a_node_that_never_heartbeated_is_not_reclaimed(
    store: RoutingStore, consistent: Check
) -> None:
    await store.heartbeat("n1", T0, TIMEOUT)
    await store.enqueue(call("c1", "unregistered"), T0)
    await store.enqueue(call("c2", ""), T0)
    await store.heartbeat("n1", T0 + 3600, TIMEOUT)
    await store.tick(T0 + 3600, "n1")
    assert await store.call_ids() == {"c1", "c2"}
    assert [e.type for e in await store.events()] == [EventType.ENTERQUEUE] * 2
    await consistent(store)


async def test_only_a_live_node_reclaims(store: RoutingStore) -> None:
    await store.heartbeat("n1", T0, TIMEOUT)
    await store.heartbeat("n2", T0, TIMEOUT)
    await store.enqueue(call("c1", "n2"), T0)
    await store.tick(T0 + 60)  # not run by a node
    await store.tick(T0 + 60, "n3")  # run by a node that never heartbeated
    await store.tick(T0 + 60, "n1")  # run by a node whose own heartbeat lapsed
    assert await store.call_ids() == {"c1"}
    await store.heartbeat("n1", T0 + 60, TIMEOUT)  # n1 is back first
    await store.tick(T0 + 60, "n1")
    assert await store.call_ids() == set()


async def test_a_late_heartbeat_before_any_tick_saves_the_node(store: RoutingStore) -> None:
    await store.heartbeat("n1", T0, TIMEOUT)
    await store.heartbeat("n2", T0, TIMEOUT)
    await store.enqueue(call("c1", "n2"), T0)
    assert await store.heartbeat("n2", T0 + 30, TIMEOUT)  # expired, yet not reclaimed: known
    await store.heartbeat("n1", T0 + 30, TIMEOUT)
    await store.tick(T0 + 30, "n1")
    assert await store.call_ids() == {"c1"}


async def test_a_node_declared_lost_joins_again(store: RoutingStore) -> None:
    await store.heartbeat("n1", T0, TIMEOUT)
    await store.heartbeat("n2", T0, TIMEOUT)
    await store.heartbeat("n1", T0 + 30, TIMEOUT)
    await store.tick(T0 + 30, "n1")
    assert not await store.heartbeat("n2", T0 + 31, TIMEOUT)  # it learns it was lost
    assert set(await store.nodes(T0 + 31)) == {"n1", "n2"}


# ---------------------------------------------------------------------- leaving, restarting


async def test_a_leaving_node_hands_its_callbacks_to_the_latest_live_node(
    store: RoutingStore, consistent: Check
) -> None:
    await store.heartbeat("n1", T0, TIMEOUT)
    await store.heartbeat("n3", T0 + 2, TIMEOUT)  # heard from last
    await store.heartbeat("n2", T0 + 3, TIMEOUT)
    await n2_holds_four_kinds(store)
    await store.node_leave("n2", T0 + 10)
    last = (await store.events())[-1]
    assert dict(last.fields) == {
        "node": "n2",
        "cause": "left",
        "to": "n3",
        "abandoned": "2",
        "completed": "1",
        "rehomed": "1",
    }
    assert await store.nodes(T0 + 10) == {"n1": T0 + 20, "n3": T0 + 22}
    moved = await store.call("cb:x")
    assert moved is not None
    assert moved.node_id == "n3"
    await consistent(store)


async def test_the_last_node_leaving_keeps_its_callbacks_for_the_next(
    store: RoutingStore, consistent: Check
) -> None:
    await store.heartbeat("n2", T0, TIMEOUT)
    await n2_holds_four_kinds(store)
    await store.node_leave("n2", T0 + 10)
    left = (await store.events())[-1]
    assert (left.fields["to"], left.fields["abandoned"], left.fields["rehomed"]) == ("", "2", "0")
    assert await store.call_ids() == {"cb:x", "other"}  # n1 never heartbeated: "other" stays
    await consistent(store)
    # the first node alive later takes the callback over
    await store.heartbeat("n1", T0 + 100, TIMEOUT)
    await store.tick(T0 + 100, "n1")  # (also A2's wrap-up ends: A2 takes the callback)
    *_, adopted = [e for e in await store.events() if e.type is EventType.NODELOST]
    assert dict(adopted.fields) == {
        "node": "n2",
        "cause": "left",
        "to": "n1",
        "abandoned": "0",
        "completed": "0",
        "rehomed": "1",
    }
    moved = await store.call("cb:x")
    assert moved is not None
    assert moved.node_id == "n1"
    assert await store.nodes(T0 + 100) == {"n1": T0 + 120}
    await consistent(store)


async def test_leaving_without_callbacks_leaves_no_trace(store: RoutingStore) -> None:
    await store.heartbeat("n2", T0, TIMEOUT)
    await store.enqueue(call("c1", "n2"), T0)
    await store.node_leave("n2", T0 + 1)
    assert await store.redis.zcard(store.keys.nodes) == 0
    assert await store.call_ids() == set()


async def test_a_restarted_node_ends_what_its_earlier_process_left(
    store: RoutingStore, consistent: Check
) -> None:
    await store.heartbeat("n2", T0, TIMEOUT, starting=True)
    await n2_holds_four_kinds(store)
    before = await store.event_count()
    # the process crashed; a new one under the same id starts within the timeout
    assert await store.heartbeat("n2", T0 + 12, TIMEOUT, starting=True)
    restart = (await store.events())[-1]
    assert dict(restart.fields) == {
        "node": "n2",
        "cause": "restart",
        "to": "",
        "abandoned": "2",
        "completed": "1",
        "rehomed": "0",
    }
    assert await store.call_ids() == {"cb:x", "other"}
    kept = await store.call("cb:x")
    assert kept is not None
    assert kept.node_id == "n2"
    await consistent(store)
    # a start with nothing left over says nothing
    count = await store.event_count()
    await store.heartbeat("n4", T0 + 13, TIMEOUT, starting=True)
    assert await store.event_count() == count > before


# ---------------------------------------------------------------------- RedisRouting


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def enqueue(rid: int) -> act.Enqueue:
    return act.Enqueue(rid, "billing", 0, 1, {})


def ctx(call_id: str) -> CallContext:
    return CallContext(call_id=call_id, caller="13912345678")


async def test_the_pump_heartbeats_when_due(store: RoutingStore) -> None:
    clock = Clock()
    node = RedisRouting(store, "n1", clock=clock, heartbeat_interval=5, node_timeout=20)
    await node.run_once(T0)
    assert await store.nodes(T0) == {"n1": T0 + 20}
    await node.run_once(T0 + 4.9)
    assert await store.nodes(T0) == {"n1": T0 + 20}
    await node.run_once(T0 + 5)
    assert await store.nodes(T0) == {"n1": T0 + 25}


async def test_the_first_call_heartbeats_first(store: RoutingStore, consistent: Check) -> None:
    # an earlier process of n1 left a caller behind
    await store.heartbeat("n1", T0 - 10, TIMEOUT)
    await store.enqueue(call("ghost", "n1"), T0 - 10)
    clock = Clock()
    node = RedisRouting(store, "n1", clock=clock)
    await node.enqueue(enqueue(1), ctx("c1"), lambda event: None)
    assert await store.call_ids() == {"c1"}  # the ghost is gone, the new caller is not
    assert node.held == {"c1"}
    await consistent(store)


async def test_the_pump_reclaims_a_lost_node(store: RoutingStore, consistent: Check) -> None:
    clock = Clock()
    n1 = RedisRouting(store, "n1", clock=clock)
    n2 = RedisRouting(store, "n2", clock=clock)
    await n1.run_once(T0)
    await n2.enqueue(enqueue(1), ctx("c1"), lambda event: None)
    await n1.run_once(T0 + 15)
    assert await store.call_ids() == {"c1"}
    await n1.run_once(T0 + 21)
    assert await store.call_ids() == set()
    assert (await store.events())[-1].type is EventType.NODELOST
    await consistent(store)


async def test_a_node_learns_it_was_declared_lost(store: RoutingStore, consistent: Check) -> None:
    clock = Clock()
    n1 = RedisRouting(store, "n1", clock=clock)
    n2 = RedisRouting(store, "n2", clock=clock)
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    got: dict[str, list[ev.Event]] = {"c1": [], "c2": []}
    await n2.enqueue(enqueue(1), ctx("c1"), got["c1"].append)  # offered to A1...
    await store.accept("A1", "c1", T0)
    await n2.enqueue(enqueue(2), ctx("c2"), got["c2"].append)  # ...and this one waits
    await n2.run_once(T0)  # delivers "connected" to c1
    # n2 is cut off from Redis for a minute; meanwhile n1 declares it lost
    await n1.run_once(T0 + 60)
    assert await store.call_ids() == set()
    await n2.run_once(T0 + 61)  # back: its heartbeat finds it was not known
    assert got["c1"] == [ev.AgentConnected(1, "A1", "")]  # the bridge is left alone
    assert got["c2"][-1] == ev.QueueExited(2, "node_lost")
    assert n2.held == frozenset()
    assert set(await store.nodes(T0 + 61)) == {"n1", "n2"}
    await consistent(store)


async def test_a_node_leaves(store: RoutingStore, consistent: Check) -> None:
    clock = Clock()
    n1 = RedisRouting(store, "n1", clock=clock)
    n2 = RedisRouting(store, "n2", clock=clock)
    await n1.run_once(T0)
    await n2.enqueue(enqueue(1), ctx("c1"), lambda event: None)
    await n2.leave_queue(act.LeaveQueue(1, "callback"), ctx("c1"))
    await n2.request_callback(act.RequestCallback(2, "139", "billing", 0, {}), ctx("c1"))
    await n2.enqueue(enqueue(3), ctx("c3"), lambda event: None)
    clock.now = T0 + 1
    await n2.leave()
    assert n2.held == frozenset()
    assert set(await store.nodes(T0 + 1)) == {"n1"}
    assert await store.call_ids() == {"cb:c1"}
    moved = await store.call("cb:c1")
    assert moved is not None
    assert moved.node_id == "n1"
    await consistent(store)


def test_the_heartbeat_must_come_well_within_the_timeout(store: RoutingStore) -> None:
    with pytest.raises(ValueError, match="below the node timeout"):
        RedisRouting(store, "n1", heartbeat_interval=20, node_timeout=20)


# ---------------------------------------------------------------------- two OS processes

NODE_SCRIPT = Path(__file__).with_name("ivr_node.py")


@pytest.mark.slow
async def test_a_killed_node_process_is_reclaimed(
    store: RoutingStore, redis_server: Any, tmp_path: Path, consistent: Check
) -> None:
    """Node n2 is a real process that heartbeats and queues callers; it is killed with SIGKILL
    (no goodbye), and node n1 here reclaims its calls once its heartbeat has run out."""
    await store.login("A1", skills={"billing": 5}, contact="sip:a1@pbx", now=T0, ready=True)
    log = tmp_path / "n2.log"
    with log.open("wb") as stderr:
        child = await asyncio.create_subprocess_exec(
            *(sys.executable, str(NODE_SCRIPT), redis_server.url, "t1", "n2", repr(T0)),
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line == b"ready\n", log.read_text()
        # n2 is alive (heartbeat at T0 + 5) and holds c1 (offered to A1 at once), c2 and c3
        # waiting, and the callback that took c4's place
        assert await store.nodes(T0 + 5) == {"n2": T0 + 25}
        assert await store.call_ids() == {"c1", "c2", "c3", "cb:c4"}
        await store.login("A2", skills={"billing": 5}, now=T0 + 6, ready=True)  # takes c2
        await store.accept("A2", "c2", T0 + 7)
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert child.returncode == -signal.SIGKILL
    before = await store.event_count()

    n1 = RedisRouting(store, "n1", clock=lambda: T0 + 26)
    await n1.run_once()  # heartbeats (first time), then ticks: n2's heartbeat ran out at T0 + 25

    events = (await store.events())[before:]
    assert summary(events) == [
        ("ABANDON", "c1", "node_lost"),
        ("ABANDON", "c3", "node_lost"),
        ("COMPLETE", "c2", "node_lost"),
        ("OFFER", "cb:c4", ""),  # A1, released, takes the callback at once
        ("NODELOST", "", ""),
    ]
    assert (events[0].agent_id, events[0].fields["astate"]) == ("A1", "available")
    assert (events[2].agent_id, events[2].fields["astate"]) == ("A2", "wrap_up")
    assert dict(events[-1].fields) == {
        "node": "n2",
        "cause": "timeout",
        "to": "n1",
        "abandoned": "2",
        "completed": "1",
        "rehomed": "1",
    }
    assert await store.call_ids() == {"cb:c4"}
    callback_call = await store.call("cb:c4")
    assert callback_call is not None
    assert (callback_call.node_id, callback_call.agent_id) == ("n1", "A1")
    assert await store.nodes(T0 + 26) == {"n1": T0 + 46}
    assert not await store.redis.exists(store.keys.inbox("n2"))
    await consistent(store)
