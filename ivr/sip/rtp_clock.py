"""The shared send clock: one asyncio task that sends every call's next RTP frame every 20 ms.

Tick *n* is due at ``t0 + n * 20 ms`` on the loop's clock — never ``sleep(0.02)`` in a loop,
which drifts by the work done in each round. A round that comes late sends the missed ticks
back to back, at most ``max_catch_up`` of them, and skips older ones (their RTP timestamps are
skipped too, so the peer's jitter buffer sees a gap, not a time warp). The gaps between rounds
are recorded: they are the outbound send-gap of the SIP benchmark.

The clock reads time and sleeps through two injectable functions (by default the running loop's
``time()`` and ``asyncio.sleep``), so tests drive it on virtual time and pin exact figures
instead of hoping the machine is fast enough.

One clock for all calls instead of a timer per call: 400 calls cost 50 wake-ups a second, not
20 000, and all calls' packets for a tick leave together.
"""

from __future__ import annotations

import asyncio
import math
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)

PERIOD = 0.020
"""The send clock's tick: one 20 ms frame per call per tick."""


class Clocked(Protocol):
    """Something the send clock drives: called once per due tick, with the tick's number."""

    def send_tick(self, tick: int) -> None:
        """Send this tick's frame (or nothing)."""


@dataclass(frozen=True)
class SendGapStats:
    """How regular the send clock was, over its recent ticks (the benchmark's send-gap)."""

    ticks: int
    """Loop rounds that sent at least one tick, since the last reset."""
    p50_ms: float
    """Median gap between two such rounds (ideal: 20.0)."""
    p99_ms: float
    """99th percentile gap."""
    max_ms: float
    """Largest gap since the last reset."""
    busy_p99_ms: float
    """99th percentile of the time one round spent sending for every stream."""
    skipped: int
    """Ticks dropped because the loop was more than `max_catch_up` ticks late."""
    streams: int
    """Streams registered now."""


def _percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted `values` (0.0 when empty)."""
    if not values:
        return 0.0
    rank = max(0, math.ceil(fraction * len(values)) - 1)
    return values[min(rank, len(values) - 1)]


class _Ring:
    """The last `size` float samples, bounded memory."""

    def __init__(self, size: int) -> None:
        self._values = array("d", bytes(8 * size))
        self._next = 0
        self._count = 0

    def add(self, value: float) -> None:
        self._values[self._next] = value
        self._next = (self._next + 1) % len(self._values)
        self._count = min(self._count + 1, len(self._values))

    def sorted(self) -> list[float]:
        return sorted(self._values[: self._count])

    def clear(self) -> None:
        self._next = self._count = 0


class SendClock:
    """One asyncio task that sends every registered stream's next frame every 20 ms.

    `now` is its time source in seconds (default: the running loop's ``time()``, read when the
    clock starts) and `sleep(seconds)` waits on that time (default: ``asyncio.sleep``). Tests
    pass a virtual clock's pair; production keeps the defaults.
    """

    def __init__(
        self,
        *,
        period: float = PERIOD,
        max_catch_up: int = 3,
        stats_window: int = 3000,
        now: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.period = period
        """Seconds per tick."""
        self.max_catch_up = max_catch_up
        """Most ticks sent in one round when the loop was late (older ones are skipped)."""
        self._streams: dict[Clocked, None] = {}  # insertion-ordered set
        self._task: asyncio.Task[None] | None = None
        self._tick = 0
        self._gaps = _Ring(stats_window)
        self._busy = _Ring(stats_window)
        self._max_gap = 0.0
        self._rounds = 0
        self._skipped = 0
        self._last_round: float | None = None
        self._now = now
        self._sleep = sleep

    @property
    def tick(self) -> int:
        """The number of the next tick to be sent."""
        return self._tick

    @property
    def running(self) -> bool:
        """Whether the clock task runs."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start ticking (inside a running loop); starting twice is harmless."""
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="send-clock")

    async def stop(self) -> None:
        """Stop ticking and wait for the task to end; streams stay registered."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # our caller is being cancelled, not just the clock
            self._last_round = None

    def add(self, stream: Clocked) -> None:
        """Send `stream`'s frames from the next tick on."""
        self._streams[stream] = None

    def remove(self, stream: Clocked) -> None:
        """Stop driving `stream` (no error if it was not registered)."""
        self._streams.pop(stream, None)

    def __len__(self) -> int:
        return len(self._streams)

    def stats(self) -> SendGapStats:
        """Gap percentiles over the last `stats_window` rounds, max since the last reset."""
        gaps = self._gaps.sorted()
        busy = self._busy.sorted()
        return SendGapStats(
            ticks=self._rounds,
            p50_ms=1000 * _percentile(gaps, 0.50),
            p99_ms=1000 * _percentile(gaps, 0.99),
            max_ms=1000 * self._max_gap,
            busy_p99_ms=1000 * _percentile(busy, 0.99),
            skipped=self._skipped,
            streams=len(self._streams),
        )

    def reset_stats(self) -> None:
        """Start measuring afresh (e.g. once a benchmark's calls are all up)."""
        self._gaps.clear()
        self._busy.clear()
        self._max_gap = 0.0
        self._rounds = 0
        self._skipped = 0
        self._last_round = None

    async def _run(self) -> None:
        time = self._now or asyncio.get_running_loop().time
        period = self.period
        origin = time() - self._tick * period  # resume numbering after a stop()
        while True:
            now = time()
            # The latest tick that is due; the epsilon absorbs float error at exact wake-ups.
            due = math.floor((now - origin) / period + 1e-6)
            if due >= self._tick:
                first = max(self._tick, due - self.max_catch_up + 1)
                self._skipped += first - self._tick
                for tick in range(first, due + 1):
                    self._send(tick)
                self._tick = due + 1
                self._record(now, time())
            await self._sleep(origin + self._tick * period - time())

    def _send(self, tick: int) -> None:
        for stream in tuple(self._streams):  # a callback may add or remove streams
            try:
                stream.send_tick(tick)
            except Exception:
                # One broken stream must not silence the others: drop it and say so.
                log.exception("media_stream_failed", tick=tick)
                self._streams.pop(stream, None)

    def _record(self, start: float, end: float) -> None:
        if self._last_round is not None:
            gap = start - self._last_round
            self._gaps.add(gap)
            self._max_gap = max(self._max_gap, gap)
        self._last_round = start
        self._busy.add(end - start)
        self._rounds += 1
