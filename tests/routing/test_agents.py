"""Agent states: login, ready, not ready with reasons, wrap-up with its timer and "done"."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from routing.errors import (
    AgentBusyError,
    InvalidTransitionError,
    NoSuchAgentError,
    NoSuchReservationError,
)
from routing.events import EventType
from routing.model import AgentState, NewCall, QueueConfig
from routing.store import RoutingStore

Check = Callable[[RoutingStore], Awaitable[None]]
T0 = 1_800_000_000.0


async def state(store: RoutingStore, agent_id: str) -> tuple[AgentState, str]:
    agent = await store.agent(agent_id)
    assert agent is not None
    return agent.state, agent.reason


async def test_login_not_ready_then_ready(store: RoutingStore, consistent: Check) -> None:
    await store.login("A1", skills={"billing": 5}, name="王芳", contact="sip:a1@pbx", now=T0)
    agent = await store.agent("A1")
    assert agent is not None
    assert (agent.name, agent.contact, dict(agent.skills)) == ("王芳", "sip:a1@pbx", {"billing": 5})
    assert (agent.state, agent.reason, agent.since) == (AgentState.NOT_READY, "login", T0)
    assert await store.ready("A1", T0 + 1) == []
    assert await state(store, "A1") == (AgentState.AVAILABLE, "")
    await store.not_ready("A1", "lunch", T0 + 2)
    assert await state(store, "A1") == (AgentState.NOT_READY, "lunch")
    await store.logout("A1", T0 + 3)
    assert await state(store, "A1") == (AgentState.LOGGED_OUT, "")
    types = [e.type for e in await store.events()]
    assert types == [
        EventType.AGENTLOGIN,
        EventType.READY,
        EventType.NOTREADY,
        EventType.AGENTLOGOFF,
    ]
    await consistent(store)


async def test_login_ready_goes_straight_to_available(store: RoutingStore) -> None:
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    assert await state(store, "A1") == (AgentState.AVAILABLE, "")
    assert await store.available("billing") == {"A1"}


async def test_unknown_agent(store: RoutingStore) -> None:
    with pytest.raises(NoSuchAgentError):
        await store.ready("nobody", T0)
    assert await store.agent("nobody") is None


async def test_invalid_transitions_change_nothing(store: RoutingStore, consistent: Check) -> None:
    await store.login("A1", skills={"billing": 5}, now=T0)
    with pytest.raises(InvalidTransitionError):
        await store.login("A1", skills={"billing": 5}, now=T0)
    with pytest.raises(InvalidTransitionError):
        await store.complete("A1", T0)
    with pytest.raises(NoSuchReservationError):
        await store.accept("A1", "c1", T0)
    await store.logout("A1", T0)
    with pytest.raises(InvalidTransitionError):
        await store.logout("A1", T0)
    with pytest.raises(InvalidTransitionError):
        await store.ready("A1", T0)
    with pytest.raises(InvalidTransitionError):
        await store.not_ready("A1", "x", T0)
    assert len(await store.events()) == 2
    await consistent(store)


async def test_on_call_agent_cannot_leave(store: RoutingStore, consistent: Check) -> None:
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    await store.enqueue(NewCall("c1", {"billing": 1}), T0)
    await store.accept("A1", "c1", T0 + 1)
    with pytest.raises(AgentBusyError):
        await store.logout("A1", T0 + 2)
    with pytest.raises(AgentBusyError):
        await store.not_ready("A1", "break", T0 + 2)
    with pytest.raises(InvalidTransitionError):
        await store.ready("A1", T0 + 2)
    assert await state(store, "A1") == (AgentState.ON_CALL, "")
    await consistent(store)


async def test_wrap_up_ends_by_timer(store: RoutingStore, consistent: Check) -> None:
    await store.configure_queue(QueueConfig("billing", wrap_up_seconds=20), T0)
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    await store.enqueue(NewCall("c1", {"billing": 1}), T0)
    await store.accept("A1", "c1", T0 + 1)
    await store.complete("A1", T0 + 61)
    agent = await store.agent("A1")
    assert agent is not None
    assert (agent.state, agent.wrap_until, agent.calls, agent.talk_seconds) == (
        AgentState.WRAP_UP,
        T0 + 81,
        1,
        60.0,
    )
    assert await store.tick(T0 + 80) == 0
    assert await state(store, "A1") == (AgentState.WRAP_UP, "")
    assert await store.tick(T0 + 81) == 1
    assert await state(store, "A1") == (AgentState.AVAILABLE, "")
    last = (await store.events())[-1]
    assert (last.type, last.fields["cause"]) == (EventType.READY, "wrap_end")
    await consistent(store)


async def test_wrap_up_done_early_and_timer_is_cancelled(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(QueueConfig("billing", wrap_up_seconds=20), T0)
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    await store.enqueue(NewCall("c1", {"billing": 1}), T0)
    await store.accept("A1", "c1", T0)
    await store.complete("A1", T0 + 30)
    await store.ready("A1", T0 + 35)  # "done"
    assert await state(store, "A1") == (AgentState.AVAILABLE, "")
    await store.not_ready("A1", "meeting", T0 + 36)
    assert await store.tick(T0 + 100) == 0  # the wrap-up timer went with the wrap-up
    assert await state(store, "A1") == (AgentState.NOT_READY, "meeting")
    ready = [e for e in await store.events() if e.type is EventType.READY]
    assert ready[-1].fields["cause"] == "wrap_done"
    await consistent(store)


async def test_no_wrap_up_means_available_at_once(store: RoutingStore, consistent: Check) -> None:
    await store.configure_queue(QueueConfig("billing", wrap_up_seconds=0), T0)
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    await store.enqueue(NewCall("c1", {"billing": 1}), T0)
    await store.enqueue(NewCall("c2", {"billing": 1}), T0)
    await store.accept("A1", "c1", T0)
    offers = await store.complete("A1", T0 + 10)
    assert [(o.call_id, o.agent_id) for o in offers] == [("c2", "A1")]
    await consistent(store)


async def test_not_ready_from_wrap_up(store: RoutingStore, consistent: Check) -> None:
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    await store.enqueue(NewCall("c1", {"billing": 1}), T0)
    await store.accept("A1", "c1", T0)
    await store.complete("A1", T0 + 10)
    await store.not_ready("A1", "training", T0 + 12)
    assert await state(store, "A1") == (AgentState.NOT_READY, "training")
    assert await store.tick(T0 + 1000) == 0
    await consistent(store)


async def test_logout_from_wrap_up_and_login_again_resets_counts(
    store: RoutingStore, consistent: Check
) -> None:
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    await store.enqueue(NewCall("c1", {"billing": 1}), T0)
    await store.accept("A1", "c1", T0)
    await store.complete("A1", T0 + 10)
    await store.logout("A1", T0 + 11)
    await store.login("A1", skills={"complaint": 3}, now=T0 + 20)
    agent = await store.agent("A1")
    assert agent is not None
    assert (agent.calls, agent.talk_seconds, dict(agent.skills)) == (0, 0.0, {"complaint": 3})
    await consistent(store)


async def test_set_skills_rematches(store: RoutingStore, consistent: Check) -> None:
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    await store.enqueue(NewCall("c1", {"hazard": 1}), T0)
    offers = await store.set_skills("A1", {"billing": 5, "hazard": 2}, T0 + 1)
    assert [(o.call_id, o.agent_id) for o in offers] == [("c1", "A1")]
    await consistent(store)


@pytest.mark.parametrize("level", [0, 11])
async def test_skill_levels_are_1_to_10(store: RoutingStore, level: int) -> None:
    with pytest.raises(ValueError, match="level"):
        await store.login("A1", skills={"billing": level}, now=T0)
