"""SIPp callers and agent phones against `hotline serve` processes, shared by bench/sip_load.py,
bench/storm.py and bench/soak.py.

- the caller's scenario (PCMA, SIPp's A-law speech streamed all along by ``rtp_stream``, "2"
  and "#" as RFC 4733 keys, BYE) and its re-stamped key captures; `through_proxy` makes it
  follow Record-Route;
- `media_sinks`: sockets on the callers' RTP ports, so the hotline's RTP lands somewhere;
- `caller_command` / `start_callers`: the SIPp command line every bench runs, its traces beside it;
- `HotlineProcess`: `python -m ivr serve` as a child, its JSON log lines collected;
- `Agents`: simulated agents logged in through the HTTP API, a SIPp UAS as their phones, a thread
  accepting every offer;
- /proc readings (CPU seconds, RSS, threads, open files) and the machine's description.

SIPp plays the key captures through a raw socket: the benches run as root.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import platform
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

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
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
METRICS_TIMEOUT_S = 3.0
SKILL = "fault_repair"
"""The queue the callers' keys lead to, and the agents' skill."""


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(url: str, body: dict[str, Any] | None = None, method: str | None = None) -> Any:
    """One JSON request to a node's API (loopback: no token needed)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 - loopback
        return json.loads(reply.read() or b"null")


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


def alaw_payload(src: Path, dst: Path) -> None:
    """Write the RTP payloads of a pcap of A-law packets back to back: raw A-law audio, what
    SIPp's ``rtp_stream`` plays (it makes its own 20 ms packets of it)."""
    data = src.read_bytes()
    link = struct.unpack_from("<I", data, 20)[0]
    l2 = {1: 14, 113: 16}.get(link)
    if l2 is None:
        raise ValueError(f"{src}: unsupported link type {link}")
    audio = bytearray()
    off = 24
    while off < len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        pkt = off + 16
        udp = pkt + l2 + (data[pkt + l2] & 0x0F) * 4
        rtp = udp + 8
        header = 12 + 4 * (data[rtp] & 0x0F)
        audio += data[rtp + header : pkt + incl]
        off = pkt + incl
    dst.write_bytes(bytes(audio))


def _play(pcap: Path) -> str:
    return f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>\n'


def _pause(seconds: float) -> str:
    return f'  <pause milliseconds="{round(seconds * 1000)}"/>\n'


CallerAudio = Literal["stream", "pcap", "none"]
"""What a caller sends between its keys: SIPp's A-law speech through ``rtp_stream`` (the
default), the same speech through ``play_pcap_audio``, or nothing."""


def scenario(folder: Path, duration: float, *, audio: CallerAudio = "stream") -> str:
    """The caller: PCMA-only INVITE, speech all along, "2" and "#" as RFC 4733 keys, BYE.

    The speech is g711a.pcap's audio. ``stream`` (the default) plays it with SIPp's
    ``rtp_stream``, which sends every call's packets from SIPp's one media socket (``-mp``):
    the SDP names that port, and the key captures go out from it too. ``pcap`` replays the
    capture itself, as the benches did first: SIPp then holds a raw ``IPPROTO_UDP`` socket per
    call for its whole length, and the kernel offers every UDP datagram delivered on the host to
    every such socket (``raw_local_deliver``), so at 400 calls each of the hotline's sends also
    paid for 400 raw-socket deliveries (perf: 21 % of the hotline's CPU, half the machine's
    interrupt time). That cost belongs to the load generator, not to the hotline: real callers
    hold no raw sockets on the node's host. SIPp runs one capture per call at a time: in
    ``pcap`` mode a key stops the speech, so the speech is started again right after each key.
    """
    keys = []
    for i, key in enumerate(KEYS):
        path = folder / f"key{i}.pcap"
        restamp(PCAP_DIR / KEY_FILES[key], path, 160_000 + i * 8000)
        keys.append(path)
    play_audio = [_play(AUDIO_PCAP)] if audio == "pcap" else []
    body = [*play_audio]
    port = "[auto_media_port+4]"  # the capture's source port: one per call
    if audio == "stream":
        speech = folder / "speech.al"
        alaw_payload(AUDIO_PCAP, speech)
        body.append(f'  <nop><action><exec rtp_stream="{speech},-1,8"/></action></nop>\n')
        port = "[media_port]"  # rtp_stream's socket; the keys' captures are sent from it too
    t = 0.0
    for i, path in enumerate(keys):
        at = FIRST_KEY_AT_S + i * KEY_GAP_S
        body += [_pause(at - t), _play(path), _pause(0.3), *play_audio]
        t = at + 0.3
    while play_audio and t + AUDIO_REPLAY_S < duration:
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
      m=audio {port} RTP/AVP 8 101
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


def through_proxy(xml: str) -> str:
    """The caller scenario made to follow Record-Route (RFC 3261 §12.1.2): the ACK and BYE go
    to the node's Contact through the route set learnt from the 200."""
    xml = xml.replace(
        '<recv response="200" rtd="true"/>', '<recv response="200" rtd="true" rrs="true"/>'
    )
    for method in ("ACK", "BYE"):
        xml = xml.replace(
            f"      {method} sip:95598@[remote_ip]:[remote_port] SIP/2.0\n",
            f"      {method} [next_url] SIP/2.0\n      [routes]\n",
        )
    return xml


def numbered_callers(xml: str, prefix: str = "13") -> str:
    """A caller number per call (``prefix`` + SIPp's call number): one number for all would make
    routing hold each call for the agent who last served that number (last-agent routing)."""
    return xml.replace("13800138000", f"{prefix}[call_number]")


# --------------------------------------------------------------------------- SIPp runs


def caller_command(
    scenario_file: Path,
    target_port: int,
    out: Path,
    *,
    calls: int,
    rate: float,
    media_base: int,
    timeout_s: float,
    limit: int | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The SIPp caller's command line: ``calls`` calls at ``rate`` a second, at most ``limit``
    (default ``calls``) up at once, to 127.0.0.1:``target_port``; errors and statistics go
    to ``out``_errors.log and ``out``_stats.csv."""
    return [
        "sipp",
        *("-sf", str(scenario_file)),
        *("-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", "0", "-mp", str(media_base)),
        *("-m", str(calls), "-l", str(limit or calls), "-r", f"{rate:g}"),
        *("-nostdin", "-timeout", f"{int(timeout_s)}s"),
        *extra,
        *("-trace_err", "-error_file", f"{out}_errors.log"),
        *("-trace_stat", "-stf", f"{out}_stats.csv", "-fd", "1"),
        f"127.0.0.1:{target_port}",
    ]


def start_callers(cmd: list[str], out: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start SIPp; its command line goes to ``out``.cmd, its output to ``out``.out."""
    Path(f"{out}.cmd").write_text(" ".join(cmd) + "\n")
    with Path(f"{out}.out").open("wb") as log:
        return subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)


def start_phones(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    """One SIPp UAS that answers every INVITE: the phone of every simulated agent."""
    port = free_port()
    proc = subprocess.Popen(
        [
            *("sipp", "-sn", "uas", "-i", "127.0.0.1", "-mi", "127.0.0.1"),
            *("-p", str(port), "-nostdin"),
            *("-trace_err", "-error_file", str(folder / "phones_errors.log")),
        ],
        cwd=folder,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, port


def sipp_stats(path: Path) -> dict[str, str]:
    """The last row of SIPp's -trace_stat CSV, by column name."""
    if not path.exists():
        return {}
    rows = [r for r in path.read_text(errors="replace").splitlines() if r.strip()]
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0].split(";"), rows[-1].split(";"), strict=False))


# --------------------------------------------------------------------------- the hotline

UVLOOP_SERVE = """
import asyncio, runpy, sys
import uvloop
asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
sys.argv = ["ivr", "serve"]
runpy.run_module("ivr", run_name="__main__", alter_sys=True)
"""
"""`loop="uvloop"`: the same `python -m ivr serve`, on uvloop's event loop (an experiment)."""


class HotlineProcess:
    """`python -m ivr serve` as a child process, its JSON log lines collected by a thread.

    The environment's HOTLINE_* variables are dropped: the node gets free SIP and web ports,
    JSON logs, ``folder``/var as its var_dir, and ``env`` on top.
    """

    def __init__(
        self,
        folder: Path,
        env: Mapping[str, str] | None = None,
        *,
        name: str = "hotline",
        loop: str = "asyncio",
        code: Path | None = None,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
        environ |= {
            "HOTLINE_SIP_PORT": "0",  # 0 = a free port, logged in "sip listening"
            "HOTLINE_WEB_PORT": "0",
            "HOTLINE_LOG_FORMAT": "json",
            "HOTLINE_LOG_LEVEL": "info",
            "HOTLINE_VAR_DIR": str(folder / "var"),
            **(env or {}),
        }
        if code is not None:  # ahead of the editable install of the working tree
            environ["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(code), environ.get("PYTHONPATH")])
            )
        self.name = name
        self.log_path = folder / "hotline.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ivr", "serve"]
            if loop == "asyncio"
            else [sys.executable, "-c", UVLOOP_SERVE],
            env=environ,
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

    def errors(self) -> list[dict[str, Any]]:
        """Log lines at level error or critical."""
        with self._lock:
            return [e for e in self.lines if e.get("level") in ("error", "critical")]

    def wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            sip, web = self.events("sip listening"), self.events("web listening")
            if sip and web:
                self.sip_port, self.web_port = int(sip[0]["port"]), int(web[0]["port"])
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start; see {self.log_path}")

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/api"

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
        """SIGTERM (if still running); returns (exit code, or None if it had to be killed;
        seconds it took)."""
        start = time.monotonic()
        code: int | None = self.proc.poll()
        if code is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                code = None
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code, time.monotonic() - start


# --------------------------------------------------------------------------- agents


class Agents:
    """M agents logged in through the HTTP API (skill fault_repair, wrap-up 2 s), their phone
    ``phone`` (with ``{agent}``); a thread reads `GET /api/agents` every 0.25 s and accepts each
    offer."""

    def __init__(self, nodes: Sequence[HotlineProcess], count: int, phone: str) -> None:
        self.nodes = nodes
        self.ids = [f"storm{i:03d}" for i in range(count)]
        self.accepted = 0
        self.accept_errors: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        http(f"{nodes[0].api}/queues/{SKILL}", {"wrap_up_seconds": 2}, method="PUT")
        for n, agent in enumerate(self.ids):
            http(
                f"{nodes[n % len(nodes)].api}/agents/{agent}/login",
                {"skills": {SKILL: 5}, "contact": phone.format(agent=agent), "ready": True},
            )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        turn = 0
        while not self._stop.wait(0.25):
            live = [n for n in self.nodes if n.proc.poll() is None]
            if not live:
                return
            api = live[turn % len(live)].api
            turn += 1
            try:
                agents = http(f"{api}/agents")
            except OSError:
                continue
            rows = agents.get("agents", agents) if isinstance(agents, dict) else agents
            for agent in rows:
                if agent.get("state") == "reserved" and agent.get("call_id"):
                    try:
                        http(
                            f"{api}/agents/{agent['agent_id']}/accept",
                            {"call_id": agent["call_id"]},
                        )
                        self.accepted += 1
                    except urllib.error.HTTPError as exc:
                        self.accept_errors[str(exc.code)] += 1
                    except OSError as exc:
                        self.accept_errors[type(exc).__name__] += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


# --------------------------------------------------------------------------- /proc and the machine


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads, live and ended), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) and Threads from /proc/<pid>/status."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


def open_fds(pid: int) -> int:
    """File descriptors the process has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


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
