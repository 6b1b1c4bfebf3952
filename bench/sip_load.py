"""Benchmark: N concurrent SIPp calls with streaming RTP and DTMF against one `hotline serve`.

For each size N a fresh hotline (`python -m ivr serve`, JSON logs) takes N SIPp calls. Every call
offers PCMA only and streams `/usr/share/sip-tester/g711a.pcap` (7.08 s of A-law speech, 30 ms
packets, replayed back to back) for the whole call; after the welcome prompt it presses "2"
(fault repair) then "#" (no account number) as RFC 4733 events, each key a re-stamped copy of
SIPp's capture so that it is its own event; then it keeps streaming until ``--duration`` seconds
and hangs up (BYE). SIPp sends all of it from each call's own media port (`[auto_media_port]`),
below the ephemeral range where the hotline binds its RTP sockets; this script binds those ports
(and never reads them) so the hotline's RTP lands in a socket instead of drawing ICMP errors.

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
measures one exported commit instead of the working tree. Needs root (SIPp plays pcaps through
a raw socket).

    python bench/sip_load.py --calls 50 100 200 400 --duration 25 [--code HEAD]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import platform
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PCAP_DIR = Path("/usr/share/sip-tester")
AUDIO_PCAP = PCAP_DIR / "g711a.pcap"
AUDIO_REPLAY_S = 7.0
"""g711a.pcap lasts 7.08 s; replaying it every 7 s streams without a gap."""
KEY_FILES = {"2": "dtmf_2833_2.pcap", "#": "dtmf_2833_pound.pcap"}
KEYS = "2#"
FIRST_KEY_AT_S = 6.0
"""The welcome prompt lasts about 4.6 s and ignores keys; the menu prompt is playing at 6 s."""
KEY_GAP_S = 1.5
CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_EVERY_S = 1.0
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
METRICS_TIMEOUT_S = 3.0


# --------------------------------------------------------------------------- SIPp scenario


def restamp(src: Path, dst: Path, timestamp: int) -> None:
    """Copy a pcap of RTP packets, setting every packet's RTP timestamp (UDP checksum cleared).

    SIPp's DTMF captures all carry one RTP timestamp; per RFC 4733 §2.5.1.3 packets with one
    timestamp are one event, so each key press gets its own.
    """
    data = bytearray(src.read_bytes())
    link = struct.unpack_from("<I", data, 20)[0]
    l2 = {1: 14, 113: 16}.get(link)
    if l2 is None:
        raise ValueError(f"{src}: unsupported link type {link}")
    off = 24
    while off < len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        pkt = off + 16
        udp = pkt + l2 + (data[pkt + l2] & 0x0F) * 4
        struct.pack_into("!H", data, udp + 6, 0)  # IPv4 allows "no checksum"
        struct.pack_into("!I", data, udp + 8 + 4, timestamp)
        off = pkt + incl
    dst.write_bytes(bytes(data))


def _play(pcap: Path) -> str:
    return f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>\n'


def _pause(seconds: float) -> str:
    return f'  <pause milliseconds="{round(seconds * 1000)}"/>\n'


def scenario(folder: Path, duration: float, *, audio: bool = True) -> str:
    """The caller: PCMA-only INVITE, audio all along, "2" and "#" as RFC 4733 keys, BYE.

    SIPp runs one playback per call: starting a key's capture stops the audio, so the audio is
    started again right after each key.
    """
    keys = []
    for i, key in enumerate(KEYS):
        path = folder / f"key{i}.pcap"
        restamp(PCAP_DIR / KEY_FILES[key], path, 160_000 + i * 8000)
        keys.append(path)
    play_audio = [_play(AUDIO_PCAP)] if audio else []
    body = [*play_audio]
    t = 0.0
    for i, path in enumerate(keys):
        at = FIRST_KEY_AT_S + i * KEY_GAP_S
        body += [_pause(at - t), _play(path), _pause(0.3), *play_audio]
        t = at + 0.3
    while audio and t + AUDIO_REPLAY_S < duration:
        body += [_pause(AUDIO_REPLAY_S), *play_audio]
        t += AUDIO_REPLAY_S
    body.append(_pause(duration - t))
    who = '"Caller" <sip:13800138000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]'
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="hotline load caller">
  <send retrans="500">
    <![CDATA[
      INVITE sip:95598@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: {who}
      To: <sip:95598@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:13800138000@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [auto_media_port+4] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
      a=ptime:30
      a=sendrecv

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[
      ACK sip:95598@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: {who}
      To: <sip:95598@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
{"".join(body)}  <send retrans="500">
    <![CDATA[
      BYE sip:95598@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: {who}
      To: <sip:95598@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
  <ResponseTimeRepartition value="100, 500, 1000, 5000"/>
</scenario>
"""


def media_ports(base: int, calls: int) -> list[int]:
    """The RTP port of each SIPp call: `[auto_media_port+4]` = base + 4 + 4 (n - 1) % 10000."""
    return [base + 4 + (4 * k) % 10000 for k in range(calls)]


@contextlib.contextmanager
def media_sinks(first_base: int, calls: int) -> Iterator[int]:
    """Find a -mp base whose ports are all free; hold a socket on every call's RTP port.

    SIPp binds base and base + 2 itself (its echo sockets) and sends each call's RTP from a raw
    socket with the call's port as source; nothing of SIPp's listens on that port, so these
    sockets take the hotline's RTP (and drop it once their small buffer is full).
    """
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for base in range(first_base, first_base + 10 * 1000, 1000):
        ports = media_ports(base, calls)
        if max(ports) >= ephemeral_low:
            break
        socks: list[socket.socket] = []
        try:
            for port in (base, base + 2):  # only checked: SIPp binds these
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.bind(("127.0.0.1", port))
            for port in ports:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.bind(("127.0.0.1", port))
        except OSError:
            for sock in socks:
                sock.close()
            continue
        try:
            yield base
        finally:
            for sock in socks:
                sock.close()
        return
    raise RuntimeError(f"no free media port range for {calls} calls below {ephemeral_low}")


# --------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads, live and ended), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


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


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) and Threads from /proc/<pid>/status."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


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


REPO = Path(__file__).resolve().parent.parent


def code_version() -> str:
    """The commit of the hotline code measured, and whether ivr/ had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "ivr", "sounds"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" with uncommitted changes in ivr/ or sounds/" if dirty else "")


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


def machine() -> str:
    """CPU model, cores, kernel, Python and SIPp versions."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    sipp = subprocess.run(["sipp", "-v"], capture_output=True, text=True, check=False, timeout=10)
    sipp_version = next(
        (w.rstrip(".") for w in (sipp.stdout + sipp.stderr).split() if w.startswith("v3")),
        "unknown",
    )
    return (
        f"{model}, {os.cpu_count()} cores, {mem_kb / 2**20:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}, SIPp {sipp_version}"
    )


# --------------------------------------------------------------------------- the hotline


UVLOOP_SERVE = """
import asyncio, runpy, sys
import uvloop
asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
sys.argv = ["ivr", "serve"]
runpy.run_module("ivr", run_name="__main__", alter_sys=True)
"""
"""`--loop uvloop`: the same `python -m ivr serve`, on uvloop's event loop (an experiment)."""


class Hotline:
    """`python -m ivr serve` as a child process, its JSON log lines collected by a thread."""

    def __init__(
        self, folder: Path, max_calls: int, *, loop: str = "asyncio", code: Path | None = None
    ) -> None:
        env = {
            **os.environ,
            "HOTLINE_SIP_PORT": "0",  # 0 = a free port, logged in "sip listening"
            "HOTLINE_WEB_PORT": "0",
            "HOTLINE_LOG_FORMAT": "json",
            "HOTLINE_LOG_LEVEL": "info",
            "HOTLINE_SIP_MAX_CALLS": str(max_calls),
            "HOTLINE_VAR_DIR": str(folder / "var"),
        }
        env.pop("HOTLINE_CONFIG", None)
        if code is not None:  # ahead of the editable install of the working tree
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
        self.log_path = folder / "hotline.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ivr", "serve"]
            if loop == "asyncio"
            else [sys.executable, "-c", UVLOOP_SERVE],
            env=env,
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.sip_port = 0
        self.web_port = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.log_path.open("w") as log:
            for line in self.proc.stdout:
                log.write(line)
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if isinstance(entry, dict):
                        with self._lock:
                            self.lines.append(entry)

    def events(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.lines if e.get("event") == name]

    def wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            sip, web = self.events("sip listening"), self.events("web listening")
            if sip and web:
                self.sip_port, self.web_port = int(sip[0]["port"]), int(web[0]["port"])
                return
            time.sleep(0.1)
        raise RuntimeError(f"hotline did not start; see {self.log_path}")

    def metrics(self) -> dict[str, float]:
        """The hotline_* samples of GET /metrics, keyed by name{labels}."""
        url = f"http://127.0.0.1:{self.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=METRICS_TIMEOUT_S) as reply:
            text = reply.read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("hotline_"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def stop(self) -> tuple[int | None, float]:
        """SIGTERM; returns (exit code or None if it had to be killed, seconds it took)."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            code = None
        self._reader.join(5)
        return code, time.monotonic() - start


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


def sipp_stats(path: Path) -> dict[str, str]:
    """The last row of SIPp's -trace_stat CSV, by column name."""
    if not path.exists():
        return {}
    rows = [r for r in path.read_text(errors="replace").splitlines() if r.strip()]
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0].split(";"), rows[-1].split(";"), strict=False))


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
    hotline = Hotline(folder, max_calls=calls + 50, loop=args.loop, code=args.code_dir)
    if args.hotline_nice:
        os.setpriority(os.PRIO_PROCESS, hotline.proc.pid, args.hotline_nice)
    try:
        hotline.wait_listening()
        pid = hotline.proc.pid
        with media_sinks(args.media_port, calls) as base:
            cmd = [
                "sipp",
                *("-sf", str(folder / "caller.xml")),
                *("-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", "0", "-mp", str(base)),
                *("-m", str(calls), "-l", str(calls), "-r", f"{rate:g}"),
                *("-nostdin", "-timeout", f"{int(sipp_timeout)}s"),
                *("-trace_err", "-error_file", str(folder / "sipp_errors.log")),
                *("-trace_stat", "-stf", str(folder / "sipp_stats.csv"), "-fd", "1"),
                f"127.0.0.1:{hotline.sip_port}",
            ]
            (folder / "sipp.cmd").write_text(" ".join(cmd) + "\n")
            with (folder / "sipp.out").open("w") as sipp_out:
                sipp = subprocess.Popen(
                    cmd, cwd=folder, stdin=subprocess.DEVNULL, stdout=sipp_out, stderr=sipp_out
                )
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
    hotline: Hotline,
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


def metrics_soon(hotline: Hotline, result: Result, tries: int = 5) -> dict[str, float]:
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
    result: Result, window: Window, *, hotline: Hotline, pid: int, sipp_pid: int, rss: list[int]
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
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stream g711a.pcap from every caller (--no-audio: only the two keys)",
    )
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="event loop of the hotline; uvloop is an experiment (uvloop must be importable)",
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
        print("note: SIPp's play_pcap_audio sends through a raw socket and needs root")
    date = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print(f"machine: {machine()}")
    print(
        f"date: {date}; {args.duration:g} s calls, ramp {args.rate:g} calls/s, "
        f"caller audio {'on' if args.audio else 'off'}, hotline loop {args.loop}, "
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
