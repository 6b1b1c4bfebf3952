"""Ticket numbers on real SQLite files: digits only, unique across restarts and connections,
the day by the date in Asia/Shanghai, six digits once a day passes 99999."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from crm_bridge.embedded import EmbeddedCrm
from crm_bridge.model import Ticket
from crm_bridge.numbers import (
    CHINA_TIME,
    SEQUENCE_TABLE,
    TicketNumbers,
    check_node_code,
    format_number,
    local_day,
)
from crm_bridge.outbox import DeliveryWorker, Outbox

# 2026-11-27 10:00 in Beijing (02:00 UTC).
MORNING = datetime(2026, 11, 27, 10, 0, tzinfo=CHINA_TIME).timestamp()
# The last second of 26 November and the first of 27 November in Beijing (15:59:59 and 16:00
# UTC on the 26th: the UTC date has not turned yet).
LAST_SECOND = datetime(2026, 11, 26, 23, 59, 59, tzinfo=CHINA_TIME).timestamp()
MIDNIGHT = LAST_SECOND + 1


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    conn = await aiosqlite.connect(tmp_path / "numbers.sqlite3", isolation_level=None)
    try:
        yield conn
    finally:
        await conn.close()


def test_format_and_local_day() -> None:
    assert format_number("261127", 1, 42) == "2611270100042"
    assert format_number("261127", 99, 1) == "2611279900001"
    assert format_number("261127", 0, 99_999) == "2611270099999"
    assert format_number("261127", 1, 100_000) == "26112701100000"
    assert local_day(MORNING) == "261127"
    assert local_day(LAST_SECOND) == "261126"
    assert local_day(MIDNIGHT) == "261127"
    assert datetime.fromtimestamp(MIDNIGHT, UTC).day == 26  # UTC is still on the 26th


@pytest.mark.parametrize(
    ("day", "node", "sequence"),
    [("2611", 1, 1), ("26112x", 1, 1), ("261127", 100, 1), ("261127", -1, 1), ("261127", 1, 0)],
)
def test_format_refuses_what_does_not_fit(day: str, node: int, sequence: int) -> None:
    with pytest.raises(ValueError, match=r"day|node code|sequence"):
        format_number(day, node, sequence)


def test_node_code_is_two_digits() -> None:
    assert check_node_code(0) == 0
    assert check_node_code(99) == 99
    for bad in (-1, 100, True):
        with pytest.raises(ValueError, match="node code"):
            check_node_code(bad)


def test_now_must_be_a_time() -> None:
    with pytest.raises(ValueError, match="finite"):
        local_day(float("nan"))


async def test_numbers_follow_each_other_and_the_day_turns_in_beijing(
    db: aiosqlite.Connection,
) -> None:
    numbers = await TicketNumbers.attach(db, 7)
    assert [await numbers.allocate(LAST_SECOND) for _ in range(3)] == [
        "2611260700001",
        "2611260700002",
        "2611260700003",
    ]
    assert await numbers.allocate(MIDNIGHT) == "2611270700001"
    assert await numbers.allocate(MORNING) == "2611270700002"
    # A clock stepping back a day goes on with that day's sequence: still no repeat.
    assert await numbers.allocate(LAST_SECOND) == "2611260700004"


async def test_numbers_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "numbers.sqlite3"
    seen: list[str] = []
    for _restart in range(3):
        async with aiosqlite.connect(path, isolation_level=None) as conn:
            numbers = await TicketNumbers.attach(conn, 1)
            seen += [await numbers.allocate(MORNING) for _ in range(2)]
    assert seen == [f"26112701{n:05d}" for n in range(1, 7)]


async def test_a_connection_with_implicit_transactions_commits_each_number(
    tmp_path: Path,
) -> None:
    # Python's default transaction handling opens a transaction before the upsert; the number
    # must be committed all the same, or a restart would hand it out again.
    path = tmp_path / "numbers.sqlite3"
    async with aiosqlite.connect(path) as conn:
        numbers = await TicketNumbers.attach(conn, 1)
        assert await numbers.allocate(MORNING) == "2611270100001"
        assert not conn.in_transaction
    async with aiosqlite.connect(path) as conn:
        numbers = await TicketNumbers.attach(conn, 1)
        assert await numbers.allocate(MORNING) == "2611270100002"


async def test_two_connections_on_one_file_never_share_a_number(tmp_path: Path) -> None:
    path = tmp_path / "numbers.sqlite3"
    async with (
        aiosqlite.connect(path, isolation_level=None, timeout=10) as first,
        aiosqlite.connect(path, isolation_level=None, timeout=10) as second,
    ):
        a = await TicketNumbers.attach(first, 1)
        b = await TicketNumbers.attach(second, 1)
        got = await asyncio.gather(*(n.allocate(MORNING) for n in [a, b] * 20))
    assert len(set(got)) == 40
    assert sorted(got) == [f"26112701{n:05d}" for n in range(1, 41)]


async def test_concurrent_allocations_on_one_connection(db: aiosqlite.Connection) -> None:
    numbers = await TicketNumbers.attach(db, 1)
    got = await asyncio.gather(*(numbers.allocate(MORNING) for _ in range(50)))
    assert sorted(got) == [f"26112701{n:05d}" for n in range(1, 51)]


async def test_nodes_have_their_own_sequences(db: aiosqlite.Connection) -> None:
    one = await TicketNumbers.attach(db, 1)
    two = await TicketNumbers.attach(db, 2)
    assert await one.allocate(MORNING) == "2611270100001"
    assert await two.allocate(MORNING) == "2611270200001"
    assert await one.allocate(MORNING) == "2611270100002"


async def test_past_99999_a_day_goes_on_with_six_digits(db: aiosqlite.Connection) -> None:
    numbers = await TicketNumbers.attach(db, 1)
    await numbers.allocate(MORNING)
    await db.execute(f"UPDATE {SEQUENCE_TABLE} SET last = 99998")  # noqa: S608 - a constant
    with capture_logs() as logs:
        got = [await numbers.allocate(MORNING) for _ in range(3)]
    assert got == ["2611270199999", "26112701100000", "26112701100001"]
    assert all(n.isdigit() for n in got)
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["day"] == "261127"
    assert "six digits" in warnings[0]["event"]
    # The next day starts at five digits again.
    assert await numbers.allocate(MORNING + 86_400) == "2611280100001"


async def test_allocate_refuses_to_commit_someone_elses_transaction(
    db: aiosqlite.Connection,
) -> None:
    numbers = await TicketNumbers.attach(db, 1)
    await db.execute("BEGIN")
    with pytest.raises(RuntimeError, match="allocate_in_transaction"):
        await numbers.allocate(MORNING)
    # Inside the caller's transaction: the number goes with it.
    assert await numbers.allocate_in_transaction(MORNING) == "2611270100001"
    await db.execute("ROLLBACK")
    assert await numbers.allocate(MORNING) == "2611270100001"
    await db.execute("BEGIN")
    assert await numbers.allocate_in_transaction(MORNING) == "2611270100002"
    await db.execute("COMMIT")
    assert await numbers.allocate(MORNING) == "2611270100003"


async def test_the_outbox_is_the_one_source_of_numbers(tmp_path: Path) -> None:
    """As `hotline serve` wires it: numbers from the outbox's file, taken in the transaction
    that queues each ticket, unique under concurrency and across a restart; the embedded store
    they are delivered to keeps no sequence of its own."""
    store_file = tmp_path / "crm" / "crm.sqlite3"
    box_file = tmp_path / "crm" / "outbox.sqlite3"

    async def queue(box: Outbox, numbers: TicketNumbers, n: int) -> str:
        key = f"call-{n}:fault"

        async def make(_db: object) -> Ticket:
            return Ticket(
                await numbers.allocate_in_transaction(MORNING), key, "故障报修", 50, MORNING
            )

        return (await box.submit_new(key, make, now=MORNING)).ticket_id

    crm = await EmbeddedCrm.open(store_file)
    try:
        async with await Outbox.open(box_file) as box:
            numbers = await TicketNumbers.attach(box.connection, 3, lock=box.lock)
            # Calls queue tickets at once; plain allocations share the outbox's lock.
            got = await asyncio.gather(
                *(queue(box, numbers, n) for n in range(20)),
                *(numbers.allocate(MORNING) for _ in range(5)),
            )
            assert sorted(got) == [f"26112703{n:05d}" for n in range(1, 26)]
            await DeliveryWorker(box, crm).run_once(MORNING)
        async with await Outbox.open(box_file) as box:
            numbers = await TicketNumbers.attach(box.connection, 3, lock=box.lock)
            assert await queue(box, numbers, 99) == "2611270300026"
        stored = await crm.list_tickets(limit=50)
        assert len(stored) == 20
        assert {t.ticket_id for t in stored} <= set(got)
    finally:
        await crm.close()
    with sqlite3.connect(store_file) as plain:
        tables = {r[0] for r in plain.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    plain.close()
    assert SEQUENCE_TABLE not in tables


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=LAST_SECOND - 3 * 86_400, max_value=LAST_SECOND + 3 * 86_400),
            st.booleans(),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_no_number_is_handed_out_twice(steps: list[tuple[float, bool]]) -> None:
    """Any times, in any order, with restarts anywhere: every number is new, all digits, and
    starts with the Beijing date of its moment."""

    async def run(path: Path) -> list[tuple[float, str]]:
        got: list[tuple[float, str]] = []
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            numbers = await TicketNumbers.attach(conn, 42)
            for now, restart in steps:
                if restart:
                    await conn.close()
                    conn = await aiosqlite.connect(path, isolation_level=None)
                    numbers = await TicketNumbers.attach(conn, 42)
                got.append((now, await numbers.allocate(now)))
        finally:
            await conn.close()
        return got

    with tempfile.TemporaryDirectory() as folder:
        got = asyncio.run(run(Path(folder) / "numbers.sqlite3"))
    assert len({number for _, number in got}) == len(got)
    for now, number in got:
        assert number.isdigit()
        assert len(number) == 13
        assert number.startswith(local_day(now) + "42")
