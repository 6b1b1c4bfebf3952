"""Statistics: interval figures pinned on hand-built days, the live snapshot on a hand-built floor,
and the snapshot equal to its recount from the event stream over random operations."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from typing import Any

import pytest
from redis.asyncio import Redis

from routing.errors import RoutingError
from routing.events import EventType, RoutingEvent
from routing.model import AgentState, ItemKind, NewCall, QueueConfig
from routing.stats import (
    AgentCounts,
    AgentStatus,
    IntervalFold,
    IntervalStats,
    LiveFold,
    LiveView,
    QueueSnapshot,
    Snapshot,
    fold_events,
    interval_stats,
    load,
    snapshot,
)
from routing.store import RoutingStore

T0 = 1_800_000_000.0  # a multiple of 900 and of 3600: an interval starts here
Q = 900.0


def call(call_id: str, skill: str = "billing") -> NewCall:
    return NewCall(call_id, {skill: 1}, node_id="n1", request_id=1)


def callback(call_id: str, skill: str = "billing") -> NewCall:
    return NewCall("cb:" + call_id, {skill: 1}, kind=ItemKind.CALLBACK, number="13912345678")


def keyed(stats: list[IntervalStats]) -> dict[tuple[float, str | None], IntervalStats]:
    return {(s.start, s.skill): s for s in stats}


async def recount(store: RoutingStore, now: float) -> Snapshot:
    """The snapshot rebuilt from the stream alone, read in small pages so paging is used."""
    fold = LiveFold()
    await fold_events(store, fold, batch=7)
    return fold.snapshot(now)


# ---------------------------------------------------------------------- interval figures


async def test_service_level_asa_abandons_and_handle_time(store: RoutingStore) -> None:
    """Four callers in one interval: answered after 10 s and after 30 s, a short abandon at
    3 s, an abandon at 40 s; both agents then talk 60 s and wrap up 30 s and 10 s."""
    await store.configure_queue(QueueConfig("billing", wrap_up_seconds=30), T0)
    await store.login("A1", skills={"billing": 1}, now=T0)
    for i, cid in enumerate(["c1", "c2", "c3", "c4"]):
        await store.enqueue(call(cid), T0 + i)
    await store.hangup("c3", T0 + 5)  # waited 3 s: short
    await store.ready("A1", T0 + 10)  # offered c1
    await store.accept("A1", "c1", T0 + 10)  # waited 10 s
    await store.login("A2", skills={"billing": 1}, now=T0 + 31, ready=True)  # offered c2
    await store.accept("A2", "c2", T0 + 31)  # waited 30 s
    await store.hangup("c4", T0 + 43)  # waited 40 s
    await store.complete("A1", T0 + 70)
    await store.tick(T0 + 100)  # A1's wrap-up runs out: 30 s
    await store.complete("A2", T0 + 91)
    await store.ready("A2", T0 + 101)  # A2 ends wrap-up early: 10 s

    overall, billing = interval_stats(await store.events(), sl_thresholds=(20, 30))
    assert overall == IntervalStats(
        start=T0,
        length=Q,
        skill=None,
        thresholds=(20.0, 30.0),
        offered=4,
        answered=2,
        answered_within=(1, 2),
        abandoned=1,
        short_abandoned=1,
        answer_wait=40.0,
        max_wait=40.0,
        handled=2,
        talk=120.0,
        wrap=40.0,
    )
    assert billing == replace(overall, skill="billing")
    assert billing.closed == 3  # the short abandon is out of the denominator
    assert billing.service_level() == pytest.approx(1 / 3)
    assert billing.service_level(30) == pytest.approx(2 / 3)
    assert billing.answer_rate == pytest.approx(2 / 3)
    assert billing.abandon_rate == pytest.approx(1 / 3)
    assert billing.asa == 20.0
    assert billing.aht == 80.0  # (60 + 30 + 60 + 10) / 2


async def test_calls_count_where_they_entered_other_events_where_they_happen(
    store: RoutingStore,
) -> None:
    """A caller entering just before the quarter ends is answered in the next: it counts in the
    quarter it entered; the RONA and the reject it met count when they happened; so do the
    refusal of a full queue and (with the caller it concerns) a timeout."""
    await store.configure_queue(QueueConfig("billing", reservation_timeout=15), T0)
    await store.configure_queue(QueueConfig("fault", max_wait=60, max_length=1), T0)
    await store.login("A1", skills={"billing": 1}, now=T0, ready=True)
    await store.enqueue(call("c1"), T0 + 890)  # offered to A1
    await store.tick(T0 + 905)  # A1 does not answer: RONA
    await store.login("A2", skills={"billing": 1}, now=T0 + 906, ready=True)  # offered c1
    await store.reject("A2", "c1", T0 + 907)
    await store.ready("A1", T0 + 908)  # offered c1 again
    await store.accept("A1", "c1", T0 + 910)  # waited 20 s: within 20
    await store.enqueue(call("f1", "fault"), T0 + 950)
    assert not (await store.enqueue(call("f2", "fault"), T0 + 960)).accepted
    await store.tick(T0 + 1010)  # f1 reaches the max wait

    stats = keyed(interval_stats(await store.events()))
    assert sorted(stats, key=lambda k: (k[0], k[1] or "")) == [
        (T0, None),
        (T0, "billing"),
        (T0 + Q, None),
        (T0 + Q, "billing"),
        (T0 + Q, "fault"),
    ]
    first = IntervalStats(
        start=T0,
        length=Q,
        skill="billing",
        thresholds=(20.0,),
        offered=1,
        answered=1,
        answered_within=(1,),
        answer_wait=20.0,
        max_wait=20.0,
    )
    assert stats[T0, "billing"] == first
    assert stats[T0, None] == replace(first, skill=None)
    assert stats[T0 + Q, "billing"] == IntervalStats(
        T0 + Q, Q, "billing", (20.0,), answered_within=(0,), ronas=1, rejects=1
    )
    fault = IntervalStats(
        T0 + Q,
        Q,
        "fault",
        (20.0,),
        answered_within=(0,),
        offered=1,
        timed_out=1,
        max_wait=60.0,
        refused=1,
    )
    assert stats[T0 + Q, "fault"] == fault
    assert stats[T0 + Q, None] == replace(fault, skill=None, ronas=1, rejects=1)
    assert (fault.service_level(), fault.answer_rate, fault.asa) == (0.0, 0.0, None)

    # The interval length is a parameter: by the hour, all of it is one interval.
    hourly = keyed(interval_stats(await store.events(), interval_seconds=3600))
    assert set(hourly) == {(T0, None), (T0, "billing"), (T0, "fault")}
    assert hourly[T0, "billing"] == replace(first, length=3600.0, ronas=1, rejects=1)
    assert hourly[T0, "fault"] == replace(fault, start=T0, length=3600.0)


async def test_callbacks(store: RoutingStore) -> None:
    """Requested (one keeping its caller's place), connected, expired, withdrawn; a callback's
    handle time counts, its wait is not an answered caller's; a caller who left for a callback
    is out of the service level."""
    await store.configure_queue(QueueConfig("billing", callback_window=120, wrap_up_seconds=30), T0)
    await store.enqueue(call("c1"), T0)
    assert await store.leave_for_callback("c1", T0 + 30) == "parked"
    assert (await store.add_callback(callback("c1"), T0 + 30, from_call="c1")).kept_place
    await store.add_callback(callback("x"), T0 + 40, from_call="x")  # no place to keep
    await store.add_callback(callback("y"), T0 + 41, from_call="y")
    await store.hangup("cb:y", T0 + 42)  # withdrawn
    await store.enqueue(call("c2"), T0 + 45)
    await store.hangup("c2", T0 + 47)  # short abandon
    await store.login("A1", skills={"billing": 1}, now=T0 + 50, ready=True)  # offered cb:c1
    await store.accept("A1", "cb:c1", T0 + 52)
    await store.complete("A1", T0 + 112)
    await store.not_ready("A1", "break", T0 + 115)  # wrap-up ended by going not ready: 3 s
    await store.tick(T0 + 160)  # cb:x expires

    (overall, billing) = interval_stats(await store.events())
    assert billing == IntervalStats(
        start=T0,
        length=Q,
        skill="billing",
        thresholds=(20.0,),
        offered=2,
        answered_within=(0,),
        short_abandoned=1,
        left_for_callback=1,
        max_wait=30.0,
        callbacks_requested=3,
        callbacks_kept_place=1,
        callbacks_connected=1,
        callbacks_expired=1,
        callbacks_cancelled=1,
        handled=1,
        talk=60.0,
        wrap=3.0,
    )
    assert overall == replace(billing, skill=None)
    assert (billing.service_level(), billing.asa, billing.aht) == (None, None, 63.0)


async def test_accepts_that_did_not_get_through_are_taken_back(store: RoutingStore) -> None:
    """A caller accepted after 10 s whose agent phone was unreachable is answered for real after
    40 s, once; a callback accepted twice whose customer never answered fails (two attempts),
    counted apart; each unanswered attempt and the unreachable phone count when they happen,
    in the next interval here."""
    await store.configure_queue(
        QueueConfig("billing", callback_attempts=2, wrap_up_seconds=0, callback_retry_seconds=0),
        T0,
    )
    await store.login("A1", skills={"billing": 1}, now=T0)
    await store.login("A2", skills={"billing": 1}, now=T0)
    await store.enqueue(call("c1"), T0)
    await store.add_callback(callback("x"), T0 + 1)
    await store.ready("A1", T0 + 10)  # offered c1
    await store.accept("A1", "c1", T0 + 10)
    assert await store.agent_unreachable("c1", "A1", T0 + Q + 5) == "waiting"
    await store.ready("A2", T0 + Q + 40)  # offered c1 again
    await store.accept("A2", "c1", T0 + Q + 40)
    await store.complete("A2", T0 + Q + 100)  # talked 60 s; A2 then takes cb:x
    await store.accept("A2", "cb:x", T0 + Q + 100)
    assert await store.callback_no_answer("cb:x", "A2", T0 + Q + 130) == ("requeued", 1)
    await store.accept("A2", "cb:x", T0 + Q + 130)  # no wrap-up: offered again at once
    assert await store.callback_no_answer("cb:x", "A2", T0 + Q + 160) == ("failed", 2)

    stats = keyed(interval_stats(await store.events(), sl_thresholds=(20, 60)))
    first, later = stats[T0, "billing"], stats[T0 + Q, "billing"]
    assert (first.offered, first.answered, first.answered_within) == (1, 1, (0, 0))
    assert first.asa == Q + 40
    assert (first.callbacks_requested, first.callbacks_connected) == (1, 0)
    assert (first.callbacks_failed, first.callbacks_cancelled) == (1, 0)
    assert (first.handled, first.talk) == (1, 60.0)
    assert (first.unreachable, first.callback_attempts_failed) == (0, 0)
    assert (later.offered, later.answered, later.unreachable) == (0, 0, 1)
    assert later.callback_attempts_failed == 2
    assert first.as_dict()["callbacks_failed"] == 1


async def test_a_caller_gone_while_the_agent_phone_rang_is_an_abandon(
    store: RoutingStore,
) -> None:
    """Accepted after 10 s, gone 20 s later while the agent's phone rang: abandoned (not
    answered, no ASA, no handle time), counted among those abandoned while ringing; a caller
    gone within the short-abandon time while it rang is a short abandon, also counted so."""
    await store.configure_queue(QueueConfig("billing", wrap_up_seconds=0), T0)
    await store.login("A1", skills={"billing": 1}, now=T0)
    await store.enqueue(call("c1"), T0)
    await store.ready("A1", T0 + 10)
    await store.accept("A1", "c1", T0 + 10)
    assert await store.hangup("c1", T0 + 30, agent_ringing=True) == "abandoned"
    await store.enqueue(call("c2"), T0 + 40)  # offered to A1 at once
    await store.accept("A1", "c2", T0 + 41)
    assert await store.hangup("c2", T0 + 43, agent_ringing=True) == "abandoned"

    [overall, billing] = interval_stats(await store.events())
    assert (billing.offered, billing.answered, billing.answer_wait, billing.asa) == (
        2,
        0,
        0.0,
        None,
    )
    assert (billing.abandoned, billing.short_abandoned, billing.abandoned_ringing) == (1, 1, 2)
    assert (billing.handled, billing.max_wait) == (0, 30.0)
    assert billing.abandon_rate == 1.0
    assert overall == replace(billing, skill=None)
    agent = await store.agent("A1")
    assert agent is not None
    assert (agent.state, agent.calls) == (AgentState.AVAILABLE, 0)


async def test_calls_that_entered_before_the_window_are_left_out(store: RoutingStore) -> None:
    """Folding from mid-stream: the answer of a caller whose entry is not in the window is not
    counted (its interval precedes the window); the reject it met, which counts when it
    happens, is."""
    await store.enqueue(call("c1"), T0)
    window_start = (await store.events())[-1].event_id
    await store.login("A3", skills={"billing": 1}, now=T0 + 1, ready=True)  # offered c1
    await store.reject("A3", "c1", T0 + 2)
    await store.login("A1", skills={"billing": 1}, now=T0 + 3, ready=True)  # offered c1
    await store.accept("A1", "c1", T0 + 10)
    await store.enqueue(call("c2"), T0 + 5)
    await store.login("A2", skills={"billing": 1}, now=T0 + 6, ready=True)  # offered c2
    await store.accept("A2", "c2", T0 + 15)
    fold = IntervalFold()
    last = await fold_events(store, fold, after=window_start)
    assert last == (await store.events())[-1].event_id
    assert await fold_events(store, fold, after=last) == last  # nothing new: nothing changes
    billing = keyed(fold.intervals())[T0, "billing"]
    assert (billing.offered, billing.answered, billing.answer_wait, billing.rejects) == (
        1,
        1,
        10.0,
        1,
    )


def event(n: int, type_: EventType, t: float, **fields: str) -> RoutingEvent:
    return RoutingEvent(f"{n}-0", type_, t, fields)


def test_events_without_the_skill_are_attributed_through_the_call() -> None:
    """An ABANDON or RONA may carry only the call id: the skill comes from the call's entry. A
    refusal without a skill can only count for all queues."""
    events = [
        event(1, EventType.ENTERQUEUE, T0, call="x", skill="fault", kind="call", cstate="waiting"),
        event(2, EventType.RONA, T0 + 20, call="x", agent="A1", cstate="waiting"),
        event(3, EventType.ABANDON, T0 + 30, call="x", cstate="ended"),
        event(4, EventType.FULL, T0 + 31, call="y", cstate="ended"),
    ]
    stats = keyed(interval_stats(events))
    assert set(stats) == {(T0, None), (T0, "fault")}
    fault = stats[T0, "fault"]
    assert (fault.offered, fault.abandoned, fault.max_wait, fault.ronas, fault.refused) == (
        1,
        1,
        30.0,
        1,
        0,
    )
    assert stats[T0, None].refused == 1


def test_short_abandon_boundary_and_settings() -> None:
    """Within the short-abandon time means wait <= it, like answered within a threshold."""
    events = [
        event(1, EventType.ENTERQUEUE, T0, call="a", skill="s", kind="call", cstate="waiting"),
        event(2, EventType.ENTERQUEUE, T0, call="b", skill="s", kind="call", cstate="waiting"),
        event(3, EventType.ABANDON, T0 + 8, call="a", skill="s", cstate="ended"),
        event(4, EventType.ABANDON, T0 + 8.5, call="b", skill="s", cstate="ended"),
    ]
    s = keyed(interval_stats(events, short_abandon_seconds=8))[T0, "s"]
    assert (s.short_abandoned, s.abandoned) == (1, 1)
    for bad in (
        {"interval_seconds": 0},
        {"short_abandon_seconds": -1},
        {"sl_thresholds": ()},
        {"sl_thresholds": (20, 20)},
    ):
        with pytest.raises(ValueError, match=r"must|threshold"):
            IntervalFold(**bad)


def test_interval_as_dict_is_json_with_the_rates() -> None:
    stats = IntervalStats(
        T0,
        Q,
        "billing",
        (20.0, 30.0),
        offered=4,
        answered=2,
        answered_within=(1, 2),
        abandoned=1,
        answer_wait=40.0,
        handled=0,
    )
    out = json.loads(json.dumps(stats.as_dict()))
    assert out["skill"] == "billing"
    assert out["answered_within"] == {"20": 1, "30": 2}
    assert out["service_level"] == {"20": pytest.approx(1 / 3), "30": pytest.approx(2 / 3)}
    assert (out["asa"], out["aht"], out["closed"]) == (20.0, None, 3)


# ---------------------------------------------------------------------- the live snapshot


async def test_snapshot_of_a_floor(store: RoutingStore) -> None:
    await store.login("A1", skills={"billing": 1}, now=T0, ready=True)
    await store.login("A2", skills={"billing": 1, "fault": 1}, now=T0)
    await store.login("A3", skills={"fault": 1}, now=T0 + 1, ready=True)
    await store.not_ready("A3", "lunch", T0 + 2)
    await store.login("A4", skills={"billing": 2}, now=T0)
    await store.logout("A4", T0 + 3)
    await store.login("A5", skills={"fault": 1}, now=T0 + 4, ready=True)
    await store.enqueue(call("c1"), T0 + 10)  # offered to A1
    await store.enqueue(call("c2"), T0 + 11)
    await store.enqueue(call("c3"), T0 + 12)
    await store.add_callback(callback("c9"), T0 + 13)
    await store.enqueue(call("f1", "fault"), T0 + 14)  # offered to A5
    await store.accept("A5", "f1", T0 + 15)
    await store.complete("A5", T0 + 16)  # wrap-up
    await store.enqueue(call("f2", "fault"), T0 + 17)
    await store.ready("A2", T0 + 20)  # offered c2, ahead of f2
    await store.accept("A2", "c2", T0 + 21)

    now = T0 + 30
    got = await snapshot(store, now)
    assert got.queues == (
        QueueSnapshot(
            skill="billing",
            waiting=1,
            callbacks_waiting=1,
            offered=1,
            connected=1,
            longest_wait=20.0,  # c1, still ringing at A1
            oldest_callback=17.0,
            agents=AgentCounts(reserved=1, on_call=1),
        ),
        QueueSnapshot(
            skill="fault",
            waiting=1,
            callbacks_waiting=0,
            offered=0,
            connected=0,
            longest_wait=13.0,
            oldest_callback=0.0,
            agents=AgentCounts(on_call=1, wrap_up=1, not_ready={"lunch": 1}),
        ),
    )
    assert got.overall == QueueSnapshot(
        skill=None,
        waiting=2,
        callbacks_waiting=1,
        offered=1,
        connected=1,
        longest_wait=20.0,
        oldest_callback=17.0,
        agents=AgentCounts(reserved=1, on_call=1, wrap_up=1, not_ready={"lunch": 1}),
    )
    assert got.overall.agents.staffed == 4
    assert got.agents == (
        AgentStatus("A1", AgentState.RESERVED, "", T0 + 10, 20.0, "c1"),
        AgentStatus("A2", AgentState.ON_CALL, "", T0 + 21, 9.0, "c2"),
        AgentStatus("A3", AgentState.NOT_READY, "lunch", T0 + 2, 28.0, ""),
        AgentStatus("A4", AgentState.LOGGED_OUT, "", T0 + 3, 27.0, ""),
        AgentStatus("A5", AgentState.WRAP_UP, "", T0 + 16, 14.0, ""),
    )
    assert got.logged_out == 1
    assert got.queue("fault").waiting == 1
    with pytest.raises(KeyError):
        got.queue("complaint")
    assert await recount(store, now) == got

    out = json.loads(json.dumps(got.as_dict()))
    assert out["queues"]["billing"]["agents"] == {
        "available": 0,
        "reserved": 1,
        "on_call": 1,
        "wrap_up": 0,
        "not_ready": {},
        "staffed": 2,
    }
    assert out["overall"]["skill"] is None
    assert out["agents"][2] == {
        "agent_id": "A3",
        "state": "not_ready",
        "reason": "lunch",
        "since": T0 + 2,
        "in_state": 28.0,
        "call_id": "",
    }
    assert out["logged_out"] == 1


async def test_snapshot_of_an_empty_tenant(store: RoutingStore) -> None:
    got = await snapshot(store, T0)
    assert got == Snapshot(T0, QueueSnapshot(None, 0, 0, 0, 0, 0.0, 0.0, AgentCounts()), (), ())
    assert await recount(store, T0) == got


async def test_a_callback_keeping_its_place_waits_since_its_caller_entered(
    store: RoutingStore,
) -> None:
    await store.enqueue(call("c1"), T0)
    await store.leave_for_callback("c1", T0 + 50)
    await store.add_callback(callback("c1"), T0 + 55, from_call="c1")
    got = await snapshot(store, T0 + 60)
    billing = got.queue("billing")
    assert (billing.waiting, billing.callbacks_waiting, billing.oldest_callback) == (0, 1, 60.0)
    assert await recount(store, T0 + 60) == got


async def test_a_view_loaded_while_a_place_is_parked_follows_its_callback(
    store: RoutingStore,
) -> None:
    await store.enqueue(call("c1"), T0)
    await store.leave_for_callback("c1", T0 + 50)
    view = LiveView()
    with pytest.raises(RuntimeError):
        view.snapshot(T0 + 50)
    await view.refresh(store)
    _, last = await load(store)
    assert last == (await store.events())[-1].event_id
    await store.add_callback(callback("c1"), T0 + 55, from_call="c1")
    await view.refresh(store)
    assert view.snapshot(T0 + 60).queue("billing").oldest_callback == 60.0
    assert view.snapshot(T0 + 60) == await snapshot(store, T0 + 60)


async def test_a_client_returning_bytes_reads_the_same(
    store: RoutingStore, redis_server: Any
) -> None:
    await store.login("A1", skills={"billing": 1}, now=T0, ready=True)
    await store.enqueue(call("c1"), T0 + 1)
    await store.enqueue(call("c2"), T0 + 2)
    raw = Redis.from_url(redis_server.url)  # no decode_responses
    try:
        assert await snapshot(RoutingStore(raw, tenant="t1"), T0 + 9) == await snapshot(
            store, T0 + 9
        )
    finally:
        await raw.aclose()


# ---------------------------------------------------------------------- random operations

AGENTS = [f"A{i}" for i in range(6)]
SKILLS = ["billing", "fault"]


class Floor:
    """Random requests of agents, callers and timers against the store (some refused)."""

    def __init__(self, store: RoutingStore, rng: random.Random) -> None:
        self.store = store
        self.rng = rng
        self.now = T0
        self.callers: list[str] = []

    def skills(self) -> dict[str, int]:
        chosen = self.rng.sample(SKILLS, self.rng.randint(1, 2))
        return {s: self.rng.randint(1, 2) for s in chosen}

    async def pick(self, *states: AgentState) -> str:
        """Mostly an agent in one of ``states`` (the request goes through), else any agent."""
        fitting = [a for a in AGENTS if (ag := await self.store.agent(a)) and ag.state in states]
        return self.rng.choice(fitting if fitting and self.rng.random() < 0.85 else AGENTS)

    async def gone_back(self, agent: str, call_id: str, now: float) -> None:
        """The agent's phone could not be reached, or a callback's customer did not answer."""
        if call_id.startswith("cb:") and self.rng.random() < 0.7:
            final = self.rng.random() < 0.2
            await self.store.callback_no_answer(call_id, agent, now, final=final)
        else:
            await self.store.agent_unreachable(call_id, agent, now)

    async def step(self) -> None:
        rng, store, now = self.rng, self.store, self.now
        action = rng.choice(
            ["login", "logout", "ready", "ready", "not_ready", "skills"]
            + ["answer", "answer", "answer", "complete", "complete"]
            + ["enqueue"] * 4
            + ["hangup", "hangup", "callback", "time", "time", "gone_back"]
        )
        fits = {
            "login": [AgentState.LOGGED_OUT],
            "logout": [AgentState.AVAILABLE, AgentState.NOT_READY, AgentState.WRAP_UP],
            "ready": [AgentState.NOT_READY, AgentState.WRAP_UP],
            "not_ready": [AgentState.AVAILABLE, AgentState.RESERVED, AgentState.WRAP_UP],
            "answer": [AgentState.RESERVED],
            "complete": [AgentState.ON_CALL],
            "gone_back": [AgentState.ON_CALL],
        }
        agent = await self.pick(*fits.get(action, []))
        try:
            if action == "login":
                await store.login(agent, skills=self.skills(), now=now, ready=rng.random() < 0.7)
            elif action == "logout":
                await store.logout(agent, now)
            elif action == "ready":
                await store.ready(agent, now)
            elif action == "not_ready":
                await store.not_ready(agent, rng.choice(["break", "lunch", "training"]), now)
            elif action == "skills":
                await store.set_skills(agent, self.skills(), now)
            elif action == "answer":
                held = await store.agent(agent)
                call_id = held.call_id if held and held.call_id else "nothing"
                if rng.random() < 0.8:
                    await store.accept(agent, call_id, now)
                    if rng.random() < 0.5:  # it does not get through after all
                        await self.gone_back(agent, call_id, now)
                else:
                    await store.reject(agent, call_id, now)
            elif action == "complete":
                await store.complete(agent, now)
            elif action == "gone_back":
                held = await store.agent(agent)
                await self.gone_back(agent, held.call_id if held else "nothing", now)
            elif action == "enqueue":
                call_id = f"c{len(self.callers)}"
                self.callers.append(call_id)
                skill = rng.choice(SKILLS)
                await store.enqueue(
                    NewCall(call_id, {skill: rng.randint(1, 2)}, priority=rng.randint(0, 1)), now
                )
            elif action == "hangup" and self.callers:
                await store.hangup(
                    rng.choice(self.callers + ["cb:" + c for c in self.callers]),
                    now,
                    agent_ringing=rng.random() < 0.5,  # a connected caller's phone rang still
                )
            elif action == "callback" and self.callers:
                call_id = rng.choice(self.callers)
                if rng.random() < 0.8:
                    await store.leave_for_callback(call_id, now)
                await store.add_callback(
                    callback(call_id, rng.choice(SKILLS)), now, from_call=call_id
                )
            elif action == "time":
                self.now += rng.choice([1.0, 3.0, 7.0, 16.0, 31.0])
                await store.tick(self.now)
        except RoutingError:
            pass  # refused (wrong state, already queued...): leaves nothing behind


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_snapshot_equals_its_recount_from_the_stream(store: RoutingStore, seed: int) -> None:
    for skill in SKILLS:
        config = QueueConfig(
            skill,
            reservation_timeout=10,
            wrap_up_seconds=15 if seed % 2 else 0,
            max_wait=60 if seed != 2 else 0,
            max_length=5 if seed == 3 else 0,
            callback_window=90,
        )
        await store.configure_queue(config, T0)
    floor = Floor(store, random.Random(seed))  # noqa: S311  (seeded for reproducible runs)
    live = LiveFold()  # folds the stream from the start
    view = LiveView(batch=5)  # reads the state mid-run, then follows the stream
    last = "-"
    for step in range(150):
        await floor.step()
        last = await fold_events(store, live, after=last)
        now = floor.now + 0.5
        got = await snapshot(store, now)
        assert got == live.snapshot(now)
        if step >= 40:
            await view.refresh(store)
            assert view.snapshot(now) == got

    # Every caller gone and every wrap-up over: each one that entered has exactly one outcome.
    for call_id in await store.call_ids():
        await store.hangup(call_id, floor.now)
    await store.tick(floor.now + 1000)
    final = await snapshot(store, floor.now + 1000)
    assert (final.overall.waiting, final.overall.offered, final.overall.connected) == (0, 0, 0)
    assert final.overall.agents.on_call == final.overall.agents.wrap_up == 0
    stats = interval_stats(await store.events())
    assert sum(s.offered for s in stats if s.skill is None) > 10
    for s in stats:
        outcomes = s.answered + s.abandoned + s.short_abandoned + s.timed_out + s.left_for_callback
        assert s.offered == outcomes, s
        assert s.callbacks_requested == (
            s.callbacks_connected + s.callbacks_expired + s.callbacks_cancelled + s.callbacks_failed
        ), s
        assert s.handled == s.answered + s.callbacks_connected, s
    by_skill = [s for s in stats if s.skill is not None]
    names = ("offered", "answered", "handled", "ronas", "rejects", "refused", "unreachable")
    for name in (*names, "callbacks_failed", "callback_attempts_failed"):
        assert sum(getattr(s, name) for s in by_skill) == sum(
            getattr(s, name) for s in stats if s.skill is None
        )
