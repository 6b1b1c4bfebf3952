"""The durable outbox: a ticket is written to a local SQLite file before the caller hears its
number, and a delivery worker brings it to the CRM, retrying with backoff until it lands. A
call's satisfaction survey takes the same way (a row of kind ``survey``): nothing a caller gave
is lost while the CRM is down.

Why SQLite rather than a Redis Stream: docs/decisions/0008-crm-outbox.md. In short, a work order
must survive a Redis outage and a restart, its number and its outbox row are written in one
fsynced transaction, and each node owns its file.

Delivery is *at least once* from here and *exactly once* on the CRM's side: every attempt sends
the ticket's idempotency key, and the CRM creates at most one ticket per key. An attempt is
counted (and the next one scheduled) *before* the request goes out, so a worker killed in the
middle of a request neither loses the ticket nor retries it forever.

Each row is ``pending`` (due at ``next_at``), ``delivered`` (with the CRM's reference, kept for
``hotline tickets show``) or ``dead`` (a dead letter: refused by the CRM, or out of attempts;
``retry`` replays it). Rows are never deleted. A row's id is the ticket's number, or for a
survey ``survey-`` and a digest of its idempotency key (a call id may hold any character).

All times are arguments (``now``) or come from the injected clock, so tests step time by hand.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import aiosqlite
import structlog
import tenacity
from prometheus_client import CollectorRegistry, Counter, Gauge

from crm_bridge.backend import CrmBackend
from crm_bridge.codec import survey_from_dict, survey_to_dict, ticket_from_dict, ticket_to_dict
from crm_bridge.errors import CrmError, NotFoundError, TicketInvalidError
from crm_bridge.migrations import Step, migrate
from crm_bridge.model import Survey, Ticket

log = structlog.get_logger("crm_bridge.outbox")

Clock = Callable[[], float]
"""Seconds since the epoch."""

V1_TICKETS: Step = (
    """
    CREATE TABLE IF NOT EXISTS outbox (
        ticket_id TEXT PRIMARY KEY,
        idempotency_key TEXT NOT NULL UNIQUE,
        ticket TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        submitted_at REAL NOT NULL,
        next_at REAL NOT NULL,
        last_attempt_at REAL,
        last_error TEXT NOT NULL DEFAULT '',
        crm_ref TEXT NOT NULL DEFAULT '',
        done_at REAL
    ) STRICT
    """,
    # The worker's one question, "what is due?", reads only pending rows.
    "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_at) WHERE state = 'pending'",
    # Backlog, oldest and dead letters are index searches; the delivered rows, which only grow,
    # are counted as they are delivered rather than scanned for every /metrics refresh.
    "CREATE INDEX IF NOT EXISTS outbox_state ON outbox (state, submitted_at)",
    """
    CREATE TABLE IF NOT EXISTS outbox_counts (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        delivered INTEGER NOT NULL
    ) STRICT
    """,
    """
    INSERT OR IGNORE INTO outbox_counts (id, delivered)
        SELECT 1, COUNT(*) FROM outbox WHERE state = 'delivered'
    """,
    """
    CREATE TRIGGER IF NOT EXISTS outbox_count_delivered AFTER UPDATE OF state ON outbox
        WHEN NEW.state = 'delivered' AND OLD.state != 'delivered'
        BEGIN UPDATE outbox_counts SET delivered = delivered + 1 WHERE id = 1; END
    """,
)
"""Version 1: tickets only (``IF NOT EXISTS``: files made before the outbox had versions hold
these tables at version 1 already)."""

V2_KINDS: Step = (
    "ALTER TABLE outbox RENAME COLUMN ticket_id TO item_id",
    "ALTER TABLE outbox RENAME COLUMN ticket TO body",
    "ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'ticket'"
    " CHECK (kind IN ('ticket', 'survey'))",
    # The backlog by kind is an index search too.
    "CREATE INDEX outbox_kind ON outbox (state, kind)",
)
"""Version 2: surveys too; a row has a kind, an id (the ticket number, or the survey's) and a
body (the item's JSON)."""

STEPS: tuple[Step, ...] = (V1_TICKETS, V2_KINDS)
"""Every step, oldest first (`crm_bridge.migrations`)."""

_COLUMNS = (
    "item_id, kind, body, state, attempts, submitted_at, next_at, last_attempt_at, last_error,"
    " crm_ref, done_at"
)
_Item = TypeVar("_Item", Ticket, Survey)
_ERROR_LIMIT = 1000
"""Characters of an error message kept in a row (a CRM may answer with a whole HTML page)."""


def outbox_path(var_dir: Path) -> Path:
    """Where a node keeps its outbox: ``<var_dir>/crm/outbox.sqlite3``."""
    return var_dir / "crm" / "outbox.sqlite3"


class OutboxKind(StrEnum):
    """What a row carries to the CRM."""

    TICKET = "ticket"
    """A work order (`CrmBackend.create_ticket`)."""
    SURVEY = "survey"
    """A satisfaction rating (`CrmBackend.record_survey`)."""


def survey_outbox_id(survey: Survey) -> str:
    """The outbox id of a call's survey: ``survey-`` and 12 hex digits of a digest of its
    idempotency key, so it is short, stable for the call, and fits where a ticket number goes
    (`hotline tickets retry ID`) whatever characters the call id holds."""
    digest = hashlib.sha256(survey.idempotency_key.encode()).hexdigest()
    return f"survey-{digest[:12]}"


class DeliveryState(StrEnum):
    """Where a ticket is on its way to the CRM."""

    PENDING = "pending"
    """Not delivered yet; tried again at ``next_at``."""
    DELIVERED = "delivered"
    """The CRM has it (``crm_ref``)."""
    DEAD = "dead"
    """Given up on: refused by the CRM or out of attempts (a dead letter)."""


@dataclass(frozen=True)
class OutboxEntry:
    """One ticket or survey in the outbox and how its delivery goes."""

    item_id: str
    """The row's id: the ticket's number, or the survey's `survey_outbox_id`."""
    item: Ticket | Survey
    """The ticket or survey as submitted."""
    state: DeliveryState
    """Pending, delivered or dead."""
    attempts: int
    """Delivery attempts started (since submitted, or since the last `retry`)."""
    submitted_at: float
    """When it entered the outbox."""
    next_at: float
    """When it is (or was) due for its next attempt."""
    last_attempt_at: float | None
    """When the last attempt started (None: not tried yet)."""
    last_error: str
    """Why the last attempt failed, or why it is a dead letter ('' if none)."""
    crm_ref: str
    """The CRM's reference, once delivered."""
    done_at: float | None
    """When it was delivered or dead-lettered."""

    @property
    def kind(self) -> OutboxKind:
        """Ticket or survey."""
        return OutboxKind.TICKET if isinstance(self.item, Ticket) else OutboxKind.SURVEY


@dataclass(frozen=True)
class OutboxStats:
    """The outbox at a glance (for /metrics, /healthz and the CLI)."""

    backlog: int
    """Tickets and surveys not delivered yet (dead letters excluded)."""
    oldest_age_seconds: float
    """How long the oldest of them has waited (0 when there is none)."""
    dead_letters: int
    """Items given up on, waiting for an operator's `retry`."""
    delivered: int
    """Items the CRM has."""
    backlog_by_kind: Mapping[OutboxKind, int] = field(default_factory=dict)
    """The backlog by kind (kinds with none left out)."""


@dataclass(frozen=True)
class Outcome:
    """How one delivery attempt ended (see `Outbox.settle`)."""

    item_id: str
    """The ticket or survey tried (`OutboxEntry.item_id`)."""
    state: DeliveryState
    """Delivered; pending (tried again at the time scheduled by `Outbox.claim`); or dead."""
    crm_ref: str = ""
    """The CRM's reference, when delivered."""
    error: str = ""
    """Why it failed (pending) or was given up (dead)."""


@dataclass(frozen=True)
class Claim:
    """What `Outbox.claim` took: rows to try now, and rows that ran out of attempts."""

    due: list[OutboxEntry]
    """Rows whose attempt was counted and whose next attempt is scheduled: deliver them now."""
    exhausted: list[OutboxEntry]
    """Rows already at the attempt limit (their last attempt never finished): now dead letters."""


def _item(kind: object, body: str) -> Ticket | Survey:
    """A row's ticket or survey from its stored JSON."""
    if kind == OutboxKind.SURVEY:
        return survey_from_dict(json.loads(body), "outbox.survey")
    return ticket_from_dict(json.loads(body), "outbox.ticket")


def _body(item: Ticket | Survey) -> str:
    data = ticket_to_dict(item) if isinstance(item, Ticket) else survey_to_dict(item)
    return json.dumps(data, ensure_ascii=False)


def _entry(row: sqlite3.Row | tuple[object, ...]) -> OutboxEntry:
    item_id, kind, body, state, attempts, submitted, next_at, last_at, error, ref, done = row
    assert isinstance(body, str)
    assert isinstance(attempts, int)
    assert isinstance(submitted, float)
    assert isinstance(next_at, float)
    assert last_at is None or isinstance(last_at, float)
    assert done is None or isinstance(done, float)
    return OutboxEntry(
        item_id=str(item_id),
        item=_item(kind, body),
        state=DeliveryState(str(state)),
        attempts=attempts,
        submitted_at=submitted,
        next_at=next_at,
        last_attempt_at=last_at,
        last_error=str(error),
        crm_ref=str(ref),
        done_at=done,
    )


def _clip(message: str) -> str:
    return message if len(message) <= _ERROR_LIMIT else message[: _ERROR_LIMIT - 1] + "…"


class Outbox:
    """The outbox file of one node. Open with `Outbox.open`; one instance per process."""

    def __init__(self, db: aiosqlite.Connection, path: Path, clock: Clock) -> None:
        self._db = db
        self.path = path
        """The SQLite file."""
        self.clock = clock
        """Time for `submit` and `retry` when no ``now`` is given."""
        # One connection, so one transaction at a time: every statement goes through this lock,
        # and a read never sees another coroutine's half-written transaction.
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()

    @classmethod
    async def open(cls, path: Path, *, clock: Clock = time.time) -> Outbox:
        """Open (creating if need be) the outbox at ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we write BEGIN/COMMIT ourselves, so a transaction is exactly
        # what the code says (the number allocation and the row together, or neither).
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk (WAL fsynced) before submit returns, so a ticket whose
            # number the caller heard survives power loss, not only a process crash.
            await db.execute("PRAGMA synchronous=FULL")
            # The CLI may read the file while the hotline writes it.
            await db.execute("PRAGMA busy_timeout=5000")
            await migrate(db, STEPS)
        except BaseException:
            await db.close()
            raise
        return cls(db, path, clock)

    @property
    def connection(self) -> aiosqlite.Connection:
        """The connection, for code that writes in the same transaction as `submit_new`."""
        return self._db

    @property
    def lock(self) -> asyncio.Lock:
        """The lock held around every transaction on `connection`: code with transactions of
        its own on it (the ticket number allocator) must take it too."""
        return self._lock

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        """One write transaction, under the lock: committed if the block ends, else rolled back."""
        async with self._lock:
            try:
                await self._db.execute("BEGIN IMMEDIATE")
            except asyncio.CancelledError:
                # Cancelled while the BEGIN waited for the connection's thread: it still runs
                # there. End it (queued behind it, shielded) or it stays open and every later
                # transaction fails "within a transaction".
                await asyncio.shield(self._end_begun())
                raise
            try:
                yield
                await self._db.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (disk full) may have ended the transaction already.
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
                raise

    async def _end_begun(self) -> None:
        """Roll back a BEGIN whose caller was cancelled; asked unconditionally, as the BEGIN may
        not have run yet (if it failed, there is nothing to roll back: that error is ignored)."""
        with suppress(sqlite3.OperationalError):
            await self._db.execute("ROLLBACK")

    async def close(self) -> None:
        """Close the file."""
        await self._db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ submitting

    async def submit(self, ticket: Ticket, *, now: float | None = None) -> Ticket:
        """Queue ``ticket`` for delivery, due at once; return the ticket the outbox holds for its
        idempotency key — this one, or the one submitted earlier with the same key (no second
        row: the caller should hear the earlier number)."""

        async def made(_db: aiosqlite.Connection) -> Ticket:
            return ticket

        return await self.submit_new(ticket.idempotency_key, made, now=now)

    async def submit_new(
        self,
        idempotency_key: str,
        make: Callable[[aiosqlite.Connection], Awaitable[Ticket]],
        *,
        now: float | None = None,
    ) -> Ticket:
        """Queue the ticket ``make`` builds, in one transaction with whatever ``make`` writes on
        the connection it is given (the ticket number's allocation): both are on disk, or
        neither. ``make`` is not called when ``idempotency_key`` is already queued; the earlier
        ticket is returned instead. ``make`` must not commit."""
        at = self.clock() if now is None else now
        async with self._transaction():
            existing = await self._by_key(idempotency_key, Ticket)
            if existing is not None:
                return existing
            ticket = await make(self._db)
            if ticket.idempotency_key != idempotency_key:
                raise TicketInvalidError(
                    "idempotency_key", f"is {ticket.idempotency_key!r}, not {idempotency_key!r}"
                )
            await self._insert(ticket.ticket_id, ticket, at)
        log.info("ticket_queued", ticket_id=ticket.ticket_id)
        self._changed.set()
        return ticket

    async def submit_survey(self, survey: Survey, *, now: float | None = None) -> Survey:
        """Queue a call's survey for delivery, due at once (`survey_outbox_id` is its row's id);
        return the survey the outbox holds for the call — this one, or the first one (a call's
        first rating stays, as the CRM keeps it)."""
        at = self.clock() if now is None else now
        async with self._transaction():
            existing = await self._by_key(survey.idempotency_key, Survey)
            if existing is not None:
                return existing
            await self._insert(survey_outbox_id(survey), survey, at)
        log.info("survey_queued", survey_id=survey_outbox_id(survey))
        self._changed.set()
        return survey

    async def _insert(self, item_id: str, item: Ticket | Survey, at: float) -> None:
        kind = OutboxKind.TICKET if isinstance(item, Ticket) else OutboxKind.SURVEY
        try:
            await self._db.execute(
                "INSERT INTO outbox (item_id, kind, idempotency_key, body, submitted_at, next_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (item_id, kind.value, item.idempotency_key, _body(item), at, at),
            )
        except sqlite3.IntegrityError:
            # The key was checked above, so the id is taken by another item: a broken number
            # allocator, never to be papered over.
            raise TicketInvalidError(
                "ticket_id", f"{item_id} is already used by another {kind.value}"
            ) from None

    async def _by_key(self, idempotency_key: str, kind: type[_Item]) -> _Item | None:
        """What is queued under ``idempotency_key``, which must be of the same kind."""
        async with self._db.execute(
            "SELECT kind, body FROM outbox WHERE idempotency_key = ?", (idempotency_key,)
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        item = _item(row[0], row[1])
        if not isinstance(item, kind):
            raise TicketInvalidError(
                "idempotency_key", f"{idempotency_key!r} is already used by a {row[0]}"
            )
        return item

    # ------------------------------------------------------------------ reading

    async def get(self, item_id: str) -> OutboxEntry | None:
        """One row: a ticket's by its number, a survey's by its `survey_outbox_id`."""
        rows = await self._select("WHERE item_id = ?", (item_id,))
        return rows[0] if rows else None

    async def due(self, now: float, limit: int = 100) -> list[OutboxEntry]:
        """Pending rows due at ``now``, the longest-due first."""
        return await self._select(
            "WHERE state = 'pending' AND next_at <= ? ORDER BY next_at, submitted_at LIMIT ?",
            (now, limit),
        )

    async def dead_letters(self) -> list[OutboxEntry]:
        """Tickets and surveys given up on, oldest first."""
        return await self._select("WHERE state = 'dead' ORDER BY submitted_at, item_id", ())

    async def stats(self, now: float) -> OutboxStats:
        """Backlog, its oldest age, dead letters and deliveries at ``now``."""
        async with (
            self._lock,
            self._db.execute(
                "SELECT"
                " (SELECT COUNT(*) FROM outbox WHERE state = 'pending'),"
                " (SELECT MIN(submitted_at) FROM outbox WHERE state = 'pending'),"
                " (SELECT COUNT(*) FROM outbox WHERE state = 'dead'),"
                " (SELECT delivered FROM outbox_counts WHERE id = 1)"
            ) as cursor,
        ):
            row = await cursor.fetchone()
            async with self._db.execute(
                "SELECT kind, COUNT(*) FROM outbox WHERE state = 'pending' GROUP BY kind"
            ) as kinds:
                by_kind = {OutboxKind(str(k)): int(n) for k, n in await kinds.fetchall()}
        assert row is not None
        backlog, oldest, dead, delivered = row
        return OutboxStats(
            backlog=int(backlog),
            oldest_age_seconds=0.0 if oldest is None else max(0.0, now - float(oldest)),
            dead_letters=int(dead),
            delivered=int(delivered),
            backlog_by_kind=by_kind,
        )

    async def next_due_at(self) -> float | None:
        """When the next pending row is due (None: nothing pending)."""
        async with (
            self._lock,
            self._db.execute("SELECT MIN(next_at) FROM outbox WHERE state = 'pending'") as cursor,
        ):
            row = await cursor.fetchone()
        return None if row is None or row[0] is None else float(row[0])

    async def _select(self, where: str, args: Iterable[object]) -> list[OutboxEntry]:
        async with (
            self._lock,
            # Only this module's constant clauses are formatted in; values are parameters.
            self._db.execute(f"SELECT {_COLUMNS} FROM outbox {where}", tuple(args)) as cursor,  # noqa: S608
        ):
            rows = await cursor.fetchall()
        return [_entry(tuple(row)) for row in rows]

    # ------------------------------------------------------------------ the worker's steps

    async def claim(
        self,
        now: float,
        limit: int,
        max_attempts: int,
        next_attempt_at: Callable[[int, float], float],
    ) -> Claim:
        """Take up to ``limit`` due rows for an attempt each, in one transaction: count the
        attempt, note it may not finish, and schedule the one after (``next_attempt_at(attempt,
        now)``) — so if this process dies mid-request the row comes due again by itself. Rows
        already at ``max_attempts`` become dead letters instead."""
        async with self._transaction():
            async with self._db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE state = 'pending'"  # noqa: S608 — a constant
                " AND next_at <= ? ORDER BY next_at, submitted_at LIMIT ?",
                (now, limit),
            ) as cursor:
                rows = await cursor.fetchall()
            due: list[OutboxEntry] = []
            exhausted: list[OutboxEntry] = []
            unreadable: list[tuple[str, float, str]] = []
            for row in rows:
                try:
                    entry = _entry(tuple(row))
                except (ValueError, AssertionError) as exc:
                    # A row this code cannot read (a hand-edited or damaged file) must not
                    # stop every other row's delivery: set it aside for a person.
                    problem = f"the stored {row[1]} cannot be read: {exc}"
                    unreadable.append((_clip(problem), now, str(row[0])))
                    named = {f"{row[1]}_id": str(row[0])}
                    log.error(f"{row[1]}_unreadable", **named, problem=problem)
                    continue
                if entry.attempts >= max_attempts:
                    reason = _clip(f"gave up after {entry.attempts} attempts: {entry.last_error}")
                    exhausted.append(
                        replace(entry, state=DeliveryState.DEAD, last_error=reason, done_at=now)
                    )
                    continue
                attempt = entry.attempts + 1
                due.append(
                    replace(
                        entry,
                        attempts=attempt,
                        last_attempt_at=now,
                        next_at=next_attempt_at(attempt, now),
                        last_error=f"attempt {attempt} did not finish (the worker stopped)",
                    )
                )
            await self._db.executemany(
                "UPDATE outbox SET state = ?, attempts = ?, last_attempt_at = ?, next_at = ?,"
                " last_error = ?, done_at = ? WHERE item_id = ?",
                [
                    (
                        e.state.value,
                        e.attempts,
                        e.last_attempt_at,
                        e.next_at,
                        e.last_error,
                        e.done_at,
                        e.item_id,
                    )
                    for e in (*due, *exhausted)
                ],
            )
            await self._db.executemany(
                "UPDATE outbox SET state = 'dead', last_error = ?, done_at = ? WHERE item_id = ?",
                unreadable,
            )
        return Claim(due=due, exhausted=exhausted)

    async def settle(self, outcomes: Sequence[Outcome], now: float) -> None:
        """Write how attempts ended, all in one transaction (one fsync for a whole round).

        Should the process die before this, the items are simply tried again: the CRM
        answers a repeated key with the same reference."""
        if not outcomes:
            return
        rows = [
            (
                outcome.state.value,
                outcome.crm_ref,
                _clip(outcome.error),
                None if outcome.state is DeliveryState.PENDING else now,
                outcome.item_id,
            )
            for outcome in outcomes
        ]
        async with self._transaction():
            await self._db.executemany(
                "UPDATE outbox SET state = ?, crm_ref = ?, last_error = ?, done_at = ?"
                " WHERE item_id = ? AND state = 'pending'",
                rows,
            )

    async def retry(self, item_id: str | None = None, *, now: float | None = None) -> int:
        """Replay one dead letter (``item_id``: a ticket number or a survey's id) or all of them
        (None): pending again, due at once, attempts from zero; the last error is kept until
        the next attempt. Returns how many; `NotFoundError` when ``item_id`` is not a dead
        letter."""
        at = self.clock() if now is None else now
        where, args = "WHERE state = 'dead'", tuple[str, ...]()
        if item_id is not None:
            where, args = "WHERE state = 'dead' AND item_id = ?", (item_id,)
        count = await self._update(
            f"SET state = 'pending', attempts = 0, next_at = ?, done_at = NULL {where}",
            (at, *args),
        )
        if item_id is not None and count == 0:
            raise NotFoundError(f"{item_id} is not a dead letter")
        if count:
            log.info("tickets_replayed", item_id=item_id, count=count)
            self._changed.set()
        return count

    async def _update(self, statement: str, args: tuple[object, ...]) -> int:
        async with self._lock:
            cursor = await self._db.execute(f"UPDATE outbox {statement}", args)
            count = cursor.rowcount
            await cursor.close()
        return count

    async def wait_changed(self, seconds: float) -> bool:
        """Wait until an item is submitted or replayed, or ``seconds`` pass; True if something
        changed. The flag is cleared on return."""
        try:
            async with asyncio.timeout(seconds):
                await self._changed.wait()
        except TimeoutError:
            return False
        finally:
            self._changed.clear()
        return True


async def _uncancellable(work: Awaitable[None]) -> None:
    """Run ``work`` to its end even if the caller is cancelled meanwhile (then re-raise the
    cancellation): a caller stopping and closing the file right after must not cut a short
    write off half-way."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError


# ---------------------------------------------------------------------- backoff


class wait_equal_jitter(tenacity.wait.wait_base):  # noqa: N801 — named like tenacity's waits
    """Between half and all of another wait, drawn from a given random source.

    The upper bound stays ``base``, so a capped exponential never waits longer than its cap and
    still spreads at the cap (tenacity's ``wait_exponential_jitter`` adds its jitter on top and
    then caps, so every node lands on the cap together; it also draws from the global `random`,
    which a test cannot seed without seeding everyone's).
    """

    def __init__(self, base: tenacity.wait.wait_base, rng: random.Random) -> None:
        self.base = base
        """The wait to spread."""
        self.rng = rng
        """Where the jitter comes from."""

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        full = self.base(retry_state)
        return full - self.rng.uniform(0.0, full / 2)


class Backoff:
    """The wait before each next delivery attempt: exponential from ``first`` seconds, at most
    ``maximum``, with equal jitter (tenacity's strategies, evaluated for an attempt number)."""

    def __init__(self, first: float, maximum: float, rng: random.Random) -> None:
        self.wait = wait_equal_jitter(
            tenacity.wait_exponential(multiplier=first, max=maximum, min=0), rng
        )
        """The strategy."""
        # tenacity computes a wait from the state of a retry loop; ours lives in the database,
        # so a state is made per question and given the attempt number.
        self._state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})

    def after(self, attempt: int) -> float:
        """Seconds to wait after attempt number ``attempt`` (1-based) fails."""
        self._state.attempt_number = attempt
        return self.wait(self._state)


# ---------------------------------------------------------------------- metrics


class OutboxMetrics:
    """Prometheus series of delivery (tickets and surveys together), in the registry given
    (crm_bridge does not know the hotline's; the ivr layer passes it)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter(
            "hotline_crm_delivery_attempts",
            "Ticket and survey delivery attempts by result (delivered, retry, dead).",
            ["result"],
            registry=registry,
        )
        """Attempts by result."""
        self.backlog = Gauge(
            "hotline_crm_outbox_backlog",
            "Tickets and surveys in the outbox not yet delivered to the CRM (dead letters"
            " excluded).",
            registry=registry,
        )
        """Pending tickets and surveys."""
        self.oldest = Gauge(
            "hotline_crm_outbox_oldest_age_seconds",
            "Age of the oldest undelivered ticket or survey when the worker last looked.",
            registry=registry,
        )
        """Age of the oldest pending row."""
        self.dead = Gauge(
            "hotline_crm_outbox_dead_letters",
            "Tickets and surveys given up on, waiting for an operator's retry.",
            registry=registry,
        )
        """Dead letters."""
        for result in ("delivered", "retry", "dead"):
            self.attempts.labels(result=result)

    def show(self, stats: OutboxStats) -> None:
        """Set the gauges from a snapshot."""
        self.backlog.set(stats.backlog)
        self.oldest.set(stats.oldest_age_seconds)
        self.dead.set(stats.dead_letters)


# ---------------------------------------------------------------------- the worker


def _named(entry: OutboxEntry) -> dict[str, str]:
    """How log lines name a row: ``ticket_id`` or ``survey_id`` (never the caller)."""
    return {f"{entry.kind.value}_id": entry.item_id}


class DeliveryWorker:
    """Delivers the outbox to a CRM backend: `run_once` for one round, `serve` to keep at it."""

    def __init__(
        self,
        outbox: Outbox,
        backend: CrmBackend,
        max_attempts: int = 20,
        retry_max_seconds: float = 300.0,
        clock: Clock = time.time,
        *,
        first_retry_seconds: float = 1.0,
        rng: random.Random | None = None,
        batch: int = 100,
        concurrency: int = 1,
        idle_seconds: float = 30.0,
        metrics: OutboxMetrics | None = None,
    ) -> None:
        if max_attempts < 1 or batch < 1 or concurrency < 1:
            raise ValueError("max_attempts, batch and concurrency must be at least 1")
        self.outbox = outbox
        """Where tickets wait."""
        self.backend = backend
        """Where they go."""
        self.max_attempts = max_attempts
        """Attempts per ticket before it becomes a dead letter."""
        self.clock = clock
        """Time for `serve` (`run_once` takes it as an argument)."""
        self.backoff = Backoff(first_retry_seconds, retry_max_seconds, rng or random.Random())  # noqa: S311 — jitter, not a secret
        """The wait after each failed attempt."""
        self.batch = batch
        """Rows taken per round."""
        self.concurrency = concurrency
        """Requests in flight at once within a round."""
        self.idle_seconds = idle_seconds
        """Longest sleep of `serve` with nothing due: another process (the CLI) may have
        replayed dead letters in the file without waking us."""
        self.metrics = metrics
        """Series to update, if any."""
        self.waiting = asyncio.Event()
        """Set while `serve` sleeps until the next ticket is due or submitted (tests and
        health checks can tell a worker at rest from one at work)."""

    def _next_attempt_at(self, attempt: int, now: float) -> float:
        return now + self.backoff.after(attempt)

    async def run_once(self, now: float) -> int:
        """One round at ``now``: one attempt for each ticket or survey due (up to ``batch``);
        returns how many attempts were made."""
        claim = await self.outbox.claim(now, self.batch, self.max_attempts, self._next_attempt_at)
        for entry in claim.exhausted:
            self._count("dead")
            log.warning(
                f"{entry.kind.value}_dead_lettered",
                **_named(entry),
                attempt=entry.attempts,
                reason=entry.last_error,
            )
        outcomes: list[Outcome] = []
        try:
            if self.concurrency == 1:
                for entry in claim.due:
                    outcomes.append(await self._deliver(entry))
            else:
                gate = asyncio.Semaphore(self.concurrency)

                async def gated(entry: OutboxEntry) -> None:
                    async with gate:
                        outcomes.append(await self._deliver(entry))

                async with asyncio.TaskGroup() as group:
                    for entry in claim.due:
                        group.create_task(gated(entry))
        finally:
            # Also when cancelled (the hotline stopping): what was delivered is written down,
            # the rest is due again at its scheduled retry.
            await _uncancellable(self.outbox.settle(outcomes, now))
        if self.metrics is not None:
            self.metrics.show(await self.outbox.stats(now))
        return len(claim.due)

    async def _deliver(self, entry: OutboxEntry) -> Outcome:
        item, attempt, kind = entry.item, entry.attempts, entry.kind.value
        try:
            if isinstance(item, Ticket):
                crm_ref = await self.backend.create_ticket(item)
            else:
                # The CRM stores a call's first survey however often it is sent (its key).
                await self.backend.record_survey(item)
                crm_ref = ""
        except CrmError as exc:
            if exc.retryable:
                return self._failed(entry, f"{exc.error_id}: {exc}")
            return self._dead(entry, f"{exc.error_id}: {exc}")
        except Exception as exc:  # a backend's bug must not stop the others
            log.exception(f"{kind}_delivery_error", **_named(entry), attempt=attempt)
            return self._failed(entry, f"{type(exc).__name__}: {exc}")
        self._count("delivered")
        log.info(f"{kind}_delivered", **_named(entry), attempt=attempt, crm_ref=crm_ref)
        return Outcome(entry.item_id, DeliveryState.DELIVERED, crm_ref=crm_ref)

    def _failed(self, entry: OutboxEntry, error: str) -> Outcome:
        if entry.attempts >= self.max_attempts:
            return self._dead(entry, f"gave up after {entry.attempts} attempts: {error}")
        self._count("retry")
        log.warning(
            f"{entry.kind.value}_delivery_failed",
            **_named(entry),
            attempt=entry.attempts,
            next_at=entry.next_at,
            error=_clip(error),
        )
        return Outcome(entry.item_id, DeliveryState.PENDING, error=error)

    def _dead(self, entry: OutboxEntry, reason: str) -> Outcome:
        self._count("dead")
        log.warning(
            f"{entry.kind.value}_dead_lettered",
            **_named(entry),
            attempt=entry.attempts,
            reason=_clip(reason),
        )
        return Outcome(entry.item_id, DeliveryState.DEAD, error=reason)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.attempts.labels(result=result).inc()

    async def serve(self) -> None:
        """Deliver until cancelled: a round whenever something is due, and at once when a
        ticket is submitted (no polling delay for a first attempt)."""
        while True:
            try:
                made = await self.run_once(self.clock())
                if made >= self.batch:
                    continue  # more may be due right now
                next_due = await self.outbox.next_due_at()
            except Exception:
                # A full disk, a locked file, a defect: say so and try again in a second,
                # never stop delivering.
                log.exception("outbox_error")
                next_due = self.clock() + 1.0
            wait = self.idle_seconds
            if next_due is not None:
                wait = min(wait, max(0.0, next_due - self.clock()))
            if wait > 0:
                self.waiting.set()
                try:
                    await self.outbox.wait_changed(wait)
                finally:
                    self.waiting.clear()
