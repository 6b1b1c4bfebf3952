"""Interval statistics kept in Redis: the report after trimming the stream equals the recount of
the whole stream before it was trimmed."""

from __future__ import annotations

import asyncio
import json
import random

from redis.asyncio import Redis
from structlog.testing import capture_logs

from routing.archive import IntervalArchive, report, trimmed_after
from routing.errors import RoutingError
from routing.model import ItemKind, NewCall, QueueConfig
from routing.stats import IntervalFold, interval_stats
from routing.store import RoutingStore

T0 = 1_800_000_000.0  # a quarter hour starts here
Q = 900.0


def call(call_id: str, skill: str = "billing") -> NewCall:
    return NewCall(call_id, {skill: 1}, node_id="n1", request_id=1)


async def trim_all(store: RoutingStore) -> None:
    await store.redis.xtrim(store.keys.events, maxlen=0, approximate=False)
    assert await store.event_count() == 0


async def a_morning(store: RoutingStore) -> None:
    """Callers over three quarter hours: answered, abandoned, a RONA, a callback waiting long
    (its interval stays open), wrap-ups ending in the next interval."""
    await first_quarter(store)
    await later_on(store)


async def first_quarter(store: RoutingStore) -> None:
    await store.configure_queue(QueueConfig("billing", wrap_up_seconds=30), T0)
    await store.configure_queue(QueueConfig("fault", wrap_up_seconds=0), T0)
    await store.login("A1", skills={"billing": 1}, now=T0)
    await store.login("A2", skills={"fault": 1}, now=T0, ready=True)
    await store.enqueue(call("c1"), T0 + 10)
    await store.enqueue(call("f1", "fault"), T0 + 20)  # A2 at once
    await store.accept("A2", "f1", T0 + 25)
    await store.hangup("c1", T0 + 100)  # abandoned
    await store.complete("A2", T0 + 400)
    await store.add_callback(
        NewCall("cb:x", {"billing": 1}, kind=ItemKind.CALLBACK, number="13912345678"), T0 + 800
    )


async def later_on(store: RoutingStore) -> None:
    await store.enqueue(call("c2"), T0 + Q + 5)
    await store.ready("A1", T0 + Q + 10)  # offered the callback (first in line)
    await store.tick(T0 + Q + 30)  # RONA
    await store.ready("A1", T0 + Q + 40)
    await store.accept("A1", "cb:x", T0 + Q + 45)
    await store.complete("A1", T0 + Q + 145)
    await store.tick(T0 + Q + 175)  # wrap-up over; A1 takes c2
    await store.accept("A1", "c2", T0 + Q + 180)
    await store.complete("A1", T0 + 2 * Q + 60)
    await store.tick(T0 + 2 * Q + 90)


async def test_a_report_after_trimming_equals_the_recount_before(store: RoutingStore) -> None:
    archive = IntervalArchive(store)
    await first_quarter(store)
    # The first quarter is over, but the callback it counts is still in line: nothing closes.
    assert await archive.run_once(T0 + Q + 80) == 0
    stored = await store.redis.hget(store.keys.stats_fold, "state")
    assert list(json.loads(stored)["items"]) == ["cb:x"]  # the fold follows the callback
    await later_on(store)
    everything = interval_stats(await store.events())
    # Later both first quarters closed (the third is not over): all queues, billing, fault; and
    # all queues and billing (no fault caller) in the second.
    assert await archive.run_once(T0 + 2 * Q + 200) == 3 + 2
    await trim_all(store)

    got = await report(store, T0 - 1, IntervalFold().params())
    assert got == everything
    # Rows of the closed quarters are in Redis for good, the rest comes from the stored fold.
    members = await store.redis.zrange(store.keys.stats_index, 0, -1)
    assert sorted(members) == sorted(
        f"{int(row.start)}|{row.skill or ''}" for row in everything if row.start < T0 + 2 * Q
    )
    # Since a time: the intervals that ended after it.
    assert await report(store, T0 + Q + 1, IntervalFold().params()) == everything[3:]


async def test_the_fold_goes_on_after_a_trim_and_a_restart(store: RoutingStore) -> None:
    """What is open when the stream is trimmed (a caller waiting) closes later from the stored
    fold, with a new archive object (a node restarted)."""
    await store.login("A1", skills={"billing": 1}, now=T0)
    await store.enqueue(call("c1"), T0 + 10)
    await IntervalArchive(store).run_once(T0 + 20)
    await trim_all(store)
    await store.ready("A1", T0 + 2 * Q)  # offered c1, waiting since the first quarter
    await store.accept("A1", "c1", T0 + 2 * Q + 5)
    later = IntervalArchive(store)
    assert await later.run_once(T0 + 2 * Q + 30) == 0  # the caller is still talking
    await store.complete("A1", T0 + 2 * Q + 60)
    assert await later.run_once(T0 + 2 * Q + 65) == 0  # A1's wrap-up still counts for it
    await store.ready("A1", T0 + 2 * Q + 70)
    assert await later.run_once(T0 + 2 * Q + 200) == 2  # the first quarter: all and billing
    [overall, billing] = await report(store, T0, IntervalFold().params()) or []
    assert (billing.skill, billing.offered, billing.answered, billing.handled) == (
        "billing",
        1,
        1,
        1,
    )
    assert billing.answer_wait == 2 * Q - 5
    assert (billing.talk, billing.wrap) == (55.0, 10.0)
    assert overall.skill is None


async def test_nodes_archiving_at_once_count_each_interval_once(
    store: RoutingStore, redis_client: Redis
) -> None:
    await a_morning(store)
    everything = interval_stats(await store.events())
    others = [IntervalArchive(RoutingStore(redis_client, tenant="t1")) for _ in range(4)]
    done = await asyncio.gather(*(a.run_once(T0 + 3 * Q + 100) for a in others))
    assert sum(done) == len(everything)  # one of them stored every row, the others none
    await trim_all(store)
    assert await report(store, T0 - 1, IntervalFold().params()) == everything


async def test_no_archive_or_other_settings_mean_a_recount(store: RoutingStore) -> None:
    await a_morning(store)
    assert await report(store, T0, IntervalFold().params()) is None
    await IntervalArchive(store).run_once(T0 + 3 * Q)
    other = IntervalFold(sl_thresholds=(20.0, 30.0)).params()
    assert await report(store, T0, other) is None


async def test_random_days_trimmed_at_random_moments(store: RoutingStore) -> None:
    """Random callers over hours; the stream trimmed to a few entries after each archive run:
    the report still equals the recount of everything."""
    rng = random.Random(4)  # noqa: S311 - seeded for a reproducible day
    archive = IntervalArchive(store, max_events=7)  # small steps: several runs per backlog
    everything = []
    for skill in ("billing", "fault"):  # callers give up after 10 minutes: intervals close
        await store.configure_queue(QueueConfig(skill, max_wait=600), T0)
    for agent in ("A1", "A2", "A3"):
        await store.login(agent, skills={"billing": 1, "fault": 1}, now=T0, ready=True)
    now, stored = T0, 0
    for i in range(120):
        now += rng.choice([5.0, 30.0, 90.0, 200.0])
        agent = rng.choice(["A1", "A2", "A3"])
        state = await store.agent(agent)
        assert state is not None
        try:
            if state.state == "reserved":
                await store.accept(agent, state.call_id, now)
            elif state.state == "on_call":
                await store.complete(agent, now)
            else:
                await store.enqueue(call(f"c{i}", rng.choice(["billing", "fault"])), now)
        except RoutingError:
            pass  # a refused request is part of the game
        await store.tick(now)
        everything.extend(await store.events(everything[-1].event_id if everything else "-"))
        if rng.random() < 0.3:
            stored += await archive.run_once(now)
            await store.redis.xtrim(store.keys.events, maxlen=rng.randint(0, 3), approximate=False)
    stored += await archive.run_once(now)
    assert stored > 10
    assert await report(store, T0 - 1, IntervalFold().params()) == interval_stats(everything)


async def test_a_node_whose_clock_lags_adds_to_a_closed_interval(store: RoutingStore) -> None:
    """An interval counted anew after it closed (a node's clock far behind) adds up with what
    was stored: the report still equals the recount."""
    archive = IntervalArchive(store, grace_seconds=0)
    await store.login("A1", skills={"billing": 1}, now=T0, ready=True)
    await store.enqueue(call("c1"), T0 + 10)
    await store.accept("A1", "c1", T0 + 30)
    await store.complete("A1", T0 + 90)
    await store.ready("A1", T0 + 100)
    assert await archive.run_once(T0 + Q) == 2
    # A lagging node puts a caller in line "during" the closed quarter; it is answered.
    await store.enqueue(call("late"), T0 + 50)
    await store.accept("A1", "late", T0 + Q + 10)
    await store.complete("A1", T0 + Q + 70)
    await store.ready("A1", T0 + Q + 80)
    everything = interval_stats(await store.events())
    assert await archive.run_once(T0 + 2 * Q) == 2
    await trim_all(store)
    got = await report(store, T0 - 1, IntervalFold().params())
    assert got == everything
    assert (got[1].offered, got[1].answered, got[1].handled) == (2, 2, 2)


async def test_a_trim_past_the_archive_is_logged_on_both_servers(store: RoutingStore) -> None:
    """The last event folded is the watermark: a trim that keeps it (and so everything after
    it) is fine; one that took it and what followed is logged, on Redis 6.2 as on 7, by the
    archive and by a report."""
    archive = IntervalArchive(store)
    await store.login("A1", skills={"billing": 1}, now=T0)
    await store.enqueue(call("c1"), T0 + 10)
    await archive.run_once(T0 + 20)
    watermark = await store.redis.hget(store.keys.stats_fold, "last")
    assert await trimmed_after(store, watermark) is None
    await store.enqueue(call("c2"), T0 + 30)
    await store.enqueue(call("c3"), T0 + 40)
    # Keep the watermark and the two events after it.
    await store.redis.xtrim(store.keys.events, maxlen=3, approximate=False)
    assert await trimmed_after(store, watermark) is None
    with capture_logs() as logs:
        await archive.run_once(T0 + 50)
    assert not [e for e in logs if e["log_level"] == "warning"]

    watermark = await store.redis.hget(store.keys.stats_fold, "last")
    await store.enqueue(call("c4"), T0 + 60)
    await store.enqueue(call("c5"), T0 + 70)
    await store.enqueue(call("c6"), T0 + 80)
    await store.redis.xtrim(store.keys.events, maxlen=1, approximate=False)  # c4, c5 gone
    [(first, _)] = await store.redis.xrange(store.keys.events)
    assert await trimmed_after(store, watermark) == first
    with capture_logs() as logs:
        await report(store, T0, IntervalFold().params())
        await archive.run_once(T0 + 90)
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["event"] for e in warnings] == [
        "events trimmed before the report could fold them",
        "events trimmed before they were archived",
    ]
    assert (warnings[1]["folded_to"], warnings[1]["stream_starts_at"]) == (watermark, first)
    # The archive went on from there: the next run finds nothing missing.
    with capture_logs() as logs:
        await archive.run_once(T0 + 100)
    assert not [e for e in logs if e["log_level"] == "warning"]

    await trim_all(store)  # an empty stream after the watermark: what followed it is gone
    assert await trimmed_after(store, first) == ""
