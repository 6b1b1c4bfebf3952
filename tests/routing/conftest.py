"""Routing test fixtures: the store on each real Redis (``redis_client`` from tests/conftest.py),
and the invariant checker every routing test can run after each step."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis

from routing.events import EventType, Replay, RoutingEvent
from routing.model import AgentState, CallState, ItemKind, Strategy
from routing.store import SEQ_WIDTH, RoutingStore


@pytest.fixture
def store(redis_client: Redis) -> RoutingStore:
    return RoutingStore(redis_client, tenant="t1")


# ---------------------------------------------------------------------- consistency


class Consistency:
    """Everything the routing invariants promise, checked against Redis and the event stream.

    - replaying the stream gives exactly the agents' states and the calls routing holds, and
      the node holding each call (so a lost node's calls end with an event and its callbacks
      move to the node the stream says);
    - reserved agents and offered calls pair one to one, and so do on-call agents and
      connected calls (no agent holds two calls, no call is offered to two agents), except that
      a ring-all call rings several reserved agents at once (each of them reserved for it only);
    - an OFFER that rings several agents happens only in a queue that is ring-all at the time,
      and a call ringing several agents is never offered to one alone;
    - the queue sets hold exactly the waiting calls, the available sets exactly the available
      agents, and every waiting call is at the place the stream gave it (score and arrival
      number): a call that goes back in line (a reject, a timeout, an unreachable agent phone,
      a callback's customer not answering) goes back to its place; a callback out of line for
      its retry delay has its retry timer, and comes back to its place;
    - a callback's unanswered attempts are those the stream counted, one more at each;
    - no waiting call has an eligible available agent (matching is never left undone), nor does
      a call ringing in a ring-all queue (the agent would have joined the ring); a call held for
      the caller's last agent only waits for that one;
    - at every OFFER in the stream, no call the agent could take waited ahead of the one offered
      (priority with aging, then FIFO), calls held for other agents aside, and no call held for
      the agent waited at all (the stream alone shows every call's place, requirements and
      hold, as escalations and overflows change them, and every agent's skills); a call is
      offered to the agent it is held for or nobody.

    The stream is read incrementally, so one instance can check after every step of a run.
    """

    def __init__(self) -> None:
        self.last = "-"
        self.replay = Replay()
        self.skills: dict[str, dict[str, int]] = {}
        """Agent -> skills, from the stream."""
        self.places: dict[str, tuple[dict[str, int], tuple[float, int]]] = {}
        """Call -> (required skills, place in line), from the stream."""
        self.ahead: dict[str, tuple[dict[str, int], tuple[float, int]]] = {}
        """The waiting calls among them."""
        self.strategies: dict[str, str] = {}
        """Skill -> strategy, from the stream's CONFIG events."""
        self.rings: set[str] = set()
        """Calls ringing as ring-all calls, from the stream."""
        self.holds: dict[str, str] = {}
        """Call -> the agent it is held for (last-agent routing), from the stream."""
        self.attempts: dict[str, int] = {}
        """Callback -> its unanswered attempts, from the stream."""

    async def check(self, store: RoutingStore) -> None:
        events = await store.events(after=self.last)
        if events:
            self.last = events[-1].event_id
        self.replay.apply_all(events)
        self._check_order(events)
        replay = self.replay
        agents = {a: await store.agent(a) for a in await store.agent_ids()}
        calls = {c: await store.call(c) for c in await store.call_ids()}
        agent_map = {a: ag for a, ag in agents.items() if ag is not None}
        call_map = {c: q for c, q in calls.items() if q is not None}
        assert len(agent_map) == len(agents)
        assert len(call_map) == len(calls)

        assert {a: (ag.state, ag.reason) for a, ag in agent_map.items()} == replay.agents
        assert {c: q.state for c, q in call_map.items()} == replay.calls
        assert {c: q.agent_id for c, q in call_map.items() if q.agent_id} == replay.agent_of
        assert {c: set(q.offered_to) for c, q in call_map.items() if q.offered_to} == (
            replay.offered_to
        )
        assert {c: q.node_id for c, q in call_map.items()} == replay.node_of
        assert {
            c: q.preferred_agent for c, q in call_map.items() if q.preferred_agent
        } == replay.holds
        for c, q in call_map.items():
            assert (q.held_until is None) == (q.preferred_agent == ""), c
            if q.preferred_agent:
                assert q.state is CallState.WAITING, c
        assert {c: q.attempts for c, q in call_map.items() if q.attempts} == replay.attempts
        for c, q in call_map.items():
            if q.state is CallState.WAITING and c in self.places:
                score, member = await store.redis.hmget(store.keys.call(c), "score", "member")
                place = (float(score), int(member[:SEQ_WIDTH]))
                assert place == self.places[c][1], f"{c} waits at {place}, not at its place"

        for c, q in call_map.items():
            if q.state is CallState.RETRY:  # out of line until its retry delay is over
                assert (q.kind, q.agent_id, q.offered_to) == (ItemKind.CALLBACK, "", ())
                assert q.attempts > 0, c
                assert q.retry_at is not None, c
                due = await store.redis.zscore(store.keys.timers, f"cbretry|{c}")
                assert due == q.retry_at, c
            else:
                assert q.retry_at is None, c
            if q.state in (CallState.WAITING, CallState.RETRY):
                assert (q.agent_id, q.offered_to) == ("", ())
                continue
            if q.offered_to:  # a ring-all call ringing
                assert (q.state, q.agent_id) == (CallState.OFFERED, "")
                for a in q.offered_to:
                    assert (agent_map[a].state, agent_map[a].call_id) == (AgentState.RESERVED, c)
                continue
            assert q.agent_id, f"{c} is {q.state} to nobody"
            agent = agent_map[q.agent_id]
            expected = AgentState.RESERVED if q.state is CallState.OFFERED else AgentState.ON_CALL
            assert (agent.state, agent.call_id) == (expected, c)
        for a, ag in agent_map.items():
            if ag.state is AgentState.RESERVED:
                q = call_map[ag.call_id]
                assert q.agent_id == a or (q.agent_id == "" and a in q.offered_to)
            elif ag.state is AgentState.ON_CALL:
                assert call_map[ag.call_id].agent_id == a
            else:
                assert ag.call_id == ""

        skills = {s for q in call_map.values() for s in q.skills} | {
            s for ag in agent_map.values() for s in ag.skills
        }
        for skill in skills:
            waiting = await store.waiting(skill)
            assert len(waiting) == len(set(waiting))
            assert set(waiting) == {
                c for c, q in call_map.items() if q.state is CallState.WAITING and q.skill == skill
            }
            assert await store.available(skill) == {
                a
                for a, ag in agent_map.items()
                if ag.state is AgentState.AVAILABLE and skill in ag.skills
            }

        for c, q in call_map.items():
            rings = bool(q.offered_to) and (
                (await store.queue_config(q.skill)).strategy is Strategy.RING_ALL
            )
            if q.state is not CallState.WAITING and not rings:
                continue
            for a, ag in agent_map.items():
                if q.preferred_agent not in ("", a):
                    continue  # held for the caller's last agent: nobody else may take it yet
                eligible = all(ag.skills.get(s, 0) >= m for s, m in q.skills.items())
                assert not (ag.state is AgentState.AVAILABLE and eligible), (
                    f"{c} {'rings others' if rings else 'waits'} while {a} is available"
                    " and eligible"
                )

    def _check_order(self, events: list[RoutingEvent]) -> None:
        for e in events:
            f = e.fields
            if e.type in (EventType.AGENTLOGIN, EventType.SKILLS):
                self.skills[e.agent_id] = json.loads(f["skills"])
            if e.type in (
                EventType.ENTERQUEUE,
                EventType.CALLBACK,
                EventType.OVERFLOW,
                EventType.TRANSFER,
            ):
                needs = {f["skill"]: int(f["min"])} | json.loads(f["req"] or "{}")
                self.places[e.call_id] = (needs, (float(f["score"]), int(f["seq"])))
                if f.get("hold"):
                    self.holds[e.call_id] = f["pref"]
            if e.type is EventType.PREF_EXPIRED:
                del self.holds[e.call_id]
            if e.type in (EventType.CALLBACK_NOANSWER, EventType.CALLBACK_FAILED):
                made = self.attempts.get(e.call_id, 0) + 1
                assert int(f["attempts"]) == made, f"{e.call_id}: attempt {f['attempts']}"
                self.attempts[e.call_id] = made
            if e.type is EventType.ESCALATE:  # same place, fewer needs
                self.places[e.call_id] = ({f["skill"]: int(f["min"])}, self.places[e.call_id][1])
            if e.type in (EventType.ESCALATE, EventType.OVERFLOW) and e.call_id in self.ahead:
                self.ahead[e.call_id] = self.places[e.call_id]
            if e.type is EventType.CONFIG:
                self.strategies[f["skill"]] = f["strategy"]
            if e.type is EventType.OFFER and f.get("ringall") == "1":
                assert self.strategies.get(f["skill"]) == Strategy.RING_ALL, (
                    f"{e.call_id} rings {e.agent_id} outside a ring-all queue"
                )
                self.rings.add(e.call_id)
            elif e.type is EventType.OFFER:
                assert e.call_id not in self.rings, f"{e.call_id} rings others and {e.agent_id}"
            elif "cstate" in f and f["cstate"] != CallState.OFFERED:
                self.rings.discard(e.call_id)
            if e.type is EventType.OFFER:
                self._check_offer(e.call_id, e.agent_id)
            if "cstate" in f and e.call_id in self.places:
                if f["cstate"] == CallState.WAITING:
                    self.ahead[e.call_id] = self.places[e.call_id]
                else:
                    self.ahead.pop(e.call_id, None)
                    self.holds.pop(e.call_id, None)

    def _check_offer(self, call: str, agent: str) -> None:
        skills = self.skills[agent]
        held_for = self.holds.get(call)
        assert held_for in (None, agent), f"{call}, held for {held_for}, offered to {agent}"
        place = self.places[call][1]
        for other, (needs, other_place) in self.ahead.items():
            if other == call:
                continue
            eligible = all(skills.get(s, 0) >= m for s, m in needs.items())
            other_held_for = self.holds.get(other)
            if other_held_for == agent:
                assert not (eligible and held_for != agent), (
                    f"{call} offered to {agent} while {other} was held for {agent}"
                )
            elif other_held_for is None and held_for is None:
                assert not (eligible and other_place < place), (
                    f"{call} offered to {agent} while {other} waited ahead of it"
                )
        if held_for is not None:
            del self.holds[call]  # a hold ends at the call's first offer


async def assert_consistent(store: RoutingStore) -> None:
    """Check every invariant from the start of the stream."""
    await Consistency().check(store)


@pytest.fixture
def consistent() -> Callable[[RoutingStore], Awaitable[None]]:
    return assert_consistent


@pytest.fixture
def consistency() -> type[Consistency]:
    """The incremental checker, for runs that check after every step."""
    return Consistency
