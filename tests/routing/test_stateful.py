"""Random interleavings of everything callers, agents and timers do, against a real Redis.

After every step the invariants of `assert_consistent` (conftest) must hold: no agent reserved
for two calls, no call offered to two agents outside ring-all queues, no call gone without an
event, the stream replays to exactly the stored states, priority/FIFO order at every offer,
matching never left undone, every waiting call at its place (also after an accepted call went
back: the agent's phone unreachable, a callback's customer not answering, at once or after its
queue's retry delay). Queues may ring all,
escalate, overflow and fill up; time passes in steps that cross their timers.
Every rule also predicts whether the store must refuse the request, and a refused request must
leave no event behind. A few callers call again and again, so calls are held for their last
agent (Consistency checks holds too). IVR nodes heartbeat, restart, leave and fall silent among
the rest: once a live node's tick (or a node's leave) has reclaimed a node, no call of it remains
(its callbacks moved to a live node).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis

from routing.errors import (
    AgentBusyError,
    InvalidTransitionError,
    NoSuchAgentError,
    NoSuchReservationError,
    RoutingError,
)
from routing.model import Agent, AgentState, CallState, ItemKind, NewCall, QueueConfig, Strategy
from routing.store import RoutingStore

T = TypeVar("T")
T0 = 1_800_000_000.0
AGENTS = ["A0", "A1", "A2"]
SKILLS = ["billing", "hazard"]
NODES = ["n1", "n2"]
"""IVR nodes that heartbeat; calls also come from "n9", which never does (never reclaimed)."""
NODE_TIMEOUT = 20.0
CALLER_NUMBERS = ["", "13900000001", "13900000002"]
"""Few callers, who come back: last-agent routing holds some of their calls."""

levels = st.sampled_from([1, 1, 2, 3])  # mostly equal requirements, so order is often tested
strategies = st.sampled_from([*Strategy, Strategy.RING_ALL, Strategy.RING_ALL])
skill_sets = st.dictionaries(st.sampled_from(SKILLS), levels, min_size=1, max_size=2)


class RoutingMachine(RuleBasedStateMachine):
    url: ClassVar[str] = ""
    checker: ClassVar[Callable[[], Any]]

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.client = Redis.from_url(self.url, decode_responses=True)
        self.run(self.client.flushall())
        self.store = RoutingStore(self.client, tenant="sm")
        self.consistency = type(self).checker()
        self.now = T0
        self.serial = 0
        self.callers: list[str] = []
        """Ids of every caller ever enqueued (some long gone: a hang-up must then be a no-op)."""
        self.got_through: list[str] = []
        """Numbers of callers who talked to an agent (they may call again)."""

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)

    def teardown(self) -> None:
        self.run(self.client.aclose())
        self.loop.close()

    def agent(self, agent_id: str) -> Agent | None:
        return self.run(self.store.agent(agent_id))

    def pick(self, data: st.DataObject, *states: AgentState) -> str:
        """Mostly an agent in one of ``states`` (the request makes progress), sometimes any agent
        (the request may have to be refused)."""
        fitting = [a for a in AGENTS if (ag := self.agent(a)) is not None and ag.state in states]
        misuse = data.draw(st.integers(min_value=0, max_value=3), label="misuse") == 0
        return data.draw(st.sampled_from(fitting if fitting and not misuse else AGENTS))

    def expect(self, error: type[RoutingError] | None, work: Coroutine[Any, Any, object]) -> None:
        """Run a store request; it must raise ``error`` (and then write nothing) or succeed."""
        before = self.run(self.store.event_count())
        if error is None:
            self.run(work)
            return
        with pytest.raises(error):
            self.run(work)
        assert self.run(self.store.event_count()) == before

    # ------------------------------------------------------------------ setup

    @initialize(
        strategy=st.tuples(strategies, strategies),
        wrap=st.sampled_from([0.0, 10.0]),
        max_wait=st.sampled_from([0.0, 45.0]),
        aging=st.sampled_from([30.0, 600.0]),
        escalate_after=st.sampled_from([0.0, 20.0]),
        escalate_level=st.sampled_from([1, 2]),
        overflowing=st.sampled_from([(), (SKILLS[0],), tuple(SKILLS)]),
        max_length=st.sampled_from([0, 0, 3]),
        last_agent=st.sampled_from([(24.0, 20.0), (24.0, 20.0), (24.0, 0.0), (0.0, 20.0)]),
        callback_attempts=st.sampled_from([2, 3, 1]),
        callback_retry=st.sampled_from([0.0, 10.0, 60.0]),
    )
    def configure(
        self,
        *,
        strategy: tuple[Strategy, Strategy],
        wrap: float,
        max_wait: float,
        aging: float,
        escalate_after: float,
        escalate_level: int,
        overflowing: tuple[str, ...],
        max_length: int,
        last_agent: tuple[float, float],
        callback_attempts: int,
        callback_retry: float,
    ) -> None:
        """Both queues share one set of timers, so a run explores it; each has its strategy. Some
        runs overflow one queue into the other, or each into the other (a call moves once)."""
        for i, skill in enumerate(SKILLS):
            other = SKILLS[1 - i]
            config = QueueConfig(
                skill,
                strategy=strategy[i],
                wrap_up_seconds=wrap,
                max_wait=max_wait,
                max_length=max_length,
                aging_seconds_per_priority=aging,
                callback_window=120.0,
                escalate_after=escalate_after,
                escalate_min_level=escalate_level,
                overflow_after=30.0 if skill in overflowing else 0.0,
                overflow_queue=other if skill in overflowing else "",
                last_agent_hours=last_agent[0],
                last_agent_seconds=last_agent[1],
                callback_attempts=callback_attempts,
                callback_retry_seconds=callback_retry,
            )
            self.run(self.store.configure_queue(config, self.now))

    @initialize(
        staff=st.lists(
            st.tuples(skill_sets, st.booleans()), min_size=len(AGENTS), max_size=len(AGENTS)
        )
    )
    def log_in_everyone(self, staff: list[tuple[dict[str, int], bool]]) -> None:
        """Start with everyone logged in, some ready, so calls meet agents from the first step."""
        for agent_id, (skills, ready) in zip(AGENTS, staff, strict=True):
            self.run(self.store.login(agent_id, skills=skills, now=self.now, ready=ready))

    @rule(skill=st.sampled_from(SKILLS), strategy=strategies)
    def switch_strategy(self, skill: str, strategy: Strategy) -> None:
        """A supervisor changes a queue's strategy, maybe while its calls ring."""
        config = self.run(self.store.queue_config(skill))
        self.run(self.store.configure_queue(replace(config, strategy=strategy), self.now))

    # ------------------------------------------------------------------ agents

    @rule(data=st.data(), skills=skill_sets, ready=st.booleans())
    def login(self, data: st.DataObject, skills: dict[str, int], ready: bool) -> None:
        agent_id = self.pick(data, AgentState.LOGGED_OUT)
        agent = self.agent(agent_id)
        ok = agent is None or agent.state is AgentState.LOGGED_OUT
        self.expect(
            None if ok else InvalidTransitionError,
            self.store.login(agent_id, skills=skills, now=self.now, ready=ready),
        )

    @rule(data=st.data())
    def logout(self, data: st.DataObject) -> None:
        agent_id = self.pick(
            data,
            AgentState.AVAILABLE,
            AgentState.NOT_READY,
            AgentState.WRAP_UP,
            AgentState.RESERVED,
        )
        agent = self.agent(agent_id)
        error: type[RoutingError] | None = None
        if agent is None:
            error = NoSuchAgentError
        elif agent.state is AgentState.LOGGED_OUT:
            error = InvalidTransitionError
        elif agent.state is AgentState.ON_CALL:
            error = AgentBusyError
        self.expect(error, self.store.logout(agent_id, self.now))

    @rule(data=st.data())
    def ready(self, data: st.DataObject) -> None:
        agent_id = self.pick(data, AgentState.NOT_READY, AgentState.WRAP_UP)
        agent = self.agent(agent_id)
        error: type[RoutingError] | None = None
        if agent is None:
            error = NoSuchAgentError
        elif agent.state in (AgentState.LOGGED_OUT, AgentState.RESERVED, AgentState.ON_CALL):
            error = InvalidTransitionError
        self.expect(error, self.store.ready(agent_id, self.now))

    @rule(data=st.data(), reason=st.sampled_from(["break", "lunch"]))
    def not_ready(self, data: st.DataObject, reason: str) -> None:
        agent_id = self.pick(data, AgentState.AVAILABLE, AgentState.RESERVED, AgentState.WRAP_UP)
        agent = self.agent(agent_id)
        error: type[RoutingError] | None = None
        if agent is None:
            error = NoSuchAgentError
        elif agent.state is AgentState.LOGGED_OUT:
            error = InvalidTransitionError
        elif agent.state is AgentState.ON_CALL:
            error = AgentBusyError
        self.expect(error, self.store.not_ready(agent_id, reason, self.now))

    @rule(agent_id=st.sampled_from(AGENTS), skills=skill_sets)
    def set_skills(self, agent_id: str, skills: dict[str, int]) -> None:
        agent = self.agent(agent_id)
        self.expect(
            NoSuchAgentError if agent is None else None,
            self.store.set_skills(agent_id, skills, self.now),
        )

    @rule(data=st.data(), accept=st.sampled_from([True, True, False]))
    def answer(self, data: st.DataObject, accept: bool) -> None:
        """Accept or reject: the agent's own offer, or (refused) some other call."""
        agent_id = self.pick(data, AgentState.RESERVED)
        agent = self.agent(agent_id)
        if agent is not None and agent.state is AgentState.RESERVED:
            call_id, error = agent.call_id, None
        else:
            call_id = self.callers[-1] if self.callers else "nothing"
            error = NoSuchAgentError if agent is None else NoSuchReservationError
        if accept:
            offered = self.run(self.store.call(call_id)) if error is None else None
            self.expect(error, self.store.accept(agent_id, call_id, self.now))
            if offered is not None and offered.caller:
                self.got_through.append(offered.caller)
        else:
            self.expect(error, self.store.reject(agent_id, call_id, self.now))

    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        agent_id = self.pick(data, AgentState.ON_CALL)
        agent = self.agent(agent_id)
        error: type[RoutingError] | None = None
        if agent is None:
            error = NoSuchAgentError
        elif agent.state is not AgentState.ON_CALL:
            error = InvalidTransitionError
        self.expect(error, self.store.complete(agent_id, self.now))

    @rule(data=st.data(), skill=st.sampled_from(SKILLS))
    def transfer(self, data: st.DataObject, skill: str) -> None:
        """The agent sends their caller to a queue (possibly the one it came through)."""
        agent_id, call_id = self.connected_call(data, ItemKind.CALL)
        agent = self.agent(agent_id)
        call = self.run(self.store.call(call_id))
        limit = self.run(self.store.queue_config(skill)).max_length
        full = limit > 0 and len(self.run(self.store.waiting(skill))) >= limit
        error: type[RoutingError] | None = None
        if agent is None:
            error = NoSuchAgentError
        elif (
            agent.state is not AgentState.ON_CALL
            or agent.call_id != call_id
            or call is None
            or call.kind is not ItemKind.CALL
            or full
        ):
            error = InvalidTransitionError
        self.expect(error, self.store.transfer(agent_id, call_id, skill, self.now))

    def connected_call(self, data: st.DataObject, kind: ItemKind | None = None) -> tuple[str, str]:
        """Mostly an agent on a call (of ``kind``, if given) and that call; sometimes (refused:
        nothing may change) a call and an agent that are not connected to each other."""
        talking = [
            (a, ag.call_id)
            for a in AGENTS
            if (ag := self.agent(a)) is not None and ag.state is AgentState.ON_CALL
        ]
        if kind is not None:
            talking = [
                (a, c) for a, c in talking if (q := self.run(self.store.call(c))) and q.kind is kind
            ]
        misuse = data.draw(st.integers(min_value=0, max_value=3), label="misuse") == 0
        if talking and not misuse:
            return data.draw(st.sampled_from(talking))
        calls = [*self.callers, *("cb:" + c for c in self.callers), "nothing"]
        return data.draw(st.sampled_from(AGENTS)), data.draw(st.sampled_from(calls))

    def unchanged_unless(self, connected: bool, work: Coroutine[Any, Any, T]) -> T:
        """Run a report about a connected call: when the call is not ``connected`` to the agent
        it names, it must change nothing."""
        before = self.run(self.store.event_count())
        result = self.run(work)
        if not connected:
            assert self.run(self.store.event_count()) == before
        return result

    @rule(data=st.data())
    def phone_unreachable(self, data: st.DataObject) -> None:
        """The agent accepted, then their phone failed: the call goes back to its place."""
        agent_id, call_id = self.connected_call(data)
        call = self.run(self.store.call(call_id))
        ok = call is not None and call.state is CallState.CONNECTED and call.agent_id == agent_id
        state = self.unchanged_unless(
            ok, self.store.agent_unreachable(call_id, agent_id, self.now, "480 Unavailable")
        )
        if not ok:
            assert state == "none"
            return
        after = self.run(self.store.call(call_id))
        assert state == ("ended" if after is None else after.state)
        agent = self.agent(agent_id)
        assert agent is not None
        assert (agent.state, agent.reason) == (AgentState.NOT_READY, "missed")

    @rule(data=st.data(), final=st.sampled_from([False, False, False, True]))
    def customer_no_answer(self, data: st.DataObject, final: bool) -> None:
        """A callback's customer does not answer: back in its place until the last attempt."""
        agent_id, call_id = self.connected_call(data, ItemKind.CALLBACK)
        call = self.run(self.store.call(call_id))
        ok = (
            call is not None
            and call.kind is ItemKind.CALLBACK
            and call.state is CallState.CONNECTED
            and call.agent_id == agent_id
        )
        outcome, attempts = self.unchanged_unless(
            ok, self.store.callback_no_answer(call_id, agent_id, self.now, final=final)
        )
        if not ok:
            assert (outcome, attempts) == ("none", 0)
            return
        assert call is not None
        limit = self.run(self.store.queue_config(call.skill)).callback_attempts
        assert attempts == call.attempts + 1
        config = self.run(self.store.queue_config(call.skill))
        if final or attempts >= limit:
            assert outcome == "failed"
            assert self.run(self.store.call(call_id)) is None
        elif config.callback_retry_seconds > 0:
            assert outcome == "retrying"
            after = self.run(self.store.call(call_id))
            assert after is not None
            assert (after.state, after.retry_at) == (
                CallState.RETRY,
                self.now + config.callback_retry_seconds,
            )
        else:
            assert outcome == "requeued"

    # ------------------------------------------------------------------ callers

    @rule(
        skill=st.sampled_from(SKILLS),
        level=levels,
        priority=st.sampled_from([0, 0, 1, 2]),
        extra=st.sampled_from([False, False, False, True]),
        node=st.sampled_from([*NODES, "n9"]),
        caller=st.sampled_from(CALLER_NUMBERS),
    )
    def enqueue(
        self, skill: str, level: int, priority: int, extra: bool, node: str, *, caller: str = ""
    ) -> None:
        self.put_in_line(skill, level, priority, extra, node, caller=caller)

    def put_in_line(
        self, skill: str, level: int, priority: int, extra: bool, node: str, *, caller: str = ""
    ) -> bool:
        """Put a caller in line; False when the queue was full (max_length) and refused it."""
        self.serial += 1
        call_id = f"call-{self.serial}"
        skills = {skill: level}
        if extra:
            other = SKILLS[1 - SKILLS.index(skill)]
            skills[other] = 1
        self.callers.append(call_id)
        call = NewCall(call_id, skills, priority=priority, node_id=node, caller=caller)
        result = self.run(self.store.enqueue(call, self.now))
        if result.preferred_agent:  # a returning caller, routed to a logged-in, able agent
            agent = self.agent(result.preferred_agent)
            assert agent is not None
            assert agent.state is not AgentState.LOGGED_OUT
            assert all(agent.skills.get(s, 0) >= m for s, m in skills.items())
        return result.accepted

    def someone_available(self) -> bool:
        return any(
            (agent := self.agent(a)) is not None and agent.state is AgentState.AVAILABLE
            for a in AGENTS
        )

    @precondition(someone_available)
    @rule(
        caller=st.sampled_from(CALLER_NUMBERS[1:]),
        skill=st.sampled_from(SKILLS),
        again=st.booleans(),
    )
    def gets_through(self, caller: str, skill: str, again: bool) -> None:
        """A caller is offered to a free agent at once (if able) who answers: they talk. With
        ``again``, the caller calls a second time at once (the agent is still busy: a hold)."""
        if not self.put_in_line(skill, 1, 0, extra=False, node=NODES[0], caller=caller):
            return  # the queue was full
        call_id = self.callers[-1]
        call = self.run(self.store.call(call_id))
        assert call is not None
        if call.state is CallState.OFFERED:
            # A ring-all call rings its agents with no agent_id yet: the first of them answers.
            agent = call.agent_id or call.offered_to[0]
            self.run(self.store.accept(agent, call_id, self.now))
            self.got_through.append(caller)
            if again:
                self.enqueue(skill, 1, 0, extra=False, node=NODES[1], caller=caller)

    @precondition(someone_available)
    @rule(skill=st.sampled_from(SKILLS), node=st.sampled_from(NODES))
    def callback_dialed(self, skill: str, node: str) -> None:
        """A callback is requested while an agent is free (if able), who accepts it: it is
        being dialed, and its customer may then not answer."""
        self.serial += 1
        call_id = f"cb:call-{self.serial}"
        callback = NewCall(
            call_id, {skill: 1}, kind=ItemKind.CALLBACK, number="13800000000", node_id=node
        )
        self.run(self.store.add_callback(callback, self.now))
        call = self.run(self.store.call(call_id))
        if call is not None and call.state is CallState.OFFERED:
            agent = call.agent_id or call.offered_to[0]
            self.run(self.store.accept(agent, call_id, self.now))

    @precondition(lambda self: bool(self.got_through))
    @rule(data=st.data(), skill=st.sampled_from(SKILLS), level=levels)
    def call_again(self, data: st.DataObject, skill: str, level: int) -> None:
        """A caller who talked to an agent calls again (last-agent routing)."""
        caller = data.draw(st.sampled_from(self.got_through))
        self.enqueue(skill, level, 0, extra=False, node=NODES[0], caller=caller)

    @rule(
        calls=st.lists(
            st.tuples(st.sampled_from(SKILLS), levels, st.sampled_from([0, 0, 1, 2])),
            min_size=2,
            max_size=4,
        )
    )
    def burst(self, calls: list[tuple[str, int, int]]) -> None:
        """Several callers in the same instant, so lines build up across queues and levels."""
        for i, (skill, level, priority) in enumerate(calls):
            self.enqueue(skill, level, priority, extra=False, node=NODES[i % len(NODES)])

    @precondition(lambda self: bool(self.callers))
    @rule(data=st.data(), ringing=st.booleans())
    def hang_up(self, data: st.DataObject, ringing: bool) -> None:
        """The caller hangs up; ``ringing``: their node says the accepting agent's phone still
        rang (an abandon; the agent available again, maybe offered another call at once)."""
        call_id = data.draw(st.sampled_from(self.callers))
        before = self.run(self.store.call(call_id))
        outcome = self.run(self.store.hangup(call_id, self.now, agent_ringing=ringing))
        expected = {
            None: "none",
            CallState.WAITING: "abandoned",
            CallState.OFFERED: "abandoned",
            CallState.CONNECTED: "abandoned" if ringing else "completed",
        }
        assert outcome == expected[None if before is None else before.state]
        if ringing and before is not None and before.state is CallState.CONNECTED:
            agent = self.agent(before.agent_id)
            assert agent is not None
            assert agent.state in (AgentState.AVAILABLE, AgentState.RESERVED)
            assert agent.call_id != call_id

    @precondition(lambda self: bool(self.callers))
    @rule(data=st.data())
    def callback_instead(self, data: st.DataObject) -> None:
        call_id = data.draw(st.sampled_from(self.callers))
        before = self.run(self.store.call(call_id))
        outcome = self.run(self.store.leave_for_callback(call_id, self.now))
        if before is None or before.state is CallState.CONNECTED:
            assert outcome == ("none" if before is None else "connected")
            return
        assert outcome == "parked"
        callback = NewCall(
            "cb:" + call_id,
            before.skills,
            priority=before.priority,
            kind=ItemKind.CALLBACK,
            number="13800000000",
            node_id=before.node_id,
        )
        result = self.run(self.store.add_callback(callback, self.now, from_call=call_id))
        assert result.kept_place

    # ------------------------------------------------------------------ time

    @rule(
        seconds=st.sampled_from([1.0, 5.0, 11.0, 16.0, 50.0]),
        ticker=st.sampled_from(["", *NODES]),
        beat=st.sampled_from([True, True, False]),
    )
    def time_passes(self, seconds: float, ticker: str, beat: bool) -> None:
        """Timers run by a node (reclaiming the silent ones if it is alive) or by no node. With
        ``beat`` the node heartbeats first, as its pump does; the other node may fall silent."""
        self.now += seconds
        if ticker and beat:
            self.run(self.store.heartbeat(ticker, self.now, NODE_TIMEOUT))
        registry = self.registry()
        lost = {node for node, until in registry.items() if until < self.now}
        alive = registry.get(ticker, -1.0) >= self.now
        self.run(self.store.tick(self.now, ticker))
        if alive:
            assert not lost & set(self.registry())
            self.assert_no_calls_of(lost)

    # ------------------------------------------------------------------ nodes

    def registry(self) -> dict[str, float]:
        """Every node routing knows, live or not, with its heartbeat's end."""
        raw = self.run(self.client.zrange(self.store.keys.nodes, 0, -1, withscores=True))
        return {node: float(until) for node, until in raw}

    def assert_no_calls_of(self, nodes: set[str], callbacks_stay: bool = False) -> None:
        """No ghosts: a reclaimed node holds nothing (its callbacks may stay if said so)."""
        for call_id in self.run(self.store.call_ids()):
            call = self.run(self.store.call(call_id))
            assert call is not None
            if call.node_id in nodes:
                assert callbacks_stay, (call_id, call.node_id)
                assert call.kind is ItemKind.CALLBACK, (call_id, call.node_id)

    @rule(node=st.sampled_from(NODES), starting=st.sampled_from([False, False, False, True]))
    def heartbeat(self, node: str, starting: bool) -> None:
        """A node is alive for a while; ``starting``: a new process of it, after a crash."""
        self.run(self.store.heartbeat(node, self.now, NODE_TIMEOUT, starting=starting))
        if starting:
            self.assert_no_calls_of({node}, callbacks_stay=True)

    @rule(node=st.sampled_from(NODES))
    def node_dies(self, node: str) -> None:
        """The node falls silent (killed) past the timeout; the other one pumps on."""
        survivor = NODES[1 - NODES.index(node)]
        self.time_passes(NODE_TIMEOUT + 1.0, survivor, beat=True)
        assert node not in self.registry()

    @rule(node=st.sampled_from(NODES))
    def node_leaves(self, node: str) -> None:
        others = {n for n, until in self.registry().items() if until >= self.now and n != node}
        self.run(self.store.node_leave(node, self.now))
        self.assert_no_calls_of({node}, callbacks_stay=not others)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def consistent(self) -> None:
        self.run(self.consistency.check(self.store))


@pytest.mark.slow
def test_random_interleavings(redis_server: Any, consistency: Callable[[], Any]) -> None:
    RoutingMachine.url = redis_server.url
    RoutingMachine.checker = consistency
    run_state_machine_as_test(
        RoutingMachine,
        settings=settings(
            max_examples=50,  # x 50 steps, on both servers: 5,000 steps within the CI budget
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
