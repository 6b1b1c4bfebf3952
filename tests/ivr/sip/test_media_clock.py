"""The shared send clock: drift-free ticks, catch-up after a stall, no stream harms another.

All but the last test run the clock on virtual time, so they pin exact figures (how many ticks,
which ones were skipped, how long a gap was) whatever the machine's load. How regular the clock
is on real time is measured by bench/sip_load, not asserted here.
"""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from ivr.sip.rtp_clock import SendClock

START = 1000.0
"""Virtual seconds when a test begins (not 0, like a loop's clock)."""


def ms(value: float) -> object:
    """Exactly `value` milliseconds, up to the float rounding of seconds subtracted."""
    return pytest.approx(value, abs=1e-6)


class VirtualTime:
    """Time for a SendClock that moves only when the clock sleeps or a stream stalls.

    Kept in whole nanoseconds, so the sum of many 20 ms sleeps lands exactly on a tick's
    boundary instead of a hair before or after it.
    """

    def __init__(self, start: float = START) -> None:
        self._ns = round(start * 1e9)

    def now(self) -> float:
        """The clock's time source."""
        return self._ns / 1e9

    def advance(self, seconds: float) -> None:
        """Time passes at once (a stall of the loop, or a pause while the clock is stopped)."""
        self._ns += max(0, round(seconds * 1e9))

    async def sleep(self, seconds: float) -> None:
        """The clock's sleep: time moves on by `seconds` (a late round's negative wait is no
        wait), then every other ready task runs once, as on a real wake-up."""
        self.advance(seconds)
        await asyncio.sleep(0)

    async def run_for(self, seconds: float) -> None:
        """Let the running clock tick until `seconds` of virtual time have passed."""
        until = self._ns + round(seconds * 1e9)
        for _ in range(100_000):
            if self._ns >= until:
                return
            await asyncio.sleep(0)
        raise AssertionError("virtual time stands still: is the clock running?")


def virtual_clock(**kwargs: int) -> tuple[VirtualTime, SendClock]:
    """A SendClock on its own virtual time."""
    time = VirtualTime()
    return time, SendClock(now=time.now, sleep=time.sleep, **kwargs)


class Recorder:
    """A stream that notes the ticks it was asked for, and when (in virtual time)."""

    def __init__(self, time: VirtualTime, work: float = 0.0) -> None:
        self.time = time
        self.ticks: list[int] = []
        self.times: list[float] = []
        self.work = work
        """Seconds of loop time each tick costs (CPU work on the event loop)."""
        self.stall_at: dict[int, float] = {}
        """Tick -> seconds the loop is blocked on that tick."""

    def send_tick(self, tick: int) -> None:
        self.ticks.append(tick)
        self.times.append(self.time.now())
        self.time.advance(self.work + self.stall_at.get(tick, 0.0))


async def test_ticks_every_20_ms_without_drift_despite_work_per_tick() -> None:
    time, clock = virtual_clock()
    # 6 ms of work per tick: a `sleep(0.02)` loop would tick every 26 ms (385 in 10 s).
    busy = Recorder(time, work=0.006)
    clock.add(busy)
    clock.start()
    await time.run_for(10.0)
    await clock.stop()
    assert busy.ticks == list(range(500))  # 50 a second, none skipped
    # Tick n leaves at exactly START + n * 20 ms: the work does not add up.
    assert busy.times == [pytest.approx(START + n * 0.020, abs=1e-9) for n in range(500)]
    stats = clock.stats()
    assert stats.ticks == 500
    assert stats.p50_ms == ms(20.0)
    assert stats.p99_ms == ms(20.0)
    assert stats.max_ms == ms(20.0)
    assert stats.busy_p99_ms == ms(6.0)
    assert stats.skipped == 0
    assert stats.streams == 1


async def test_a_stall_is_caught_up_by_sending_the_missed_ticks_back_to_back() -> None:
    time, clock = virtual_clock(max_catch_up=3)
    stream = Recorder(time)
    stream.stall_at[5] = 0.070  # the loop is blocked for 3.5 ticks
    clock.add(stream)
    clock.start()
    await time.run_for(0.3)
    await clock.stop()
    assert stream.ticks == list(range(15))  # no tick lost
    # Ticks 6-8 were due during the stall and went out together right after it (at 170 ms).
    assert stream.times[6] == stream.times[7] == stream.times[8]
    assert stream.times[8] - START == pytest.approx(0.170, abs=1e-9)
    # And tick 9 is back on the grid.
    assert stream.times[9] - START == pytest.approx(0.180, abs=1e-9)
    stats = clock.stats()
    assert stats.skipped == 0
    assert stats.max_ms == ms(70.0)
    assert stats.busy_p99_ms == ms(70.0)
    assert stats.ticks == 13  # rounds: 15 ticks, three of them in one round


async def test_a_long_stall_skips_what_is_too_old() -> None:
    time, clock = virtual_clock(max_catch_up=3)
    stream = Recorder(time)
    stream.stall_at[5] = 0.130  # 6.5 ticks: only the latest 3 are worth sending
    clock.add(stream)
    clock.start()
    await time.run_for(0.35)
    await clock.stop()
    assert stream.ticks == [0, 1, 2, 3, 4, 5, 9, 10, 11, 12, 13, 14, 15, 16, 17]
    assert stream.times[6] - START == pytest.approx(0.230, abs=1e-9)  # 9-11 together
    assert stream.times[8] == stream.times[6]
    assert clock.stats().skipped == 3  # ticks 6, 7 and 8
    assert clock.stats().max_ms == ms(130.0)
    assert clock.tick == 18


async def test_a_failing_stream_is_dropped_and_the_others_go_on() -> None:
    class Broken:
        def send_tick(self, tick: int) -> None:
            raise RuntimeError("boom")

    time, clock = virtual_clock()
    good = Recorder(time)
    clock.add(Broken())
    clock.add(good)
    with capture_logs() as logs:
        clock.start()
        await time.run_for(0.1)
        await clock.stop()
    assert good.ticks == [0, 1, 2, 3, 4]
    assert len(clock) == 1
    assert [(e["event"], e["tick"]) for e in logs] == [("media_stream_failed", 0)]


async def test_streams_may_leave_and_join_from_inside_a_tick() -> None:
    time, clock = virtual_clock()
    late = Recorder(time)

    class Leaver:
        ticks = 0

        def send_tick(self, tick: int) -> None:
            self.ticks += 1
            clock.remove(self)
            clock.add(late)

    leaver = Leaver()
    clock.add(leaver)
    clock.start()
    await time.run_for(0.1)
    await clock.stop()
    assert leaver.ticks == 1
    assert late.ticks == [1, 2, 3, 4]  # joined from the next tick on


async def test_stop_and_start_resume_the_numbering() -> None:
    time, clock = virtual_clock()
    stream = Recorder(time)
    clock.add(stream)
    clock.start()
    clock.start()  # harmless
    await time.run_for(0.07)
    await clock.stop()
    assert not clock.running
    assert stream.ticks == [0, 1, 2, 3]
    assert clock.tick == 4
    time.advance(0.05)  # stopped: nothing is sent, nothing is due
    restarted = time.now()
    clock.start()
    await time.run_for(0.05)
    await clock.stop()
    # The next tick goes at once, then on a new grid; the stopped time is neither caught up
    # nor counted as skipped.
    assert stream.ticks == [0, 1, 2, 3, 4, 5, 6]
    assert stream.times[4] == restarted
    assert clock.stats().skipped == 0


async def test_stats_reset_and_idle_clock() -> None:
    time, clock = virtual_clock()
    assert clock.stats().ticks == 0
    assert clock.stats().p99_ms == 0.0
    clock.start()
    await time.run_for(0.2)
    stats = clock.stats()
    assert stats.ticks == 10
    assert stats.p50_ms == ms(20.0)
    assert stats.streams == 0
    clock.reset_stats()
    stats = clock.stats()
    assert (stats.ticks, stats.p50_ms, stats.p99_ms, stats.max_ms) == (0, 0.0, 0.0, 0.0)
    await time.run_for(0.1)
    stats = clock.stats()
    assert stats.ticks == 5
    assert stats.max_ms == ms(20.0)  # the first round after a reset has no gap to measure
    await clock.stop()


async def test_on_real_time_the_clock_ticks_and_stops() -> None:
    """The defaults (the loop's time and asyncio.sleep), asserting only what any machine
    gives: a loaded one may skip ticks, never repeat or reorder them."""

    ticks: list[int] = []

    class Stream:
        def send_tick(self, tick: int) -> None:
            ticks.append(tick)

    clock = SendClock()
    clock.add(Stream())
    clock.start()
    await asyncio.sleep(0.2)
    await clock.stop()
    assert not clock.running
    assert ticks[0] == 0  # the first tick goes as the clock starts
    assert ticks == sorted(set(ticks))
    # Every number up to the last was either sent or counted as skipped.
    assert len(ticks) + clock.stats().skipped == ticks[-1] + 1 == clock.tick
    assert clock.stats().ticks >= 1
