"""The wallboard's chart and surge rule, pure: entry times and interval figures in, JSON out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ivr.wallboard_history import Arrivals, Surge, chart, interval_starts, surge
from routing.events import EventType, RoutingEvent
from routing.stats import interval_stats

NOW = 1_800_000_000.0  # a multiple of 900: an interval starts here
RULE = {"window": 300.0, "baseline": 4 * 3600.0, "factor": 2.0, "min_calls": 10}


def steady(per_window: int, windows: int = 48) -> list[float]:
    """``per_window`` calls in each 5-minute window of the 4 hours before the last window."""
    return [
        NOW - 300 - k * 300 - (i + 0.5) * 300 / per_window
        for k in range(windows)
        for i in range(per_window)
    ]


def test_a_busy_window_after_a_steady_baseline_is_a_surge() -> None:
    times = [*steady(4), *(NOW - i for i in range(12))]  # 4 a window, then 12
    found = surge(times, NOW, **RULE)  # type: ignore[arg-type]
    assert found == Surge(recent=12, baseline=4.0, threshold=9.0)


def test_as_busy_as_usual_is_no_surge() -> None:
    times = [*steady(8), *(NOW - i for i in range(16))]  # 8 a window, then 16: exactly twice
    assert surge(times, NOW, **RULE) is None  # type: ignore[arg-type]
    assert surge([*times, NOW - 20], NOW, **RULE) is not None  # type: ignore[arg-type]


def test_a_quiet_night_is_no_surge() -> None:
    # Three calls after none: far more than the baseline, but under the minimum.
    assert surge([NOW - 1, NOW - 2, NOW - 3], NOW, **RULE) is None  # type: ignore[arg-type]
    found = surge([NOW - i for i in range(10)], NOW, **RULE)  # type: ignore[arg-type]
    assert found == Surge(recent=10, baseline=0.0, threshold=9.0)


def test_only_the_window_and_the_baseline_count() -> None:
    # Calls older than the baseline span and in the future are not counted.
    old = [NOW - 300 - 4 * 3600 - 1 - i for i in range(500)]
    assert surge([*old, *(NOW - i for i in range(10))], NOW, **RULE) is not None  # type: ignore[arg-type]
    assert surge([NOW + 1 + i for i in range(50)], NOW, **RULE) is None  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        surge([], NOW, window=0, baseline=1, factor=2, min_calls=1)


@given(
    st.lists(st.floats(NOW - 6 * 3600, NOW), max_size=200),
    st.floats(1.01, 10),
    st.integers(1, 50),
)
def test_a_surge_always_has_its_reasons(times: list[float], factor: float, min_calls: int) -> None:
    found = surge(times, NOW, window=300, baseline=3600, factor=factor, min_calls=min_calls)
    recent = sum(1 for t in times if NOW - 300 < t <= NOW)
    if found is None:
        assert recent < min_calls or recent <= factor * sum(
            1 for t in times if NOW - 3900 < t <= NOW - 300
        ) * (300 / 3600)
    else:
        assert found.recent == recent >= min_calls
        assert found.recent > found.threshold


def event(n: int, type_: EventType, t: float, **fields: str) -> RoutingEvent:
    return RoutingEvent(f"{n}-0", type_, t, fields)


def test_arrivals_keep_calls_per_queue_in_time_order() -> None:
    arrivals = Arrivals()
    events = [
        event(1, EventType.ENTERQUEUE, NOW - 10, call="c1", skill="billing", kind="call"),
        event(2, EventType.ENTERQUEUE, NOW - 20, call="c2", skill="billing", kind="call"),
        event(3, EventType.ENTERQUEUE, NOW - 5, call="b1", skill="billing", kind="callback"),
        event(4, EventType.CALLBACK, NOW - 5, call="b2", skill="billing"),
        event(5, EventType.ENTERQUEUE, NOW - 1, call="c3", skill="fault_repair", kind="call"),
        event(6, EventType.ABANDON, NOW, call="c3"),
    ]
    for e in events:
        arrivals.apply(e)
    assert {skill: list(times) for skill, times in arrivals.times.items()} == {
        "billing": [NOW - 20, NOW - 10],
        None: [NOW - 20, NOW - 10, NOW - 1],
        "fault_repair": [NOW - 1],
    }
    arrivals.forget(NOW - 10)
    assert list(arrivals.times[None]) == [NOW - 1]
    assert list(arrivals.times["billing"]) == []


def test_interval_starts_end_with_the_current_interval() -> None:
    starts = interval_starts(NOW + 100, 1, 900)
    assert starts == [NOW - 2700, NOW - 1800, NOW - 900, NOW]
    assert interval_starts(NOW, 0.01, 900) == [NOW]


def test_chart_has_every_interval_and_the_report_figures() -> None:
    events = [
        event(1, EventType.ENTERQUEUE, NOW - 1000, call="a", skill="billing", kind="call"),
        event(2, EventType.CONNECT, NOW - 990, call="a", agent="1001", skill="billing"),
        event(3, EventType.ENTERQUEUE, NOW - 950, call="b", skill="fault_repair", kind="call"),
        event(4, EventType.ABANDON, NOW - 900 + 50, call="b"),
        event(5, EventType.ENTERQUEUE, NOW + 10, call="c", skill="billing", kind="call"),
        # Long before the chart's hours: not shown.
        event(6, EventType.ENTERQUEUE, NOW - 9000, call="d", skill="billing", kind="call"),
    ]
    rows = interval_stats(events)
    drawn = chart(rows, NOW + 20, hours=1)
    assert drawn["starts"] == [NOW - 2700, NOW - 1800, NOW - 900, NOW]
    assert drawn["interval_seconds"] == 900
    assert drawn["overall"] == {
        "offered": [0, 2, 0, 1],
        "answered": [0, 1, 0, 0],
        "abandoned": [0, 1, 0, 0],
    }
    assert drawn["queues"]["billing"]["offered"] == [0, 1, 0, 1]
    assert drawn["queues"]["fault_repair"]["abandoned"] == [0, 1, 0, 0]
    assert list(drawn["queues"]) == ["billing", "fault_repair"]
    # Rows of another interval length are not mixed in.
    assert chart(interval_stats(events, interval_seconds=600), NOW + 20, hours=1)["queues"] == {}


def test_arrivals_hold_a_call_in_a_few_bytes() -> None:
    """One entry time per call and queue over the surge's look-back (4 h 5 min at 100 calls a
    minute: 24,500 calls): kept as packed doubles, 8 bytes each, not a float object apiece."""
    import tracemalloc

    arrivals = Arrivals()
    calls = 20_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(calls):  # each event read from the stream, folded, let go
            arrivals.apply(
                event(n, EventType.ENTERQUEUE, NOW + n, call="c", skill="fault_repair", kind="call")
            )
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert list(arrivals.times[None]) == [NOW + n for n in range(calls)]
    assert grown / calls <= 24  # two entries a call (its queue and all queues)
