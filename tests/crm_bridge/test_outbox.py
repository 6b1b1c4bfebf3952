"""The outbox and its delivery worker, on real SQLite files, against a CRM in a dict.

Time is always an argument: `run_once(now)` with explicit steps, so backoff is checked against
the numbers it must produce and no test waits for a clock.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiosqlite
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from crm_bridge.codec import ticket_to_dict
from crm_bridge.errors import NotFoundError, TicketInvalidError
from crm_bridge.migrations import migrate
from crm_bridge.model import Address, Survey, Ticket, idempotency_key
from crm_bridge.numbers import TicketNumbers
from crm_bridge.outbox import STEPS as OUTBOX_STEPS
from crm_bridge.outbox import (
    Backoff,
    DeliveryState,
    DeliveryWorker,
    Outbox,
    OutboxKind,
    OutboxMetrics,
    Outcome,
    outbox_path,
    survey_outbox_id,
)
from tests.crm_bridge.busy_sqlite import occupy

sys.path.insert(0, str(Path(__file__).parent))
from memory_crm import MemoryCrm

T0 = 1_800_000_000.0
CALLER = "13812345678"


def ticket(n: int, *, key: str | None = None, number: str | None = None) -> Ticket:
    return Ticket(
        ticket_id=number or f"26112701{n:05d}",
        idempotency_key=key or idempotency_key(f"call-{n}", "fault_report"),
        ticket_type="故障报修",
        priority=50,
        created_at=T0,
        caller=CALLER,
        account="1234567890",
        address=Address(province="北京市", district="朝阳区", raw="北京市朝阳区建国路1号"),
        description="停电了",
        call_id=f"call-{n}",
        ivr_path=("welcome", "fault"),
        fields={"intent": "fault"},
    )


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    box = await Outbox.open(outbox_path(tmp_path), clock=lambda: T0)
    yield box
    await box.close()


def seeded(seed: int) -> random.Random:
    """A reproducible jitter source."""
    return random.Random(seed)  # noqa: S311 — backoff jitter, not a secret


def worker(outbox: Outbox, crm: MemoryCrm, **kwargs: object) -> DeliveryWorker:
    options: dict[str, object] = {"max_attempts": 20, "retry_max_seconds": 300.0}
    options.update(kwargs)
    return DeliveryWorker(
        outbox,
        crm,
        clock=lambda: T0,
        rng=seeded(7),
        **options,  # type: ignore[arg-type]  # the test passes the keyword arguments it means
    )


# ---------------------------------------------------------------------- the file


async def test_open_makes_a_wal_file_fsynced_on_commit(tmp_path: Path) -> None:
    path = outbox_path(tmp_path)
    assert path == tmp_path / "crm" / "outbox.sqlite3"
    async with await Outbox.open(path) as box, box.connection.execute("PRAGMA synchronous") as cur:
        assert await cur.fetchone() == (2,)  # FULL
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


async def test_a_queued_ticket_survives_a_restart(tmp_path: Path) -> None:
    path = outbox_path(tmp_path)
    async with await Outbox.open(path) as box:
        await box.submit(ticket(1), now=T0)
    async with await Outbox.open(path) as box:
        [entry] = await box.due(T0)
    assert entry.item == ticket(1)
    assert entry.state is DeliveryState.PENDING
    assert entry.attempts == 0
    assert entry.next_at == T0
    assert entry.submitted_at == T0


async def test_deliveries_are_counted_once_and_kept_across_a_restart(tmp_path: Path) -> None:
    path = outbox_path(tmp_path)
    crm = MemoryCrm()
    async with await Outbox.open(path) as box:
        for n in range(3):
            await box.submit(ticket(n), now=T0)
        claim = await box.claim(T0, 10, 20, lambda attempt, now: now + 1)
        await worker(box, crm).run_once(T0 + 1)
        # An outcome written twice (a repeated settle) does not count twice.
        await box.settle(
            [Outcome(e.item_id, DeliveryState.DELIVERED, "M-1") for e in claim.due],
            T0 + 2,
        )
        assert (await box.stats(T0 + 2)).delivered == 3
    async with await Outbox.open(path) as box:
        stats = await box.stats(T0 + 2)
    assert (stats.backlog, stats.delivered, stats.dead_letters) == (0, 3, 0)


# ---------------------------------------------------------------------- submitting


async def test_submit_is_due_at_once_and_counted(outbox: Outbox) -> None:
    await outbox.submit(ticket(1), now=T0)
    await outbox.submit(ticket(2), now=T0 + 5)
    assert [e.item_id for e in await outbox.due(T0 + 5)] == [
        ticket(1).ticket_id,
        ticket(2).ticket_id,
    ]
    assert [e.item_id for e in await outbox.due(T0)] == [ticket(1).ticket_id]
    stats = await outbox.stats(T0 + 65)
    assert (stats.backlog, stats.oldest_age_seconds, stats.dead_letters, stats.delivered) == (
        2,
        65.0,
        0,
        0,
    )


async def test_same_idempotency_key_makes_no_second_row(outbox: Outbox) -> None:
    first = ticket(1)
    again = ticket(1, number="2611270100099")  # the same outcome, a new number
    assert await outbox.submit(first, now=T0) == first
    # The caller must hear the number the CRM will have: the first one.
    assert await outbox.submit(again, now=T0 + 1) == first
    assert [e.item for e in await outbox.due(T0 + 1)] == [first]


async def test_a_number_used_twice_is_refused(outbox: Outbox) -> None:
    await outbox.submit(ticket(1), now=T0)
    with pytest.raises(TicketInvalidError) as caught:
        await outbox.submit(ticket(2, number=ticket(1).ticket_id), now=T0)
    assert caught.value.field == "ticket_id"
    assert len(await outbox.due(T0)) == 1


async def test_submit_new_writes_the_number_and_the_row_in_one_transaction(
    outbox: Outbox,
) -> None:
    db = outbox.connection
    await db.execute("CREATE TABLE seq (last INTEGER NOT NULL)")
    await db.execute("INSERT INTO seq VALUES (0)")

    async def allocate(fail: bool) -> Ticket:
        async with db.execute("UPDATE seq SET last = last + 1 RETURNING last") as cursor:
            row = await cursor.fetchone()
        assert row is not None
        if fail:
            raise TicketInvalidError("description", "made up to fail after the number")
        return ticket(int(row[0]))

    made = await outbox.submit_new(ticket(1).idempotency_key, lambda _db: allocate(False))
    assert made == ticket(1)
    with pytest.raises(TicketInvalidError):
        await outbox.submit_new(ticket(2).idempotency_key, lambda _db: allocate(True))
    # The failed ticket took no number and left no row.
    async with db.execute("SELECT last FROM seq") as cursor:
        assert await cursor.fetchone() == (1,)
    assert [e.item for e in await outbox.due(T0)] == [ticket(1)]

    calls = 0

    async def counted(_db: object) -> Ticket:
        nonlocal calls
        calls += 1
        return ticket(3)

    # A key already queued allocates nothing: the earlier ticket comes back.
    assert await outbox.submit_new(ticket(1).idempotency_key, counted) == ticket(1)
    assert calls == 0


async def test_the_ticket_number_and_the_row_share_one_transaction(outbox: Outbox) -> None:
    """The node's number sequence lives in the outbox file: a ticket that fails after taking
    its number gives the number back, and a repeated outcome takes none."""
    numbers = await TicketNumbers.attach(outbox.connection, 7, lock=outbox.lock)

    def maker(key: str, fail: bool = False) -> Callable[[object], Awaitable[Ticket]]:
        async def make(_db: object) -> Ticket:
            number = await numbers.allocate_in_transaction(T0)
            if fail:
                raise TicketInvalidError("address", "made up to fail after the number")
            return Ticket(number, key, "咨询", 10, T0)

        return make

    first = await outbox.submit_new("call-1:billing", maker("call-1:billing"), now=T0)
    assert first.ticket_id.endswith("0700001")
    again = await outbox.submit_new("call-1:billing", maker("call-1:billing"), now=T0)
    assert again == first
    with pytest.raises(TicketInvalidError):
        await outbox.submit_new("call-2:billing", maker("call-2:billing", fail=True), now=T0)
    second = await outbox.submit_new("call-3:billing", maker("call-3:billing"), now=T0)
    assert second.ticket_id.endswith("0700002")
    # The allocator's own transactions share the outbox's lock.
    assert (await numbers.allocate(T0)).endswith("0700003")
    assert [e.item for e in await outbox.due(T0)] == [first, second]


async def test_submit_new_refuses_a_ticket_with_another_key(outbox: Outbox) -> None:
    async def other(_db: object) -> Ticket:
        return ticket(2)

    with pytest.raises(TicketInvalidError) as caught:
        await outbox.submit_new(ticket(1).idempotency_key, other)
    assert caught.value.field == "idempotency_key"
    assert await outbox.due(T0) == []


# ---------------------------------------------------------------------- delivering


async def test_run_once_delivers_and_keeps_the_crm_reference(outbox: Outbox) -> None:
    crm = MemoryCrm()
    await outbox.submit(ticket(1), now=T0)
    with capture_logs() as logs:
        assert await worker(outbox, crm).run_once(T0) == 1
    entry = await outbox.get(ticket(1).ticket_id)
    assert entry is not None
    assert entry.state is DeliveryState.DELIVERED
    assert entry.crm_ref == "M-1"
    assert entry.done_at == T0
    assert entry.attempts == 1
    assert entry.last_error == ""
    assert crm.tickets[ticket(1).idempotency_key] == ticket(1)
    assert await outbox.due(T0 + 10_000) == []
    assert (await outbox.stats(T0)).delivered == 1
    assert [e for e in logs if e["event"] == "ticket_delivered"] == [
        {
            "event": "ticket_delivered",
            "log_level": "info",
            "ticket_id": ticket(1).ticket_id,
            "attempt": 1,
            "crm_ref": "M-1",
        }
    ]
    # A second round finds nothing to do.
    assert await worker(outbox, crm).run_once(T0 + 10_000) == 0


async def test_no_log_line_carries_the_callers_number(outbox: Outbox) -> None:
    crm = MemoryCrm()
    crm.script("down", "reject")
    await outbox.submit(ticket(1), now=T0)
    with capture_logs() as logs:
        await worker(outbox, crm).run_once(T0)
        await worker(outbox, crm).run_once(T0 + 5)
    assert {e["event"] for e in logs} == {"ticket_delivery_failed", "ticket_dead_lettered"}
    assert all(CALLER not in repr(e) for e in logs)


async def test_the_crm_down_schedules_backoff_from_the_attempt_time(outbox: Outbox) -> None:
    crm = MemoryCrm()
    crm.default_fault = "down"
    await outbox.submit(ticket(1), now=T0)
    w = worker(outbox, crm, first_retry_seconds=2.0)
    now = T0
    waits = []
    with capture_logs() as logs:
        for _ in range(12):
            assert await w.run_once(now) == 1
            entry = await outbox.get(ticket(1).ticket_id)
            assert entry is not None
            assert entry.state is DeliveryState.PENDING
            waits.append(entry.next_at - now)
            # Not due a moment before its time; due at it.
            assert await w.run_once(entry.next_at - 0.001) == 0
            now = entry.next_at
    # Equal jitter on 2, 4, 8 ... capped at 300 s: between half and all of each.
    for attempt, wait in enumerate(waits, start=1):
        full = min(2.0 * 2 ** (attempt - 1), 300.0)
        assert full / 2 <= wait <= full, (attempt, wait)
    assert entry is not None
    assert entry.attempts == 12
    assert entry.last_error == "crm-unavailable: connection refused"
    failed = [e for e in logs if e["event"] == "ticket_delivery_failed"]
    assert [e["attempt"] for e in failed] == list(range(1, 13))
    assert failed[0]["next_at"] == T0 + waits[0]
    # Every attempt carried the same idempotency key.
    assert {key for _, key, _ in crm.calls} == {ticket(1).idempotency_key}


def test_backoff_is_seedable_and_never_over_the_cap() -> None:
    first = Backoff(1.0, 300.0, seeded(3))
    second = Backoff(1.0, 300.0, seeded(3))
    schedule = [first.after(n) for n in range(1, 40)]
    assert schedule == [second.after(n) for n in range(1, 40)]
    assert all(0.5 <= wait <= 300.0 for wait in schedule)
    assert 0.5 <= schedule[0] <= 1.0
    assert 150.0 <= first.after(10_000) <= 300.0
    # The jitter spreads at the cap too: nodes retrying together drift apart.
    assert len({round(first.after(50), 6) for _ in range(20)}) > 1


async def test_a_refusal_is_a_dead_letter_at_once(outbox: Outbox) -> None:
    crm = MemoryCrm()
    crm.script("reject", "invalid")
    await outbox.submit(ticket(1), now=T0)
    await outbox.submit(ticket(2), now=T0)
    with capture_logs() as logs:
        assert await worker(outbox, crm).run_once(T0) == 2
    dead = await outbox.dead_letters()
    assert [(e.item_id, e.state, e.attempts, e.done_at) for e in dead] == [
        (ticket(1).ticket_id, DeliveryState.DEAD, 1, T0),
        (ticket(2).ticket_id, DeliveryState.DEAD, 1, T0),
    ]
    assert dead[0].last_error == "crm-rejected: the CRM answered 400: bad-ticket: unknown district"
    assert dead[1].last_error == ("invalid-ticket: ticket_type: '维修' is not a type the CRM knows")
    assert [e["reason"] for e in logs if e["event"] == "ticket_dead_lettered"] == [
        dead[0].last_error,
        dead[1].last_error,
    ]
    stats = await outbox.stats(T0 + 1)
    assert (stats.backlog, stats.dead_letters) == (0, 2)
    assert await worker(outbox, crm).run_once(T0 + 100_000) == 0


async def test_out_of_attempts_is_a_dead_letter(outbox: Outbox) -> None:
    crm = MemoryCrm()
    crm.default_fault = "down"
    await outbox.submit(ticket(1), now=T0)
    w = worker(outbox, crm, max_attempts=3)
    for step in range(5):
        await w.run_once(T0 + step * 1000)
    [dead] = await outbox.dead_letters()
    assert dead.attempts == 3
    assert dead.last_error == "gave up after 3 attempts: crm-unavailable: connection refused"
    assert len(crm.calls) == 3


async def test_a_backend_defect_is_retried_not_fatal(outbox: Outbox) -> None:
    crm = MemoryCrm()
    crm.script("bug")
    await outbox.submit(ticket(1), now=T0)
    await outbox.submit(ticket(2), now=T0)
    with capture_logs() as logs:
        assert await worker(outbox, crm).run_once(T0) == 2
    entry = await outbox.get(ticket(1).ticket_id)
    assert entry is not None
    assert entry.state is DeliveryState.PENDING
    assert entry.last_error == "RuntimeError: adapter defect"
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["ticket_delivery_error"]
    # The other ticket went through in the same round, and the first on the next.
    assert crm.created == {ticket(2).ticket_id: 1}
    await worker(outbox, crm).run_once(T0 + 10)
    assert crm.created == {ticket(1).ticket_id: 1, ticket(2).ticket_id: 1}


async def test_an_answer_lost_after_the_crm_committed_is_not_a_second_ticket(
    outbox: Outbox,
) -> None:
    crm = MemoryCrm()
    crm.script("lost", "lost", "down")
    await outbox.submit(ticket(1), now=T0)
    w = worker(outbox, crm)
    for step in range(4):
        await w.run_once(T0 + step * 1000)
    entry = await outbox.get(ticket(1).ticket_id)
    assert entry is not None
    assert (entry.state, entry.attempts, entry.crm_ref) == (DeliveryState.DELIVERED, 4, "M-1")
    assert crm.created == {ticket(1).ticket_id: 1}


# ---------------------------------------------------------------------- crashes


async def test_a_worker_that_died_mid_attempt_is_resumed_by_the_next(tmp_path: Path) -> None:
    path = outbox_path(tmp_path)
    crm = MemoryCrm()
    async with await Outbox.open(path) as box:
        await box.submit(ticket(1), now=T0)
        # What a worker writes before its request goes out; then the process is gone.
        claim = await box.claim(T0, 10, 20, lambda attempt, now: now + 5.0)
        assert [e.attempts for e in claim.due] == [1]
    async with await Outbox.open(path) as box:
        entry = await box.get(ticket(1).ticket_id)
        assert entry is not None
        assert entry.last_error == "attempt 1 did not finish (the worker stopped)"
        assert entry.next_at == T0 + 5.0
        w = worker(box, crm)
        assert await w.run_once(T0 + 4.0) == 0  # not before its scheduled retry
        assert await w.run_once(T0 + 5.0) == 1
        entry = await box.get(ticket(1).ticket_id)
    assert entry is not None
    assert (entry.state, entry.attempts) == (DeliveryState.DELIVERED, 2)
    assert crm.created == {ticket(1).ticket_id: 1}


async def test_a_ticket_that_kills_every_worker_ends_as_a_dead_letter(outbox: Outbox) -> None:
    await outbox.submit(ticket(1), now=T0)
    for step in range(3):  # three workers die in the middle of the attempt
        await outbox.claim(T0 + step * 10, 10, 3, lambda attempt, now: now + 1.0)
    with capture_logs() as logs:
        assert await worker(outbox, MemoryCrm(), max_attempts=3).run_once(T0 + 100) == 0
    [dead] = await outbox.dead_letters()
    assert dead.last_error == (
        "gave up after 3 attempts: attempt 3 did not finish (the worker stopped)"
    )
    assert [e["event"] for e in logs] == ["ticket_dead_lettered"]


async def test_an_unreadable_row_is_set_aside_not_fatal(outbox: Outbox) -> None:
    for n in (1, 2):
        await outbox.submit(ticket(n), now=T0)
    # A damaged row (hand-edited file): its ticket no longer parses.
    await outbox.connection.execute(
        "UPDATE outbox SET body = '{\"ticket_id\": 7}' WHERE item_id = ?",
        (ticket(1).ticket_id,),
    )
    crm = MemoryCrm()
    with capture_logs() as logs:
        assert await worker(outbox, crm).run_once(T0) == 1
    assert crm.created == {ticket(2).ticket_id: 1}
    assert [(e["event"], e["ticket_id"]) for e in logs if e["log_level"] == "error"] == [
        ("ticket_unreadable", ticket(1).ticket_id)
    ]
    stats = await outbox.stats(T0)
    assert (stats.backlog, stats.dead_letters, stats.delivered) == (0, 1, 1)


# ---------------------------------------------------------------------- dead letters


async def test_retry_replays_one_or_all_dead_letters(outbox: Outbox) -> None:
    crm = MemoryCrm()
    crm.script("reject", "reject", "reject")
    for n in (1, 2, 3):
        await outbox.submit(ticket(n), now=T0)
    w = worker(outbox, crm)
    await w.run_once(T0)
    assert len(await outbox.dead_letters()) == 3

    assert await outbox.retry(ticket(2).ticket_id, now=T0 + 60) == 1
    [again] = await outbox.due(T0 + 60)
    assert (again.item, again.attempts, again.next_at) == (ticket(2), 0, T0 + 60)
    with pytest.raises(NotFoundError):
        await outbox.retry(ticket(2).ticket_id, now=T0 + 60)  # no longer a dead letter
    with pytest.raises(NotFoundError):
        await outbox.retry("no-such-ticket", now=T0 + 60)

    assert await outbox.retry(now=T0 + 60) == 2
    assert await outbox.retry(now=T0 + 60) == 0
    assert await w.run_once(T0 + 60) == 3
    assert crm.created == {ticket(n).ticket_id: 1 for n in (1, 2, 3)}
    assert await outbox.dead_letters() == []
    assert (await outbox.stats(T0 + 60)).delivered == 3


async def test_a_long_outage_grows_the_backlog_and_loses_nothing(outbox: Outbox) -> None:
    """Three hours without the CRM, a ticket a minute: every ticket waits and none is given up
    (with enough attempts for the outage), then all go through once each when it is back."""
    crm = MemoryCrm()
    crm.default_fault = "down"
    registry = CollectorRegistry()
    w = worker(outbox, crm, max_attempts=60, metrics=OutboxMetrics(registry))
    backlog = []
    for minute in range(180):
        now = T0 + minute * 60
        await outbox.submit(ticket(minute), now=now)
        await w.run_once(now)
        stats = await outbox.stats(now)
        backlog.append(stats.backlog)
        assert stats.oldest_age_seconds == minute * 60
        assert stats.dead_letters == 0
    assert backlog == list(range(1, 181))
    assert registry.get_sample_value("hotline_crm_outbox_backlog") == 180
    assert registry.get_sample_value("hotline_crm_outbox_oldest_age_seconds") == 179 * 60
    assert crm.created == {}

    crm.default_fault = "ok"
    now = T0 + 180 * 60
    while (await outbox.stats(now)).backlog:
        now += 60
        await w.run_once(now)
    # Each ticket's retry came within the 300 s cap of the CRM's return.
    assert now <= T0 + 180 * 60 + 300
    assert crm.created == {ticket(n).ticket_id: 1 for n in range(180)}
    assert registry.get_sample_value("hotline_crm_outbox_backlog") == 0
    assert registry.get_sample_value("hotline_crm_delivery_attempts_total", {"result": "dead"}) == 0
    delivered = registry.get_sample_value(
        "hotline_crm_delivery_attempts_total", {"result": "delivered"}
    )
    assert delivered == 180


async def test_an_outage_past_the_attempt_budget_is_replayed_by_retry(outbox: Outbox) -> None:
    crm = MemoryCrm()
    crm.default_fault = "down"
    w = worker(outbox, crm, max_attempts=5, retry_max_seconds=60.0)
    for n in range(10):
        await outbox.submit(ticket(n), now=T0)
    now = T0
    for _ in range(10):
        await w.run_once(now)
        now += 60
    stats = await outbox.stats(now)
    assert (stats.backlog, stats.dead_letters) == (0, 10)
    crm.default_fault = "ok"
    assert await outbox.retry(now=now) == 10
    await w.run_once(now)
    assert crm.created == {ticket(n).ticket_id: 1 for n in range(10)}


# ---------------------------------------------------------------------- surveys


def survey(n: int = 1, score: int = 4, at: float = T0) -> Survey:
    return Survey(f"call-{n}", score, at, agent_id="1001", caller=CALLER)


async def test_a_survey_is_queued_once_per_call_and_its_first_rating_stays(
    outbox: Outbox,
) -> None:
    first = survey(1, score=5)
    assert await outbox.submit_survey(first, now=T0) == first
    # The flow asked again (or the caller changed their mind): the first rating stays.
    assert await outbox.submit_survey(survey(1, score=1, at=T0 + 5), now=T0 + 5) == first
    await outbox.submit(ticket(1), now=T0 + 6)
    [row, ticket_row] = await outbox.due(T0 + 6)
    assert (row.item_id, row.kind, row.item) == (survey_outbox_id(first), OutboxKind.SURVEY, first)
    assert row.item_id.startswith("survey-")
    assert ticket_row.kind is OutboxKind.TICKET
    assert (await outbox.get(row.item_id)) == row
    stats = await outbox.stats(T0 + 6)
    assert stats.backlog == 2
    assert stats.backlog_by_kind == {OutboxKind.SURVEY: 1, OutboxKind.TICKET: 1}


async def test_a_survey_and_a_ticket_never_share_a_key(outbox: Outbox) -> None:
    await outbox.submit(ticket(1, key=survey(1).idempotency_key), now=T0)
    with pytest.raises(TicketInvalidError) as caught:
        await outbox.submit_survey(survey(1), now=T0)
    assert caught.value.field == "idempotency_key"
    assert len(await outbox.due(T0)) == 1


async def test_a_survey_waits_out_a_crm_that_is_down_like_a_ticket(tmp_path: Path) -> None:
    """Down, then an answer lost after the CRM stored it, then back: the survey reaches it
    once, on the tickets' backoff schedule, across a restart of the node, and no log line
    names the caller."""
    path = outbox_path(tmp_path)
    crm = MemoryCrm()
    crm.script("down", "down", "lost")
    async with await Outbox.open(path) as box:
        await box.submit_survey(survey(1), now=T0)
        await box.submit(ticket(1), now=T0)
        w = worker(box, crm, first_retry_seconds=2.0)
        with capture_logs() as logs:
            assert await w.run_once(T0) == 2  # the survey down, the ticket lost
            entry = await box.get(survey_outbox_id(survey(1)))
            assert entry is not None
            assert (entry.state, entry.attempts) == (DeliveryState.PENDING, 1)
            assert entry.last_error == "crm-unavailable: connection refused"
    # The same backoff as tickets: equal jitter on 2 s.
    assert T0 + 1.0 <= entry.next_at <= T0 + 2.0
    assert [e["event"] for e in logs] == ["survey_delivery_failed", "ticket_delivery_failed"]
    assert logs[0]["survey_id"] == survey_outbox_id(survey(1))
    assert all(CALLER not in repr(e) for e in logs)

    async with await Outbox.open(path) as box:
        w = worker(box, crm)
        now = T0
        while (await box.stats(now)).backlog:
            now += 60
            await w.run_once(now)
        entry = await box.get(survey_outbox_id(survey(1)))
        assert entry is not None
        assert (entry.state, entry.attempts, entry.crm_ref) == (DeliveryState.DELIVERED, 3, "")
    assert crm.surveys == {"call-1": survey(1)}
    assert crm.surveys_stored == {"call-1": 1}
    # Every attempt carried the call's survey key.
    assert [(key, fault) for _, key, fault in crm.survey_calls] == [
        ("call-1:survey", "down"),
        ("call-1:survey", "lost"),
        ("call-1:survey", "ok"),
    ]


async def test_a_refused_survey_is_a_dead_letter_and_retry_replays_it(outbox: Outbox) -> None:
    crm = MemoryCrm()
    crm.script("reject")
    await outbox.submit_survey(survey(1), now=T0)
    with capture_logs() as logs:
        assert await worker(outbox, crm).run_once(T0) == 1
    [dead] = await outbox.dead_letters()
    assert (dead.kind, dead.attempts, dead.done_at) == (OutboxKind.SURVEY, 1, T0)
    assert dead.last_error == "crm-rejected: the CRM answered 400: bad-survey: unknown agent"
    assert [e["event"] for e in logs] == ["survey_dead_lettered"]
    assert (await outbox.stats(T0)).dead_letters == 1
    assert await outbox.retry(dead.item_id, now=T0 + 60) == 1
    assert await worker(outbox, crm).run_once(T0 + 60) == 1
    assert crm.surveys_stored == {"call-1": 1}
    assert (await outbox.stats(T0 + 60)).delivered == 1


async def test_a_survey_out_of_attempts_is_a_dead_letter(outbox: Outbox) -> None:
    crm = MemoryCrm()
    crm.default_fault = "down"
    await outbox.submit_survey(survey(1), now=T0)
    w = worker(outbox, crm, max_attempts=3)
    for step in range(4):
        await w.run_once(T0 + step * 600)
    [dead] = await outbox.dead_letters()
    assert dead.item == survey(1)
    assert dead.last_error.startswith("gave up after 3 attempts: crm-unavailable")


async def test_a_version_1_file_is_migrated_and_keeps_its_tickets(tmp_path: Path) -> None:
    """An outbox written before surveys: its rows are tickets, its numbers go on."""
    path = outbox_path(tmp_path)
    path.parent.mkdir(parents=True)
    async with aiosqlite.connect(path, isolation_level=None) as db:
        assert await migrate(db, OUTBOX_STEPS, target=1) == 1
        numbers = await TicketNumbers.attach(db, 7)
        number = await numbers.allocate(T0)
        await db.execute(
            "INSERT INTO outbox (ticket_id, idempotency_key, ticket, submitted_at, next_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                number,
                ticket(1).idempotency_key,
                json.dumps(ticket_to_dict(ticket(1, number=number)), ensure_ascii=False),
                T0,
                T0,
            ),
        )
    async with await Outbox.open(path) as box:
        [entry] = await box.due(T0)
        assert (entry.item_id, entry.kind, entry.item) == (
            number,
            OutboxKind.TICKET,
            ticket(1, number=number),
        )
        await box.submit_survey(survey(1), now=T0)
        numbers = await TicketNumbers.attach(box.connection, 7, lock=box.lock)
        assert int(await numbers.allocate(T0)) == int(number) + 1
        crm = MemoryCrm()
        assert await worker(box, crm).run_once(T0) == 2
        assert (await box.stats(T0)).delivered == 2
    with sqlite3.connect(path) as plain:
        assert plain.execute("PRAGMA user_version").fetchone() == (len(OUTBOX_STEPS),)
    plain.close()


# ---------------------------------------------------------------------- serve


async def test_serve_delivers_a_submitted_ticket_without_waiting(outbox: Outbox) -> None:
    crm = MemoryCrm()
    # The idle sleep is an hour: only the submit's wake-up can explain a prompt delivery.
    w = worker(outbox, crm, idle_seconds=3600.0)
    task = asyncio.create_task(w.serve())
    try:
        async with asyncio.timeout(10):
            await w.waiting.wait()  # serve has found nothing and sleeps
        await outbox.submit(ticket(1))
        async with asyncio.timeout(10):  # a safety net for a hang, not a timing check
            await crm.answered.wait()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    entry = await outbox.get(ticket(1).ticket_id)
    assert entry is not None
    assert entry.state is DeliveryState.DELIVERED


async def test_serve_wakes_for_a_replayed_dead_letter(outbox: Outbox) -> None:
    crm = MemoryCrm()
    crm.script("reject")
    await outbox.submit(ticket(1))
    await worker(outbox, crm).run_once(T0)
    assert len(await outbox.dead_letters()) == 1
    w = worker(outbox, crm, idle_seconds=3600.0)
    task = asyncio.create_task(w.serve())
    try:
        async with asyncio.timeout(10):
            await w.waiting.wait()
        await outbox.retry(ticket(1).ticket_id)
        async with asyncio.timeout(10):
            await crm.answered.wait()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert crm.created == {ticket(1).ticket_id: 1}
    assert len(crm.calls) == 2


async def test_serve_outlives_a_failing_round(outbox: Outbox) -> None:
    crm = MemoryCrm()
    times = iter([RuntimeError("clock broke")])

    def clock() -> float:
        # The first reading fails, as any part of a round might; the rest are fine.
        failure = next(times, None)
        if failure is not None:
            raise failure
        return T0

    w = DeliveryWorker(outbox, crm, clock=clock, idle_seconds=3600.0)
    with capture_logs() as logs:
        task = asyncio.create_task(w.serve())
        try:
            async with asyncio.timeout(10):
                await w.waiting.wait()  # after the failed round, resting a second
                await outbox.submit(ticket(1))
                await crm.answered.wait()
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["outbox_error"]
    assert crm.created == {ticket(1).ticket_id: 1}


async def test_stopping_serve_right_after_an_answer_keeps_the_delivery(tmp_path: Path) -> None:
    """The hotline stops (cancels serve, closes the file) the moment the CRM has answered: the
    round's outcome is still written before the cancellation goes on."""
    path = outbox_path(tmp_path)
    crm = MemoryCrm()
    box = await Outbox.open(path, clock=lambda: T0)
    try:
        await box.submit(ticket(1))
        task = asyncio.create_task(worker(box, crm).serve())
        async with asyncio.timeout(10):
            await crm.answered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await box.close()
    async with await Outbox.open(path) as again:
        entry = await again.get(ticket(1).ticket_id)
    assert entry is not None
    assert (entry.state, entry.crm_ref) == (DeliveryState.DELIVERED, "M-1")


# ---------------------------------------------------------------------- the invariant


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    tickets=st.integers(min_value=1, max_value=8),
    faults=st.lists(
        st.sampled_from(["ok", "down", "lost", "reject", "invalid", "bug"]), max_size=40
    ),
    concurrency=st.sampled_from([1, 3]),
)
def test_every_ticket_reaches_the_crm_exactly_once(
    tickets: int, faults: list[str], concurrency: int
) -> None:
    """Whatever fails along the way, once the CRM heals and dead letters are replayed, the CRM
    holds exactly the submitted tickets, once each, and the outbox knows each one's reference."""

    async def scenario(path: Path) -> None:
        crm = MemoryCrm()
        crm.script(*faults)
        async with await Outbox.open(path) as box:
            submitted = [ticket(n) for n in range(tickets)]
            for t in submitted:
                await box.submit(t, now=T0)
                await box.submit(t, now=T0)  # a repeated submit changes nothing
            w = DeliveryWorker(
                box,
                crm,
                max_attempts=4,
                retry_max_seconds=60.0,
                rng=seeded(1),
                concurrency=concurrency,
            )
            now = T0
            for _ in range(len(faults) + 10):
                await w.run_once(now)
                now += 61.0
                stats = await box.stats(now)
                if stats.backlog == 0 and stats.dead_letters:
                    await box.retry(now=now)
                if stats.backlog == 0 and stats.dead_letters == 0:
                    break
            assert crm.created == {t.ticket_id: 1 for t in submitted}
            for t in submitted:
                entry = await box.get(t.ticket_id)
                assert entry is not None
                assert entry.state is DeliveryState.DELIVERED
                assert entry.crm_ref == crm.refs[t.idempotency_key]
            for ticket_id, key, _ in crm.calls:
                assert key == ticket(int(ticket_id[-5:])).idempotency_key

    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(scenario(Path(folder) / "outbox.sqlite3"))


async def test_a_submit_cancelled_while_beginning_leaves_no_transaction_open(
    outbox: Outbox,
) -> None:
    """A call that ends while its ticket waits for BEGIN (the connection's thread busy) cancels
    the submit; the BEGIN still runs on the thread, and must not stay open: every later
    transaction on the connection would fail with "within a transaction"."""

    async def make(n: int) -> Ticket:
        return ticket(n)

    busy = await occupy(outbox.connection)
    submit = asyncio.ensure_future(outbox.submit_new(ticket(1).idempotency_key, lambda _: make(1)))
    await asyncio.sleep(0.01)  # the submit waits for its BEGIN, queued behind it
    assert not busy.done()
    submit.cancel()
    with pytest.raises(asyncio.CancelledError):
        await submit
    await busy
    assert await outbox.submit_new(ticket(2).idempotency_key, lambda _: make(2)) == ticket(2)
    assert not outbox.connection.in_transaction
