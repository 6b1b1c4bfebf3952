"""Benchmark: tickets through the durable outbox to a CRM — submit rate, and how fast a backlog
drains to an in-process CRM and to the HTTP adapter on loopback.

- ``submit``: tickets queued one after another, each its own fsynced transaction (WAL,
  synchronous=FULL): what a node can promise callers per second. It builds the backlog.
- ``drain``: a copy of that backlog (``--tickets``, default 10,000) delivered by
  `DeliveryWorker.run_once` rounds until nothing is pending, to
  - ``memory``: a CRM in a dict in the same process (the outbox's own cost),
  - ``embedded``: the embedded CRM store (`EmbeddedCrm`, its own SQLite file, fsynced too),
  - ``http``: `HttpCrm` to a small aiohttp CRM in another process on 127.0.0.1 (one ticket per
    idempotency key, like a real one), with ``--concurrency`` requests in flight.
- ``live``: ``--live`` tickets submitted back to back while `DeliveryWorker.serve` runs against
  the HTTP CRM: time from the start of `submit` to the CRM's answer, per ticket.

``CPU ms/ticket`` is this process's CPU time (the outbox, SQLite's thread, the adapter; not the
CRM's process) per ticket: steadier than wall time on a busy machine.

    python bench/crm.py [--tickets 10000] [--concurrency 1,8,32] [--batch 100,500]
                        [--live 1000] [--dir DIR]

The files go to a temporary folder under ``var/`` (on disk, not a RAM disk: fsync is the point)
unless ``--dir`` is given. Prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog
from aiohttp import web

from crm_bridge.backend import CrmBackend
from crm_bridge.embedded import EmbeddedCrm
from crm_bridge.http import HttpCrm
from crm_bridge.model import Address, BillSummary, Customer, Outage, Survey, Ticket
from crm_bridge.outbox import DeliveryWorker, Outbox

T0 = 1_800_000_000.0


def ticket(n: int) -> Ticket:
    """A typical IVR fault report."""
    return Ticket(
        ticket_id=f"2611270{n:06d}",
        idempotency_key=f"call-{n}:fault_report",
        ticket_type="故障报修",
        priority=50,
        created_at=T0,
        caller="13812345678",
        account="1234567890",
        address=Address(province="北京市", district="朝阳区", raw="北京市朝阳区建国路1号院"),
        description="家里停电了，邻居也没电",
        call_id=f"call-{n}",
        ivr_path=("welcome", "main", "fault", "fault_account", "fault_address", "ticket"),
        fields={"intent": "fault", "hazard": "no"},
    )


class MemoryCrm:
    """A CRM in a dict: one ticket per idempotency key."""

    name = "memory"

    def __init__(self) -> None:
        self.refs: dict[str, str] = {}
        self.answered: dict[str, float] = {}

    async def create_ticket(self, ticket: Ticket) -> str:
        ref = self.refs.setdefault(ticket.idempotency_key, f"M-{len(self.refs) + 1}")
        self.answered.setdefault(ticket.ticket_id, time.perf_counter())
        return ref

    async def get_ticket(self, ticket_id: str) -> Ticket | None:
        return None

    async def find_customer(self, *, phone: str = "", account: str = "") -> Customer | None:
        return None

    async def outages(self, address: Address, now: float) -> list[Outage]:
        return []

    async def bill_summary(self, account: str) -> BillSummary | None:
        return None

    async def record_survey(self, survey: Survey) -> None:
        return None

    async def close(self) -> None:
        return None


class TimedHttpCrm(HttpCrm):
    """The HTTP adapter, noting when each ticket's answer came."""

    def __init__(self, url: str, expected: int) -> None:
        super().__init__(url, timeout=30.0)
        self.answered: dict[str, float] = {}
        self.expected = expected
        self.all_answered = asyncio.Event()

    async def create_ticket(self, ticket: Ticket) -> str:
        ref = await super().create_ticket(ticket)
        self.answered.setdefault(ticket.ticket_id, time.perf_counter())
        if len(self.answered) >= self.expected:
            self.all_answered.set()
        return ref


# ---------------------------------------------------------------------- the CRM process


def serve_crm() -> None:
    """Run the loopback CRM: print its port, serve until killed."""
    tickets: dict[str, str] = {}

    async def create(request: web.Request) -> web.Response:
        body = await request.json()
        key = request.headers["Idempotency-Key"]
        created = key not in tickets
        ref = tickets.setdefault(key, f"CRM-{len(tickets) + 1}")
        answer = {"ticket_id": body["ticket_id"], "crm_ref": ref}
        return web.json_response(answer, status=201 if created else 200)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/api/tickets", create)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


@contextmanager
def crm_process() -> Iterator[str]:
    """The loopback CRM in a process of its own; yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--crm-server"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/api"
    finally:
        proc.terminate()
        proc.wait()


# ---------------------------------------------------------------------- measurements


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Took:
    """Wall seconds and this process's CPU seconds (all its threads: SQLite's too)."""

    wall: float = 0.0
    cpu: float = 0.0


@contextmanager
def took() -> Iterator[Took]:
    result = Took()
    wall, cpu = time.perf_counter(), time.process_time()
    yield result
    result.wall = time.perf_counter() - wall
    result.cpu = time.process_time() - cpu


def row(what: tuple[str, str, object, object], n: int, t: Took) -> str:
    """A table row (scenario, backend, concurrency, batch) up to the notes column."""
    scenario, backend, concurrency, batch = what
    return (
        f"| {scenario} | {backend} | {concurrency} | {batch} | {n} | {t.wall:.2f} | "
        f"{n / t.wall:,.0f} | {t.cpu * 1000 / n:.2f} |"
    )


async def build_backlog(path: Path, tickets: int) -> tuple[Took, list[float]]:
    """Submit ``tickets``; the time taken and each submit's milliseconds."""
    each = []
    async with await Outbox.open(path) as box:
        with took() as spent:
            for n in range(tickets):
                t = time.perf_counter()
                await box.submit(ticket(n), now=T0)
                each.append((time.perf_counter() - t) * 1000)
    return spent, each


async def drain(path: Path, crm: CrmBackend, concurrency: int, batch: int) -> Took:
    """Deliver the whole backlog at ``path``; the time taken."""
    async with await Outbox.open(path) as box:
        worker = DeliveryWorker(box, crm, batch=batch, concurrency=concurrency)
        with took() as spent:
            while await worker.run_once(T0):
                pass
        stats = await box.stats(T0)
    assert stats.backlog == 0, stats
    assert stats.delivered > 0, stats
    return spent


async def live(path: Path, url: str, tickets: int, concurrency: int) -> list[float]:
    """Submit while `serve` runs; each ticket's milliseconds from submit to the CRM's answer."""
    crm = TimedHttpCrm(url, tickets)
    started: dict[str, float] = {}
    async with await Outbox.open(path) as box:
        worker = DeliveryWorker(box, crm, concurrency=concurrency)
        task = asyncio.create_task(worker.serve())
        try:
            for n in range(tickets):
                t = ticket(1_000_000 + n)
                started[t.ticket_id] = time.perf_counter()
                await box.submit(t)
            await crm.all_answered.wait()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await crm.close()
    return [(crm.answered[k] - started[k]) * 1000 for k in started]


async def run(args: argparse.Namespace, folder: Path) -> None:
    backlog = folder / "backlog.sqlite3"
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {platform.platform()}"
    )
    print(f"files in {folder}\n")
    print(
        "| scenario | backend | concurrency | batch | tickets | wall s | tickets/s "
        "| CPU ms/ticket | notes |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")

    spent, each = await build_backlog(backlog, args.tickets)
    print(
        row(("submit", "-", 1, "-"), args.tickets, spent)
        + f" p50 {statistics.median(each):.2f} ms, p99 {pct(each, 0.99):.2f} ms per submit |"
    )
    size = backlog.stat().st_size / 2**20

    def fresh() -> Path:
        copy = folder / "drain.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(backlog, copy)
        return copy

    for batch in args.batch:
        spent = await drain(fresh(), MemoryCrm(), 1, batch)
        print(row(("drain", "memory", 1, batch), args.tickets, spent) + f" file {size:.1f} MiB |")
    for batch in args.batch:
        store_file = folder / f"crm-{batch}.sqlite3"
        store = await EmbeddedCrm.open(store_file, clock=lambda: T0)
        try:
            spent = await drain(fresh(), store, 1, batch)
        finally:
            await store.close()
        store_size = store_file.stat().st_size / 2**20
        print(
            row(("drain", "embedded", 1, batch), args.tickets, spent)
            + f" store {store_size:.1f} MiB |"
        )
    with crm_process() as url:
        for batch in args.batch:
            for concurrency in args.concurrency:
                crm = HttpCrm(url, timeout=30.0)
                try:
                    spent = await drain(fresh(), crm, concurrency, batch)
                finally:
                    await crm.close()
                print(row(("drain", "http", concurrency, batch), args.tickets, spent) + " |")
        if args.live:
            for concurrency in args.concurrency[:1]:
                path = folder / "live.sqlite3"
                with took() as spent:
                    latencies = await live(path, url, args.live, concurrency)
                print(
                    row(("live", "http", concurrency, 100), args.live, spent)
                    + f" submit → CRM answer p50 {statistics.median(latencies):.1f} ms,"
                    f" p99 {pct(latencies, 0.99):.1f} ms |"
                )


def main() -> None:
    # Per-ticket info lines would interleave with the table (and cost their rendering): the
    # outbox's own cost is what is measured here.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tickets", type=int, default=10_000)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--batch", default="100,500")
    parser.add_argument("--live", type=int, default=1000)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--crm-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.crm_server:
        serve_crm()
        return
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.batch = [int(b) for b in args.batch.split(",")]
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(run(args, args.dir))
    else:
        # Under var/ (ignored by git), on the project's disk: /tmp may be a RAM disk, and
        # fsync is the point.
        base = Path(__file__).resolve().parent.parent / "var"
        base.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=base, prefix="bench-crm-") as folder:
            asyncio.run(run(args, Path(folder)))


if __name__ == "__main__":
    main()
