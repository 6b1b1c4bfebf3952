"""RedisRouting: the session driver's Routing interface, over a real Redis, two IVR nodes."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from structlog.testing import capture_logs

from ivr.dialog import actions as act
from ivr.dialog import events as ev
from ivr.dialog.engine import CallContext, Dialog
from ivr.flow.model import parse_flow
from ivr.routing_redis import RedisRouting
from ivr.services import Routing, ServiceError
from routing import stats
from routing.errors import RoutingError
from routing.events import EventType
from routing.model import AgentState, ItemKind, NewCall, QueueConfig
from routing.store import RoutingStore

Check = Callable[[RoutingStore], Awaitable[None]]
T0 = 1_800_000_000.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Feeds:
    """What each call was fed, by call id."""

    def __init__(self) -> None:
        self.got: dict[str, list[ev.Event]] = {}

    def feed(self, call_id: str) -> Callable[[ev.Event], None]:
        return self.got.setdefault(call_id, []).append


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def node_a(store: RoutingStore, clock: Clock) -> RedisRouting:
    return RedisRouting(store, "ivr-a", clock=clock, position_interval=30)


@pytest.fixture
async def node_b(redis_client: Redis, clock: Clock) -> AsyncIterator[RedisRouting]:
    # A second IVR node: its own store object (as in its own process), the same Redis tenant.
    return RedisRouting(RoutingStore(redis_client, tenant="t1"), "ivr-b", clock=clock)


def ctx(call_id: str) -> CallContext:
    return CallContext(call_id=call_id, caller="13912345678")


def enqueue(rid: int, skill: str = "billing", priority: int = 20) -> act.Enqueue:
    return act.Enqueue(rid, skill, priority, 1, {"intent": "billing"})


def test_it_is_a_routing(node_a: RedisRouting) -> None:
    routing: Routing = node_a
    assert routing is node_a


async def test_a_call_waits_is_connected_and_disconnected(
    node_a: RedisRouting, store: RoutingStore, clock: Clock, consistent: Check
) -> None:
    feeds = Feeds()
    await node_a.enqueue(enqueue(7), ctx("c1"), feeds.feed("c1"))
    assert feeds.got["c1"] == [ev.QueuePosition(7, 1, None)]
    queued = await store.call("c1")
    assert queued is not None
    assert (queued.node_id, queued.request_id, dict(queued.context)) == (
        "ivr-a",
        7,
        {"intent": "billing"},
    )
    await store.login("A1", skills={"billing": 5}, contact="sip:a1@pbx", now=T0 + 5, ready=True)
    assert await node_a.run_once(T0 + 6) == 0  # offered, not yet accepted: nothing to tell
    await store.accept("A1", "c1", T0 + 8)
    assert await node_a.run_once(T0 + 8) == 1
    assert feeds.got["c1"][-1] == ev.AgentConnected(7, "A1", "sip:a1@pbx")
    assert await node_a.run_once(T0 + 100) == 0  # no position updates while bridged
    await store.complete("A1", T0 + 120)
    await node_a.run_once(T0 + 120)
    assert feeds.got["c1"][-1] == ev.AgentDisconnected(7)
    assert node_a.held == frozenset()
    await consistent(store)


async def test_position_updates_are_periodic(
    node_a: RedisRouting, store: RoutingStore, clock: Clock
) -> None:
    feeds = Feeds()
    await store.login("A1", skills={"billing": 5}, now=T0)
    for i in range(3):
        clock.now = T0 + i
        await node_a.enqueue(enqueue(i), ctx(f"c{i}"), feeds.feed(f"c{i}"))
    assert [f[-1] for f in feeds.got.values()] == [
        ev.QueuePosition(0, 1, 180),
        ev.QueuePosition(1, 2, 360),
        ev.QueuePosition(2, 3, 540),
    ]
    assert await node_a.run_once(T0 + 29) == 0
    assert await node_a.run_once(T0 + 30) == 1  # c0's interval is up
    await store.ready("A1", T0 + 31)  # takes c0
    assert await node_a.run_once(T0 + 32) == 2
    assert feeds.got["c1"][-1] == ev.QueuePosition(1, 1, 180)
    assert feeds.got["c2"][-1] == ev.QueuePosition(2, 2, 360)
    assert len(feeds.got["c0"]) == 2  # offered: no more positions
    assert await node_a.run_once(T0 + 33) == 0


async def test_an_agent_on_another_node_accepts(
    node_a: RedisRouting, node_b: RedisRouting, store: RoutingStore
) -> None:
    feeds = Feeds()
    await node_a.enqueue(enqueue(1), ctx("c1"), feeds.feed("c1"))
    await node_b.enqueue(enqueue(2), ctx("c2"), feeds.feed("c2"))
    await node_b.store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    await node_b.store.accept("A1", "c1", T0 + 1)
    assert await node_b.run_once(T0 + 1) == 0  # not node b's caller
    assert await node_a.run_once(T0 + 1) == 1
    assert feeds.got["c1"][-1] == ev.AgentConnected(1, "A1", "")
    assert feeds.got["c2"] == [ev.QueuePosition(2, 2, None)]  # nobody logged in yet


async def test_max_wait_exits_the_queue(
    node_a: RedisRouting, node_b: RedisRouting, store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(QueueConfig("billing", max_wait=120), T0)
    feeds = Feeds()
    await node_a.enqueue(enqueue(3), ctx("c1"), feeds.feed("c1"))
    await node_a.run_once(T0 + 110)  # node a's pump keeps it alive (heartbeat)
    await node_b.run_once(T0 + 120)  # any node's pump handles the timer...
    await node_a.run_once(T0 + 120)  # ...the caller's node tells the caller
    assert feeds.got["c1"][-1] == ev.QueueExited(3, "max_wait")
    assert node_a.held == frozenset()
    await consistent(store)


async def test_queue_full(node_a: RedisRouting, store: RoutingStore) -> None:
    await store.configure_queue(QueueConfig("billing", max_length=1), T0)
    feeds = Feeds()
    await node_a.enqueue(enqueue(1), ctx("c1"), feeds.feed("c1"))
    await node_a.enqueue(enqueue(2), ctx("c2"), feeds.feed("c2"))
    assert feeds.got["c2"] == [ev.QueueExited(2, "queue_full")]
    assert node_a.held == {"c1"}


async def test_abandon(node_a: RedisRouting, store: RoutingStore, consistent: Check) -> None:
    feeds = Feeds()
    await node_a.enqueue(enqueue(1), ctx("c1"), feeds.feed("c1"))
    await node_a.leave_queue(act.LeaveQueue(1, "abandoned"), ctx("c1"))
    assert await store.call("c1") is None
    assert (await store.events())[-1].type is EventType.ABANDON
    assert node_a.held == frozenset()
    await consistent(store)


async def test_a_call_handed_off_by_refer_stays_with_its_agent_until_the_desktop_completes(
    node_a: RedisRouting, store: RoutingStore, consistent: Check
) -> None:
    feeds = Feeds()
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    await node_a.enqueue(enqueue(1), ctx("c1"), feeds.feed("c1"))
    await store.accept("A1", "c1", T0 + 1)
    await node_a.run_once(T0 + 1)
    assert feeds.got["c1"][-1] == ev.AgentConnected(1, "A1", "")
    with capture_logs() as logs:
        await node_a.leave_queue(act.LeaveQueue(1, "transferred"), ctx("c1"))
    assert [log["outcome"] for log in logs if log["event"] == "left queue"] == ["handed_off"]
    assert node_a.held == frozenset()
    agent = await store.agent("A1")
    assert agent is not None
    assert (agent.state, agent.call_id) == (AgentState.ON_CALL, "c1")  # still talking
    await store.complete("A1", T0 + 200)  # the agent's desktop says the talk is over
    assert await node_a.run_once(T0 + 201) == 0  # nobody left to tell on this node
    agent = await store.agent("A1")
    assert agent is not None
    assert agent.state is AgentState.WRAP_UP
    assert (await store.events())[-1].type is EventType.COMPLETE
    await consistent(store)


async def test_the_desk_ends_a_call_with_a_wrap_up_code_and_with_or_without_the_survey(
    node_a: RedisRouting, store: RoutingStore, consistent: Check
) -> None:
    feeds = Feeds()
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    for rid, call in ((1, "c1"), (2, "c2")):
        await node_a.enqueue(enqueue(rid), ctx(call), feeds.feed(call))
    await store.accept("A1", "c1", T0 + 1)
    await store.complete("A1", T0 + 60, code="已解决")  # the flow's way on: the survey
    await store.ready("A1", T0 + 61)
    await store.accept("A1", "c2", T0 + 62)
    await store.complete("A1", T0 + 90, code="误拨", after="end")
    await node_a.run_once(T0 + 91)
    assert feeds.got["c1"][-1] == ev.AgentDisconnected(1, hang_up=False)
    assert feeds.got["c2"][-1] == ev.AgentDisconnected(2, hang_up=True)
    completes = [e for e in await store.events() if e.type is EventType.COMPLETE]
    assert [(e.call_id, e.fields["by"], e.fields["code"]) for e in completes] == [
        ("c1", "agent", "已解决"),
        ("c2", "agent", "误拨"),
    ]
    with pytest.raises(ValueError, match="after"):
        await store.complete("A1", T0 + 95, after="transfer")
    # A caller who hangs up first leaves the code to the agent in wrap-up: its own event.
    await store.ready("A1", T0 + 96)
    await node_a.enqueue(enqueue(3), ctx("c3"), feeds.feed("c3"))
    await store.accept("A1", "c3", T0 + 97)
    await node_a.leave_queue(act.LeaveQueue(3, "hangup"), ctx("c3"))
    await store.wrap_up_code("A1", "c3", "需回访", T0 + 110)
    wrapup = (await store.events())[-1]
    assert (wrapup.type, wrapup.call_id, wrapup.fields["code"]) == (
        EventType.WRAPUP,
        "c3",
        "需回访",
    )
    await store.ready("A1", T0 + 111)
    with pytest.raises(RoutingError, match="available"):
        await store.wrap_up_code("A1", "c3", "需回访", T0 + 112)
    await consistent(store)


async def test_an_agent_transfers_the_caller_to_another_queue(
    node_a: RedisRouting, store: RoutingStore, consistent: Check
) -> None:
    feeds = Feeds()
    await store.configure_queue(QueueConfig("billing", wrap_up_seconds=30), T0)
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    await store.login("A2", skills={"complaint": 5}, now=T0)
    await node_a.enqueue(enqueue(1), ctx("c1"), feeds.feed("c1"))
    await store.accept("A1", "c1", T0 + 1)
    await node_a.run_once(T0 + 1)
    with pytest.raises(RoutingError, match="not talking"):
        await store.transfer("A2", "c1", "complaint", T0 + 30)
    # Nobody takes complaints yet: the caller waits there, held by its node, context kept.
    assert await store.transfer("A1", "c1", "complaint", T0 + 40) == "waiting"
    await node_a.run_once(T0 + 41)
    assert feeds.got["c1"][-2:] == [
        ev.QueueTransferred(1, "complaint"),
        ev.QueuePosition(1, 1, 180),
    ]
    assert node_a.held == {"c1"}
    call = await store.call("c1")
    assert call is not None
    assert (call.skill, call.state.value, call.context) == (
        "complaint",
        "waiting",
        {"intent": "billing"},
    )
    agent = await store.agent("A1")
    assert agent is not None
    assert (agent.state, agent.calls, agent.talk_seconds) == (AgentState.WRAP_UP, 1, 39.0)
    transfer = (await store.events())[-1]
    assert transfer.type is EventType.TRANSFER
    assert (transfer.fields["from"], transfer.fields["skill"]) == ("billing", "complaint")
    # The complaints agent takes it; the caller talks again, then hangs up.
    await store.ready("A2", T0 + 50)
    await store.accept("A2", "c1", T0 + 51)
    await node_a.run_once(T0 + 51)
    assert feeds.got["c1"][-1] == ev.AgentConnected(1, "A2", "")
    await node_a.leave_queue(act.LeaveQueue(1, "hangup"), ctx("c1"))
    await store.ready("A1", T0 + 200)
    await consistent(store)
    # Offered once in each queue, answered once in each, both talks handled.
    fold = stats.IntervalFold().apply_all(await store.events())
    rows = {row.skill: row for row in fold.intervals()}
    assert (rows["billing"].offered, rows["billing"].answered) == (1, 1)
    assert (rows["complaint"].offered, rows["complaint"].answered) == (1, 1)
    assert rows["billing"].handled == 1
    live = stats.LiveFold().apply_all(await store.events()).snapshot(T0 + 200)
    assert live == await stats.snapshot(store, T0 + 200)


async def test_callback_keeps_the_place(
    node_a: RedisRouting, store: RoutingStore, clock: Clock, consistent: Check
) -> None:
    feeds = Feeds()
    for i in range(3):
        clock.now = T0 + i
        await node_a.enqueue(enqueue(i), ctx(f"c{i}"), feeds.feed(f"c{i}"))
    clock.now = T0 + 60
    await node_a.leave_queue(act.LeaveQueue(1, "callback"), ctx("c1"))
    clock.now = T0 + 75  # the caller confirmed the number
    await node_a.request_callback(
        act.RequestCallback(5, "13912345678", "billing", 20, {"intent": "billing"}), ctx("c1")
    )
    assert await store.waiting("billing") == ["c0", "cb:c1", "c2"]
    callback = await store.call("cb:c1")
    assert callback is not None
    assert (callback.kind, callback.number) == (ItemKind.CALLBACK, "13912345678")
    await consistent(store)


async def test_errors_become_service_errors(node_a: RedisRouting) -> None:
    await node_a.enqueue(enqueue(1), ctx("c1"), Feeds().feed("c1"))
    with pytest.raises(ServiceError) as info:
        await node_a.enqueue(enqueue(2), ctx("c1"), Feeds().feed("c1"))
    assert info.value.reason == "already_queued"
    assert node_a.held == frozenset()  # the failed second request is not held
    with pytest.raises(ServiceError) as info:
        await node_a.enqueue(enqueue(3, skill="a:b"), ctx("c9"), Feeds().feed("c9"))
    assert info.value.reason == "bad_request"


async def test_redis_down(clock: Clock) -> None:
    dead = Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    node = RedisRouting(RoutingStore(dead), "ivr-a", clock=clock)
    with capture_logs() as logs, pytest.raises(ServiceError) as info:
        await node.enqueue(enqueue(1), ctx("c1"), Feeds().feed("c1"))
    assert info.value.reason == "routing_unavailable"
    assert any(entry["event"] == "routing store unavailable" for entry in logs)
    await dead.aclose()


async def test_a_broken_feed_does_not_stop_the_pump(
    node_a: RedisRouting, store: RoutingStore
) -> None:
    feeds = Feeds()

    def broken(event: ev.Event) -> None:
        raise RuntimeError("session gone wrong")

    await store.login("A1", skills={"billing": 5}, now=T0)
    await node_a.enqueue(enqueue(1), ctx("c1"), feeds.feed("c1"))
    await node_a.enqueue(enqueue(2), ctx("c2"), broken)
    await node_a.enqueue(enqueue(3), ctx("c3"), feeds.feed("c3"))
    await store.ready("A1", T0)
    await store.accept("A1", "c1", T0)
    with capture_logs() as logs:
        assert await node_a.run_once(T0 + 60) == 2
    assert feeds.got["c3"][-1] == ev.QueuePosition(3, 2, 360)
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["feeding a call failed"]


async def test_structured_logs(node_a: RedisRouting, store: RoutingStore) -> None:
    with capture_logs() as logs:
        await node_a.enqueue(
            enqueue(4, priority=100, skill="hazard"), ctx("c1"), Feeds().feed("c1")
        )
    (entry,) = logs
    assert entry == {
        "event": "queued",
        "log_level": "info",
        "skill": "hazard",
        "priority": 100,
        "position": 1,
        "wait": None,
        "offered_to": None,
    }


# ---------------------------------------------------------------------- with the real dialog

QUEUE_FLOW = {
    "flow": {"name": "q", "start": "queue", "escalate": "bye"},
    "nodes": {
        "queue": {
            "type": "enqueue",
            "skill": "billing",
            "priority": 20,
            "prompts": ["transfer_agent"],
            "hold_prompts": ["hold"],
            "position_prompts": [
                "queue_ahead",
                {"number": "queue.position"},
                "queue_people",
                "callback_offer",
            ],
            "callback_key": "9",
            "on_callback": "callback",
            "after": "bye",
            "on_exit": "busy",
        },
        "callback": {"type": "callback", "next": "bye", "on_error": "bye"},
        "busy": {"type": "end", "outcome": "hangup", "prompts": ["goodbye"]},
        "bye": {"type": "end", "outcome": "hangup", "prompts": ["goodbye"]},
    },
}


async def test_the_dialog_waits_hears_its_place_and_reaches_the_agent(
    node_a: RedisRouting, store: RoutingStore, consistent: Check
) -> None:
    context = ctx("call-1")
    dialog = Dialog(parse_flow(QUEUE_FLOW), context)
    fed: list[ev.Event] = []
    actions = dialog.handle(ev.CallStarted(), T0)
    (request,) = [a for a in actions if isinstance(a, act.Enqueue)]
    await store.login("A1", skills={"billing": 5}, contact="sip:a1@pbx", now=T0)
    await node_a.enqueue(request, context, fed.append)
    for play in [a for a in actions if isinstance(a, act.Play)]:
        dialog.handle(ev.PromptFinished(play.play_id), T0)
    await node_a.run_once(T0 + 30)
    actions = [a for event in fed for a in dialog.handle(event, T0 + 30)]
    assert dialog.slots["queue.position"] == "1"
    assert any(isinstance(a, act.Play) for a in actions)  # "there is 1 caller ahead..."
    fed.clear()
    await store.ready("A1", T0 + 40)
    await store.accept("A1", "call-1", T0 + 42)
    await node_a.run_once(T0 + 42)
    actions = [a for event in fed for a in dialog.handle(event, T0 + 42)]
    transfers = [(a.agent_id, a.contact) for a in actions if isinstance(a, act.Transfer)]
    assert transfers == [("A1", "sip:a1@pbx")]
    fed.clear()
    await store.complete("A1", T0 + 300)
    await node_a.run_once(T0 + 300)
    actions = [a for event in fed for a in dialog.handle(event, T0 + 300)]
    assert dialog.node_id == "bye"
    agent = await store.agent("A1")
    assert agent is not None
    assert agent.state is AgentState.WRAP_UP
    await consistent(store)


async def test_the_dialog_chooses_a_callback(
    node_a: RedisRouting, store: RoutingStore, consistent: Check
) -> None:
    await node_a.enqueue(enqueue(1), ctx("first"), Feeds().feed("first"))
    context = ctx("call-2")
    dialog = Dialog(parse_flow(QUEUE_FLOW), context)
    actions = dialog.handle(ev.CallStarted(), T0 + 1)
    (request,) = [a for a in actions if isinstance(a, act.Enqueue)]
    await node_a.enqueue(request, context, lambda event: None)
    await node_a.enqueue(enqueue(1), ctx("third"), Feeds().feed("third"))
    actions = dialog.handle(ev.DigitPressed("9"), T0 + 20)
    (leave,) = [a for a in actions if isinstance(a, act.LeaveQueue)]
    (callback,) = [a for a in actions if isinstance(a, act.RequestCallback)]
    await node_a.leave_queue(leave, context)
    await node_a.request_callback(callback, context)
    assert await store.waiting("billing") == ["first", "cb:call-2", "third"]
    dialog.handle(ev.ServiceDone(callback.request_id), T0 + 21)
    assert dialog.node_id == "bye"
    await consistent(store)


async def test_a_message_for_a_call_no_longer_held_is_dropped(
    node_a: RedisRouting, store: RoutingStore
) -> None:
    feeds = Feeds()
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    await node_a.enqueue(enqueue(1), ctx("c1"), feeds.feed("c1"))
    await store.accept("A1", "c1", T0 + 1)  # "connected" is now in the inbox...
    await node_a.leave_queue(act.LeaveQueue(1, "abandoned"), ctx("c1"))  # ...but the caller left
    assert await node_a.run_once(T0 + 2) == 0
    assert feeds.got["c1"] == []  # offered at once: no position was fed either
    agent = await store.agent("A1")
    assert agent is not None
    assert agent.state is AgentState.WRAP_UP  # the hang-up ended the talk


async def test_serve_delivers_without_waiting_for_the_poll(store: RoutingStore) -> None:
    """The real pump, on the real clock: an accept reaches the caller well within a poll."""
    node = RedisRouting(store, "ivr-a")
    connected = asyncio.Event()
    got: list[ev.Event] = []

    def feed(event: ev.Event) -> None:
        got.append(event)
        if isinstance(event, ev.AgentConnected):
            connected.set()

    await store.login("A1", skills={"billing": 5}, now=time.time())
    await node.enqueue(enqueue(1), ctx("c1"), feed)
    pump = asyncio.create_task(node.serve(poll_interval=5.0))
    try:
        await asyncio.sleep(0.05)  # the pump is now blocked on the empty inbox
        await store.ready("A1", time.time())
        started = time.monotonic()
        await store.accept("A1", "c1", time.time())
        await asyncio.wait_for(connected.wait(), timeout=4.0)
        assert time.monotonic() - started < 1.0
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
    assert got[-1] == ev.AgentConnected(1, "A1", "")


async def test_the_pump_keeps_the_statistics_archive(store: RoutingStore) -> None:
    """Every archive_interval the node's pump runs the archive (the first a full interval after
    the first pump), so closed intervals are in Redis before the stream is trimmed."""
    node = RedisRouting(store, "n1", archive_interval=60.0)
    await store.enqueue(NewCall("c1", {"billing": 1}, node_id="n1"), T0)
    await store.hangup("c1", T0 + 30)
    await node.run_once(T0)
    assert await store.redis.exists(store.keys.stats_fold) == 0
    await node.run_once(T0 + 59)
    assert await store.redis.exists(store.keys.stats_fold) == 0
    await node.run_once(T0 + 60)
    assert await store.redis.exists(store.keys.stats_fold) == 1
    await node.run_once(T0 + 1000)  # the first quarter is over and closed
    assert await store.redis.zcard(store.keys.stats_index) == 2  # all queues and billing
    off = RedisRouting(store, "n2", archive_interval=0)
    await store.enqueue(NewCall("c2", {"billing": 1}, node_id="n2"), T0 + 1000)
    await store.hangup("c2", T0 + 1030)
    await off.run_once(T0 + 5000)
    assert await store.redis.zcard(store.keys.stats_index) == 2


def _start_redis(port: int, workdir: Any) -> subprocess.Popen[bytes]:
    """Debian's redis-server with the append-only file on, as a deployment runs it."""
    return subprocess.Popen(
        [
            "/usr/bin/redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _until_up(client: Redis) -> None:
    async with asyncio.timeout(10):
        while True:
            try:
                await client.ping()
                return
            except RedisError:
                await asyncio.sleep(0.05)


async def test_a_hang_up_while_redis_restarts_reaches_routing_when_it_is_back(
    tmp_path: Any, clock: Clock
) -> None:
    """No ghost in line: the caller hung up while Redis was down; when Redis is back (its
    append-only file kept the queue), routing hears the hang-up, at the time it happened."""
    port = free_port()
    proc = _start_redis(port, tmp_path)
    client = Redis(port=port, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    try:
        await _until_up(client)
        node = RedisRouting(RoutingStore(client, tenant="t9"), "ivr-a", clock=clock)
        await node.enqueue(enqueue(1), ctx("c1"), Feeds().feed("c1"))
        proc.terminate()
        proc.wait(timeout=10)
        hung_up_at = clock.now = clock.now + 5
        with capture_logs() as logs:
            await node.leave_queue(act.LeaveQueue(1, "abandoned"), ctx("c1"))  # no error
        assert [e["outcome"] for e in logs if e["event"] == "left queue"] == ["retrying"]
        await asyncio.sleep(0.5)  # retried against a dead server meanwhile
        proc = _start_redis(port, tmp_path)
        await _until_up(client)
        store = RoutingStore(client, tenant="t9")
        async with asyncio.timeout(20):
            while await store.waiting("billing"):  # noqa: ASYNC110 - the retry is in a task
                await asyncio.sleep(0.1)
        [abandon] = [e for e in await store.events() if e.type is EventType.ABANDON]
        assert (abandon.call_id, abandon.t) == ("c1", hung_up_at)
        await node.leave()
    finally:
        await client.aclose()
        proc.terminate()
        proc.wait(timeout=10)
