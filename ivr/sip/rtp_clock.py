"""The shared send clock: every call's next RTP frame, every 20 ms, for all calls at once.

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

Two clocks keep that rule. :class:`SendClock` is an asyncio task: a round waits for whatever
the loop is doing, so a busy loop makes prompts late (at 400 calls on two shared cores, a round
in a hundred came 48 ms late). :class:`ThreadSendClock` (what a node runs, decision 0022) is a
thread of its own: it needs only the GIL, which a busy loop must give up within the switch
interval, and it sends with the GIL held (:mod:`ivr.sip.udp_send`), so a round is one piece.
Streams that may be called from that thread say so (``clock_thread_safe``, the SIP media and
bridges); the others (a Twilio Media Stream writes to a WebSocket) are called on the loop, once
per round, by a callback the thread posts.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import structlog

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

PERIOD = 0.020
"""The send clock's tick: one 20 ms frame per call per tick."""


class Clocked(Protocol):
    """Something the send clock drives: called once per due tick, with the tick's number.

    A class that may be called from :class:`ThreadSendClock`'s thread says so with a true
    ``clock_thread_safe`` class attribute (see :func:`on_clock_thread`); everything else is
    called on the event loop's thread, whichever clock drives it.
    """

    def send_tick(self, tick: int) -> None:
        """Send this tick's frame (or nothing)."""


def on_clock_thread(stream: Clocked) -> bool:
    """Whether `stream` may be driven from the clock's own thread."""
    return bool(getattr(stream, "clock_thread_safe", False))


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


class _Gauges:
    """The send-gap figures both clocks keep: gaps between rounds, time spent in a round."""

    def __init__(self, stats_window: int) -> None:
        self._gaps = _Ring(stats_window)
        self._busy = _Ring(stats_window)
        self._max_gap = 0.0
        self._rounds = 0
        self.skipped = 0
        self._last_round: float | None = None

    def record(self, start: float, end: float) -> None:
        if self._last_round is not None:
            gap = start - self._last_round
            self._gaps.add(gap)
            self._max_gap = max(self._max_gap, gap)
        self._last_round = start
        self._busy.add(end - start)
        self._rounds += 1

    def pause(self) -> None:
        """The clock stopped: the next round's gap is not a gap."""
        self._last_round = None

    def stats(self, streams: int) -> SendGapStats:
        gaps = self._gaps.sorted()
        busy = self._busy.sorted()
        return SendGapStats(
            ticks=self._rounds,
            p50_ms=1000 * _percentile(gaps, 0.50),
            p99_ms=1000 * _percentile(gaps, 0.99),
            max_ms=1000 * self._max_gap,
            busy_p99_ms=1000 * _percentile(busy, 0.99),
            skipped=self.skipped,
            streams=streams,
        )

    def reset(self) -> None:
        self._gaps.clear()
        self._busy.clear()
        self._max_gap = 0.0
        self._rounds = 0
        self.skipped = 0
        self._last_round = None


def _due(now: float, origin: float, period: float) -> int:
    """The latest tick due at `now`; the epsilon absorbs float error at exact wake-ups."""
    return math.floor((now - origin) / period + 1e-6)


def _send(streams: tuple[Clocked, ...], tick: int, registered: dict[Clocked, None]) -> None:
    for stream in streams:
        try:
            stream.send_tick(tick)
        except Exception:
            # One broken stream must not silence the others: drop it and say so.
            log.exception("media_stream_failed", tick=tick)
            registered.pop(stream, None)


class SendClock:
    """One asyncio task that sends every registered stream's next frame every 20 ms.

    `now` is its time source in seconds (default: the running loop's ``time()``, read when the
    clock starts) and `sleep(seconds)` waits on that time (default: ``asyncio.sleep``). Tests
    pass a virtual clock's pair; production runs :class:`ThreadSendClock`.
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
        self._gauges = _Gauges(stats_window)
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
            self._gauges.pause()

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
        return self._gauges.stats(len(self._streams))

    def reset_stats(self) -> None:
        """Start measuring afresh (e.g. once a benchmark's calls are all up)."""
        self._gauges.reset()

    def defer(self, callback: Callable[[_T], None], arg: _T) -> None:
        """Run ``callback(arg)`` on the loop: here, at once (the clock is the loop's)."""
        callback(arg)

    async def _run(self) -> None:
        clock = self._now or asyncio.get_running_loop().time
        period = self.period
        origin = clock() - self._tick * period  # resume numbering after a stop()
        while True:
            now = clock()
            due = _due(now, origin, period)
            if due >= self._tick:
                first = max(self._tick, due - self.max_catch_up + 1)
                self._gauges.skipped += first - self._tick
                for tick in range(first, due + 1):
                    _send(tuple(self._streams), tick, self._streams)
                self._tick = due + 1
                self._gauges.record(now, clock())
            await self._sleep(origin + self._tick * period - clock())


class ThreadSendClock:
    """The send clock as a thread of its own (see the module doc); the same interface as
    :class:`SendClock`, on ``time.monotonic`` (the loop's clock too).

    Streams with ``clock_thread_safe`` are called from the thread, the others on the loop:
    after each round the thread posts one callback that gives them the same ticks, in order.
    A stream is called by one thread only, so each keeps its own ordering guarantees.
    """

    def __init__(
        self, *, period: float = PERIOD, max_catch_up: int = 3, stats_window: int = 3000
    ) -> None:
        self.period = period
        """Seconds per tick."""
        self.max_catch_up = max_catch_up
        """Most ticks sent in one round when the thread was late (older ones are skipped)."""
        self._threaded: dict[Clocked, None] = {}  # insertion-ordered sets
        self._on_loop: dict[Clocked, None] = {}
        self._tick = 0
        self._gauges = _Gauges(stats_window)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deferred: list[tuple[Callable[[Any], None], Any]] = []

    @property
    def tick(self) -> int:
        """The number of the next tick to be sent."""
        return self._tick

    @property
    def running(self) -> bool:
        """Whether the clock's thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (inside a running loop, which gets the loop-bound streams);
        starting twice is harmless."""
        if self.running:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="send-clock", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop the thread and wait for it to end (at most one round); streams stay."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            await asyncio.to_thread(thread.join)
            self._gauges.pause()

    def add(self, stream: Clocked) -> None:
        """Send `stream`'s frames from the next tick on."""
        (self._threaded if on_clock_thread(stream) else self._on_loop)[stream] = None

    def remove(self, stream: Clocked) -> None:
        """Stop driving `stream` (no error if it was not registered).

        A round already under way in the thread may still call it once.
        """
        self._threaded.pop(stream, None)
        self._on_loop.pop(stream, None)

    def __len__(self) -> int:
        return len(self._threaded) + len(self._on_loop)

    def stats(self) -> SendGapStats:
        """Gap percentiles over the last `stats_window` rounds, max since the last reset."""
        return self._gauges.stats(len(self))

    def reset_stats(self) -> None:
        """Start measuring afresh (e.g. once a benchmark's calls are all up)."""
        self._gauges.reset()

    def defer(self, callback: Callable[[_T], None], arg: _T) -> None:
        """Run ``callback(arg)`` on the loop after this round (from a stream's ``send_tick``):
        one wake-up of the loop per round for all of them, not one per finished play."""
        self._deferred.append((callback, arg))

    def _run(self) -> None:
        period = self.period
        origin = time.monotonic() - self._tick * period
        stopping = self._stopping
        while not stopping.is_set():
            now = time.monotonic()
            due = _due(now, origin, period)
            if due >= self._tick:
                try:
                    self._round(now, due)
                except Exception:  # the clock must outlive any bug: log it, tick on
                    log.exception("send_clock_round_failed", tick=due)
                    self._tick = due + 1
            stopping.wait(max(0.0, origin + self._tick * period - time.monotonic()))

    def _round(self, now: float, due: int) -> None:
        first = max(self._tick, due - self.max_catch_up + 1)
        self._gauges.skipped += first - self._tick
        for tick in range(first, due + 1):
            # tuple() of a dict is one C call: the loop cannot change it half-way.
            _send(tuple(self._threaded), tick, self._threaded)
        self._tick = due + 1
        self._gauges.record(now, time.monotonic())
        deferred, self._deferred = self._deferred, []
        if (self._on_loop or deferred) and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing to run there
                self._loop.call_soon_threadsafe(self._loop_round, first, due, deferred)

    def _loop_round(
        self, first: int, last: int, deferred: list[tuple[Callable[[Any], None], Any]]
    ) -> None:
        for callback, arg in deferred:
            try:
                callback(arg)
            except Exception:
                log.exception("send_clock_callback_failed")
        for tick in range(first, last + 1):
            _send(tuple(self._on_loop), tick, self._on_loop)


AnyClock = SendClock | ThreadSendClock
"""Either send clock: what a stream or front end is given."""
