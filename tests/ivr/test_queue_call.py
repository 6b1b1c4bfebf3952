"""A scripted call waits in a real queue (real Redis), hears its place in line, and is offered to
an agent who logged in through the HTTP API; the agent accepts, talks, completes; the caller is
bridged, then rates the service. Routing's event stream tells the same story."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from ivr.dialog.events import AgentDisconnected
from ivr.flow.model import load_flow
from ivr.routing_redis import RedisRouting
from ivr.session import ManualClock
from ivr.settings import Settings
from ivr.transports.script import ScriptError, ScriptRunner
from ivr.web import create_app
from routing.events import EventType
from routing.model import NewCall
from routing.store import RoutingStore
from sounds.catalog import Catalog

Serving = Callable[..., AbstractAsyncContextManager[str]]
"""The ``serving`` fixture (tests/conftest.py): ``async with serving(app) as url``."""

START = float(int(time.time()))
"""The script's clock starts here, shared by routing and the API: the wall clock at import, as
stream ids (Redis's clock) are compared with event times by the interval report."""


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def store(redis_client: Redis) -> RoutingStore:
    return RoutingStore(redis_client, tenant="t1")


@pytest.fixture
async def api(store: RoutingStore, clock: ManualClock, serving: Serving) -> AsyncIterator[str]:
    settings = Settings(web_port=0, node_id="api-node")
    async with serving(create_app(settings, status={}, routing=store, clock=clock.now)) as url:
        yield url


async def _call_api(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, json=body) as resp,
    ):
        data = await resp.json()
        assert resp.status == 200, data
        return data


def _runner(store: RoutingStore, clock: ManualClock, out: io.StringIO) -> ScriptRunner:
    settings = Settings()
    routing = RedisRouting(store, "sim-node", clock=clock.now, position_interval=10.0)
    return ScriptRunner(
        load_flow(settings.resolved_flow_file()),
        Catalog.shipped(),
        out,
        caller="13812345678",
        dialed="95598",
        routing=routing,
        clock=clock,
    )


async def test_scripted_call_waits_in_a_real_queue_and_reaches_an_api_agent(
    store: RoutingStore, clock: ManualClock, api: str
) -> None:
    # An agent logs in through the API, not ready yet; another caller is already waiting.
    await _call_api(
        "POST",
        f"{api}/api/agents/A1001/login",
        {"name": "王芳", "contact": "sip:A1001@127.0.0.1", "skills": {"general": 5}},
    )
    await store.enqueue(NewCall("other-1", {"general": 1}, priority=20), clock.now())

    out = io.StringIO()
    runner = _runner(store, clock, out)
    await runner.step(["expect welcome main_menu", "press 0"])
    assert runner.session is not None
    call_id = runner.session.context.call_id
    # Second in line: the caller hears it at once.
    await runner.step(["expect transfer_agent queue_ahead digit_2 queue_people callback_offer"])
    assert await store.waiting("general") == ["other-1", call_id]

    # The agent goes ready and takes the caller ahead; ours moves up, and hears so 10 s on.
    await _call_api("POST", f"{api}/api/agents/A1001/ready")
    agent = await _call_api("GET", f"{api}/api/agents/A1001")
    assert (agent["state"], agent["call_id"]) == ("reserved", "other-1")
    # (Within the 15 s the offer stays open: a missed offer would put that caller back ahead.)
    await runner.step(["silence 10", "expect queue_ahead digit_1 queue_people"])

    # The caller ahead hangs up while offered: the agent is offered our call.
    assert await store.hangup("other-1", clock.now()) == "abandoned"
    agent = await _call_api("GET", f"{api}/api/agents/A1001")
    assert (agent["state"], agent["call_id"]) == ("reserved", call_id)
    popped = await _call_api("GET", f"{api}/api/calls/{call_id}")
    assert popped["context"]["queue.skill"] == "general"  # the screen pop

    # Accept through the API: the caller is bridged to the agent.
    accepted = await _call_api("POST", f"{api}/api/agents/A1001/accept", {"call_id": call_id})
    assert accepted["contact"] == "sip:A1001@127.0.0.1"
    await runner.pump()
    assert runner.transport.transferred_to == "A1001"
    assert "IVR ⇄ caller connected to agent A1001" in out.getvalue()

    # The agent finishes; the caller is taken to the survey.
    clock.advance(95)
    await _call_api("POST", f"{api}/api/agents/A1001/complete")
    await runner.pump()
    await runner.step(
        [
            "expect survey",
            "press 5",
            "expect-request survey score=5",
            "reply survey ok",
            "expect survey_thanks",
            "expect-ended completed",
            "expect-outcome enqueue general/20",
            "expect-outcome survey 5",
        ]
    )
    await runner.finish()

    types = [e.type for e in await store.events() if e.call_id == call_id]
    assert types == [EventType.ENTERQUEUE, EventType.OFFER, EventType.CONNECT, EventType.COMPLETE]
    assert await store.call(call_id) is None
    agent = await _call_api("GET", f"{api}/api/agents/A1001")
    assert agent["state"] == "wrap_up"
    assert agent["calls"] == 1

    # The supervisor's figures, live and for the quarter hour, tell the same story.
    live = await _call_api("GET", f"{api}/api/stats/live")
    assert live["queues"]["general"]["waiting"] == 0
    assert live["queues"]["general"]["agents"]["wrap_up"] == 1
    report = await _call_api("GET", f"{api}/api/stats/intervals?since={START - 1}&sl=20,60")
    [row] = [r for r in report["intervals"] if r["skill"] == "general"]
    assert (row["offered"], row["answered"], row["abandoned"]) == (2, 1, 1)
    assert row["answered_within"] == {"20": 1, "60": 1}  # after 10 s in line


async def test_routing_replies_are_refused_when_routing_is_real(
    store: RoutingStore, clock: ManualClock
) -> None:
    runner = _runner(store, clock, io.StringIO())
    await runner.step(["press 0"])
    with pytest.raises(ScriptError, match="routing is real in this run"):
        await runner.step(["reply agent A1"])
    await runner.step(["hangup"])
    summary = await runner.finish()
    assert ("enqueue", "general/20") in [(o.kind, o.detail) for o in summary.outcomes]
    # The caller who hung up while waiting left the queue as abandoned.
    assert await store.call_ids() == set()
    assert [e.type for e in await store.events()][-1] is EventType.ABANDON


async def _bridged(store: RoutingStore, clock: ManualClock, out: io.StringIO) -> ScriptRunner:
    await store.login("A7", skills={"general": 3}, now=clock.now(), ready=True)
    runner = _runner(store, clock, out)
    await runner.step(["press 0"])
    assert runner.session is not None
    call_id = runner.session.context.call_id
    assert await store.accept("A7", call_id, clock.now()) == ""
    await runner.pump()
    assert runner.transport.transferred_to == "A7"
    return runner


async def test_caller_hanging_up_while_bridged_completes_the_call_in_routing(
    store: RoutingStore, clock: ManualClock
) -> None:
    runner = await _bridged(store, clock, io.StringIO())
    clock.advance(40)
    await runner.step(["hangup"])
    await runner.finish()
    agent = await store.agent("A7")
    assert agent is not None
    assert (agent.state, agent.calls, agent.talk_seconds) == ("wrap_up", 1, 40.0)
    assert await store.call_ids() == set()
    assert [e.type for e in await store.events()][-1] is EventType.COMPLETE


async def test_agent_leg_ending_on_the_phone_completes_the_call_in_routing(
    store: RoutingStore, clock: ManualClock
) -> None:
    runner = await _bridged(store, clock, io.StringIO())
    assert runner.session is not None
    clock.advance(25)
    # What the SIP transport feeds when the agent's phone hangs up.
    runner.session.feed(AgentDisconnected(runner.transport.transfer_request))
    await runner.pump()
    await runner.step(["expect survey", "hangup"])
    await runner.finish()
    agent = await store.agent("A7")
    assert agent is not None
    assert (agent.state, agent.talk_seconds) == ("wrap_up", 25.0)
    assert await store.call_ids() == set()


async def test_an_unreachable_agent_phone_puts_the_caller_back_at_their_place(
    store: RoutingStore, clock: ManualClock, api: str
) -> None:
    """The agent accepts, the phone fails: the caller is on hold again, first in line ahead of
    a caller who came later; the agent is not ready (missed); the next agent gets the caller."""
    out = io.StringIO()
    runner = await _bridged(store, clock, out)
    assert runner.session is not None
    call_id = runner.session.context.call_id
    await store.enqueue(NewCall("later-1", {"general": 1}, priority=20), clock.now() + 1)
    clock.advance(5)
    await runner.step(["agent-unreachable 486 Busy Here", "expect hold"])
    assert "ROUTING ◀ back in line (A7 unreachable)" in out.getvalue()
    agent = await _call_api("GET", f"{api}/api/agents/A7")
    assert (agent["state"], agent["reason"], agent["calls"]) == ("not_ready", "missed", 0)
    assert await store.waiting("general") == [call_id, "later-1"]
    # The caller hears their place at the next pump, and may still take a callback.
    await runner.pump()
    await runner.step(["expect queue_ahead digit_1 queue_people callback_offer"])

    await _call_api(
        "POST",
        f"{api}/api/agents/A8/login",
        {"contact": "sip:A8@127.0.0.1", "skills": {"general": 1}, "ready": True},
    )
    await _call_api("POST", f"{api}/api/agents/A8/accept", {"call_id": call_id})
    await runner.pump()
    assert runner.transport.transferred_to == "A8"
    await runner.step(["hangup"])
    await runner.finish()
    unreachable = [e for e in await store.events() if e.type is EventType.UNREACHABLE]
    assert [(e.call_id, e.agent_id, e.fields["cause"]) for e in unreachable] == [
        (call_id, "A7", "486 Busy Here")
    ]
    report = await _call_api("GET", f"{api}/api/stats/intervals?since={START - 1}")
    [row] = [r for r in report["intervals"] if r["skill"] == "general"]
    assert (row["offered"], row["answered"], row["unreachable"]) == (2, 1, 1)
