"""Benchmark: N concurrent SIPp calls with streaming RTP and DTMF against one `hotline serve`.

For each size N a fresh hotline (`python -m ivr serve`, JSON logs) takes N SIPp calls. Every call
offers PCMA only and streams the A-law speech of `/usr/share/sip-tester/g711a.pcap` (7.08 s,
looped) for the whole call with SIPp's `rtp_stream` (20 ms packets); after the welcome prompt it
presses "2" (fault repair) then "#" (no account number) as RFC 4733 events, each key a
re-stamped copy of SIPp's capture so that it is its own event; then it keeps streaming until
``--duration`` seconds and hangs up (BYE). SIPp sends the speech and the keys of every call from
its one media socket (``-mp``), where the hotline's RTP lands too. ``--audio pcap`` replays the
capture instead, as the first figures were measured: one raw socket per call, whose cost to
every datagram delivered on the host is the load generator's, not the hotline's (see
`bench/sipp_harness.py`); the calls then use their own media ports (`[auto_media_port]`),
below the ephemeral range where the hotline binds its RTP sockets, and this script binds those
ports (and never reads them) so the hotline's RTP lands in a socket instead of drawing ICMP
errors.

Measured over the steady state (all N calls up, until the first call is due to hang up):
CPU of the hotline, of SIPp and of every other process (% of one core, /proc/<pid>/stat; the
kernel's interrupt time, on loopback most of the packet delivery, is reported apart), and the
hotline's send-clock gauges from `GET /metrics` read at the end of that window
(`hotline_rtp_send_gap_seconds` p50/p99 cover the clock's last 3000 rounds = 60 s, max is since
start; see `ivr/sip/rtp_clock.py`). Peak RSS (VmHWM) and the most threads are the hotline's over
the whole run. A call is OK when SIPp completed it (INVITE to the 200 for its BYE) and the
hotline logged its "call ended" summary (the dialog ran); failed = calls - OK. Digits correct
counts the summaries whose path went through fault_account and fault_address (both keys acted
on). Each size also writes timeline.csv (CPU, calls, send-gap, UDP backlog and drops, once a
second) beside the logs and SIPp traces (``--keep DIR`` keeps them).

The machine is shared: before each size the script waits (``--quiet-below``, ``--quiet-wait``)
for it to be nearly idle. Other work commits to ivr/ while a long run goes on: ``--code REF``
measures one exported commit instead of the working tree. Needs root (SIPp plays the key
captures through a raw socket).

    python bench/sip_load.py --calls 50 100 200 400 --duration 25 [--code HEAD]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sipp_harness import (
    CLK_TCK,
    KEYS,
    REPO,
    HotlineProcess,
    caller_command,
    code_version,
    cpu_seconds,
    machine,
    media_sinks,
    proc_status,
    scenario,
    sipp_stats,
    start_callers,
)

SAMPLE_EVERY_S = 1.0


# --------------------------------------------------------------------------- /proc


def process_cpu() -> dict[int, float]:
    """utime + stime (s) of every process now; pids that come and go between reads are missed."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                out[int(entry.name)] = cpu_seconds(int(entry.name))
    return out


def machine_jiffies() -> tuple[int, int, int, int]:
    """(busy, irq, steal, total) jiffies of all CPUs since boot.

    busy excludes idle, iowait and steal; irq (hard and soft interrupts: on loopback, most of
    the packet delivery) is part of busy and is not charged to any process.
    """
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return user + nice + system + irq + softirq, irq + softirq, steal, sum(values)


def wait_for_quiet(below: float, within: float) -> float:
    """Wait (at most ``within`` s) until the machine is less than ``below`` % busy over 2 s.

    On a shared machine other work takes CPU from both the hotline and SIPp; starting each size
    when it is quiet makes the runs comparable. Returns the last busy % seen.
    """
    deadline = time.monotonic() + within
    while True:
        before = machine_jiffies()
        time.sleep(2.0)
        after = machine_jiffies()
        busy = 100 * (after[0] - before[0]) / max(1, after[3] - before[3])
        if busy < below or time.monotonic() >= deadline:
            return busy


@dataclass
class UdpState:
    """A process's UDP sockets (/proc/net/udp): bytes waiting to be read, datagrams dropped."""

    sip_queued: int = 0
    """Bytes queued on the socket bound to the SIP port."""
    queued: int = 0
    """Bytes queued on all its UDP sockets."""
    drops: int = 0
    """Datagrams its UDP sockets dropped (receive buffer full), since they were opened."""


def udp_state(pid: int, sip_port: int) -> UdpState:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    state = UdpState()
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        f = line.split()
        if f[9] not in inodes:
            continue
        queued = int(f[4].partition(":")[2], 16)
        state.queued += queued
        state.drops += int(f[12])
        if int(f[1].partition(":")[2], 16) == sip_port:
            state.sip_queued += queued
    return state


PACKAGES = ("ivr", "sounds", "routing", "speech", "crm_bridge")


def export_code(ref: str, dest: Path) -> str:
    """Extract the project's packages at git ``ref`` into ``dest``; returns the short commit.

    Other work commits to ivr/ while a long benchmark runs; measuring one exported commit
    keeps every size on the same code.
    """
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit, *PACKAGES],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return commit


# --------------------------------------------------------------------------- one size


@dataclass
class Result:
    calls: int
    ok: int = 0
    """SIPp completed the call and the hotline logged its call summary (the dialog ran)."""
    failed: int = 0
    sipp_ok: int = 0
    sipp_failed: int = 0
    retransmissions: int = 0
    peak_active: int = 0
    all_up: bool = False
    window_s: float = 0.0
    cpu_hotline: float = 0.0
    cpu_sipp: float = 0.0
    machine_busy: float = 0.0
    machine_steal: float = 0.0
    ramp_cpu_peak: float = 0.0
    busy_before: float = -1.0
    code: str = ""
    others_cpu: float = 0.0
    bench_cpu: float = 0.0
    others_top: list[str] = field(default_factory=list)
    irq_cpu: float = 0.0
    metrics_slow: int = 0
    metrics_latency_max: float = 0.0
    keys_heard: int = 0
    sip_queue_peak: int = 0
    udp_drops: int = 0
    rss_mib: float = 0.0
    hwm_mib: float = 0.0
    threads: int = 0
    gap_p50_ms: float = 0.0
    gap_p99_ms: float = 0.0
    gap_max_ms: float = 0.0
    ticks_skipped: int = 0
    streams: int = 0
    summaries: int = 0
    digits_ok: int = 0
    refused: float = 0.0
    exit_code: int | None = None
    stop_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def run_size(calls: int, args: argparse.Namespace, folder: Path) -> Result:
    folder.mkdir(parents=True, exist_ok=True)
    result = Result(calls)
    if args.quiet_below < 100:
        result.busy_before = wait_for_quiet(args.quiet_below, args.quiet_wait)
    result.code = args.code_commit or code_version()
    duration: float = args.duration
    rate: float = args.rate
    (folder / "caller.xml").write_text(
        scenario(folder, duration, audio=args.audio), encoding="ascii"
    )
    ramp = (calls - 1) / rate
    sipp_timeout = duration + ramp + 60
    hotline = HotlineProcess(
        folder,
        {"HOTLINE_SIP_MAX_CALLS": str(calls + 50), "HOTLINE_SIP_SEND_CLOCK": args.send_clock},
        loop=args.loop,
        code=args.code_dir,
    )
    if args.hotline_nice:
        os.setpriority(os.PRIO_PROCESS, hotline.proc.pid, args.hotline_nice)
    try:
        hotline.wait_listening()
        pid = hotline.proc.pid
        with media_sinks(args.media_port, calls) as base:
            out = folder / "sipp"
            cmd = caller_command(
                folder / "caller.xml",
                hotline.sip_port,
                out,
                calls=calls,
                rate=rate,
                media_base=base,
                timeout_s=sipp_timeout,
            )
            sipp = start_callers(cmd, out, folder)
            started = time.monotonic()
            samples = measure(
                result,
                hotline=hotline,
                pid=pid,
                sipp=sipp,
                started=started,
                duration=duration,
                ramp=ramp,
                until=started + sipp_timeout + 30,
            )
            write_timeline(folder / "timeline.csv", samples)
            try:
                sipp.wait(max(1.0, started + sipp_timeout + 30 - time.monotonic()))
            except subprocess.TimeoutExpired:
                result.notes.append("SIPp overran its -timeout; killed")
                sipp.kill()
                sipp.wait(5)
        stats = sipp_stats(folder / "sipp_stats.csv")
        result.sipp_ok = int(stats.get("SuccessfulCall(C)", 0))
        result.sipp_failed = int(stats.get("FailedCall(C)", 0))
        result.retransmissions = int(stats.get("Retransmissions(C)", 0))
        created = int(stats.get("TotalCallCreated", 0))
        if created != calls:
            result.notes.append(f"SIPp created {created} of {calls} calls")
        if sipp.returncode not in (0, 1):
            result.notes.append(f"SIPp exit code {sipp.returncode}")
        # Summaries are logged as each session ends, just after its BYE.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(hotline.events("call ended")) < calls:
            time.sleep(0.2)
        with contextlib.suppress(OSError):
            status = proc_status(pid)
            result.hwm_mib = status.get("VmHWM", 0) / 1024
            result.threads = max(result.threads, status.get("Threads", 0))
            m = hotline.metrics()
            result.refused = sum(
                v for k, v in m.items() if k.startswith("hotline_sip_calls_refused_total")
            )
    finally:
        if hotline.proc.poll() is None:
            result.exit_code, result.stop_s = hotline.stop()
        else:
            result.exit_code = hotline.proc.returncode
            result.notes.append(f"hotline exited early with {result.exit_code}")
    ended = hotline.events("call ended")
    result.summaries = len({e.get("call_id") for e in ended})
    result.ok = min(result.sipp_ok, result.summaries)
    result.failed = calls - result.ok
    result.digits_ok = sum(
        1 for e in ended if {"fault_account", "fault_address"} <= set(e.get("path", []))
    )
    result.keys_heard = sum(int(e.get("keys", 0)) for e in hotline.events("media_closed"))
    if not hotline.events("stopped"):
        result.notes.append("hotline did not log 'stopped'")
    errors = [e for e in hotline.lines if e.get("level") in ("error", "critical")]
    if errors:
        result.notes.append(f"{len(errors)} error log lines, first: {errors[0].get('event')}")
    return result


@dataclass
class Sample:
    """One point of the timeline (timeline.csv beside the logs)."""

    t: float
    hotline_cpu: float
    sipp_cpu: float
    active: int
    streams: int
    gap_p99_ms: float
    skipped: int
    udp: UdpState
    sipp_queued: int


class Window:
    """CPU counters at the start of the steady state."""

    def __init__(self, at: float, pid: int, sipp_pid: int, all_up: bool) -> None:
        self.at = at
        self.all_up = all_up
        self.hotline = cpu_seconds(pid)
        self.sipp = cpu_seconds(sipp_pid)
        self.jiffies = machine_jiffies()
        self.processes = process_cpu()


def measure(
    result: Result,
    *,
    hotline: HotlineProcess,
    pid: int,
    sipp: subprocess.Popen[bytes],
    started: float,
    duration: float,
    ramp: float,
    until: float,
) -> list[Sample]:
    """Sample until SIPp ends (or ``until``); fill the steady-state figures into ``result``.

    The steady state starts when all calls are up (if they never are, at the latest when the
    ramp plus 10 s is over, marked as partial) and ends a second before the first call is due
    to hang up.
    """
    window_end = started + duration - 1.0
    latest_start = min(started + ramp + 10.0, window_end - 3.0)
    window: Window | None = None
    rss: list[int] = []
    samples: list[Sample] = []
    last = (time.monotonic(), cpu_seconds(pid), cpu_seconds(sipp.pid))
    m: dict[str, float] = {}
    while time.monotonic() < until and sipp.poll() is None:
        time.sleep(SAMPLE_EVERY_S)
        try:
            status = proc_status(pid)
            now, cpu, sipp_cpu = time.monotonic(), cpu_seconds(pid), cpu_seconds(sipp.pid)
            udp = udp_state(pid, hotline.sip_port)
            sipp_queued = udp_state(sipp.pid, 0).queued
        except OSError as exc:  # /proc of a process that just ended
            result.notes.append(f"sampling failed: {exc}")
            break
        if now >= window_end and window is not None and result.window_s == 0.0:
            # CPU counters first: a slow /metrics must not stretch the window.
            finish_window(result, window, hotline=hotline, pid=pid, sipp_pid=sipp.pid, rss=rss)
        m = metrics_soon(hotline, result, tries=1) or m
        active = int(m.get("hotline_calls_active", 0))
        samples.append(
            Sample(
                t=now - started,
                hotline_cpu=100 * (cpu - last[1]) / (now - last[0]),
                sipp_cpu=100 * (sipp_cpu - last[2]) / (now - last[0]),
                active=active,
                streams=int(m.get("hotline_rtp_streams", 0)),
                gap_p99_ms=1000 * m.get('hotline_rtp_send_gap_seconds{stat="p99"}', 0.0),
                skipped=int(m.get("hotline_rtp_ticks_skipped", 0)),
                udp=udp,
                sipp_queued=sipp_queued,
            )
        )
        result.sip_queue_peak = max(result.sip_queue_peak, udp.sip_queued)
        result.udp_drops = udp.drops
        last = (now, cpu, sipp_cpu)
        result.threads = max(result.threads, status.get("Threads", 0))
        result.peak_active = max(result.peak_active, active)
        if now >= window_end:
            continue
        all_up = active >= result.calls
        if window is None or (all_up and not window.all_up and window_end - now >= 3.0):
            if all_up or now >= latest_start:
                window = Window(time.monotonic(), pid, sipp.pid, all_up)
                rss.clear()
        else:
            rss.append(status.get("VmRSS", 0))
    if window is None:
        result.notes.append("no steady state: duration too short for the ramp")
    elif result.window_s == 0.0:
        result.notes.append("SIPp ended before the steady state did")
    if window is not None and not window.all_up:
        result.notes.append(f"only {result.peak_active} of {result.calls} calls were up at once")
    before = [s.hotline_cpu for s in samples if window is None or s.t < window.at - started]
    result.ramp_cpu_peak = max(before, default=0.0)
    return samples


def metrics_soon(hotline: HotlineProcess, result: Result, tries: int = 5) -> dict[str, float]:
    """GET /metrics; the web app shares the hotline's event loop, so a late answer is a sign.

    Returns {} when it did not answer within ``tries`` attempts of METRICS_TIMEOUT_S each.
    """
    for _ in range(tries):
        start = time.monotonic()
        try:
            m = hotline.metrics()
        except OSError:
            result.metrics_slow += 1
            continue
        finally:
            result.metrics_latency_max = max(result.metrics_latency_max, time.monotonic() - start)
        return m
    return {}


def finish_window(
    result: Result,
    window: Window,
    *,
    hotline: HotlineProcess,
    pid: int,
    sipp_pid: int,
    rss: list[int],
) -> None:
    """The steady state is over: CPU over it, the send-clock gauges at its end."""
    now = time.monotonic()
    result.all_up = window.all_up
    result.window_s = now - window.at
    result.cpu_hotline = 100 * (cpu_seconds(pid) - window.hotline) / result.window_s
    result.cpu_sipp = 100 * (cpu_seconds(sipp_pid) - window.sipp) / result.window_s
    busy, irq, steal, total = (
        b - a for a, b in zip(window.jiffies, machine_jiffies(), strict=True)
    )
    result.machine_busy = 100 * busy / total if total else 0.0
    result.irq_cpu = 100 * irq / CLK_TCK / result.window_s
    before, after = window.processes, process_cpu()
    used = {k: v - before[k] for k, v in after.items() if k in before}
    result.bench_cpu = 100 * used.get(os.getpid(), 0.0) / result.window_s
    others = {k: v for k, v in used.items() if k not in (pid, sipp_pid, os.getpid())}
    result.others_cpu = 100 * sum(others.values()) / result.window_s
    for other in sorted(others, key=others.__getitem__, reverse=True)[:3]:
        with contextlib.suppress(OSError):
            name = Path(f"/proc/{other}/comm").read_text().strip()
            result.others_top.append(f"{name} {100 * others[other] / result.window_s:.0f} %")
    result.machine_steal = 100 * steal / total if total else 0.0
    result.rss_mib = (max(rss) if rss else proc_status(pid).get("VmRSS", 0)) / 1024
    m = metrics_soon(hotline, result)
    result.gap_p50_ms = 1000 * m.get('hotline_rtp_send_gap_seconds{stat="p50"}', 0.0)
    result.gap_p99_ms = 1000 * m.get('hotline_rtp_send_gap_seconds{stat="p99"}', 0.0)
    result.gap_max_ms = 1000 * m.get('hotline_rtp_send_gap_seconds{stat="max"}', 0.0)
    result.ticks_skipped = int(m.get("hotline_rtp_ticks_skipped", 0))
    result.streams = int(m.get("hotline_rtp_streams", 0))
    if result.window_s < 3:
        result.notes.append(f"steady state only {result.window_s:.1f} s: raise --duration")


def write_timeline(path: Path, samples: list[Sample]) -> None:
    lines = [
        "t_s,hotline_cpu_pct,sipp_cpu_pct,calls_active,rtp_streams,gap_p99_ms,skipped,"
        "hotline_sip_queued_bytes,hotline_udp_queued_bytes,hotline_udp_drops,sipp_udp_queued_bytes"
    ]
    lines += [
        f"{s.t:.1f},{s.hotline_cpu:.0f},{s.sipp_cpu:.0f},{s.active},{s.streams},"
        f"{s.gap_p99_ms:.1f},{s.skipped},{s.udp.sip_queued},{s.udp.queued},{s.udp.drops},"
        f"{s.sipp_queued}"
        for s in samples
    ]
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- report

HEADER = (
    "| calls | OK | failed | hotline CPU % of a core | SIPp CPU % | other processes % | "
    "peak RSS MiB | threads | send-gap p50 / p99 / max ms | ticks skipped | digits correct |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def row(r: Result) -> str:
    return (
        f"| {r.calls} | {r.ok} | {r.failed} | {r.cpu_hotline:.0f} | {r.cpu_sipp:.0f} "
        f"| {r.others_cpu:.0f} | {r.hwm_mib:.0f} | {r.threads} "
        f"| {r.gap_p50_ms:.1f} / {r.gap_p99_ms:.1f} / {r.gap_max_ms:.1f} | {r.ticks_skipped} "
        f"| {r.digits_ok}/{r.calls} |"
    )


def details(r: Result) -> str:
    text = (
        f"- {r.calls} calls (code {r.code}): machine busy before the start "
        f"{f'{r.busy_before:.0f} %' if r.busy_before >= 0 else 'not checked'}, "
        f"steady window {r.window_s:.1f} s "
        f"({'all up' if r.all_up else f'peak {r.peak_active} up'}), "
        f"machine busy {r.machine_busy:.0f} % of its {os.cpu_count()} cores "
        f"(steal {r.machine_steal:.0f} %): interrupts (loopback delivery) {r.irq_cpu:.0f} % "
        f"and other processes {r.others_cpu:.0f} % of a core ({', '.join(r.others_top)}; "
        f"this script {r.bench_cpu:.0f} %); hotline CPU peak before it "
        f"{r.ramp_cpu_peak:.0f} %, RTP streams {r.streams}, "
        f"RSS in window {r.rss_mib:.0f} MiB, "
        f"SIPp OK {r.sipp_ok} failed {r.sipp_failed}, dialogs run {r.summaries}, "
        f"SIPp retransmissions {r.retransmissions}, refused {r.refused:.0f}, "
        f"/metrics slowest answer {r.metrics_latency_max:.1f} s ({r.metrics_slow} timed out), "
        f"hotline SIP socket backlog peak {r.sip_queue_peak / 1024:.0f} KiB, "
        f"datagrams dropped by the hotline's full UDP buffers {r.udp_drops}, "
        f"RFC 4733 keys heard {r.keys_heard}/{len(KEYS) * r.calls}, "
        f"hotline exit {r.exit_code} after SIGTERM "
        f"in {r.stop_s:.1f} s"
    )
    return text + "".join(f"; {n}" for n in r.notes)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--duration", type=float, default=25.0, help="seconds per call (>= 20)")
    parser.add_argument("--rate", type=float, default=40.0, help="new calls per second")
    parser.add_argument("--media-port", type=int, default=20000, help="first SIPp -mp to try")
    parser.add_argument(
        "--audio",
        choices=["stream", "pcap", "none"],
        default="stream",
        help="the callers' speech: SIPp's rtp_stream (default), play_pcap_audio (a raw socket "
        "per call, see bench/sipp_harness.py), or none (only the two keys)",
    )
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="event loop of the hotline; uvloop is an experiment (uvloop must be importable)",
    )
    parser.add_argument(
        "--send-clock",
        choices=["thread", "loop"],
        default="thread",
        help="the hotline's sip_send_clock: its own thread (the default) or a task on the loop",
    )
    parser.add_argument(
        "--hotline-nice",
        type=int,
        default=0,
        help="scheduling niceness of the hotline (e.g. -10, as root: favour it over SIPp)",
    )
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=30.0,
        help="before each size, wait until the machine is less busy than this (%%; 100 = never)",
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=180.0, help="wait at most this long for it (s)"
    )
    parser.add_argument(
        "--code",
        metavar="REF",
        help="measure the hotline at this git commit (exported) instead of the working tree",
    )
    parser.add_argument("--keep", type=Path, help="keep logs, scenario and SIPp traces here")
    args = parser.parse_args()
    if args.duration < 20:
        parser.error("--duration must be at least 20 s")
    if os.geteuid() != 0:
        print("note: SIPp's play_pcap_audio (the keys) sends through a raw socket and needs root")
    date = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print(f"machine: {machine()}")
    print(
        f"date: {date}; {args.duration:g} s calls, ramp {args.rate:g} calls/s, "
        f"caller audio {args.audio}, hotline loop {args.loop}, "
        f"send clock {args.send_clock}, "
        f"hotline nice {args.hotline_nice}"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="sip_load_") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        args.code_dir = args.code_commit = None
        if args.code:
            args.code_dir = root / "code"
            args.code_commit = export_code(args.code, args.code_dir)
            print(f"code: {args.code_commit} exported to {args.code_dir}")
        for i, calls in enumerate(args.calls):
            repeated = args.calls.count(calls) > 1
            folder = root / (f"calls{calls}-{i + 1}" if repeated else f"calls{calls}")
            try:
                result = run_size(calls, args, folder)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                print(f"- {calls} calls: the bench failed: {exc}", flush=True)
                continue
            rows.append(result)
            print(details(result), flush=True)
    print()
    print(HEADER)
    for r in rows:
        print(row(r))


if __name__ == "__main__":
    main()
