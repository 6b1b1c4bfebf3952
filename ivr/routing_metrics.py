"""Routing's figures as Prometheus metrics: callers waiting and the longest wait per queue,
agents by state, assignments (offers) and reservation timeouts (RONA) per queue.

Refreshed when `/metrics` is scraped: routing's state is read once (`routing.stats.load`), then
each scrape folds only the events since (`fold_events`), so a scrape costs Redis a short XRANGE.
The figures are the tenant's, not this node's: every node exports the same values, so the
dashboard takes ``max`` across nodes (never ``sum``). The counters count from the first scrape
of this process on (Prometheus's ``rate`` and ``increase`` handle the restart).
"""

from __future__ import annotations

import time

import structlog
from redis.exceptions import RedisError

from ivr import metrics
from routing.events import EventType, RoutingEvent
from routing.model import AgentState
from routing.stats import LiveFold, fold_events, load
from routing.store import RoutingStore

log = structlog.get_logger(__name__)

FAILURE_LOG_EVERY = 60.0
"""At most one log line per this many seconds while Redis cannot be read for the metrics."""


class _Counting:
    """The live fold, plus the assignment and reservation-timeout counters."""

    def __init__(self, live: LiveFold) -> None:
        self.live = live

    def apply(self, event: RoutingEvent) -> None:
        self.live.apply(event)
        if event.type is EventType.OFFER:
            metrics.ROUTING_ASSIGNMENTS.labels(queue=event.fields.get("skill", "")).inc()
        elif event.type is EventType.RONA:
            metrics.ROUTING_RESERVATION_TIMEOUTS.labels(queue=event.fields.get("skill", "")).inc()


class RoutingMetrics:
    """Keeps the routing gauges and counters of `ivr.metrics` current (see the module doc)."""

    def __init__(self) -> None:
        self._fold: _Counting | None = None
        self._last = "-"
        self._last_failure_log = 0.0
        self._queues: set[str] = set()

    async def refresh(self, store: RoutingStore, now: float) -> bool:
        """Catch up with routing and set the gauges for ``now``; False if Redis failed (the
        metrics keep their last values, and the scrape still answers)."""
        try:
            if self._fold is None:
                live, last = await load(store)
                self._fold, self._last = _Counting(live), last
            self._last = await fold_events(store, self._fold, self._last)
        except (RedisError, OSError) as exc:
            mono = time.monotonic()
            if mono - self._last_failure_log >= FAILURE_LOG_EVERY:
                self._last_failure_log = mono
                log.warning("routing metrics not refreshed", error=str(exc))
            return False
        snap = self._fold.live.snapshot(now)
        seen: set[str] = set()
        for queue in snap.queues:
            name = queue.skill or ""
            seen.add(name)
            metrics.ROUTING_WAITING.labels(queue=name).set(queue.waiting)
            metrics.ROUTING_LONGEST_WAIT.labels(queue=name).set(queue.longest_wait)
        for gone in self._queues - seen:  # a queue routing forgot: its series go too
            metrics.ROUTING_WAITING.remove(gone)
            metrics.ROUTING_LONGEST_WAIT.remove(gone)
        self._queues = seen
        counts = snap.overall.agents
        by_state = {
            AgentState.AVAILABLE.value: counts.available,
            AgentState.RESERVED.value: counts.reserved,
            AgentState.ON_CALL.value: counts.on_call,
            AgentState.WRAP_UP.value: counts.wrap_up,
            AgentState.NOT_READY.value: sum(counts.not_ready.values()),
        }
        for state, count in by_state.items():
            metrics.ROUTING_AGENTS.labels(state=state).set(count)
        return True
