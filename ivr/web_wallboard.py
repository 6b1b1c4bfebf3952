"""The live wallboard: one `WallboardHub` per node follows routing's event stream and pushes the
figures to every browser over server-sent events (``/api/wallboard/stream``).

The hub reads routing's state once (`routing.stats.load`), then every `PERIOD` folds only the
new events, into the live state (`LiveFold`: waiting, longest wait, agents by state) and into
today's interval figures (`IntervalFold` from the start of the day: offered, answered,
abandoned, service level, ASA, AHT). It computes one board and hands the same JSON to every
open stream, so a hundred wallboards cost Redis what one does. The agent desktop's stream
(`ivr.web_desk`) rides on the same hub: it wakes on each board and looks up its own agent.

The same fold, started ``wallboard_chart_hours`` back (or at midnight, whichever is earlier),
draws the chart of the last hours, and the entry times folded beside it (`Arrivals`) tell a
surge (`ivr.wallboard_history`).

`board` is pure (figures in, JSON out) and holds the alert rules: a queue's longest wait over
``wallboard_longest_wait_alert``, its service level today under ``wallboard_sl_target``, and a
surge in calls offered (``wallboard_surge_*``), per queue and for all queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from ivr.settings import Settings
from ivr.wallboard_history import Arrivals, chart, surge
from ivr.web_api import ApiError
from routing import stats
from routing.store import RoutingStore

log = structlog.get_logger(__name__)

PERIOD = 0.5
"""Seconds between two refreshes: the figures a browser sees are at most this old (plus the
network)."""
DAY_OFFSET = 8 * 3600.0
"""The hotline's days start at midnight China Standard Time (UTC+8)."""
HEARTBEAT_SECONDS = 15.0
"""An SSE comment this often keeps proxies from closing a quiet stream."""
IDLE_SECONDS = 30.0
"""The hub stops following the stream this long after its last browser left."""


def day_start(now: float) -> float:
    """Midnight (UTC+8) of the day ``now`` falls in."""
    return (now + DAY_OFFSET) // 86400 * 86400 - DAY_OFFSET


@dataclass
class _Today:
    offered: int = 0
    answered: int = 0
    within: int = 0
    abandoned: int = 0
    timed_out: int = 0
    answer_wait: float = 0.0
    handle: float = 0.0
    handled: int = 0

    def add(self, row: stats.IntervalStats) -> None:
        self.offered += row.offered
        self.answered += row.answered
        self.within += row.answered_within[0] if row.answered_within else 0
        self.abandoned += row.abandoned
        self.timed_out += row.timed_out
        self.answer_wait += row.answer_wait
        self.handle += row.talk + row.wrap
        self.handled += row.handled

    def as_dict(self) -> dict[str, Any]:
        closed = self.answered + self.abandoned + self.timed_out
        return {
            "offered": self.offered,
            "answered": self.answered,
            "abandoned": self.abandoned,
            "service_level": _ratio(self.within, closed),
            "asa": _ratio(self.answer_wait, self.answered),
            "aht": _ratio(self.handle, self.handled),
        }


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 3) if whole else None


@dataclass
class _History:
    """What the hub folds besides the live state: the intervals (today's figures and the
    chart) and the entry times (surges). One pass over the stream feeds both."""

    intervals: stats.IntervalFold
    arrivals: Arrivals

    def apply(self, event: Any) -> None:
        self.intervals.apply(event)
        self.arrivals.apply(event)


def board(
    snapshot: stats.Snapshot,
    intervals: Iterable[stats.IntervalStats],
    since: float,
    *,
    longest_wait_alert: float,
    sl_target: float,
    settings: Settings | None = None,
    arrivals: Arrivals | None = None,
) -> dict[str, Any]:
    """The wallboard's JSON: live figures and today's (intervals starting at ``since``) per
    queue and overall, the agents with their time in state, the alerts, and (given
    ``settings``) the chart of the last hours (``history``) and surges among the alerts
    (given ``arrivals`` too)."""
    rows = list(intervals)
    today: dict[str | None, _Today] = {}
    for row in rows:
        if row.start >= since:
            today.setdefault(row.skill, _Today()).add(row)

    def queue(q: stats.QueueSnapshot) -> dict[str, Any]:
        live = q.as_dict()
        live["longest_wait"] = round(q.longest_wait, 1)
        live["oldest_callback"] = round(q.oldest_callback, 1)
        return {**live, "today": today.get(q.skill, _Today()).as_dict()}

    queues = [queue(q) for q in snapshot.queues]
    alerts = []
    for q in queues:
        if q["longest_wait"] > longest_wait_alert:
            alerts.append(
                {
                    "skill": q["skill"],
                    "alert": "longest-wait",
                    "value": q["longest_wait"],
                    "threshold": longest_wait_alert,
                }
            )
        level = q["today"]["service_level"]
        if level is not None and level < sl_target:
            alerts.append(
                {
                    "skill": q["skill"],
                    "alert": "service-level",
                    "value": level,
                    "threshold": sl_target,
                }
            )
    history = None
    if settings is not None:
        history = chart(rows, snapshot.now, hours=settings.wallboard_chart_hours)
        if arrivals is not None:
            alerts.extend(_surges(arrivals, snapshot.now, settings))
    return {
        "now": snapshot.now,
        "since": since,
        "history": history,
        "overall": queue(snapshot.overall),
        "queues": queues,
        "agents": [
            {**a.as_dict(), "in_state": round(a.in_state, 1)}
            for a in snapshot.agents
            if a.state.value != "logged_out"
        ],
        "alerts": alerts,
    }


def _surges(arrivals: Arrivals, now: float, settings: Settings) -> list[dict[str, Any]]:
    out = []
    window = settings.wallboard_surge_window_seconds
    for skill, times in sorted(arrivals.times.items(), key=lambda item: item[0] or ""):
        found = surge(
            times,
            now,
            window=window,
            baseline=settings.wallboard_chart_hours * 3600,
            factor=settings.wallboard_surge_factor,
            min_calls=settings.wallboard_surge_min_calls,
        )
        if found is not None:
            out.append(
                {
                    "skill": skill,
                    "alert": "surge",
                    "value": found.recent,
                    "threshold": found.threshold,
                    "baseline": found.baseline,
                    "window_seconds": window,
                }
            )
    return out


class WallboardHub:
    """Follows routing's stream for this node and fans the board out (see the module doc)."""

    def __init__(
        self, store: RoutingStore | None, clock: Callable[[], float], settings: Settings
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.board: dict[str, Any] | None = None
        """The latest board (None before the first refresh)."""
        self.snapshot: stats.Snapshot | None = None
        """The latest live snapshot."""
        self.agents: dict[str, stats.AgentStatus] = {}
        """The snapshot's agents by id (each desk stream looks up its own)."""
        self.version = 0
        """Bumped on each refresh."""
        self._live: stats.LiveFold | None = None
        self._live_last = "-"
        self._history: _History | None = None
        self._history_last = "-"
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._subscribers = 0
        self._idle_since = 0.0
        self.closing = False
        """Set at shutdown: open streams end."""

    async def refresh(self) -> None:
        """Fold the events since the last refresh and compute the board."""
        assert self.store is not None
        now = self.clock()
        if self._live is None:
            self._live, self._live_last = await stats.load(self.store)
        self._live_last = await stats.fold_events(self.store, self._live, self._live_last)
        day = day_start(now)
        span = self.settings.wallboard_chart_hours * 3600
        # Today's figures and the chart's hours: what is older than both can go.
        keep_from = min(day, now - span - self.settings.wallboard_surge_window_seconds)
        if self._history is None:
            # Stream ids start with Redis's clock in ms; a minute early is harmless (the fold
            # leaves out calls whose entry it did not see).
            self._history = _History(stats.IntervalFold(), Arrivals())
            self._history_last = f"{max(0, int((keep_from - 60) * 1000))}-0"
        history = self._history
        self._history_last = await stats.fold_events(self.store, history, self._history_last)
        history.intervals.close(keep_from)  # takes out the intervals no longer shown
        # Entry times (one per call) only as far back as the surge alert looks: its window and
        # the chart's hours before it; today's figures are in the intervals, not here.
        history.arrivals.forget(now - span - self.settings.wallboard_surge_window_seconds)
        self.snapshot = self._live.snapshot(now)
        self.agents = {a.agent_id: a for a in self.snapshot.agents}
        self.board = board(
            self.snapshot,
            history.intervals.intervals(),
            day,
            longest_wait_alert=self.settings.wallboard_longest_wait_alert,
            sl_target=self.settings.wallboard_sl_target,
            settings=self.settings,
            arrivals=history.arrivals,
        )
        self._publish()

    def _publish(self) -> None:
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.closing:
            if self._subscribers:
                self._idle_since = loop.time()
            elif loop.time() - self._idle_since > IDLE_SECONDS:
                break  # nobody watches: stop reading Redis; the next browser starts afresh
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                log.warning("wallboard refresh failed", error=str(exc))
                self._live = None  # read the state afresh once Redis is back
            await asyncio.sleep(PERIOD)
        self._live = self._history = None
        self.board = self.snapshot = None
        self._task = None

    def start(self) -> None:
        """Start following the stream (the first browser to open a stream starts it)."""
        if self.store is None:
            raise ApiError("routing-unavailable", "routing is not connected on this node", 503)
        if self._task is None:
            self._idle_since = asyncio.get_running_loop().time()
            self._task = asyncio.create_task(self._run(), name="wallboard")

    async def updates(self) -> AsyncIterator[int]:
        """Yields each new version until shutdown (at least every HEARTBEAT_SECONDS, so the
        caller can send a heartbeat)."""
        self.start()
        self._subscribers += 1
        try:
            while not self.closing:
                changed = self._changed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), HEARTBEAT_SECONDS)
                if self.closing:
                    return
                self.start()  # in case it stopped while this stream slept
                yield self.version
        finally:
            self._subscribers -= 1

    async def close(self) -> None:
        """Stop following the stream and end the open streams."""
        self.closing = True
        self._publish()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


HUB_KEY = web.AppKey("wallboard_hub", WallboardHub)


async def open_stream(request: web.Request) -> web.StreamResponse:
    """An SSE response, prepared."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        }
    )
    await response.prepare(request)
    return response


def event(data: Any) -> bytes:
    """One SSE message carrying ``data`` as JSON."""
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def wallboard_stream(request: web.Request) -> web.StreamResponse:
    """`GET /api/wallboard/stream`: the board as server-sent events, at each refresh."""
    hub = request.app[HUB_KEY]
    hub.start()
    response = await open_stream(request)
    sent = 0
    try:
        async for version in hub.updates():
            if version != sent and hub.board is not None:
                sent = version
                await response.write(event(hub.board))
            else:
                await response.write(b": heartbeat\n\n")
    except (ConnectionResetError, ConnectionError):
        pass  # the browser went away
    return response


async def wallboard_json(request: web.Request) -> web.Response:
    """`GET /api/wallboard`: the latest board (waits for the first refresh)."""
    hub = request.app[HUB_KEY]
    hub.start()
    if hub.board is None:
        async for _ in hub.updates():
            if hub.board is not None:
                break
    return web.json_response(hub.board, dumps=lambda v: json.dumps(v, ensure_ascii=False))


def add_wallboard_routes(
    app: web.Application,
    store: RoutingStore | None,
    clock: Callable[[], float],
    settings: Settings,
) -> None:
    """The wallboard endpoints; the hub stops at shutdown."""
    hub = WallboardHub(store, clock, settings)
    app[HUB_KEY] = hub

    async def stop(app: web.Application) -> None:
        await hub.close()

    app.on_shutdown.append(stop)
    app.router.add_get("/api/wallboard", wallboard_json)
    app.router.add_get("/api/wallboard/stream", wallboard_stream)
