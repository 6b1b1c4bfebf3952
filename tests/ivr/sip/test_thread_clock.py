"""ThreadSendClock: the node's send clock as a thread of its own, on real time.

What is pinned here is who calls what, in which order, and that a busy event loop does not stop
the clock; how regular it is under load is measured by bench/sip_load.py, not asserted.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from structlog.testing import capture_logs

from ivr.sip.rtp_clock import ThreadSendClock


class Recorder:
    """A stream that notes each tick and the thread it was called on."""

    clock_thread_safe = False

    def __init__(self) -> None:
        self.ticks: list[int] = []
        self.threads: set[int] = set()
        self.times: list[float] = []

    def send_tick(self, tick: int) -> None:
        self.ticks.append(tick)
        self.threads.add(threading.get_ident())
        self.times.append(time.monotonic())


class ThreadRecorder(Recorder):
    clock_thread_safe = True


async def run(clock: ThreadSendClock, seconds: float) -> None:
    clock.start()
    try:
        await asyncio.sleep(seconds)
    finally:
        await clock.stop()


async def wait_for_ticks(*streams: Recorder, count: int = 5) -> None:
    async with asyncio.timeout(5):
        while min(len(s.ticks) for s in streams) < count:  # noqa: ASYNC110 - real time
            await asyncio.sleep(0.01)


async def test_thread_safe_streams_run_on_the_clock_thread_the_others_on_the_loop() -> None:
    clock = ThreadSendClock()
    media, twilio = ThreadRecorder(), Recorder()
    clock.add(media)
    clock.add(twilio)
    assert len(clock) == 2
    clock.start()
    try:
        assert clock.running
        await wait_for_ticks(media, twilio, count=10)
    finally:
        await clock.stop()
    assert not clock.running
    loop_thread = threading.get_ident()
    assert media.threads
    assert loop_thread not in media.threads
    assert twilio.threads == {loop_thread}
    for stream in (media, twilio):  # every tick once, in order, no gap (nothing was late)
        assert stream.ticks == sorted(set(stream.ticks))
    # The loop-bound stream gets the same ticks as the thread's, a round later at most.
    assert set(twilio.ticks) <= set(media.ticks)
    assert len(media.ticks) - len(twilio.ticks) <= clock.max_catch_up


async def test_a_busy_event_loop_does_not_stop_the_clock() -> None:
    """The loop computes for 0.4 s without awaiting (a burst of call set-ups, a slow handler):
    the asyncio clock would send nothing meanwhile; the thread goes on."""
    clock = ThreadSendClock()
    media = ThreadRecorder()
    clock.add(media)
    clock.start()
    try:
        await wait_for_ticks(media, count=3)
        start = time.monotonic()
        total = 0
        while time.monotonic() - start < 0.4:  # CPU-bound, holding the GIL but for switches
            total += sum(range(1000))
        end = time.monotonic()
        during = [t for t in media.times if start < t < end]
    finally:
        await clock.stop()
    assert total > 0
    # 20 ticks were due; a loaded machine may lose some, but far from all of them.
    assert len(during) >= 5, f"only {len(during)} ticks while the loop was busy"


async def test_a_failing_stream_is_dropped_and_the_others_go_on() -> None:
    class Broken(ThreadRecorder):
        def send_tick(self, tick: int) -> None:
            super().send_tick(tick)
            raise RuntimeError("boom")

    clock = ThreadSendClock()
    broken, healthy = Broken(), ThreadRecorder()
    clock.add(broken)
    clock.add(healthy)
    with capture_logs() as logs:
        clock.start()
        try:
            await wait_for_ticks(healthy, count=10)
        finally:
            await clock.stop()
    assert len(broken.ticks) == 1
    assert len(clock) == 1
    assert [e["event"] for e in logs].count("media_stream_failed") == 1


async def test_deferred_callbacks_run_on_the_loop_once_each_in_order() -> None:
    clock = ThreadSendClock()
    seen: list[tuple[int, int]] = []
    loop_thread = threading.get_ident()

    class Finisher(ThreadRecorder):
        def send_tick(self, tick: int) -> None:
            super().send_tick(tick)
            if tick % 2 == 0:
                clock.defer(lambda t: seen.append((t, threading.get_ident())), tick)

    finisher = Finisher()
    clock.add(finisher)
    clock.start()
    try:
        async with asyncio.timeout(5):
            while len(seen) < 5:  # noqa: ASYNC110 - real time
                await asyncio.sleep(0.01)
    finally:
        await clock.stop()
    ticks = [t for t, _ in seen]
    assert ticks == sorted(set(ticks))
    assert all(t % 2 == 0 for t in ticks)
    assert {thread for _, thread in seen} == {loop_thread}


async def test_stop_and_start_carry_the_tick_numbers_on() -> None:
    clock = ThreadSendClock()
    media = ThreadRecorder()
    clock.add(media)
    clock.start()
    clock.start()  # twice is harmless
    try:
        await wait_for_ticks(media, count=3)
    finally:
        await clock.stop()
    await clock.stop()  # twice too
    first = list(media.ticks)
    assert clock.tick == first[-1] + 1
    await asyncio.sleep(0.1)
    assert media.ticks == first  # stopped means no tick
    clock.start()
    try:
        await wait_for_ticks(media, count=len(first) + 3)
    finally:
        await clock.stop()
    assert media.ticks[len(first)] == first[-1] + 1  # numbering resumes, no time warp
    assert clock.stats().ticks > 0


@pytest.mark.parametrize("late", [0.1])
async def test_a_late_round_sends_at_most_max_catch_up_ticks(late: float) -> None:
    """The thread is held up (a stream that blocks): older ticks are skipped and counted."""
    clock = ThreadSendClock(max_catch_up=3)

    class Staller(ThreadRecorder):
        def send_tick(self, tick: int) -> None:
            super().send_tick(tick)
            if len(self.ticks) == 3:
                time.sleep(late)  # 5 ticks' worth

    staller = Staller()
    clock.add(staller)
    clock.start()
    try:
        await wait_for_ticks(staller, count=10)
    finally:
        await clock.stop()
    stats = clock.stats()
    assert stats.skipped >= 1
    assert stats.max_ms >= 1000 * late
    jumps = [b - a for a, b in zip(staller.ticks, staller.ticks[1:], strict=False)]
    assert max(jumps) > 1  # ticks were skipped, not sent late one by one
