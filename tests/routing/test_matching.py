"""Atomic matching: which agent gets which call, reservations, accept, reject, timeouts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from routing.errors import NoSuchReservationError
from routing.events import EventType
from routing.model import AgentState, CallState, NewCall, Offer, QueueConfig, Strategy
from routing.store import RoutingStore

Check = Callable[[RoutingStore], Awaitable[None]]
T0 = 1_800_000_000.0


def pairs(offers: list[Offer] | tuple[Offer, ...]) -> list[tuple[str, str]]:
    return [(o.call_id, o.agent_id) for o in offers]


async def agent_state(store: RoutingStore, agent_id: str) -> tuple[AgentState, str, str]:
    agent = await store.agent(agent_id)
    assert agent is not None
    return agent.state, agent.reason, agent.call_id


async def test_enqueue_with_an_available_agent_is_offered_in_the_same_step(
    store: RoutingStore, consistent: Check
) -> None:
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    result = await store.enqueue(NewCall("c1", {"billing": 3}, node_id="n1", request_id=4), T0 + 1)
    assert pairs(result.offers) == [("c1", "A1")]
    assert result.position.position == 0
    assert await agent_state(store, "A1") == (AgentState.RESERVED, "", "c1")
    call = await store.call("c1")
    assert call is not None
    assert (call.state, call.agent_id) == (CallState.OFFERED, "A1")
    offer = (await store.events())[-1]
    assert offer.type is EventType.OFFER
    assert offer.fields["wait"] == "0"
    await consistent(store)


async def test_agent_ready_takes_the_best_waiting_call(
    store: RoutingStore, consistent: Check
) -> None:
    await store.login("A1", skills={"billing": 5, "complaint": 5}, now=T0)
    await store.enqueue(NewCall("b1", {"billing": 1}, priority=0), T0)
    await store.enqueue(NewCall("k1", {"complaint": 1}, priority=0), T0 + 1)
    await store.enqueue(NewCall("b2", {"billing": 1}, priority=1), T0 + 2)
    assert pairs(await store.ready("A1", T0 + 3)) == [("b2", "A1")]
    await consistent(store)


async def test_minimum_level(store: RoutingStore, consistent: Check) -> None:
    await store.login("junior", skills={"hazard": 3}, now=T0, ready=True)
    result = await store.enqueue(NewCall("c1", {"hazard": 5}), T0)
    assert result.offers == ()
    await store.login("senior", skills={"hazard": 7}, now=T0 + 1)
    assert pairs(await store.ready("senior", T0 + 2)) == [("c1", "senior")]
    await consistent(store)


async def test_extra_skill_requirements(store: RoutingStore, consistent: Check) -> None:
    await store.login("A1", skills={"billing": 9}, now=T0, ready=True)
    await store.login("A2", skills={"billing": 2, "english": 4}, now=T0 + 1, ready=True)
    result = await store.enqueue(NewCall("c1", {"billing": 1, "english": 3}), T0 + 2)
    assert pairs(result.offers) == [("c1", "A2")]
    await store.enqueue(NewCall("c2", {"billing": 1, "english": 3}), T0 + 3)
    await store.enqueue(NewCall("c3", {"billing": 1}), T0 + 4)
    # A1 speaks no English: it skips c2 and takes c3, though c2 waited longer
    await store.not_ready("A1", "x", T0 + 5)
    assert pairs(await store.ready("A1", T0 + 6)) == [("c3", "A1")]
    call = await store.call("c2")
    assert call is not None
    assert dict(call.skills) == {"billing": 1, "english": 3}
    await consistent(store)


async def three_agents(store: RoutingStore, skill: str = "billing") -> None:
    """A1 idle longest (level 3), A2 (level 9), A3 most recent (level 6)."""
    await store.login("A1", skills={skill: 3}, now=T0, ready=True)
    await store.login("A2", skills={skill: 9}, now=T0 + 1, ready=True)
    await store.login("A3", skills={skill: 6}, now=T0 + 2, ready=True)


async def test_longest_idle_is_the_default(store: RoutingStore, consistent: Check) -> None:
    await three_agents(store)
    result = await store.enqueue(NewCall("c1", {"billing": 1}), T0 + 10)
    assert pairs(result.offers) == [("c1", "A1")]
    result = await store.enqueue(NewCall("c2", {"billing": 1}), T0 + 11)
    assert pairs(result.offers) == [("c2", "A2")]
    await consistent(store)


async def test_longest_idle_counts_from_the_end_of_the_last_call(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(QueueConfig("billing", wrap_up_seconds=0), T0)
    await store.login("A1", skills={"billing": 3}, now=T0, ready=True)
    await store.enqueue(NewCall("c1", {"billing": 1}), T0 + 1)
    await store.login("A2", skills={"billing": 3}, now=T0 + 2, ready=True)
    await store.accept("A1", "c1", T0 + 3)
    await store.complete("A1", T0 + 4)  # A1 idle since T0+4, A2 since T0+2
    result = await store.enqueue(NewCall("c2", {"billing": 1}), T0 + 5)
    assert pairs(result.offers) == [("c2", "A2")]
    await consistent(store)


async def test_skill_level_first(store: RoutingStore, consistent: Check) -> None:
    await store.configure_queue(QueueConfig("billing", strategy=Strategy.SKILL_LEVEL_FIRST), T0)
    await three_agents(store)
    offers = []
    for i in range(3):
        offers += (await store.enqueue(NewCall(f"c{i}", {"billing": 1}), T0 + 10 + i)).offers
    assert pairs(offers) == [("c0", "A2"), ("c1", "A3"), ("c2", "A1")]
    await consistent(store)


async def handle(store: RoutingStore, agent: str, call: str, start: float, talk: float) -> None:
    await store.enqueue(NewCall(call, {"billing": 1}), start)
    result = await store.call(call)
    assert result is not None
    assert result.agent_id == agent, (call, result)
    await store.accept(agent, call, start)
    await store.complete(agent, start + talk)


async def test_fewest_calls(store: RoutingStore, consistent: Check) -> None:
    await store.configure_queue(
        QueueConfig("billing", strategy=Strategy.FEWEST_CALLS, wrap_up_seconds=0), T0
    )
    await three_agents(store)
    await handle(store, "A1", "c1", T0 + 10, 5)  # A1 has 1 call, goes to the back of idle
    await handle(store, "A2", "c2", T0 + 20, 5)
    result = await store.enqueue(NewCall("c3", {"billing": 1}), T0 + 30)
    assert pairs(result.offers) == [("c3", "A3")]  # the only one without a call
    await consistent(store)


async def test_least_talk_time(store: RoutingStore, consistent: Check) -> None:
    await store.configure_queue(
        QueueConfig("billing", strategy=Strategy.LEAST_TALK_TIME, wrap_up_seconds=0), T0
    )
    await three_agents(store)
    await handle(store, "A1", "c1", T0 + 10, 300)
    await handle(store, "A2", "c2", T0 + 400, 30)
    await handle(store, "A3", "c3", T0 + 500, 100)
    result = await store.enqueue(NewCall("c4", {"billing": 1}), T0 + 700)
    assert pairs(result.offers) == [("c4", "A2")]  # 30 s of talk
    await consistent(store)


async def test_round_robin_rotates_by_last_offer(store: RoutingStore, consistent: Check) -> None:
    await store.configure_queue(
        QueueConfig("billing", strategy=Strategy.ROUND_ROBIN, wrap_up_seconds=0), T0
    )
    await three_agents(store)
    served = []
    for i in range(6):
        result = await store.enqueue(NewCall(f"c{i}", {"billing": 1}), T0 + 10 * i)
        (offer,) = result.offers
        served.append(offer.agent_id)
        # A1 answers at once every time: longest-idle would keep picking others, rotation too
        await store.accept(offer.agent_id, offer.call_id, T0 + 10 * i)
        await store.complete(offer.agent_id, T0 + 10 * i + 1)
    assert served == ["A1", "A2", "A3", "A1", "A2", "A3"]
    await consistent(store)


async def test_strategy_change_rescores_available_agents(
    store: RoutingStore, consistent: Check
) -> None:
    await three_agents(store)
    await store.configure_queue(QueueConfig("billing", strategy=Strategy.SKILL_LEVEL_FIRST), T0)
    result = await store.enqueue(NewCall("c1", {"billing": 1}), T0 + 10)
    assert pairs(result.offers) == [("c1", "A2")]
    await store.configure_queue(QueueConfig("billing", strategy=Strategy.LONGEST_IDLE), T0)
    result = await store.enqueue(NewCall("c2", {"billing": 1}), T0 + 10)
    assert pairs(result.offers) == [("c2", "A1")]
    config = await store.queue_config("billing")
    assert config.strategy is Strategy.LONGEST_IDLE
    await consistent(store)


async def test_accept_connects_and_tells_the_callers_node(
    store: RoutingStore, consistent: Check
) -> None:
    await store.login("A1", skills={"billing": 5}, contact="sip:a1@10.0.0.5", now=T0, ready=True)
    await store.enqueue(NewCall("c1", {"billing": 1}, node_id="ivr-2", request_id=9), T0 + 1)
    assert await store.accept("A1", "c1", T0 + 4) == "sip:a1@10.0.0.5"
    assert await agent_state(store, "A1") == (AgentState.ON_CALL, "", "c1")
    (message,) = await store.drain_inbox("ivr-2")
    assert (message.kind, message.call_id, message.request_id, message.agent_id) == (
        "connected",
        "c1",
        9,
        "A1",
    )
    assert message.contact == "sip:a1@10.0.0.5"
    connect = (await store.events())[-1]
    assert (connect.type, connect.fields["wait"], connect.fields["ring"]) == (
        EventType.CONNECT,
        "3",  # waited from T0+1
        "3",  # offered at once
    )
    assert await store.drain_inbox("ivr-1") == []
    await consistent(store)


async def test_accept_of_someone_elses_offer(store: RoutingStore) -> None:
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    await store.login("A2", skills={"billing": 5}, now=T0, ready=True)
    await store.enqueue(NewCall("c1", {"billing": 1}), T0)
    with pytest.raises(NoSuchReservationError):
        await store.accept("A2", "c1", T0)


async def waiting_three(store: RoutingStore) -> None:
    await store.login("A1", skills={"billing": 5}, now=T0)
    for i, call in enumerate(["c1", "c2", "c3"]):
        await store.enqueue(NewCall(call, {"billing": 1}), T0 + i)


async def test_reservation_timeout_returns_the_call_to_its_original_place(
    store: RoutingStore, consistent: Check
) -> None:
    await waiting_three(store)
    assert pairs(await store.ready("A1", T0 + 10)) == [("c1", "A1")]
    await store.enqueue(NewCall("c4", {"billing": 1}), T0 + 11)
    assert await store.waiting("billing") == ["c2", "c3", "c4"]
    assert await store.tick(T0 + 24.9) == 0
    assert await store.tick(T0 + 25) == 1  # 15 s default
    assert await store.waiting("billing") == ["c1", "c2", "c3", "c4"]
    assert await agent_state(store, "A1") == (AgentState.NOT_READY, "missed", "")
    rona = (await store.events())[-1]
    assert (rona.type, rona.call_id, rona.agent_id) == (EventType.RONA, "c1", "A1")
    positions = await store.positions(["c1", "c4"], T0 + 25)
    assert [p.position for p in positions.values()] == [1, 4]
    await consistent(store)


async def test_reservation_timeout_is_per_queue(store: RoutingStore, consistent: Check) -> None:
    await store.configure_queue(QueueConfig("billing", reservation_timeout=5), T0)
    await waiting_three(store)
    await store.ready("A1", T0 + 10)
    assert await store.tick(T0 + 15) == 1
    assert await agent_state(store, "A1") == (AgentState.NOT_READY, "missed", "")
    await consistent(store)


async def test_timed_out_call_goes_to_the_next_agent(
    store: RoutingStore, consistent: Check
) -> None:
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    await store.login("A2", skills={"billing": 5}, now=T0 + 1, ready=True)
    await store.enqueue(NewCall("c1", {"billing": 1}), T0 + 2)
    await store.enqueue(NewCall("c2", {"billing": 1}), T0 + 3)
    await store.accept("A2", "c2", T0 + 4)
    await store.login("A3", skills={"billing": 5}, now=T0 + 5)
    await store.ready("A3", T0 + 6)  # nothing waits: A3 stays available
    await store.tick(T0 + 17)  # A1's offer of c1 times out
    assert await agent_state(store, "A3") == (AgentState.RESERVED, "", "c1")
    await consistent(store)


async def test_reject_returns_the_call_and_the_agent_is_not_ready(
    store: RoutingStore, consistent: Check
) -> None:
    await waiting_three(store)
    await store.ready("A1", T0 + 10)
    await store.login("A2", skills={"billing": 5}, now=T0 + 11)
    assert await store.reject("A1", "c1", T0 + 12) == []
    assert await agent_state(store, "A1") == (AgentState.NOT_READY, "rejected", "")
    assert await store.waiting("billing") == ["c1", "c2", "c3"]
    assert pairs(await store.ready("A2", T0 + 13)) == [("c1", "A2")]
    assert await store.tick(T0 + 100) == 1  # only A2's offer timer; A1's was cancelled
    await consistent(store)


@pytest.mark.parametrize("leave", ["logout", "not_ready"])
async def test_agent_leaving_while_reserved_releases_the_call(
    store: RoutingStore, consistent: Check, leave: str
) -> None:
    await waiting_three(store)
    await store.ready("A1", T0 + 10)
    if leave == "logout":
        await store.logout("A1", T0 + 11)
    else:
        await store.not_ready("A1", "toilet", T0 + 11)
    assert await store.waiting("billing") == ["c1", "c2", "c3"]
    types = [e.type for e in await store.events()][-2:]
    assert types[0] is EventType.RELEASE
    await consistent(store)


async def test_caller_hangs_up_while_offered(store: RoutingStore, consistent: Check) -> None:
    await waiting_three(store)
    await store.ready("A1", T0 + 10)
    assert await store.hangup("c1", T0 + 11) == "abandoned"
    # A1 did nothing wrong: available again and offered the next call in the same step
    assert await agent_state(store, "A1") == (AgentState.RESERVED, "", "c2")
    assert await store.tick(T0 + 100) == 1
    await consistent(store)


async def test_an_offer_accepted_after_exactly_one_second_replays_as_connected(
    store: RoutingStore, consistent: Check
) -> None:
    """A CONNECT's ``ring`` (seconds the offer rang) is not the ring-all flag (``ringall``)."""
    await store.login("A1", skills={"billing": 1}, now=T0, ready=True)
    await store.enqueue(NewCall("c1", {"billing": 1}, node_id="n1"), T0)
    await store.accept("A1", "c1", T0 + 1)
    connect = (await store.events())[-1]
    assert (connect.type, connect.fields["ring"]) == (EventType.CONNECT, "1")
    await consistent(store)
