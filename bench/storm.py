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

Every caller (bench/sipp_harness.py's scenario, as in bench/sip_load.py: PCMA, SIPp's A-law
speech streamed all along) presses "2" (fault repair) and "#" (no account number): no spoken
address (keypad only), no
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

``--crm-down-at S``: the nodes file their work orders with the HTTP CRM adapter
(`crm_backend = "http"`) into the CRM of tests/crm_bridge/fake_crm.py (a real aiohttp server on
loopback speaking docs/crm-openapi.yaml, run in a process of its own: `--serve-crm`),
which goes down S seconds in for ``--crm-down-for`` seconds (``--crm-fault stop``: it stops
listening, connections are refused; ``500``: it answers every new ticket 500) and then comes
back where it was. No caller may notice (every call still walks the flow to its work order and
hears its number: the outbox takes it while the CRM is down), and once the outboxes have drained
(``--crm-drain-wait``) the CRM must hold every ticket the callers were told exactly once: the
ticket numbers of the nodes' "ticket created" lines against the CRM's tickets, one per
idempotency key and one per number.

Needs root (SIPp plays pcaps through a raw socket), sipp, kamailio, redis-server.

    python bench/storm.py --calls 100 --seconds 60 --agents 20
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import IO, Any, TypeVar

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The fake CRM of the CRM bridge's tests: a real HTTP server that keeps the contract.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "crm_bridge"))
from fake_crm import FakeCrm
from sipp_harness import (
    Agents,
    HotlineProcess,
    caller_command,
    code_version,
    cpu_seconds,
    free_port,
    http,
    machine,
    media_sinks,
    numbered_callers,
    scenario,
    sipp_stats,
    start_callers,
    start_phones,
    through_proxy,
)

ROOT = Path(__file__).resolve().parents[1]
KAMAILIO_CFG = ROOT / "docker" / "kamailio" / "kamailio.cfg"
T = TypeVar("T")


def start_node(
    folder: Path, name: str, code: int, redis_url: str, *, timeout: float, crm_url: str | None
) -> HotlineProcess:
    """One storm node: shared Redis, its own var/ (outbox, numbers), node id and node code."""
    env = {
        "HOTLINE_NODE_ID": name,
        "HOTLINE_CRM_NODE_CODE": str(code),
        "HOTLINE_REDIS_URL": redis_url,
        "HOTLINE_SIP_MAX_CALLS": "1000",
        "HOTLINE_ROUTING_NODE_TIMEOUT_SECONDS": f"{timeout:g}",
        "HOTLINE_ROUTING_HEARTBEAT_SECONDS": f"{max(1.0, timeout / 4):g}",
        "HOTLINE_SHUTDOWN_GRACE_SECONDS": "10",
    }
    if crm_url is not None:
        env |= {"HOTLINE_CRM_BACKEND": "http", "HOTLINE_CRM_URL": crm_url}
    return HotlineProcess(folder, env, name=name)


class CrmServer:
    """The fake CRM (tests/crm_bridge/fake_crm.py: a real HTTP server that keeps the contract's
    one-ticket-per-idempotency-key rule) on its own event loop in a thread; it can go down and
    come back on the same port."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.crm = self._call(FakeCrm().start())
        self.url = self.crm.url
        self.fault = ""

    def _call(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(15)

    async def _set_fault(self, fault: str) -> None:
        self.crm.default_fault = fault

    def down(self, fault: str) -> None:
        """``stop``: close the listening socket and every connection; ``500``: answer 500."""
        self.fault = fault
        self._call(self.crm.stop() if fault == "stop" else self._set_fault("500"))

    def up(self) -> None:
        if self.fault == "stop":
            self._call(self.crm.start(self.crm.port))
        else:
            self._call(self._set_fault("ok"))
        self.fault = ""

    async def _snapshot(self) -> dict[str, Any]:
        crm = self.crm
        keys = collections.Counter(key for key, _, _ in crm.attempts)
        return {
            "post_attempts": len(crm.attempts),
            "attempts_by_fault": dict(collections.Counter(f for _, _, f in crm.attempts)),
            "keys_sent_more_than_once": sum(1 for n in keys.values() if n > 1),
            "keys": len(crm.tickets),
            "ticket_ids": sorted(crm.created),
            "duplicates": sum(n - 1 for n in crm.created.values()),
            "keys_with_two_bodies": sum(1 for b in crm.bodies.values() if len(b) > 1),
        }

    def snapshot(self) -> dict[str, Any]:
        return self._call(self._snapshot())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self.crm.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


class CrmProcess:
    """The same CRM in a process of its own (``storm.py --serve-crm``), driven by lines on its
    stdin: it shares no interpreter (GIL) with the bench's threads that read the nodes' logs."""

    def __init__(self, folder: Path) -> None:
        self._log = (folder / "crm.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-crm"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.url = self._ask("url")

    def _ask(self, line: str) -> Any:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError("the CRM process ended; see crm.log")
        return json.loads(answer)

    def down(self, fault: str) -> None:
        self._ask(f"down {fault}")

    def up(self) -> None:
        self._ask("up")

    def snapshot(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._ask("snapshot")
        return answer

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            self._ask("close")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        self._log.close()


def serve_crm() -> None:
    """``--serve-crm``: a CrmServer answering the commands of CrmProcess, one JSON line each."""
    server = CrmServer()
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        answer: Any = None
        if command == "url":
            answer = server.url
        elif command == "down":
            server.down(arg)
        elif command == "up":
            server.up()
        elif command == "snapshot":
            answer = server.snapshot()
        elif command == "close":
            print("null", flush=True)
            break
        print(json.dumps(answer), flush=True)
    server.close()


def wait_until(t0: float, at: float) -> None:
    """Sleep until ``at`` seconds after the wall-clock time ``t0``."""
    time.sleep(max(0.0, t0 + at - time.time()))


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


def start_kamailio(
    folder: Path, nodes: list[HotlineProcess]
) -> tuple[subprocess.Popen[bytes], int]:
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


def files_of(node: HotlineProcess) -> dict[str, Any]:
    """A killed node's tickets as its files kept them (SQLite recovers the WAL on open)."""
    crm = node.log_path.parent / "var" / "crm"
    with contextlib.closing(sqlite3.connect(crm / "crm.sqlite3")) as db:
        (tickets,) = db.execute("SELECT count(*) FROM tickets").fetchone()
    with contextlib.closing(sqlite3.connect(crm / "outbox.sqlite3")) as db:
        states = dict(db.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall())
    return {"tickets": tickets, "outbox": {"by_state": states}}


def crm_outcome(
    crm: CrmProcess, nodes: list[HotlineProcess], came_back: float, wait: float
) -> dict[str, Any]:
    """Wait for the live nodes' outboxes to drain, then hold the CRM's tickets against the
    numbers the callers were told."""
    deadline = time.time() + wait
    backlog: dict[str, Any] = {}
    while True:
        backlog = {}
        for node in nodes:
            if node.proc.poll() is None:
                with contextlib.suppress(OSError):
                    backlog[node.name] = http(f"{node.api}/outbox")["stats"]
        if all(b.get("backlog") == 0 for b in backlog.values()) or time.time() >= deadline:
            break
        time.sleep(1.0)
    drained_after = round(time.time() - came_back, 1)
    created = [e for n in nodes for e in n.events("ticket created")]
    told = {str(e["ticket_id"]) for e in created}
    per_call = collections.Counter(str(e.get("call_id")) for e in created)
    seen = crm.snapshot()
    in_crm = set(seen.pop("ticket_ids"))
    return {
        "crm_drained_s_after_up": drained_after,
        "crm_outbox": backlog,
        "tickets_told": len(told),
        # One call, one work order: a second one under another key (a "partial" ticket filed
        # at the hang-up while the first was still being numbered) is a duplicate too.
        "calls_with_two_tickets": sum(1 for n in per_call.values() if n > 1),
        "crm_tickets": len(in_crm),
        "crm_missing": sorted(told - in_crm),
        "crm_unknown": sorted(in_crm - told),
        "crm": seen,
    }


def told_while_down(nodes: list[HotlineProcess], down: float, up: float) -> int:
    """Tickets numbered while the CRM was down (from the "ticket created" lines' time)."""
    count = 0
    for node in nodes:
        for e in node.events("ticket created"):
            at = dt.datetime.fromisoformat(str(e["timestamp"]).replace("Z", "+00:00"))
            count += down <= at.timestamp() <= up
    return count


def service_failures(node: HotlineProcess) -> dict[str, float]:
    """The node's back-end requests that did not succeed, by service and result."""
    with contextlib.suppress(OSError):
        return {
            k.partition("{")[2].rstrip("}"): v
            for k, v in node.metrics().items()
            if k.startswith("hotline_service_requests_total{") and 'result="ok"' not in k and v
        }
    return {}


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    report: dict[str, Any] = {"calls": args.calls, "seconds": args.seconds, "agents": args.agents}
    procs: list[subprocess.Popen[bytes]] = []
    nodes: list[HotlineProcess] = []
    agents: Agents | None = None
    crm: CrmProcess | None = None
    sipps: list[subprocess.Popen[bytes]] = []
    try:
        redis_proc, redis_port = start_redis(folder)
        procs.append(redis_proc)
        if args.crm_down_at is not None:
            crm = CrmProcess(folder)
        for i in (1, 2):
            nodes.append(
                start_node(
                    folder / f"node{i}",
                    f"storm-{i}",
                    i,
                    f"redis://127.0.0.1:{redis_port}/0",
                    timeout=args.node_timeout,
                    crm_url=crm.url if crm is not None else None,
                )
            )
        for node in nodes:
            node.wait_listening()
        phone, phone_port = start_phones(folder)
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
        xml = scenario(folder, args.hold, audio="none" if args.no_audio else "stream")
        xml = xml if args.direct else through_proxy(xml)
        for n in range(len(targets)):
            (folder / f"caller{n}.xml").write_text(numbered_callers(xml, f"13{n}"), "ascii")
        since_ms = int(time.time() * 1000)
        started_wall = time.time()
        with contextlib.ExitStack() as stack:
            for n, (port, calls) in enumerate(targets):
                base = stack.enter_context(media_sinks(args.media_port + 20_000 * n, calls))
                out = folder / f"sipp{n}"
                cmd = caller_command(
                    folder / f"caller{n}.xml",
                    port,
                    out,
                    calls=calls,
                    rate=calls / args.seconds,
                    media_base=base,
                    timeout_s=args.seconds + args.hold + 60,
                    # Kamailio's UDP workers may forward a node's 180 and 200 in either order:
                    # a late 180 must not make SIPp abort the call (RFC 3261 lets a UAC ignore
                    # it), so unexpected messages are ignored rather than fatal.
                    extra=("-default_behaviors", "all,-abortunexp"),
                )
                sipps.append(start_callers(cmd, out, folder))
            killed_at = None
            if args.restart_redis_at is not None:
                wait_until(started_wall, args.restart_redis_at)
                redis_proc.terminate()  # SIGTERM: Redis flushes the AOF and exits
                redis_proc.wait(10)
                down = time.monotonic()
                time.sleep(args.redis_down)
                redis_proc, _ = start_redis(folder, redis_port)
                procs[0] = redis_proc
                report["redis_restarted_at_s"] = round(time.time() - started_wall, 1)
                report["redis_down_s"] = round(time.monotonic() - down, 1)
            if crm is not None:
                wait_until(started_wall, args.crm_down_at)
                crm.down(args.crm_fault)
                crm_down = time.time()
                wait_until(crm_down, args.crm_down_for)
                crm.up()
                crm_up = time.time()
                report |= {
                    "crm_fault": args.crm_fault,
                    "crm_down_at_s": round(crm_down - started_wall, 1),
                    "crm_down_s": round(crm_up - crm_down, 1),
                }
            if args.kill_node_at is not None:
                wait_until(started_wall, args.kill_node_at)
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
            e
            for e in summaries
            # A "partial" ticket is filed at the hang-up: the caller was not told that number.
            if any(
                str(o).startswith("ticket") and "(partial)" not in str(o)
                for o in e.get("outcomes", [])
            )
        ]
        outcomes = collections.Counter(str(e.get("outcome")) for e in summaries)
        if crm is not None:
            report |= crm_outcome(crm, nodes, crm_up, args.crm_drain_wait)
            report["tickets_told_while_crm_down"] = told_while_down(nodes, crm_down, crm_up)
            # The flow as every caller walks it (no account, no outage known): the work order
            # is filed and its number read out (fault_ticket), then the queue.
            report["summaries_walked_the_flow"] = sum(
                1
                for e in told
                if [p for p in e.get("path", []) if p.startswith("fault_")][-2:]
                == ["fault_ticket", "fault_queue"]
            )
            report["service_failures"] = {n.name: service_failures(n) for n in nodes}
        tickets = 0
        outbox: dict[str, Any] = {}
        for node in nodes:
            if node.proc.poll() is not None:  # killed: read what its files kept
                kept = files_of(node)
                tickets += kept["tickets"]
                outbox[node.name] = kept["outbox"]
                continue
            if crm is None:  # the embedded store lists its tickets
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
            "tickets_in_stores": tickets if crm is None else report["crm_tickets"],
            "outbox": outbox,
            "routing_entered": routing["entered"],
            "routing_final": routing["final"],
            "routing_open": len(routing["open"]),
            "routing_nodelost_events": routing["nodelost"],
            "agent_accepts": agents.accepted,
            "agent_accept_errors": dict(agents.accept_errors),
            "lost_sipp": created - ok,
            "lost_no_summary": created - len(summaries),
            "errors_logged": sum(len(n.errors()) for n in nodes),
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
        if crm is not None:
            crm.close()


def parser() -> argparse.ArgumentParser:
    """The command line (the tests parse theirs with it too)."""
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
    parser.add_argument(
        "--crm-down-at", type=float, help="HTTP CRM: take it down after this many s"
    )
    parser.add_argument("--crm-down-for", type=float, default=60.0, help="seconds it stays down")
    parser.add_argument(
        "--crm-fault",
        choices=["stop", "500"],
        default="stop",
        help="stop: stops listening (refused); 500: answers every ticket 500",
    )
    parser.add_argument(
        "--crm-drain-wait", type=float, default=300.0, help="seconds to wait for the outboxes"
    )
    parser.add_argument("--node-timeout", type=float, default=8.0)
    parser.add_argument("--probe-wait", type=float, default=6.0)
    parser.add_argument("--media-port", type=int, default=6000)
    parser.add_argument("--keep", type=Path, help="keep logs and SIPp traces here")
    return parser


def main() -> None:
    if sys.argv[1:] == ["--serve-crm"]:
        serve_crm()
        return
    args = parser().parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="storm-", dir=args.keep))
    else:
        folder = Path(tempfile.mkdtemp(prefix="storm-"))
    print(
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; code {code_version()}; {machine()}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; folder {folder}"
    )
    report = run(args, folder)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
