"""Ticket numbers (工单号): allocated on this node, all digits, unique across restarts.

A number is ``YYMMDD`` + the node code (two digits, ``crm_node_code``) + a daily sequence of five
digits, e.g. ``2611270100042``: the 42nd ticket of 27 November 2026 on node 01. All digits,
because the IVR reads the number back digit by digit and the caller keys it in on the phone pad.

- The day is the local date in Asia/Shanghai (China Standard Time, UTC+8), where the callers
  live, whatever the server's own time zone: a ticket made at 00:30 in Beijing carries that
  day's date. China keeps no daylight saving time, so every local day is 24 hours long.
- The sequence is kept in a SQLite table (``ticket_number_sequence``) and moved in one atomic
  statement per number, committed before the number is handed out: a restart, or a crash right
  after, never hands out a number twice.
- Past 99999 tickets in one day on one node, the sequence goes on with six digits (14-digit
  numbers) rather than refusing the ticket: a work order matters more than a neat width, and
  the longer numbers stay unique (no 13-digit number is a 14-digit one).

The table lives in the database the caller gives: in a running node, the outbox's file
(`crm_bridge.outbox`), where a number is taken in the transaction that queues its ticket. That
is the node's one source of ticket numbers: the CRM backends (the embedded store included) only
receive numbered tickets. The table is created if missing, outside the outbox's schema versions.
"""

from __future__ import annotations

import asyncio
import math
import zoneinfo
from datetime import UTC, datetime, timedelta, timezone, tzinfo

import aiosqlite
import structlog

log = structlog.get_logger(__name__)

SEQUENCE_DIGITS = 5
"""Digits of the daily sequence (more once a day passes 10**5 - 1 tickets)."""

SEQUENCE_TABLE = "ticket_number_sequence"
"""The table holding each day's last sequence number."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ticket_number_sequence (
    day TEXT NOT NULL,          -- YYMMDD, local date in Asia/Shanghai
    node INTEGER NOT NULL,      -- the node code the numbers carry
    last INTEGER NOT NULL,      -- the last sequence number handed out that day
    PRIMARY KEY (day, node)
) STRICT
"""

_NEXT = """
INSERT INTO ticket_number_sequence (day, node, last) VALUES (?, ?, 1)
ON CONFLICT (day, node) DO UPDATE SET last = last + 1
RETURNING last
"""


def _china_time() -> tzinfo:
    try:
        return zoneinfo.ZoneInfo("Asia/Shanghai")
    except zoneinfo.ZoneInfoNotFoundError:
        # A system without the time-zone database: China has kept UTC+8 without daylight
        # saving since 1991, so the fixed offset gives the same dates.
        return timezone(timedelta(hours=8), "CST")


CHINA_TIME = _china_time()
"""The time zone whose local date a ticket number carries."""


def local_day(now: float) -> str:
    """``YYMMDD``: the date in Asia/Shanghai at ``now`` (seconds since the epoch)."""
    if not math.isfinite(now):
        raise ValueError(f"now must be a finite time, not {now}")
    return datetime.fromtimestamp(now, UTC).astimezone(CHINA_TIME).strftime("%y%m%d")


def check_node_code(node_code: int) -> int:
    """``node_code`` if it fits the two digits a ticket number has for it (ValueError else)."""
    if isinstance(node_code, bool) or not 0 <= node_code <= 99:
        raise ValueError(f"the node code must be 0..99, not {node_code!r}")
    return node_code


def format_number(day: str, node_code: int, sequence: int) -> str:
    """The ticket number of the ``sequence``-th ticket (from 1) of ``day`` on a node."""
    if len(day) != 6 or not day.isdigit():
        raise ValueError(f"day must be YYMMDD, not {day!r}")
    if sequence < 1:
        raise ValueError(f"the sequence starts at 1, not {sequence}")
    return f"{day}{check_node_code(node_code):02d}{sequence:0{SEQUENCE_DIGITS}d}"


async def create_table(db: aiosqlite.Connection) -> None:
    """Create the sequence table in ``db`` if it is not there (commits)."""
    await db.execute(_SCHEMA)
    await db.commit()


class TicketNumbers:
    """Allocates this node's ticket numbers from a sequence table in a SQLite database.

    ``lock`` is the lock its owner holds around every transaction on ``db``: one connection
    cannot run two transactions at once, so the allocator takes the same lock before its own.
    Create with `attach` (which makes the table).
    """

    def __init__(
        self, db: aiosqlite.Connection, node_code: int, *, lock: asyncio.Lock | None = None
    ) -> None:
        self._db = db
        self._lock = lock if lock is not None else asyncio.Lock()
        self.node_code = check_node_code(node_code)
        """The two digits after the date."""

    @classmethod
    async def attach(
        cls, db: aiosqlite.Connection, node_code: int, *, lock: asyncio.Lock | None = None
    ) -> TicketNumbers:
        """An allocator on ``db``, its table created if missing."""
        numbers = cls(db, node_code, lock=lock)
        async with numbers._lock:
            await create_table(db)
        return numbers

    async def allocate(self, now: float) -> str:
        """The next number for the day ``now`` falls on, committed before it is returned."""
        async with self._lock:
            if self._db.in_transaction:
                raise RuntimeError(
                    "a transaction is open on the connection: share its lock with TicketNumbers, "
                    "or call allocate_in_transaction inside it"
                )
            try:
                number = await self.allocate_in_transaction(now)
                await self._db.commit()  # a no-op in autocommit mode, needed otherwise
            except BaseException:
                if self._db.in_transaction:
                    await self._db.rollback()
                raise
        return number

    async def allocate_in_transaction(self, now: float) -> str:
        """The next number, inside a transaction the caller holds open (under its lock) and
        commits: e.g. together with the outbox row that carries the number."""
        day = local_day(now)
        async with self._db.execute(_NEXT, (day, self.node_code)) as cursor:
            row = await cursor.fetchone()
        assert row is not None  # an upsert with RETURNING always returns the row
        sequence = int(row[0])
        if sequence == 10**SEQUENCE_DIGITS:
            log.warning(
                "ticket numbers overflow the daily sequence; six digits from now on",
                day=day,
                node_code=self.node_code,
            )
        return format_number(day, self.node_code, sequence)
