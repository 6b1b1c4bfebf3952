"""The shared send clock: drift-free ticks, catch-up after a stall, no stream harms another."""

from __future__ import annotations

import asyncio
import time

from structlog.testing import capture_logs

from ivr.sip.rtp_clock import SendClock


class Recorder:
    """A stream that notes the ticks it was asked for, and when."""

    def __init__(self, work: float = 0.0) -> None:
        self.ticks: list[int] = []
        self.times: list[float] = []
        self.work = work
        """Seconds of blocking work per tick (a busy loop)."""
        self.stall_at: dict[int, float] = {}
        """Tick -> seconds to block the loop on that tick."""

    def send_tick(self, tick: int) -> None:
        self.ticks.append(tick)
        self.times.append(asyncio.get_running_loop().time())
        block = self.work + self.stall_at.get(tick, 0.0)
        if block:
            time.sleep(block)  # stands in for CPU work on the event loop


async def test_ticks_every_20_ms_without_drift_despite_work_per_tick() -> None:
    clock = SendClock()
    # 6 ms of work per tick: a `sleep(0.02)` loop would tick every ~26 ms (38 a second).
    busy = Recorder(work=0.006)
    clock.add(busy)
    clock.start()
    await asyncio.sleep(1.0)
    await clock.stop()
    # 50 ticks in a second: sent, or (only if the machine stalled the loop) skipped.
    assert 48 <= len(busy.ticks) + clock.stats().skipped <= 52
    assert 19.0 <= clock.stats().p50_ms <= 21.0


async def test_a_stall_is_caught_up_by_sending_the_missed_ticks_back_to_back() -> None:
    clock = SendClock(max_catch_up=3)
    stream = Recorder()
    stream.stall_at[5] = 0.070  # the loop is blocked for 3.5 ticks
    clock.add(stream)
    clock.start()
    await asyncio.sleep(0.3)
    await clock.stop()
    assert stream.ticks == list(range(len(stream.ticks)))  # no tick lost
    assert clock.stats().skipped == 0
    # Ticks 6-8 were due during the stall and went out together right after it.
    assert stream.times[8] - stream.times[6] < 0.002
    assert clock.stats().max_ms >= 65


async def test_a_long_stall_skips_what_is_too_old() -> None:
    clock = SendClock(max_catch_up=3)
    stream = Recorder()
    stream.stall_at[5] = 0.130  # 6.5 ticks: only the latest 3 are worth sending
    clock.add(stream)
    clock.start()
    await asyncio.sleep(0.35)
    await clock.stop()
    assert stream.ticks[:6] == [0, 1, 2, 3, 4, 5]
    assert stream.ticks[6:9] == [9, 10, 11]
    assert clock.stats().skipped == 3


async def test_a_failing_stream_is_dropped_and_the_others_go_on() -> None:
    class Broken:
        def send_tick(self, tick: int) -> None:
            raise RuntimeError("boom")

    clock = SendClock()
    good = Recorder()
    clock.add(Broken())
    clock.add(good)
    with capture_logs() as logs:
        clock.start()
        await asyncio.sleep(0.1)
        await clock.stop()
    assert len(good.ticks) >= 4
    assert len(clock) == 1
    assert [e["event"] for e in logs] == ["media_stream_failed"]


async def test_streams_may_leave_and_join_from_inside_a_tick() -> None:
    clock = SendClock()
    late = Recorder()

    class Leaver:
        ticks = 0

        def send_tick(self, tick: int) -> None:
            self.ticks += 1
            clock.remove(self)
            clock.add(late)

    leaver = Leaver()
    clock.add(leaver)
    clock.start()
    await asyncio.sleep(0.1)
    await clock.stop()
    assert leaver.ticks == 1
    assert late.ticks[0] == 1  # joined from the next tick on


async def test_stop_and_start_resume_the_numbering() -> None:
    clock = SendClock()
    stream = Recorder()
    clock.add(stream)
    clock.start()
    clock.start()  # harmless
    await asyncio.sleep(0.07)
    await clock.stop()
    assert not clock.running
    stopped_at = clock.tick
    await asyncio.sleep(0.05)
    clock.start()
    await asyncio.sleep(0.05)
    await clock.stop()
    assert stream.ticks == list(range(len(stream.ticks)))
    assert len(stream.ticks) > stopped_at


async def test_stats_reset_and_idle_clock() -> None:
    clock = SendClock()
    assert clock.stats().ticks == 0
    assert clock.stats().p99_ms == 0.0
    clock.start()
    await asyncio.sleep(0.2)
    stats = clock.stats()
    assert 9 <= stats.ticks <= 11
    assert stats.streams == 0
    clock.reset_stats()
    assert clock.stats().ticks == 0
    await clock.stop()
