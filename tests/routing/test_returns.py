"""Accepted calls that go back in line: the agent's phone could not be reached, or a callback's
customer did not answer. Each returns to its original place with the timers accept cleared."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from routing.events import EventType
from routing.model import AgentState, CallState, ItemKind, NewCall, QueueConfig
from routing.store import RoutingStore

Check = Callable[[RoutingStore], Awaitable[None]]
T0 = 1_800_000_000.0


def call(call_id: str, node: str = "n1") -> NewCall:
    return NewCall(call_id, {"billing": 1}, node_id=node, request_id=7)


def callback(call_id: str, node: str = "n1") -> NewCall:
    return NewCall(
        call_id, {"billing": 1}, node_id=node, kind=ItemKind.CALLBACK, number="13912345678"
    )


async def types(store: RoutingStore) -> list[EventType]:
    return [e.type for e in await store.events()]


async def connected(store: RoutingStore, agent: str, call_id: str, now: float) -> None:
    a = await store.agent(agent)
    assert a is not None
    assert (a.state, a.call_id) == (AgentState.RESERVED, call_id)
    await store.accept(agent, call_id, now)


# ---------------------------------------------------------------------- the agent's phone


async def test_an_unreachable_agent_phone_puts_the_call_back_in_its_place(
    store: RoutingStore, consistent: Check
) -> None:
    await store.login("A1", skills={"billing": 1}, now=T0, ready=True)
    for i, cid in enumerate(["a", "b", "c"]):
        await store.enqueue(call(cid), T0 + i)
    await connected(store, "A1", "a", T0 + 3)
    await store.drain_inbox("n1")

    assert await store.agent_unreachable("a", "A1", T0 + 8, "486 Busy Here") == "waiting"

    assert await store.waiting("billing") == ["a", "b", "c"]
    back = await store.call("a")
    assert back is not None
    assert (back.state, back.agent_id, back.enqueued_at) == (CallState.WAITING, "", T0)
    agent = await store.agent("A1")
    assert agent is not None
    assert (agent.state, agent.reason, agent.call_id, agent.calls) == (
        AgentState.NOT_READY,
        "missed",
        "",
        0,
    )
    last = (await store.events())[-1]
    assert last.type is EventType.UNREACHABLE
    assert (last.call_id, last.agent_id, last.fields["cause"]) == ("a", "A1", "486 Busy Here")
    assert (await store.positions(["a"], T0 + 8))["a"].position == 1
    # The next agent gets it first: it kept its place.
    await store.login("A2", skills={"billing": 1}, now=T0 + 9, ready=True)
    a2 = await store.agent("A2")
    assert a2 is not None
    assert a2.call_id == "a"
    assert await store.drain_inbox("n1") == []  # nothing for the caller's node to do
    await consistent(store)


async def test_another_available_agent_is_offered_the_call_at_once(
    store: RoutingStore, consistent: Check
) -> None:
    await store.login("A1", skills={"billing": 1}, now=T0, ready=True)
    await store.enqueue(call("a"), T0)
    await connected(store, "A1", "a", T0 + 1)
    await store.login("A2", skills={"billing": 1}, now=T0 + 2, ready=True)
    assert await store.agent_unreachable("a", "A1", T0 + 5) == "offered"
    a2 = await store.agent("A2")
    assert a2 is not None
    assert (a2.state, a2.call_id) == (AgentState.RESERVED, "a")
    await consistent(store)


async def test_a_report_about_another_connection_changes_nothing(
    store: RoutingStore, consistent: Check
) -> None:
    await store.login("A1", skills={"billing": 1}, now=T0, ready=True)
    await store.login("A2", skills={"billing": 1}, now=T0, ready=False)
    await store.enqueue(call("a"), T0)
    assert await store.agent_unreachable("a", "A1", T0 + 1) == "none"  # offered, not accepted
    await connected(store, "A1", "a", T0 + 1)
    before = await store.event_count()
    assert await store.agent_unreachable("a", "A2", T0 + 2) == "none"  # a late, stale report
    assert await store.agent_unreachable("gone", "A1", T0 + 2) == "none"
    assert await store.event_count() == before
    await consistent(store)


async def test_the_max_wait_still_counts_from_the_enqueue(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(QueueConfig("billing", max_wait=60), T0)
    await store.login("A1", skills={"billing": 1}, now=T0, ready=True)
    await store.enqueue(call("a"), T0)
    await connected(store, "A1", "a", T0 + 10)
    await store.tick(T0 + 61)  # accept cleared the timer: nothing happens while connected
    assert (await store.call("a")) is not None
    await store.drain_inbox("n1")
    assert await store.agent_unreachable("a", "A1", T0 + 62) == "waiting"
    await store.tick(T0 + 62)  # its max wait had run out: routing gives up now
    assert await store.call("a") is None
    assert (await types(store))[-1] is EventType.EXITWITHTIMEOUT
    [message] = await store.drain_inbox("n1")
    assert (message.kind, message.call_id, message.reason) == ("exited", "a", "max_wait")
    await consistent(store)


async def test_escalation_comes_back_with_the_call(store: RoutingStore, consistent: Check) -> None:
    await store.configure_queue(QueueConfig("billing", escalate_after=30, escalate_min_level=1), T0)
    await store.login("A1", skills={"billing": 5}, now=T0, ready=True)
    await store.login("A2", skills={"billing": 1}, now=T0, ready=False)
    await store.enqueue(NewCall("a", {"billing": 5}, node_id="n1"), T0)
    await connected(store, "A1", "a", T0 + 1)
    assert await store.agent_unreachable("a", "A1", T0 + 2) == "waiting"
    await store.ready("A2", T0 + 3)  # level 1: not yet
    assert (await store.call("a")).state is CallState.WAITING  # type: ignore[union-attr]
    await store.tick(T0 + 30)
    a2 = await store.agent("A2")
    assert a2 is not None
    assert (a2.state, a2.call_id) == (AgentState.RESERVED, "a")
    await consistent(store)


# ---------------------------------------------------------------------- callbacks


async def test_an_unanswered_callback_goes_back_in_place_until_its_last_attempt(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(
        QueueConfig("billing", callback_attempts=2, wrap_up_seconds=30, callback_retry_seconds=0),
        T0,
    )
    await store.login("A1", skills={"billing": 1}, now=T0, ready=False)
    await store.enqueue(call("caller"), T0)
    assert await store.leave_for_callback("caller", T0 + 5) == "parked"
    result = await store.add_callback(callback("cb:caller"), T0 + 6, from_call="caller")
    assert result.kept_place
    await store.enqueue(call("later"), T0 + 7)
    await store.ready("A1", T0 + 8)
    await connected(store, "A1", "cb:caller", T0 + 8)

    assert await store.callback_no_answer("cb:caller", "A1", T0 + 40, cause="486 Busy Here") == (
        "requeued",
        1,
    )
    assert await store.waiting("billing") == ["cb:caller", "later"]
    back = await store.call("cb:caller")
    assert back is not None
    assert (back.state, back.attempts, back.enqueued_at) == (CallState.WAITING, 1, T0)
    agent = await store.agent("A1")
    assert agent is not None
    assert (agent.state, agent.calls, agent.talk_seconds) == (AgentState.WRAP_UP, 0, 0.0)
    assert agent.wrap_until == T0 + 70
    last = (await store.events())[-1]
    assert last.type is EventType.CALLBACK_NOANSWER
    assert (last.fields["attempts"], last.fields["cause"]) == ("1", "486 Busy Here")

    await store.tick(T0 + 70)  # wrap-up over: the callback, still first, is offered again
    await connected(store, "A1", "cb:caller", T0 + 70)
    assert await store.callback_no_answer("cb:caller", "A1", T0 + 100) == ("failed", 2)
    assert await store.call("cb:caller") is None
    assert await store.waiting("billing") == ["later"]
    failed = (await store.events())[-1]
    assert failed.type is EventType.CALLBACK_FAILED
    assert (failed.fields["cstate"], failed.fields["attempts"]) == ("ended", "2")
    agent = await store.agent("A1")
    assert agent is not None
    assert (agent.state, agent.calls) == (AgentState.WRAP_UP, 0)
    await consistent(store)


async def test_a_number_no_retry_can_reach_fails_at_once(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(QueueConfig("billing", wrap_up_seconds=0), T0)
    await store.login("A1", skills={"billing": 1}, now=T0, ready=True)
    await store.add_callback(callback("cb:x"), T0)
    await connected(store, "A1", "cb:x", T0 + 1)
    assert await store.callback_no_answer("cb:x", "A1", T0 + 2, final=True) == ("failed", 1)
    assert await store.call("cb:x") is None
    agent = await store.agent("A1")
    assert agent is not None
    assert agent.state is AgentState.AVAILABLE  # no wrap-up in this queue
    assert (await types(store))[-2:] == [EventType.CALLBACK_FAILED, EventType.READY]
    await consistent(store)


async def test_no_answer_is_only_for_a_connected_callback_of_that_agent(
    store: RoutingStore, consistent: Check
) -> None:
    await store.login("A1", skills={"billing": 1}, now=T0, ready=True)
    await store.enqueue(call("a"), T0)
    await connected(store, "A1", "a", T0 + 1)
    before = await store.event_count()
    assert await store.callback_no_answer("a", "A1", T0 + 2) == ("none", 0)  # a caller
    assert await store.callback_no_answer("cb:none", "A1", T0 + 2) == ("none", 0)
    assert await store.event_count() == before
    await consistent(store)


async def test_the_callback_window_still_counts_from_the_request(
    store: RoutingStore, consistent: Check
) -> None:
    await store.configure_queue(
        QueueConfig("billing", callback_window=100, wrap_up_seconds=300), T0
    )
    await store.login("A1", skills={"billing": 1}, now=T0, ready=True)
    await store.add_callback(callback("cb:x"), T0)
    await connected(store, "A1", "cb:x", T0 + 10)
    # out of line for its retry delay (120 s by default): the window ends first
    assert await store.callback_no_answer("cb:x", "A1", T0 + 20) == ("retrying", 1)
    await store.tick(T0 + 99)
    assert await store.call("cb:x") is not None
    await store.tick(T0 + 100)
    assert await store.call("cb:x") is None
    assert (await types(store))[-1] is EventType.CALLBACK_EXPIRED
    await store.tick(T0 + 140)  # its retry timer went with it
    assert (await types(store))[-1] is EventType.CALLBACK_EXPIRED
    await consistent(store)


async def test_an_unanswered_callback_waits_out_its_retry_delay_then_has_its_place(
    store: RoutingStore, consistent: Check
) -> None:
    """Out of line for the queue's callback_retry_seconds (nobody is offered it, even a free
    agent), then back at its place ahead of callers who came later; the last attempt fails."""
    await store.configure_queue(
        QueueConfig("billing", callback_attempts=2, wrap_up_seconds=0, callback_retry_seconds=60),
        T0,
    )
    await store.login("A1", skills={"billing": 1}, now=T0, ready=True)
    await store.add_callback(callback("cb:x"), T0)
    await connected(store, "A1", "cb:x", T0 + 1)
    await store.drain_inbox("n1")
    assert await store.callback_no_answer("cb:x", "A1", T0 + 30, cause="480") == ("retrying", 1)
    out = await store.call("cb:x")
    assert out is not None
    assert (out.state, out.agent_id, out.attempts, out.retry_at) == (
        CallState.RETRY,
        "",
        1,
        T0 + 90,
    )
    noanswer = (await store.events())[-2]  # then A1's READY (no wrap-up in this queue)
    assert noanswer.type is EventType.CALLBACK_NOANSWER
    assert (noanswer.fields["cstate"], noanswer.fields["retry_at"]) == ("retry", str(int(T0 + 90)))
    agent = await store.agent("A1")
    assert agent is not None
    assert agent.state is AgentState.AVAILABLE  # free, yet not offered the callback
    assert await store.waiting("billing") == []
    assert (await store.positions(["cb:x"], T0 + 31))["cb:x"].position == 0
    await consistent(store)

    await store.login("A2", skills={"billing": 1}, now=T0 + 40, ready=False)
    await store.not_ready("A1", "lunch", T0 + 40)
    await store.enqueue(call("later"), T0 + 50)
    await store.tick(T0 + 89)
    assert await store.waiting("billing") == ["later"]
    await store.tick(T0 + 90)  # back, at its place: ahead of the caller who came later
    assert await store.waiting("billing") == ["cb:x", "later"]
    back = await store.call("cb:x")
    assert back is not None
    assert (back.state, back.enqueued_at, back.retry_at) == (CallState.WAITING, T0, None)
    retry = (await store.events())[-1]
    assert retry.type is EventType.CALLBACK_RETRY
    assert (retry.fields["cstate"], retry.fields["attempts"]) == ("waiting", "1")
    await store.ready("A2", T0 + 95)  # offered the callback first
    await connected(store, "A2", "cb:x", T0 + 95)
    assert await store.callback_no_answer("cb:x", "A2", T0 + 120) == ("failed", 2)
    assert await store.call("cb:x") is None
    await consistent(store)


async def test_a_callback_can_be_withdrawn_during_its_retry_delay(
    store: RoutingStore, consistent: Check
) -> None:
    await store.login("A1", skills={"billing": 1}, now=T0, ready=True)
    await store.add_callback(callback("cb:x"), T0)
    await connected(store, "A1", "cb:x", T0 + 1)
    assert await store.callback_no_answer("cb:x", "A1", T0 + 2) == ("retrying", 1)
    assert await store.hangup("cb:x", T0 + 10) == "abandoned"
    assert await store.call("cb:x") is None
    assert await store.redis.zscore(store.keys.timers, "cbretry|cb:x") is None
    await consistent(store)


async def test_an_unreachable_agent_puts_a_callback_back_without_an_attempt(
    store: RoutingStore, consistent: Check
) -> None:
    await store.login("A1", skills={"billing": 1}, now=T0, ready=True)
    await store.add_callback(callback("cb:x"), T0)
    await connected(store, "A1", "cb:x", T0 + 1)
    assert await store.agent_unreachable("cb:x", "A1", T0 + 2, "no registered phone") == ("waiting")
    back = await store.call("cb:x")
    assert back is not None
    assert (back.state, back.attempts) == (CallState.WAITING, 0)
    await consistent(store)


async def test_a_callback_completed_by_its_agent_tells_its_node(
    store: RoutingStore, consistent: Check
) -> None:
    """The node is dialing it: it must hang up both legs."""
    await store.login("A1", skills={"billing": 1}, now=T0, ready=True)
    await store.add_callback(callback("cb:x", node="n2"), T0)
    await connected(store, "A1", "cb:x", T0 + 1)
    [message] = await store.drain_inbox("n2")
    assert message.kind == "connected"
    await store.complete("A1", T0 + 60)
    [message] = await store.drain_inbox("n2")
    assert (message.kind, message.call_id) == ("disconnected", "cb:x")
    await consistent(store)


# ---------------------------------------------------------------------- hang-up while it rings


async def test_a_caller_hanging_up_while_the_agent_phone_rings_abandons(
    store: RoutingStore, consistent: Check
) -> None:
    """After the accept, before the agent's phone answered: an abandon with its reason, the
    agent available again (no call, no talk, no wrap-up) and offered the next caller."""
    await store.configure_queue(QueueConfig("billing", wrap_up_seconds=30), T0)
    await store.login("A1", skills={"billing": 1}, now=T0, ready=True)
    await store.enqueue(call("a"), T0)
    await store.enqueue(call("b"), T0 + 1)
    await connected(store, "A1", "a", T0 + 2)

    assert await store.hangup("a", T0 + 9, agent_ringing=True) == "abandoned"

    assert await store.call("a") is None
    ended = [e for e in await store.events() if e.call_id == "a"][-1]
    assert ended.type is EventType.ABANDON
    assert (ended.agent_id, ended.fields["reason"], ended.fields["astate"]) == (
        "A1",
        "abandon_while_ringing",
        "available",
    )
    assert ended.fields["wait"] == "9"
    agent = await store.agent("A1")
    assert agent is not None
    assert (agent.state, agent.call_id, agent.calls, agent.talk_seconds) == (
        AgentState.RESERVED,  # offered the next caller at once
        "b",
        0,
        0.0,
    )
    await consistent(store)


async def test_a_ringing_report_about_a_callback_or_a_talk_changes_nothing_more(
    store: RoutingStore, consistent: Check
) -> None:
    """A callback has no caller on the line: its end is a completion as before; a caller not
    connected is an abandon whatever the node says."""
    await store.configure_queue(QueueConfig("billing", wrap_up_seconds=0), T0)
    await store.login("A1", skills={"billing": 1}, now=T0, ready=True)
    await store.add_callback(callback("cb:x"), T0)
    await connected(store, "A1", "cb:x", T0 + 1)
    assert await store.hangup("cb:x", T0 + 5, agent_ringing=True) == "completed"
    await store.enqueue(call("w"), T0 + 6)  # offered to A1
    assert await store.hangup("w", T0 + 7, agent_ringing=True) == "abandoned"
    assert [e.fields.get("reason") for e in await store.events() if e.call_id == "w"][-1] == ""
    await consistent(store)
