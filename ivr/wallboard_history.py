"""The wallboard's look back: the chart of the last hours and the surge alert (pure: time is an
argument, figures in, JSON out).

- **Chart**: calls offered, answered and abandoned per 15-minute interval, per queue and for
  all queues, over ``wallboard_chart_hours``. The figures are `routing.stats.IntervalStats`
  from the same `IntervalFold` (same settings) that ``GET /api/stats/intervals`` answers with,
  so a bar and the interval report never disagree; empty intervals are zeros, not gaps.
- **Surge**: calls offered in the last ``window`` seconds against the average of the same
  window over the ``baseline`` seconds before it. A surge needs both more than ``factor`` times
  that average and at least ``min_calls`` (a quiet night's three calls after none is no surge).
  `Arrivals` keeps the entry times it needs, folded from routing's event stream.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from routing.events import EventType, RoutingEvent
from routing.model import ItemKind
from routing.stats import INTERVAL_SECONDS, IntervalStats

SERIES = ("offered", "answered", "abandoned")
"""The chart's figures, per interval."""


@dataclass(frozen=True)
class Surge:
    """A surge in calls offered."""

    recent: int
    """Calls offered in the window."""
    baseline: float
    """The window's average count over the baseline span before it."""
    threshold: float
    """What ``recent`` exceeded: the larger of ``factor`` x ``baseline`` and the minimum."""


def surge(
    arrivals: Iterable[float],
    now: float,
    *,
    window: float,
    baseline: float,
    factor: float,
    min_calls: int,
) -> Surge | None:
    """A `Surge` when the calls offered (entry times ``arrivals``) in ``(now - window, now]``
    exceed ``factor`` times the average per window over ``(now - window - baseline, now -
    window]`` and are at least ``min_calls``; None otherwise."""
    if window <= 0 or baseline <= 0:
        raise ValueError("window and baseline must be positive")
    recent = earlier = 0
    for t in arrivals:
        if now - window < t <= now:
            recent += 1
        elif now - window - baseline < t <= now - window:
            earlier += 1
    average = earlier * window / baseline
    if recent < min_calls or recent <= factor * average:
        return None
    return Surge(recent, round(average, 2), round(max(factor * average, min_calls - 1), 2))


@dataclass
class Arrivals:
    """Entry times of calls (not callbacks) per queue, folded from the event stream; for
    `surge`. `forget` drops what no window will look at again."""

    times: dict[str | None, array[float]] = field(default_factory=dict)
    """Sorted entry times per skill; None for all queues. Packed doubles: 8 bytes a call and
    queue, where a list would hold a 24-byte float object too (at 100 calls a minute over a
    4-hour chart and 5-minute window, 24,500 calls: 0.4 MB instead of 1 MB)."""

    def apply(self, event: RoutingEvent) -> None:
        """Fold one event in."""
        if event.type is not EventType.ENTERQUEUE:
            return
        fields = event.fields
        if fields.get("kind", ItemKind.CALL) != ItemKind.CALL:
            return
        for key in (fields.get("skill"), None):
            # Nodes' clocks differ a little: keep the order by time, not by arrival.
            bisect.insort(self.times.setdefault(key, array("d")), event.t)

    def forget(self, before: float) -> None:
        """Drop entry times at or before ``before``."""
        for times in self.times.values():
            del times[: bisect.bisect_right(times, before)]


def interval_starts(now: float, hours: float, length: float) -> list[float]:
    """The chart's intervals: the last ``hours`` up to and with the one holding ``now``."""
    last = math.floor(now / length) * length
    count = max(1, math.ceil(hours * 3600 / length))
    return [last - length * i for i in range(count - 1, -1, -1)]


def chart(
    rows: Iterable[IntervalStats], now: float, *, hours: float, length: float = INTERVAL_SECONDS
) -> dict[str, Any]:
    """The chart's JSON: ``starts`` (interval starts), and per series the values aligned with
    them, for all queues (``overall``) and per queue (``queues``, by skill). ``rows`` of
    another length than ``length`` are not shown."""
    starts = interval_starts(now, hours, length)
    index = {start: i for i, start in enumerate(starts)}

    def empty() -> dict[str, list[int]]:
        return {name: [0] * len(starts) for name in SERIES}

    overall = empty()
    queues: dict[str, dict[str, list[int]]] = {}
    for row in rows:
        i = index.get(row.start)
        if i is None or row.length != length:
            continue
        series = overall if row.skill is None else queues.setdefault(row.skill, empty())
        for name in SERIES:
            series[name][i] = getattr(row, name)
    return {
        "interval_seconds": length,
        "starts": starts,
        "overall": overall,
        "queues": dict(sorted(queues.items())),
    }
