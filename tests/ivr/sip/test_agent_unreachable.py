"""An agent accepts a caller but the agent's phone fails: real SIPp peers, real Redis routing.

A SIPp caller calls the hotline (an in-process SipServer whose routing is a Redis-backed
RedisRouting, its pump running as in `hotline serve`) and presses 0 for an agent. The first agent's
phone is a SIPp that is busy, one that never answers, or none at all; the agent accepts, the
hotline calls the phone, the leg fails, and the caller goes back to their place in line (the agent
not ready, missed) instead of being left connected to nobody. A second agent, whose SIPp phone
answers, then gets the caller and the two are bridged until the caller hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from ivr.routing_redis import RedisRouting
from ivr.sip.server import SipCall, SipServer
from routing.events import EventType
from routing.model import AgentState, CallState
from routing.stats import interval_stats
from routing.store import RoutingStore

sys.path.insert(0, str(Path(__file__).parent))
from sipp import (
    SippPeer,
    SippRun,
    key_pcaps,
    make_server,
    sipp,
    sipp_available,
    sipp_uas,
    uac_scenario,
    uas_scenario,
    wait_until,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not sipp_available() and not os.environ.get("CI"), reason="needs Debian sip-tester"
    ),
]

SKILL = "general"  # the queue key 0 leads to


async def agent_state(store: RoutingStore, agent_id: str) -> tuple[AgentState, str, str]:
    agent = await store.agent(agent_id)
    assert agent is not None
    return agent.state, agent.reason, agent.call_id


async def until(store: RoutingStore, agent_id: str, state: AgentState, within: float) -> str:
    """Until the agent is in ``state``; the call it holds."""
    async with asyncio.timeout(within):
        while True:
            got, _, call_id = await agent_state(store, agent_id)
            if got is state:
                return call_id
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def routed(
    redis_client: Redis, tenant: str, **settings: Any
) -> AsyncIterator[tuple[RoutingStore, SipServer]]:
    """An in-process SipServer whose routing is Redis (`tenant`), its pump running as in
    `hotline serve`; stopped after."""
    store = RoutingStore(redis_client, tenant=tenant)
    server = make_server(**settings)
    routing = RedisRouting(store, "node-a", position_interval=5.0)
    server.routing = routing
    await server.start()
    pump = asyncio.get_running_loop().create_task(routing.serve(poll_interval=0.1))
    try:
        yield store, server
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        await server.stop(0)


def call_for_an_agent(server: SipServer, tmp_path: Path, *, hold: float) -> asyncio.Task[SippRun]:
    """A SIPp caller that presses 0 (an agent) at 6 s and hangs up `hold` seconds later."""
    caller_dir = tmp_path / "caller"
    caller_dir.mkdir()
    scenario = uac_scenario([6.0, "0", hold], pcaps=key_pcaps("0", caller_dir))
    return asyncio.get_running_loop().create_task(
        sipp(scenario, server.address, caller_dir, timeout=40)
    )


async def accepted_by_a1(
    store: RoutingStore, server: SipServer, phone: SippPeer, tmp_path: Path, *, hold: float
) -> tuple[asyncio.Task[SippRun], str, SipCall]:
    """Agent A1, whose phone is `phone`, logs in ready; a caller asks for an agent
    (:func:`call_for_an_agent`), is offered to A1, and A1 accepts: the caller's run, the
    routing call id, and the call on the SIP side."""
    contact = f"sip:A1@127.0.0.1:{phone.address[1]}"
    await store.login("A1", skills={SKILL: 5}, now=time.time(), contact=contact, ready=True)
    caller = call_for_an_agent(server, tmp_path, hold=hold)
    call_id = await until(store, "A1", AgentState.RESERVED, within=15.0)
    await store.accept("A1", call_id, time.time())
    [sip_call] = server.calls.values()
    return caller, call_id, sip_call


@pytest.mark.parametrize(
    ("phone", "cause"),
    [("busy", "486 Busy Here"), ("no_answer", "487 ring timeout"), (None, "not registered")],
)
async def test_the_caller_goes_back_in_line_and_reaches_the_next_agent(
    tmp_path: Path, redis_client: Redis, phone: str | None, cause: str
) -> None:
    async with (
        routed(redis_client, "unreachable", sip_agent_ring_seconds=1.5) as (store, server),
        contextlib.AsyncExitStack() as stack,
    ):
        first = (
            await stack.enter_async_context(sipp_uas(uas_scenario(phone), tmp_path / "a1"))
            if phone
            else None
        )
        second = await stack.enter_async_context(
            sipp_uas(uas_scenario("answer"), tmp_path / "a2")  # answers, waits for a BYE
        )
        contact = f"sip:A1@127.0.0.1:{first.address[1]}" if first else ""
        await store.login("A1", skills={SKILL: 5}, now=time.time(), contact=contact, ready=True)

        caller = call_for_an_agent(server, tmp_path, hold=12.0)

        # The caller asks for an agent: A1, available, is offered the call and accepts.
        call_id = await until(store, "A1", AgentState.RESERVED, within=15.0)
        await store.accept("A1", call_id, time.time())
        # A1's phone fails: the caller is back in line, A1 not ready (missed).
        await until(store, "A1", AgentState.NOT_READY, within=10.0)
        assert await agent_state(store, "A1") == (AgentState.NOT_READY, "missed", "")
        back = await store.call(call_id)
        assert back is not None
        assert (back.state, back.agent_id) == (CallState.WAITING, "")
        assert await store.waiting(SKILL) == [call_id]
        [sip_call] = server.calls.values()  # the caller is still on the line
        assert sip_call.agent_leg is None
        assert not server.legs

        # The next agent gets the caller first, and is bridged to them.
        second_contact = f"sip:A2@127.0.0.1:{second.address[1]}"
        await store.login(
            "A2", skills={SKILL: 1}, now=time.time(), contact=second_contact, ready=True
        )
        assert await until(store, "A2", AgentState.RESERVED, within=5.0) == call_id
        await store.accept("A2", call_id, time.time())
        await wait_until(lambda: sip_call.bridge is not None, 10.0)

        run = await caller  # the caller hangs up
        assert run.returncode == 0, run.stdout[-2000:] + run.errors
        await wait_until(lambda: len(server.completed) == 1, 10.0)
        for peer in (first, second):
            if peer is not None:
                done = await peer.finished()
                assert done.returncode == 0, (done.stdout[-2000:], done.errors[-2000:])

    [summary] = server.completed
    assert summary.slots["agent_id"] == "A2"
    assert [o.kind for o in summary.outcomes] == ["enqueue"]  # served: not an abandon
    events = [e for e in await store.events() if e.call_id == call_id]
    assert [e.type for e in events] == [
        EventType.ENTERQUEUE,
        EventType.OFFER,
        EventType.CONNECT,
        EventType.UNREACHABLE,
        EventType.OFFER,
        EventType.CONNECT,
        EventType.COMPLETE,
    ]
    assert (events[3].agent_id, events[3].fields["cause"]) == ("A1", cause)
    assert events[-1].agent_id == "A2"
    if first is not None:
        [invite] = [m for m in first.trace() if m.received and m.is_request("INVITE")]
        assert invite.first_line.startswith("INVITE sip:A1@127.0.0.1:")


async def test_an_agent_finishing_on_the_desktop_is_hung_up_before_the_survey(
    tmp_path: Path, redis_client: Redis
) -> None:
    """Routing says the agent is done (the desktop's "complete"), not the agent's phone: the
    hotline hangs the agent's leg up, and the caller alone hears the survey."""
    async with (
        routed(redis_client, "desk-done") as (store, server),
        sipp_uas(uas_scenario("answer"), tmp_path / "agent") as phone,
    ):
        caller, _, sip_call = await accepted_by_a1(store, server, phone, tmp_path, hold=14.0)
        await wait_until(lambda: sip_call.bridge is not None, 10.0)

        await store.complete("A1", time.time())
        await wait_until(lambda: sip_call.agent_leg is None, 10.0)
        done = await phone.finished()  # its scenario ends on the hotline's BYE
        assert done.returncode == 0, (done.stdout[-2000:], done.errors[-2000:])
        assert not caller.done()  # the caller is still on the line, hearing the survey
        assert not server.legs

        run = await caller
        assert run.returncode == 0, run.stdout[-2000:] + run.errors
        await wait_until(lambda: len(server.completed) == 1, 10.0)

    [summary] = server.completed
    assert summary.path[-1] == "survey"
    assert (await agent_state(store, "A1"))[0] is AgentState.WRAP_UP


async def test_a_caller_hanging_up_while_the_agent_phone_rings_abandons(
    tmp_path: Path, redis_client: Redis
) -> None:
    """The agent accepted, their phone rings, the caller hangs up before it answers: an
    abandon (not a completed call), the phone's ringing is cancelled, the agent is available
    again with no call counted."""
    async with (
        routed(redis_client, "ringing", sip_agent_ring_seconds=30) as (store, server),
        sipp_uas(uas_scenario("no_answer"), tmp_path / "a1") as phone,
    ):
        caller, call_id, sip_call = await accepted_by_a1(store, server, phone, tmp_path, hold=6.0)
        await wait_until(lambda: sip_call.agent_leg is not None, 5.0)  # the phone rings

        run = await caller  # hangs up while it still rings
        assert run.returncode == 0, run.stdout[-2000:] + run.errors
        await until(store, "A1", AgentState.AVAILABLE, within=10.0)
        done = await phone.finished()  # got the CANCEL
        assert done.returncode == 0, (done.stdout[-2000:], done.errors[-2000:])
        await wait_until(lambda: len(server.completed) == 1, 10.0)

    assert await store.call(call_id) is None
    agent = await store.agent("A1")
    assert agent is not None
    assert (agent.state, agent.calls, agent.talk_seconds) == (AgentState.AVAILABLE, 0, 0.0)
    events = [e for e in await store.events() if e.call_id == call_id]
    assert [e.type for e in events] == [
        EventType.ENTERQUEUE,
        EventType.OFFER,
        EventType.CONNECT,
        EventType.ABANDON,
    ]
    assert (events[-1].agent_id, events[-1].fields["reason"]) == ("A1", "abandon_while_ringing")
    [summary] = server.completed
    assert "abandoned" in [o.kind for o in summary.outcomes]
    [row] = [r for r in interval_stats(await store.events()) if r.skill == SKILL]
    assert (row.offered, row.answered, row.abandoned, row.abandoned_ringing) == (1, 0, 1, 1)
