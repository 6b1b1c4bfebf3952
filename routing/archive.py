"""Interval statistics kept in Redis, so trimming routing's event stream loses no history.

The stream is bounded (``events_max``): an interval report recounted from it alone forgets what
was trimmed. So nodes keep a fold (`stats.IntervalFold`) of the stream going in Redis:

- ``stats:fold`` holds the id of the last event folded and the fold's open part as JSON: the
  tallies of intervals still open, the callers and callbacks it follows, agents in wrap-up;
- each interval that can no longer change (`IntervalFold.close`: over, with none of its callers
  or callbacks still in routing or in wrap-up) is written once, per queue and for all queues, as
  a hash ``stats:<start>:<skill>`` (skill empty for all queues), listed in the zset
  ``stats:index``.

`IntervalArchive.run_once` folds the events since the last id and stores what closed, in one
MULTI watched on ``stats:fold``: nodes may run it at the same time (each node's pump does), one
of them wins and the others find nothing left to do; a node that restarts continues from the
stored fold. `report` answers an interval query from the closed hashes, plus the stored fold
brought up to date with the events after it (read only), which is exactly the recount of the
whole stream, trimmed or not, as long as the archive kept up with the trimming. A gap is logged
(`trimmed_after`): the last event folded is the watermark, looked up in the stream itself, the
same way on Redis 6.2 and 7. Figures depend on the fold's settings (interval length,
short-abandon time, service-level thresholds): a query with other settings is recounted from
the stream.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

import structlog
from redis.exceptions import WatchError

from routing.stats import (
    INTERVAL_SECONDS,
    READ_BATCH,
    SHORT_ABANDON_SECONDS,
    SL_THRESHOLDS,
    IntervalFold,
    IntervalStats,
)
from routing.store import RoutingStore

log = structlog.get_logger("routing.archive")

GRACE_SECONDS = 60.0
"""An interval closes this long after its end at the earliest: an event that counts when it
happens, written by a node whose clock lags, still finds it open."""

MAX_EVENTS_PER_STEP = 50_000
"""Events one transaction of `run_once` folds at most: a long backlog is taken in several short
transactions rather than one that other nodes' runs keep breaking."""

_FIXED = {"start", "length", "skill", "thresholds"}
"""`IntervalStats` fields that name a row rather than count."""


def _num(value: float) -> str:
    """A number as a key or field: integers without a fraction (``1800000000``)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _member(row: IntervalStats) -> str:
    return f"{_num(row.start)}|{row.skill or ''}"


def _flat(row: IntervalStats) -> dict[str, str]:
    """A row as its hash: every count, ``answered_within:<threshold>`` for each threshold."""
    out = {
        f.name: repr(getattr(row, f.name))
        for f in fields(row)
        if f.name not in _FIXED and f.name != "answered_within"
    }
    for threshold, n in zip(row.thresholds, row.answered_within, strict=True):
        out[f"answered_within:{_num(threshold)}"] = str(n)
    return out


def _row(member: str, stored: Mapping[str, str], fold: IntervalFold) -> IntervalStats:
    start, _, skill = member.partition("|")
    counts: dict[str, Any] = {}
    for f in fields(IntervalStats):
        if f.name in _FIXED or f.name == "answered_within":
            continue
        raw = stored.get(f.name, "0")
        counts[f.name] = float(raw) if isinstance(f.default, float) else int(raw)
    counts["answered_within"] = tuple(
        int(stored.get(f"answered_within:{_num(t)}", "0")) for t in fold.thresholds
    )
    return IntervalStats(
        float(start), fold.interval_seconds, skill or None, fold.thresholds, **counts
    )


def merged(a: IntervalStats, b: IntervalStats) -> IntervalStats:
    """Two parts of one interval's figures together (an interval counted anew after it closed,
    see `IntervalFold.close`): sums, and the longer of the two longest waits."""
    counts: dict[str, Any] = {}
    for f in fields(a):
        if f.name in _FIXED:
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "max_wait":
            counts[f.name] = max(x, y)
        elif f.name == "answered_within":
            counts[f.name] = tuple(i + j for i, j in zip(x, y, strict=True))
        else:
            counts[f.name] = x + y
    return replace(a, **counts)


def _stream_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


class IntervalArchive:
    """Keeps the closed intervals of one tenant in Redis (see the module doc)."""

    def __init__(
        self,
        store: RoutingStore,
        *,
        interval_seconds: float = INTERVAL_SECONDS,
        short_abandon_seconds: float = SHORT_ABANDON_SECONDS,
        sl_thresholds: tuple[float, ...] = SL_THRESHOLDS,
        grace_seconds: float = GRACE_SECONDS,
        max_events: int = MAX_EVENTS_PER_STEP,
    ) -> None:
        """The settings are those of a new archive; one already in Redis keeps its own."""
        self.store = store
        self.params = IntervalFold(
            interval_seconds=interval_seconds,
            short_abandon_seconds=short_abandon_seconds,
            sl_thresholds=sl_thresholds,
        ).params()
        """The settings of a new archive's fold (`IntervalFold.params`)."""
        self.grace_seconds = grace_seconds
        self.max_events = max_events

    async def run_once(self, now: float) -> int:
        """Fold the events since the last run (in steps of at most ``max_events``), store the
        intervals closed by ``now`` (minus the grace). Returns how many rows were stored; 0 also
        when another node's run came first (it does the work)."""
        total = 0
        while True:
            stored, more = await self._step(now)
            total += stored
            if not more:
                return total

    async def _step(self, now: float) -> tuple[int, bool]:
        """One transaction: rows stored, and whether events are left to fold."""
        store, keys = self.store, self.store.keys
        async with store.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(keys.stats_fold)
                last, raw = await pipe.hmget(keys.stats_fold, ["last", "state"])
                fold = IntervalFold.restore(json.loads(raw)) if raw else IntervalFold(**self.params)
                after = _text(last) if last else "-"
                await self._check_gap(after)
                folded = 0
                while folded < self.max_events:
                    batch = await store.events(after, min(READ_BATCH, self.max_events - folded))
                    for event in batch:
                        fold.apply(event)
                    if not batch:
                        break
                    folded += len(batch)
                    after = batch[-1].event_id
                closed = fold.close(now - self.grace_seconds)
                if folded == 0 and not closed:
                    return 0, False
                stored = await self._stored(pipe, closed, fold)  # watched: read at once
                # redis-py's asyncio Pipeline.multi carries no annotations.
                pipe.multi()  # type: ignore[no-untyped-call]
                for part in closed:
                    member = _member(part)
                    row = merged(stored[member], part) if member in stored else part
                    key = keys.stats_interval(_num(row.start), row.skill or "")
                    pipe.hset(key, items=[x for pair in _flat(row).items() for x in pair])
                    pipe.zadd(keys.stats_index, {member: row.start})
                state = json.dumps(fold.state(), separators=(",", ":"))
                pipe.hset(keys.stats_fold, items=["last", after, "state", state])
                await pipe.execute()
            except WatchError:
                return 0, False
        if closed:
            log.info("statistics intervals archived", rows=len(closed), events=folded)
        return len(closed), folded >= self.max_events

    async def _check_gap(self, after: str) -> None:
        """Log when the stream was trimmed past what the archive had folded."""
        await check_trimmed(self.store, after, "events trimmed before they were archived")

    async def _stored(
        self, pipe: Any, rows: list[IntervalStats], fold: IntervalFold
    ) -> dict[str, IntervalStats]:
        """Rows already stored for the intervals about to be (an interval counted anew)."""
        keys = self.store.keys
        members = [_member(row) for row in rows]
        if not members:
            return {}
        scores = await pipe.zmscore(keys.stats_index, members)
        out: dict[str, IntervalStats] = {}
        for member, score in zip(members, scores, strict=True):
            if score is not None:
                start, _, skill = member.partition("|")
                raw = await pipe.hgetall(keys.stats_interval(start, skill))
                out[member] = _row(member, _decoded(raw), fold)
        return out


async def trimmed_after(store: RoutingStore, after: str) -> str | None:
    """Whether events after the id ``after`` (the watermark: the last event the figures have
    folded; they rely on every later one) were trimmed from the stream before being folded.

    None when nothing after it can be missing; otherwise what the stream starts with now (its
    first id, empty when it is empty). Trimming (``MAXLEN``, ``XTRIM``) only ever cuts the head
    of the stream, so while the watermark entry is still in the stream nothing after it is gone;
    once it is gone too, the stream's first entry may or may not be the one that followed it,
    so this says "trimmed" (a trim that ended exactly at the watermark, which lost nothing, is
    reported too). The same on Redis 6.2 and 7: XINFO's ``max-deleted-entry-id`` (7.0) is
    moved by XDEL only, never by a trim, so it cannot tell.
    """
    if after == "-":
        return None
    redis, key = store.redis, store.keys.events
    if await redis.xrange(key, min=after, max=after, count=1):
        return None  # the watermark is still there: nothing after it was cut
    first = await redis.xrange(key, count=1)
    if not first:
        return ""
    start = _text(first[0][0])
    if _stream_id(start) <= _stream_id(after):
        return None  # older entries are still there: the watermark was deleted, not trimmed
    return start


async def check_trimmed(store: RoutingStore, after: str, message: str) -> bool:
    """Log ``message`` when `trimmed_after` finds events missing after ``after``; True then."""
    first = await trimmed_after(store, after)
    if first is None:
        return False
    log.warning(
        message,
        folded_to=after,
        stream_starts_at=first,
        hint="raise routing_events_max or run nodes' pumps more often",
    )
    return True


async def report(
    store: RoutingStore, since: float, params: Mapping[str, Any]
) -> list[IntervalStats] | None:
    """The intervals that ended after ``since``, from the archive: the closed ones as stored,
    the others from the stored fold brought up to date with the events after it (nothing is
    written). None when there is no archive yet, or it was kept with other ``params``
    (`IntervalFold.params`): the caller then recounts from the stream."""
    keys = store.keys
    last, raw = await store.redis.hmget(keys.stats_fold, ["last", "state"])
    if not raw:
        return None
    state = json.loads(raw)
    if state["params"] != dict(params):
        return None
    fold = IntervalFold.restore(state)
    after = _text(last) if last else "-"
    await check_trimmed(store, after, "events trimmed before the report could fold them")
    while True:
        batch = await store.events(after, READ_BATCH)
        for event in batch:
            fold.apply(event)
        if len(batch) < READ_BATCH:
            break
        after = batch[-1].event_id
    length = fold.interval_seconds
    members = [
        _text(m) for m in await store.redis.zrangebyscore(keys.stats_index, since - length, "+inf")
    ]
    pipe = store.redis.pipeline(transaction=False)
    for member in members:
        start, _, skill = member.partition("|")
        pipe.hgetall(keys.stats_interval(start, skill))
    rows = {
        (float(member.partition("|")[0]), member.partition("|")[2] or None): _row(
            member, _decoded(stored), fold
        )
        for member, stored in zip(members, await pipe.execute(), strict=True)
    }
    for row in fold.intervals():
        key = (row.start, row.skill)
        rows[key] = merged(rows[key], row) if key in rows else row
    return [
        rows[key]
        for key in sorted(rows, key=lambda k: (k[0], k[1] or ""))
        if key[0] + length > since
    ]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decoded(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}
