"""bench/soak.py's verdict on made-up samples: a flat memory passes and a growing one fails, a
call left in any SIP table fails, tasks and open files must come back. (The soak itself runs
30 minutes by hand, not in CI; its result is in docs/benchmarks.md.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", BENCH / "soak.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def sample(soak: ModuleType, t: float, rss: float, **kw: Any) -> Any:
    tables = dict.fromkeys(soak.TABLES, kw.pop("table", 0))
    fields: dict[str, Any] = {
        "t": t,
        "rss_mib": rss,
        "fds": 30,
        "threads": 4,
        "calls_active": kw.pop("active", 0),
        "tables": tables,
        "tasks": 5,
        "rtp_streams": 0,
        "gap_p99_ms": 20.0,
        "redis_rss_mib": 6.0,
        "load1": 1.0,
    }
    return soak.Sample(**(fields | kw))


def loaded(soak: ModuleType, growth_per_hour: float) -> list[Any]:
    """30 minutes of load, a sample every 30 s, RSS jittering ±3 MiB around a trend."""
    return [
        sample(soak, t, 190 + growth_per_hour * t / 3600 + (3 if n % 2 else -3), active=100)
        for n, t in enumerate(range(30, 1801, 30))
    ]


def test_the_slope_is_in_mib_per_hour(soak: ModuleType) -> None:
    assert soak.slope_per_hour([(0.0, 100.0), (1800.0, 105.0), (3600.0, 110.0)]) == 10.0
    assert soak.slope_per_hour([(0.0, 100.0)]) == 0.0


def test_the_window_leaves_out_the_warm_up(soak: ModuleType) -> None:
    samples = loaded(soak, 0.0)
    start, kept = soak.window(samples, 1800.0, 10.0, 20.0)
    assert start == 600.0
    assert min(s.t for s in kept) == 600
    assert max(s.t for s in kept) == 1800
    start, kept = soak.window(samples[:4], 120.0, 10.0, 20.0)  # --minutes 2: the second half
    assert start == 60.0
    assert [s.t for s in kept] == [60, 90, 120]


@pytest.mark.parametrize(("growth", "flat"), [(0.0, True), (5.0, True), (40.0, False)])
def test_memory_is_flat_only_under_the_threshold(
    soak: ModuleType, growth: float, flat: bool
) -> None:
    args = soak.parser().parse_args([])
    before, after = sample(soak, 0, 150.0), sample(soak, 1900, 190.0)
    _, kept = soak.window(loaded(soak, growth), 1800.0, args.warmup, args.window)
    assert soak.judge(before, after, kept, args)["memory flat"] is flat


def test_a_call_left_behind_or_a_leaked_task_or_file_fails(soak: ModuleType) -> None:
    args = soak.parser().parse_args([])
    before = sample(soak, 0, 150.0)
    _, kept = soak.window(loaded(soak, 0.0), 1800.0, args.warmup, args.window)
    assert all(soak.judge(before, sample(soak, 1900, 190.0), kept, args).values())
    for left, check in [
        ({"table": 1}, "no leaked call"),
        ({"active": 1}, "no leaked call"),
        ({"tasks": 5 + args.slack_tasks + 1}, "tasks back"),
        ({"fds": 30 + args.slack_fds + 1}, "open files back"),
    ]:
        verdict = soak.judge(before, sample(soak, 1900, 190.0, **left), kept, args)
        assert verdict[check] is False, left
