"""A second IVR node in its own OS process, for tests/routing/test_nodes.py.

Usage: ``python ivr_node.py <redis url> <tenant> <node id> <t0>``. As that node, on a clock
fixed by the arguments (t0, then one second per step), it heartbeats through `RedisRouting`,
puts callers c1, c2, c3 in line, and turns c4 into a callback (cb:c4) that keeps c4's place. Then
it prints ``ready`` and keeps pumping (heartbeats, inbox, timers) until it is killed; its log
goes to stderr so stdout carries only that line.
"""

from __future__ import annotations

import asyncio
import sys

import structlog
from redis.asyncio import Redis

from ivr.dialog import actions as act
from ivr.dialog import events as ev
from ivr.dialog.engine import CallContext
from ivr.routing_redis import RedisRouting
from routing.store import RoutingStore

CALLERS = ("c1", "c2", "c3", "c4")
"""The callers this node puts in line; the last one leaves the line for a callback."""


class Clock:
    """Time as the test decides it: t0, advanced explicitly."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def main(url: str, tenant: str, node_id: str, t0: float) -> None:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    client = Redis.from_url(url, decode_responses=True)
    clock = Clock(t0)
    node = RedisRouting(
        RoutingStore(client, tenant),
        node_id,
        clock=clock,
        heartbeat_interval=5.0,
        node_timeout=20.0,
    )
    await node.run_once()  # the first heartbeat
    fed: list[ev.Event] = []
    for rid, call_id in enumerate(CALLERS, start=1):
        clock.now += 1
        context = CallContext(call_id=call_id, caller=f"1390000000{rid}")
        await node.enqueue(act.Enqueue(rid, "billing", 0, 1, {}), context, fed.append)
    clock.now += 1
    last = CallContext(call_id=CALLERS[-1], caller="13900000004")
    await node.leave_queue(act.LeaveQueue(len(CALLERS), "callback"), last)
    await node.request_callback(act.RequestCallback(9, last.caller, "billing", 0, {}), last)
    await node.run_once()  # the second heartbeat is due: this node is alive until t0 + 25
    print("ready", flush=True)
    while True:  # a live node: pumping until killed (its clock stays where it is)
        await node.run_once(wait=0.2)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
