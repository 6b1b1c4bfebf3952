"""Callbacks dialed out when an agent accepts them: real SIPp peers, real Redis routing.

One SIPp plays the agent's phone, another the trunk (the customer's phone behind the PBX); the
hotline's SipServer runs in-process with a Redis-backed RedisRouting whose ``on_callback`` hook is
the server's ``place_callback``, as `hotline serve` wires them. The state machine is also tested
on its own, without sockets.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiosipua import parse_sdp
from redis.asyncio import Redis
from structlog.testing import capture_logs

from ivr import metrics
from ivr.dialog import actions as act
from ivr.dialog.engine import CallContext
from ivr.routing_redis import CallbackEnd, CallbackOrder, RedisRouting
from ivr.settings import Settings
from ivr.sip.callbacks import (
    CallbackDial,
    CallbackLimits,
    CallbackOutcome,
    Connect,
    DialCustomer,
    Finish,
    HangUp,
    Phase,
    UseMedia,
)
from ivr.sip.server import SipServer
from ivr.sip.uac_events import LegAnswered, LegEnded, LegFailed, LegMediaChanged, LegRinging
from ivr.web import create_app
from routing.events import EventType
from routing.model import AgentState, CallState, QueueConfig
from routing.store import RoutingStore

sys.path.insert(0, str(Path(__file__).parent))
from sipp import SippPeer, make_server, sipp_available, sipp_uas, uas_scenario, wait_until

AGENT = "1001"
SKILL = "fault_repair"
NUMBER = "13812345678"
MASKED = "138****5678"
CALLER_CALL = "sip-callback-test-1"
CALLBACK = f"cb:{CALLER_CALL}"
NODE = "node-a"
WITH_CONTEXT = [structlog.contextvars.merge_contextvars]
"""capture_logs() drops the configured processors; keep the one that adds the bound call id."""

needs_sipp = pytest.mark.skipif(
    not sipp_available() and not os.environ.get("CI"), reason="needs Debian sip-tester"
)


# ------------------------------------------------------------------------ the state machine

SDP = parse_sdp(
    "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
)


def test_a_callback_dials_the_customer_once_the_agent_answers_and_bridges_on_answer() -> None:
    dial = CallbackDial()
    assert dial.handle("agent", LegRinging("a", 180)) == []
    assert dial.handle("agent", LegAnswered("a", SDP)) == [
        UseMedia("agent", SDP, answer=True),
        DialCustomer(),
    ]
    assert dial.phase is Phase.CALLING_CUSTOMER
    assert dial.handle("customer", LegAnswered("c", SDP)) == [
        UseMedia("customer", SDP, answer=True),
        Connect(),
    ]
    assert dial.handle("agent", LegMediaChanged("a", SDP, hold=True)) == [
        UseMedia("agent", SDP, answer=False)
    ]
    assert dial.handle("customer", LegEnded("c", "remote_bye")) == [
        HangUp("agent"),
        Finish(CallbackOutcome.CONNECTED, "the customer hung up"),
    ]
    # The BYE we sent comes back as the agent leg's end: nothing more happens.
    assert dial.handle("agent", LegEnded("a", "local_bye")) == []
    assert dial.phase is Phase.ENDED


def test_each_failure_ends_what_is_up_with_its_outcome() -> None:
    dial = CallbackDial()
    assert dial.handle("agent", LegFailed("a", 480, "Temporarily Unavailable")) == [
        Finish(CallbackOutcome.AGENT_UNREACHABLE, "agent leg 480 Temporarily Unavailable")
    ]

    dial = CallbackDial()
    dial.handle("agent", LegAnswered("a", SDP))
    assert dial.handle("customer", LegFailed("c", 486, "Busy Here")) == [
        HangUp("agent"),
        Finish(CallbackOutcome.CUSTOMER_UNANSWERED, "customer leg 486 Busy Here"),
    ]

    dial = CallbackDial()
    dial.handle("agent", LegAnswered("a", SDP))
    assert dial.handle("agent", LegEnded("a", "remote_bye")) == [
        HangUp("customer"),
        Finish(CallbackOutcome.CUSTOMER_UNANSWERED, "the agent hung up while it rang"),
    ]


def test_stopping_hangs_up_both_legs_and_a_talk_stays_connected() -> None:
    dial = CallbackDial()
    dial.handle("agent", LegAnswered("a", SDP))
    assert dial.end(CallbackOutcome.STOPPED, "stop") == [
        HangUp("customer"),
        HangUp("agent"),
        Finish(CallbackOutcome.STOPPED, "stop"),
    ]
    assert dial.end(CallbackOutcome.STOPPED, "again") == []

    dial = CallbackDial()
    dial.handle("agent", LegAnswered("a", SDP))
    dial.handle("customer", LegAnswered("c", SDP))
    assert dial.end(CallbackOutcome.STOPPED, "stop")[-1] == Finish(
        CallbackOutcome.CONNECTED, "stop"
    )


def test_routing_puts_back_what_did_not_get_through_and_fails_what_cannot() -> None:
    assert CallbackOutcome.CONNECTED.end is CallbackEnd.DONE
    assert CallbackOutcome.STOPPED.end is CallbackEnd.DONE
    assert CallbackOutcome.CANCELLED.end is CallbackEnd.DONE
    assert CallbackOutcome.AGENT_UNREACHABLE.end is CallbackEnd.AGENT_UNREACHABLE
    assert CallbackOutcome.CUSTOMER_UNANSWERED.end is CallbackEnd.NO_ANSWER
    assert CallbackOutcome.NO_TRUNK.end is CallbackEnd.CANNOT_DIAL
    assert CallbackOutcome.INVALID_NUMBER.end is CallbackEnd.CANNOT_DIAL


def test_routing_ending_a_callback_hangs_up_what_is_up() -> None:
    dial = CallbackDial()
    dial.handle("agent", LegAnswered("a", SDP))  # the customer rings
    assert dial.end(CallbackOutcome.CANCELLED, "ended in routing") == [
        HangUp("customer"),
        HangUp("agent"),
        Finish(CallbackOutcome.CANCELLED, "ended in routing"),
    ]


# ------------------------------------------------------------------------ with real peers


@dataclass
class Rig:
    """The hotline, its routing, and the SIPp peers it dials."""

    server: SipServer
    routing: RedisRouting
    store: RoutingStore
    agent: SippPeer | None
    trunk: SippPeer | None


@asynccontextmanager
async def rig(
    tmp_path: Path,
    redis_client: Redis,
    *,
    agent: str | None,
    trunk: str | None = None,
    trunk_configured: bool = True,
    **overrides: Any,
) -> AsyncIterator[Rig]:
    """Start the peers (scenarios from `uas_scenario`), the server and routing; log the agent
    in with the agent SIPp as its contact, ready."""
    async with AsyncExitStack() as stack:
        agent_peer = (
            await stack.enter_async_context(sipp_uas(agent, tmp_path / "agent")) if agent else None
        )
        trunk_peer = (
            await stack.enter_async_context(sipp_uas(trunk, tmp_path / "trunk")) if trunk else None
        )
        settings: dict[str, Any] = dict(overrides)
        if trunk_configured:
            port = trunk_peer.address[1] if trunk_peer else 9  # discard: nothing answers
            settings["sip_callback_trunk"] = f"127.0.0.1:{port}"
        server = make_server(**settings)
        await server.start()

        async def stop_server() -> None:
            if not server.draining:  # a test may have stopped it already
                await server.stop(0)

        stack.push_async_callback(stop_server)
        # Short enough for a test, long enough for SIPp on a loaded machine.
        server.callbacks.limits = CallbackLimits(agent_ring_seconds=8.0, customer_ring_seconds=2.0)
        store = RoutingStore(redis_client, tenant="cb")
        routing = RedisRouting(
            store, NODE, on_callback=server.place_callback, on_callback_ended=server.end_callback
        )
        # No agent phone: no contact (and no registrar), so nobody can reach the agent.
        contact = f"sip:{AGENT}@127.0.0.1:{agent_peer.address[1]}" if agent_peer else ""
        await store.login(AGENT, skills={SKILL: 5}, now=time.time(), contact=contact, ready=True)
        yield Rig(server, routing, store, agent_peer, trunk_peer)


async def accept_callback(routing: RedisRouting, number: str = NUMBER) -> None:
    """A caller asks for a callback; the agent (available) is offered it and accepts; the
    node's pump delivers routing's message and the hook starts dialing."""
    store = routing.store
    request = act.RequestCallback(1, number, SKILL, 0, {"account": "0123456789"})
    await routing.request_callback(request, CallContext(CALLER_CALL, number, channel="sip"))
    agent = await store.agent(AGENT)
    assert agent is not None
    assert (agent.state, agent.call_id) == (AgentState.RESERVED, CALLBACK)
    await store.accept(AGENT, CALLBACK, time.time())
    await routing.run_once()
    assert CALLBACK in routing.callbacks


async def callback_done(rig: Rig, within: float = 30.0) -> None:
    """Until the callback is over on both sides: SIP finished it and routing was told."""
    await wait_until(lambda: bool(rig.server.callbacks.finished), within)
    await wait_until(lambda: CALLBACK not in rig.routing.callbacks, 10.0)


async def routing_completed(store: RoutingStore) -> None:
    """Routing completed the callback: gone, the agent in wrap-up, a COMPLETE event."""
    assert await store.call(CALLBACK) is None
    agent = await store.agent(AGENT)
    assert agent is not None
    assert agent.state is AgentState.WRAP_UP
    complete = [e for e in await store.events() if e.type is EventType.COMPLETE]
    assert [(e.call_id, e.agent_id) for e in complete] == [(CALLBACK, AGENT)]


async def routing_put_back(store: RoutingStore, event: EventType, attempts: int = 0) -> None:
    """Routing put the callback back in its place, with the attempts made so far: at once
    after an unreachable agent phone; after the queue's retry delay (out of line until then)
    when the customer did not answer."""
    callback = await store.call(CALLBACK)
    assert callback is not None
    agent = await store.agent(AGENT)
    assert agent is not None
    if event is EventType.UNREACHABLE:  # the agent's phone: not ready, as after a missed offer
        assert (callback.state, callback.attempts) == (CallState.WAITING, attempts)
        assert await store.waiting(SKILL) == [CALLBACK]
        assert (agent.state, agent.reason) == (AgentState.NOT_READY, "missed")
    else:  # the customer did not answer: the agent wraps up, no call handled
        assert (callback.state, callback.attempts) == (CallState.RETRY, attempts)
        assert await store.waiting(SKILL) == []
        assert (agent.state, agent.calls) == (AgentState.WRAP_UP, 0)
    types = [e.type for e in await store.events()]
    assert types[-1] is event
    assert EventType.COMPLETE not in types
    if callback.retry_at is not None:
        await store.not_ready(AGENT, "break", callback.retry_at)  # nobody to offer it to
        await store.tick(callback.retry_at)
        back = await store.call(CALLBACK)
        assert back is not None
        assert (back.state, back.attempts) == (CallState.WAITING, attempts)
        assert await store.waiting(SKILL) == [CALLBACK]
        assert (await store.events())[-1].type is EventType.CALLBACK_RETRY


async def routing_failed(store: RoutingStore, attempts: int) -> None:
    """Routing ended the callback as failed."""
    assert await store.call(CALLBACK) is None
    [failed] = [e for e in await store.events() if e.type is EventType.CALLBACK_FAILED]
    assert (failed.call_id, failed.fields["attempts"]) == (CALLBACK, str(attempts))
    agent = await store.agent(AGENT)
    assert agent is not None
    assert (agent.state, agent.calls) == (AgentState.WRAP_UP, 0)


async def sipp_ok(peer: SippPeer | None) -> None:
    assert peer is not None
    run = await peer.finished()
    assert run.returncode == 0, (run.stdout[-3000:], run.errors[-3000:])


def outcome_count(outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value("hotline_callbacks_total", {"outcome": outcome})
    return value or 0.0


async def test_routing_tells_the_node_a_callback_was_accepted(redis_client: Redis) -> None:
    store = RoutingStore(redis_client, tenant="cb")
    routing = RedisRouting(store, NODE)
    await store.login(AGENT, skills={SKILL: 5}, now=time.time(), contact="sip:x@h", ready=True)
    request = act.RequestCallback(1, NUMBER, SKILL, 0)
    await routing.request_callback(request, CallContext(CALLER_CALL, NUMBER))
    await store.accept(AGENT, CALLBACK, time.time())
    [message] = await store.drain_inbox(NODE)
    assert (message.kind, message.call_id, message.agent_id) == ("connected", CALLBACK, AGENT)


@pytest.mark.slow
@needs_sipp
@pytest.mark.parametrize("who_hangs_up", ["agent", "customer"])
async def test_a_callback_is_dialed_bridged_and_completed(
    tmp_path: Path, redis_client: Redis, who_hangs_up: str
) -> None:
    before = outcome_count("connected")
    agent_hold, customer_hold = (4.0, None) if who_hangs_up == "agent" else (None, 4.0)
    async with rig(
        tmp_path,
        redis_client,
        agent=uas_scenario("answer", hold=agent_hold),
        trunk=uas_scenario("answer", hold=customer_hold, ring=0.5),
    ) as r:
        with capture_logs(WITH_CONTEXT) as logs:
            await accept_callback(r.routing)
            await callback_done(r)
        await sipp_ok(r.agent)
        await sipp_ok(r.trunk)
        await routing_completed(r.store)

    [summary] = r.server.callbacks.finished
    assert summary.outcome is CallbackOutcome.CONNECTED
    assert summary.detail == f"the {who_hangs_up} hung up"
    # RTP both ways through the bridge: each side's audio (SIPp plays 7 s of PCMA from the
    # moment it answers) was forwarded to the other, frame by frame.
    assert summary.to_customer_frames > 50
    assert summary.to_agent_frames > 50
    assert outcome_count("connected") == before + 1

    # The agent's phone was called first, showing the customer's number...
    assert r.agent is not None
    assert r.trunk is not None
    [agent_invite] = [m for m in r.agent.trace() if m.received and m.is_request("INVITE")]
    assert agent_invite.first_line.startswith(f"INVITE sip:{AGENT}@127.0.0.1:")
    assert f"sip:{NUMBER}@" in (agent_invite.header("From") or "")
    # ...then the customer, through the trunk, from the hotline's number, once the agent was up.
    [customer_invite] = [m for m in r.trunk.trace() if m.received and m.is_request("INVITE")]
    trunk = f"127.0.0.1:{r.trunk.address[1]}"
    assert customer_invite.first_line == f"INVITE sip:{NUMBER}@{trunk} SIP/2.0"
    assert "<sip:95598@" in (customer_invite.header("From") or "")
    # That the customer is dialed only once the agent answered is pinned without sockets by
    # test_a_callback_dials_the_customer_once_the_agent_answers_and_bridges_on_answer: the trace
    # stamps of two SIPp processes cannot order events a fraction of a millisecond apart.
    assert [m for m in r.agent.trace() if not m.received and m.is_response(200, "INVITE")]
    # The other side was hung up by the hotline.
    hung_up = r.trunk if who_hangs_up == "agent" else r.agent
    assert [m for m in hung_up.trace() if m.received and m.is_request("BYE")]

    # One summary line, number masked, bound to the callback's id.
    [line] = [e for e in logs if e["event"] == "callback finished"]
    assert line["outcome"] == "connected"
    assert line["number"] == MASKED
    assert line["call_id"] == CALLBACK
    assert NUMBER not in repr(logs)


@pytest.mark.slow
@needs_sipp
@pytest.mark.parametrize(
    ("trunk_answer", "detail"),
    [("busy", "customer leg 486 Busy Here"), ("no_answer", "customer leg 487 ring timeout")],
)
async def test_a_customer_who_does_not_answer_puts_the_callback_back_in_its_place(
    tmp_path: Path, redis_client: Redis, trunk_answer: str, detail: str
) -> None:
    before = outcome_count("customer_unanswered")
    async with rig(
        tmp_path,
        redis_client,
        agent=uas_scenario("answer"),  # answers, then waits for the hotline's BYE
        trunk=uas_scenario(trunk_answer),
    ) as r:
        with capture_logs(WITH_CONTEXT) as logs:
            await accept_callback(r.routing)
            await callback_done(r)
        await sipp_ok(r.agent)
        await sipp_ok(r.trunk)
        await routing_put_back(r.store, EventType.CALLBACK_NOANSWER, attempts=1)

    [summary] = r.server.callbacks.finished
    assert (summary.outcome, summary.detail) == (CallbackOutcome.CUSTOMER_UNANSWERED, detail)
    assert summary.to_customer_frames == summary.to_agent_frames == 0
    assert outcome_count("customer_unanswered") == before + 1
    [line] = [e for e in logs if e["event"] == "callback finished"]
    assert (line["outcome"], line["number"], line["call_id"]) == (
        "customer_unanswered",
        MASKED,
        CALLBACK,
    )


@pytest.mark.slow
@needs_sipp
async def test_an_agent_phone_that_refuses_puts_the_callback_back_before_the_customer_is_dialed(
    tmp_path: Path, redis_client: Redis
) -> None:
    before = outcome_count("agent_unreachable")
    async with rig(
        tmp_path,
        redis_client,
        agent=uas_scenario("busy"),
        trunk=uas_scenario("answer"),  # must never be called
    ) as r:
        await accept_callback(r.routing)
        await callback_done(r)
        await sipp_ok(r.agent)
        await routing_put_back(r.store, EventType.UNREACHABLE)
        assert r.trunk is not None
        assert r.trunk.trace() == []

    [summary] = r.server.callbacks.finished
    assert (summary.outcome, summary.detail) == (
        CallbackOutcome.AGENT_UNREACHABLE,
        "agent leg 486 Busy Here",
    )
    assert outcome_count("agent_unreachable") == before + 1


@pytest.mark.slow
@needs_sipp
async def test_the_agent_hanging_up_while_the_customer_rings_cancels_the_customer(
    tmp_path: Path, redis_client: Redis
) -> None:
    async with rig(
        tmp_path,
        redis_client,
        agent=uas_scenario("answer", hold=0.5),
        trunk=uas_scenario("no_answer"),
    ) as r:
        r.server.callbacks.limits = CallbackLimits(customer_ring_seconds=30.0)
        await accept_callback(r.routing)
        await callback_done(r)
        await sipp_ok(r.agent)
        await sipp_ok(r.trunk)  # it got the CANCEL
        await routing_put_back(r.store, EventType.CALLBACK_NOANSWER, attempts=1)
    [summary] = r.server.callbacks.finished
    assert (summary.outcome, summary.detail) == (
        CallbackOutcome.CUSTOMER_UNANSWERED,
        "the agent hung up while it rang",
    )


@pytest.mark.slow
@needs_sipp
async def test_a_phone_that_goes_silent_is_hung_up(tmp_path: Path, redis_client: Redis) -> None:
    """A dead phone never sends its BYE: the RTP timeout ends the callback like a call."""
    async with rig(
        tmp_path,
        redis_client,
        agent=uas_scenario("answer", play=None),  # answers, sends no audio at all
        trunk=uas_scenario("answer"),
        rtp_timeout_seconds=1.0,
    ) as r:
        await accept_callback(r.routing)
        await callback_done(r)
        await sipp_ok(r.agent)  # both got the hotline's BYE
        await sipp_ok(r.trunk)
        await routing_completed(r.store)
    [summary] = r.server.callbacks.finished
    assert (summary.outcome, summary.detail) == (CallbackOutcome.CONNECTED, "no rtp from agent")


async def test_an_agent_nobody_can_reach_puts_the_callback_back(
    tmp_path: Path, redis_client: Redis
) -> None:
    async with rig(tmp_path, redis_client, agent=None) as r:
        await accept_callback(r.routing)
        await callback_done(r)
        await routing_put_back(r.store, EventType.UNREACHABLE)
    [summary] = r.server.callbacks.finished
    assert summary.outcome is CallbackOutcome.AGENT_UNREACHABLE


async def test_without_a_trunk_the_callback_is_logged_and_fails(
    tmp_path: Path, redis_client: Redis
) -> None:
    before = outcome_count("no_trunk")
    async with rig(tmp_path, redis_client, agent=None, trunk_configured=False) as r:
        with capture_logs(WITH_CONTEXT) as logs:
            await accept_callback(r.routing)
            await callback_done(r)
        await routing_failed(r.store, attempts=1)
    [summary] = r.server.callbacks.finished
    assert summary.outcome is CallbackOutcome.NO_TRUNK
    assert outcome_count("no_trunk") == before + 1
    said = [e for e in logs if e["event"] == "callback not dialed: no trunk configured"]
    assert len(said) == 1
    assert said[0]["call_id"] == CALLBACK
    assert said[0]["setting"] == "sip_callback_trunk"


async def test_a_number_that_cannot_be_dialed_is_not(tmp_path: Path, redis_client: Redis) -> None:
    async with rig(tmp_path, redis_client, agent=None) as r:
        await accept_callback(r.routing, number="1380013800;x")
        await callback_done(r)
        await routing_failed(r.store, attempts=1)
    [summary] = r.server.callbacks.finished
    assert summary.outcome is CallbackOutcome.INVALID_NUMBER


@pytest.mark.slow
@needs_sipp
async def test_stopping_the_server_hangs_up_a_callback_in_progress(
    tmp_path: Path, redis_client: Redis
) -> None:
    async with rig(
        tmp_path,
        redis_client,
        agent=uas_scenario("answer"),
        trunk=uas_scenario("answer"),
    ) as r:
        await accept_callback(r.routing)
        await wait_until(lambda: any(c.bridge for c in r.server.callbacks.active.values()), 15.0)
        await r.server.stop(0)
        await callback_done(r)
        await sipp_ok(r.agent)  # both got the hotline's BYE
        await sipp_ok(r.trunk)
        await routing_completed(r.store)
    [summary] = r.server.callbacks.finished
    assert (summary.outcome, summary.detail) == (CallbackOutcome.CONNECTED, "the node stopped")


async def test_a_hook_that_fails_still_frees_the_agent(redis_client: Redis) -> None:
    """Routing hears the callback ended whatever the hook does."""
    store = RoutingStore(redis_client, tenant="cb")
    orders: list[CallbackOrder] = []

    async def broken(order: CallbackOrder) -> None:
        orders.append(order)
        raise RuntimeError("boom")

    routing = RedisRouting(store, NODE)  # no hook yet: the order waits for one
    await store.login(AGENT, skills={SKILL: 5}, now=time.time(), contact="sip:a@h", ready=True)
    with capture_logs(WITH_CONTEXT) as logs:
        await accept_callback(routing)
        await wait_until(lambda: not routing.callbacks, 10.0)
        assert await store.call(CALLBACK) is not None  # still connected, waiting for a dialer
        routing.on_callback = broken
        await wait_until(lambda: bool(orders) and not routing.callbacks, 10.0)
    assert orders == [CallbackOrder(CALLBACK, AGENT, "sip:a@h", NUMBER, {"account": "0123456789"})]
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["callback failed"]
    await routing_completed(store)


@pytest.mark.slow
@needs_sipp
async def test_the_last_unanswered_attempt_fails_the_callback(
    tmp_path: Path, redis_client: Redis
) -> None:
    async with rig(
        tmp_path, redis_client, agent=uas_scenario("answer"), trunk=uas_scenario("busy")
    ) as r:
        await r.store.configure_queue(QueueConfig(SKILL, callback_attempts=1), time.time())
        await accept_callback(r.routing)
        await callback_done(r)
        await sipp_ok(r.agent)
        await sipp_ok(r.trunk)
        await routing_failed(r.store, attempts=1)
    [summary] = r.server.callbacks.finished
    assert summary.outcome is CallbackOutcome.CUSTOMER_UNANSWERED


@pytest.mark.slow
@needs_sipp
@pytest.mark.parametrize(
    ("customer", "outcome"),
    [("answer", CallbackOutcome.CONNECTED), ("no_answer", CallbackOutcome.CANCELLED)],
)
async def test_a_callback_its_agent_completes_through_the_api_hangs_up_both_legs(
    tmp_path: Path,
    redis_client: Redis,
    serving: Callable[..., AbstractAsyncContextManager[str]],
    customer: str,
    outcome: CallbackOutcome,
) -> None:
    """The agent presses "done" (POST /api/agents/{id}/complete) while talking, or while the
    customer's phone still rings: routing completes the callback and the node hangs up both legs
    (BYE to a talking customer, CANCEL to a ringing one, BYE to the agent)."""
    async with rig(
        tmp_path,
        redis_client,
        agent=uas_scenario("answer"),  # waits for the hotline's BYE
        trunk=uas_scenario(customer, ring=0.2),  # answered: waits for a BYE; else for a CANCEL
    ) as r:
        r.server.callbacks.limits = CallbackLimits(customer_ring_seconds=30.0)
        app = create_app(Settings(), routing=r.store)
        async with serving(app) as url, aiohttp.ClientSession() as http:
            await accept_callback(r.routing)
            if customer == "answer":
                await wait_until(
                    lambda: any(c.bridge for c in r.server.callbacks.active.values()), 15.0
                )
            else:
                assert r.trunk is not None
                await wait_until(lambda: bool(r.trunk and r.trunk.trace()), 15.0)
            async with http.post(f"{url}/api/agents/{AGENT}/complete") as resp:
                assert resp.status == 200, await resp.text()
        await r.routing.run_once()  # the node hears routing ended it
        await callback_done(r)
        await sipp_ok(r.agent)
        await sipp_ok(r.trunk)
        await routing_completed(r.store)
        [complete] = [e for e in await r.store.events() if e.type is EventType.COMPLETE]
        assert complete.fields["by"] == "agent"
    [summary] = r.server.callbacks.finished
    assert (summary.outcome, summary.detail) == (outcome, "ended in routing")
