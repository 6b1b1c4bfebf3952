"""Storm: N SIPp calls over T seconds into two `hotline serve` nodes sharing one Redis, with M
simulated agents; every call must be answered, walk the flow, and end in a work order and a
queue outcome. Counts lost calls three ways.

Set-up (all on loopback): Debian's redis-server with AOF on (the nodes' shared routing); two
`python -m ivr serve` nodes (own var/ folder, so own embedded CRM store and outbox; own node id
and ticket-number node code); by default Kamailio with `docker/kamailio/kamailio.cfg` in front
of them (dispatcher set 1 = the two nodes, OPTIONS probes) and SIPp calling Kamailio, or with
``--direct`` one SIPp per node, half the calls each. The agents' phones are one SIPp UAS that
answers every INVITE. M agents log in with skill fault_repair through the HTTP agents API; a
thread reads `GET /api/agents` every 0.25 s and accepts each offer (`.../accept`), and the queue's
wrap-up is 2 s, after which routing makes the agent available again.

Every caller (bench/sip_load.py's scenario: PCMA, SIPp's A-law speech streamed all along)
presses "2" (fault repair) and "#" (no account number): no spoken address (keypad only), no
known outage, so the flow files a 故障报修 work order and queues the caller for fault_repair. The
caller hangs up ``--hold`` seconds after the call began: bridged to an agent by then, or still
waiting (an abandon, a queue outcome too).

Lost calls, counted three ways:
- SIPp: calls created that SIPp did not complete (INVITE answered .. 200 for its BYE);
- call summaries: SIPp calls without a node's "call ended" summary line;
- routing and CRM: summaries without a ticket (`ticket:` outcome), entered calls without a final
  routing event (CONNECT then COMPLETE, or ABANDON, or an exit), tickets in the nodes' stores
  (their `GET /api/tickets`) and outboxes (`GET /api/outbox` stats) against tickets told.

``--kill-node-at S``: SIGKILL node 2 S seconds into the storm. Its live calls are lost (they end
with their SIPp call failing); routing must declare it lost (``--node-timeout``, `NODELOST`) and
close its waiting calls as abandoned (`node_lost`); with Kamailio the rest of the calls go to
node 1 once the OPTIONS probes fail.

``--restart-redis-at S``: stop Redis (SIGTERM, the AOF written out) S seconds in and start it
again on the same port and folder ``--redis-down`` seconds later: calls waiting in line must
still be there.

Needs root (SIPp plays pcaps through a raw socket), sipp, kamailio, redis-server.

    python bench/storm.py --calls 100 --seconds 60 --agents 20
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sip_load import cpu_seconds, machine, media_sinks, scenario, sipp_stats

ROOT = Path(__file__).resolve().parents[1]
KAMAILIO_CFG = ROOT / "docker" / "kamailio" / "kamailio.cfg"
SKILL = "fault_repair"
START_TIMEOUT_S = 30.0


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(url: str, body: dict[str, Any] | None = None, method: str | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 - loopback
        return json.loads(reply.read() or b"null")


# --------------------------------------------------------------------------- processes


class Node:
    """One `python -m ivr serve`, its JSON log lines collected by a thread."""

    def __init__(self, folder: Path, name: str, code: int, redis_url: str, timeout: float):
        folder.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
        env |= {
            "HOTLINE_SIP_PORT": "0",
            "HOTLINE_WEB_PORT": "0",
            "HOTLINE_LOG_FORMAT": "json",
            "HOTLINE_NODE_ID": name,
            "HOTLINE_CRM_NODE_CODE": str(code),
            "HOTLINE_REDIS_URL": redis_url,
            "HOTLINE_VAR_DIR": str(folder / "var"),
            "HOTLINE_SIP_MAX_CALLS": "1000",
            "HOTLINE_ROUTING_NODE_TIMEOUT_SECONDS": f"{timeout:g}",
            "HOTLINE_ROUTING_HEARTBEAT_SECONDS": f"{max(1.0, timeout / 4):g}",
            "HOTLINE_SHUTDOWN_GRACE_SECONDS": "10",
        }
        self.name = name
        self.log_path = folder / "hotline.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ivr", "serve"],
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
        self.sip_port = self.web_port = 0

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
        raise RuntimeError(f"{self.name} did not start; see {self.log_path}")

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/api"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_redis(folder: Path, port: int = 0) -> tuple[subprocess.Popen[bytes], int]:
    """Debian's redis-server with AOF on, data in ``folder`` (a restart on the same port and
    folder loads the append-only file)."""
    binary = shutil.which("redis-server", path="/usr/bin:/usr/local/bin")
    if binary is None:
        raise RuntimeError("no redis-server: apt-get install redis-server")
    port = port or free_port(socket.SOCK_STREAM)
    proc = subprocess.Popen(
        [
            *(binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)),
            *("--appendonly", "yes", "--appendfsync", "everysec", "--save", ""),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with redis.Redis(port=port) as client:
        for _ in range(100):
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    return proc, port
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def start_kamailio(folder: Path, nodes: list[Node]) -> tuple[subprocess.Popen[bytes], int]:
    """Kamailio with the docker/ config, its dispatcher set = the two nodes."""
    port = free_port()
    (folder / "dispatcher.list").write_text(
        "".join(f"1 sip:127.0.0.1:{n.sip_port} 0 0 duid={n.name}\n" for n in nodes)
    )
    binary = shutil.which("kamailio", path="/usr/sbin:/usr/bin")
    if binary is None:
        raise RuntimeError("no kamailio: apt-get install kamailio")
    with (folder / "kamailio.log").open("w") as log:
        proc = _kamailio(binary, port, folder, log)
    time.sleep(1.0)
    if proc.poll() is not None:
        raise RuntimeError(f"kamailio exited; see {folder / 'kamailio.log'}")
    return proc, port


def _kamailio(binary: str, port: int, folder: Path, log: IO[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(binary, "-f", str(KAMAILIO_CFG), "-DD", "-E"),
            *("-A", f"LISTEN=udp:127.0.0.1:{port}"),
            *("-A", f'DISPATCHER_LIST="{folder / "dispatcher.list"}"'),
            *("-A", f'CTL_SOCKET="unix:{folder / "kamailio.ctl"}"'),
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,
    )


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


# --------------------------------------------------------------------------- agents


class Agents:
    """M agents logged in through the HTTP API; a thread accepts every offer."""

    def __init__(self, nodes: list[Node], count: int, phone: str) -> None:
        self.nodes = nodes
        self.ids = [f"storm{i:03d}" for i in range(count)]
        self.accepted = 0
        self.accept_errors: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        api = nodes[0].api
        http(f"{api}/queues/{SKILL}", {"wrap_up_seconds": 2}, method="PUT")
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


# --------------------------------------------------------------------------- the storm


def routing_outcomes(redis_port: int, since_ms: int) -> dict[str, Any]:
    """Per call, from routing's event stream: entered, and how it left."""
    with redis.Redis(port=redis_port, decode_responses=True) as client:
        return _outcomes(client, since_ms)


def _outcomes(client: redis.Redis, since_ms: int) -> dict[str, Any]:
    key = next(iter(client.scan_iter(match="*:events", count=1000)), None)
    if key is None:
        return {"entered": 0, "final": {}, "open": [], "nodelost": 0, "types": {}}
    entered: set[str] = set()
    final: dict[str, str] = {}
    types: collections.Counter[str] = collections.Counter()
    nodelost = 0
    for _, fields in client.xrange(key, min=f"{since_ms}-0"):
        kind = fields.get("type", "")
        types[kind] += 1
        call = fields.get("call", "")
        if kind == "NODELOST":
            nodelost += 1
        if not call or call.startswith("cb:"):
            continue
        if kind == "ENTERQUEUE":
            entered.add(call)
        elif kind in ("COMPLETE", "ABANDON", "EXITWITHTIMEOUT", "EXITWITHKEY", "CALLBACK"):
            reason = fields.get("reason", "")
            final[call] = f"{kind}:{reason}" if reason else kind
    outcome_counts = collections.Counter(final[c] for c in entered if c in final)
    return {
        "entered": len(entered),
        "final": dict(outcome_counts),
        "open": sorted(c for c in entered if c not in final),
        "nodelost": nodelost,
        "types": dict(types),
    }


def files_of(node: Node) -> dict[str, Any]:
    """A killed node's tickets as its files kept them (SQLite recovers the WAL on open)."""
    crm = node.log_path.parent / "var" / "crm"
    with contextlib.closing(sqlite3.connect(crm / "crm.sqlite3")) as db:
        (tickets,) = db.execute("SELECT count(*) FROM tickets").fetchone()
    with contextlib.closing(sqlite3.connect(crm / "outbox.sqlite3")) as db:
        states = dict(db.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall())
    return {"tickets": tickets, "outbox": {"by_state": states}}


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    report: dict[str, Any] = {"calls": args.calls, "seconds": args.seconds, "agents": args.agents}
    procs: list[subprocess.Popen[bytes]] = []
    nodes: list[Node] = []
    agents: Agents | None = None
    sipps: list[subprocess.Popen[bytes]] = []
    try:
        redis_proc, redis_port = start_redis(folder)
        procs.append(redis_proc)
        for i in (1, 2):
            nodes.append(
                Node(
                    folder / f"node{i}",
                    f"storm-{i}",
                    i,
                    f"redis://127.0.0.1:{redis_port}/0",
                    args.node_timeout,
                )
            )
        for node in nodes:
            node.wait_listening()
        phone_port = free_port()
        phone = subprocess.Popen(
            [
                *("sipp", "-sn", "uas", "-i", "127.0.0.1", "-mi", "127.0.0.1"),
                *("-p", str(phone_port), "-nostdin"),
                *("-trace_err", "-error_file", str(folder / "phones_errors.log")),
            ],
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(phone)
        agents = Agents(nodes, args.agents, f"sip:{{agent}}@127.0.0.1:{phone_port}")
        targets: list[tuple[int, int]]  # (SIP port, calls)
        if args.direct:
            half = args.calls // 2
            targets = [(nodes[0].sip_port, args.calls - half), (nodes[1].sip_port, half)]
        else:
            kam, kam_port = start_kamailio(folder, nodes)
            procs.append(kam)
            time.sleep(args.probe_wait)
            targets = [(kam_port, args.calls)]
        xml = scenario(folder, args.hold, audio=not args.no_audio)
        xml = xml if args.direct else through_proxy(xml)
        for n in range(len(targets)):
            # A number per caller: one number for all would make routing hold each call for
            # the agent who last served that number (last-agent routing, 20 s).
            (folder / f"caller{n}.xml").write_text(
                xml.replace("13800138000", f"13{n}[call_number]"), "ascii"
            )
        since_ms = int(time.time() * 1000)
        started_wall = time.time()
        with contextlib.ExitStack() as stack:
            for n, (port, calls) in enumerate(targets):
                base = stack.enter_context(media_sinks(args.media_port + 20_000 * n, calls))
                rate = calls / args.seconds
                out = folder / f"sipp{n}"
                cmd = [
                    "sipp",
                    *("-sf", str(folder / f"caller{n}.xml")),
                    *("-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", "0", "-mp", str(base)),
                    *("-m", str(calls), "-l", str(calls), "-r", f"{rate:g}"),
                    *("-nostdin", "-timeout", f"{int(args.seconds + args.hold + 60)}s"),
                    # Kamailio's UDP workers may forward a node's 180 and 200 in either order:
                    # a late 180 must not make SIPp abort the call (RFC 3261 lets a UAC ignore
                    # it), so unexpected messages are ignored rather than fatal.
                    *("-default_behaviors", "all,-abortunexp"),
                    *("-trace_err", "-error_file", f"{out}_errors.log"),
                    *("-trace_stat", "-stf", f"{out}_stats.csv", "-fd", "1"),
                    f"127.0.0.1:{port}",
                ]
                (folder / f"sipp{n}.cmd").write_text(" ".join(cmd) + "\n")
                sipps.append(
                    subprocess.Popen(
                        cmd,
                        cwd=folder,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            killed_at = None
            if args.restart_redis_at is not None:
                time.sleep(args.restart_redis_at)
                redis_proc.terminate()  # SIGTERM: Redis flushes the AOF and exits
                redis_proc.wait(10)
                down = time.monotonic()
                time.sleep(args.redis_down)
                redis_proc, _ = start_redis(folder, redis_port)
                procs[0] = redis_proc
                report["redis_restarted_at_s"] = round(time.time() - started_wall, 1)
                report["redis_down_s"] = round(time.monotonic() - down, 1)
            if args.kill_node_at is not None:
                time.sleep(args.kill_node_at)
                nodes[1].proc.kill()
                killed_at = time.time() - started_wall
                report["killed_node_at_s"] = round(killed_at, 1)
            for sipp in sipps:
                sipp.wait(args.seconds + args.hold + 120)
        report["storm_wall_s"] = round(time.time() - started_wall, 1)
        if args.kill_node_at is not None:  # let routing declare the dead node lost
            time.sleep(
                max(0.0, args.node_timeout + 5 - (time.time() - started_wall - (killed_at or 0)))
            )
        time.sleep(3)
        agents.stop()
        created = ok = failed = retrans = 0
        for n in range(len(targets)):
            stats = sipp_stats(folder / f"sipp{n}_stats.csv")
            created += int(stats.get("TotalCallCreated", 0))
            ok += int(stats.get("SuccessfulCall(C)", 0))
            failed += int(stats.get("FailedCall(C)", 0))
            retrans += int(stats.get("Retransmissions(C)", 0))
        report["node_cpu_s"] = {
            n.name: round(cpu_seconds(n.proc.pid), 1) for n in nodes if n.proc.poll() is None
        }
        summaries = [e for n in nodes for e in n.events("call ended")]
        per_node = {n.name: len(n.events("call ended")) for n in nodes}
        told = [
            e for e in summaries if any(str(o).startswith("ticket") for o in e.get("outcomes", []))
        ]
        outcomes = collections.Counter(str(e.get("outcome")) for e in summaries)
        tickets = 0
        outbox: dict[str, Any] = {}
        for node in nodes:
            if node.proc.poll() is not None:  # killed: read what its files kept
                kept = files_of(node)
                tickets += kept["tickets"]
                outbox[node.name] = kept["outbox"]
                continue
            listed = http(f"{node.api}/tickets?since={int(started_wall) - 5}&limit=500")
            rows = listed.get("tickets", listed) if isinstance(listed, dict) else listed
            tickets += len(rows)
            outbox[node.name] = http(f"{node.api}/outbox").get("stats")
        routing = routing_outcomes(redis_port, since_ms)
        report |= {
            "sipp_created": created,
            "sipp_ok": ok,
            "sipp_failed": failed,
            "sipp_retransmissions": retrans,
            "summaries": len(summaries),
            "summaries_per_node": per_node,
            "summary_outcomes": dict(outcomes),
            "summaries_with_ticket": len(told),
            "tickets_in_stores": tickets,
            "outbox": outbox,
            "routing_entered": routing["entered"],
            "routing_final": routing["final"],
            "routing_open": len(routing["open"]),
            "routing_nodelost_events": routing["nodelost"],
            "agent_accepts": agents.accepted,
            "agent_accept_errors": dict(agents.accept_errors),
            "lost_sipp": created - ok,
            "lost_no_summary": created - len(summaries),
            "errors_logged": sum(
                1 for n in nodes for e in n.lines if e.get("level") in ("error", "critical")
            ),
        }
        return report
    finally:
        if agents is not None:
            agents.stop()
        for node in nodes:
            node.stop()
        for proc in [*sipps, *reversed(procs)]:
            if proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
            if proc.poll() is None:
                proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0, help="calls start over this long")
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--hold", type=float, default=30.0, help="each call lasts this long (s)")
    parser.add_argument("--direct", action="store_true", help="no Kamailio: one SIPp per node")
    parser.add_argument("--no-audio", action="store_true", help="callers send keys only")
    parser.add_argument("--kill-node-at", type=float, help="SIGKILL node 2 after this many s")
    parser.add_argument("--restart-redis-at", type=float, help="restart Redis after this many s")
    parser.add_argument("--redis-down", type=float, default=2.0, help="seconds Redis stays down")
    parser.add_argument("--node-timeout", type=float, default=8.0)
    parser.add_argument("--probe-wait", type=float, default=6.0)
    parser.add_argument("--media-port", type=int, default=6000)
    parser.add_argument("--keep", type=Path, help="keep logs and SIPp traces here")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="storm-", dir=args.keep))
    else:
        folder = Path(tempfile.mkdtemp(prefix="storm-"))
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; {machine()}; folder {folder}")
    report = run(args, folder)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
