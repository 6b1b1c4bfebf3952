"""The embedded CRM: tickets, customers, bills, outages and surveys in one SQLite file.

The default backend: an operator runs the hotline with nothing else installed, and a newcomer's
calls find customers and outages after ``hotline crm seed-demo``. The file is
``<var_dir>/crm/crm.sqlite3`` (`store_path`), opened once by the serving process:

- WAL, so reads do not wait for a write; ``synchronous=FULL``, so a committed work order is on
  disk before the caller is told its number (in WAL mode NORMAL may lose the last commits on a
  power cut; the store's writes are few, one ticket per call, so FULL costs little);
- foreign keys on; the schema versioned by ``PRAGMA user_version`` (`crm_bridge.embedded_schema`);
- one connection, and one lock around each transaction: a connection runs one transaction at a
  time, and reads see no other coroutine's half-done write.

Besides the `CrmBackend` operations it has the operators' ones (tickets listed and moved on,
outages posted and ended, customers and bills seeded) that the admin API and CLI use.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import date
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from crm_bridge.backend import CrmBackend
from crm_bridge.demo import DemoSeed, demo_data
from crm_bridge.embedded_rows import (
    ACCOUNT,
    ADDRESS_LEVELS,
    AREA_LEVELS,
    PHONE,
    TICKET_COLUMNS,
    address_from_row,
    check_text,
    check_time,
    crm_ref,
    outage_from_row,
    ticket_from_row,
    ticket_values,
)
from crm_bridge.embedded_schema import STEPS
from crm_bridge.errors import (
    CrmError,
    CrmRejectedError,
    CrmUnavailableError,
    NotFoundError,
    TicketInvalidError,
)
from crm_bridge.migrations import migrate
from crm_bridge.model import (
    MAX_DESCRIPTION,
    TICKET_TYPES,
    Address,
    BillSummary,
    Customer,
    Outage,
    OutageKind,
    StatusChange,
    Survey,
    Ticket,
    TicketStatus,
)

log = structlog.get_logger(__name__)

BUSY_TIMEOUT_MS = 5000
"""How long a statement waits for another process's write lock (e.g. an operator's sqlite3
shell) before failing."""

MAX_LIST = 500
"""Most tickets one `list_tickets` returns."""


class TicketClosedError(CrmError):
    """A closed ticket's status cannot change any more."""

    error_id = "ticket-closed"


def store_path(var_dir: Path) -> Path:
    """Where the embedded store of a node with this ``var_dir`` keeps its file."""
    return var_dir / "crm" / "crm.sqlite3"


class EmbeddedCrm(CrmBackend):
    """The embedded CRM store (a `CrmBackend`). Open with `EmbeddedCrm.open`, end with `close`."""

    name = "embedded"
    """Backend name for logs and /healthz."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        lock: asyncio.Lock,
        *,
        path: Path,
        ticket_types: tuple[str, ...],
        clock: Callable[[], float],
    ) -> None:
        self._db = db
        self._lock = lock
        self._types = ticket_types
        self._clock = clock
        self.path = path
        """The database file."""

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        extra_ticket_types: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> EmbeddedCrm:
        """Open (or create) the store at ``path`` and bring its schema up to date.

        ``extra_ticket_types`` are allowed besides `TICKET_TYPES` (``crm_ticket_types``);
        ``clock`` stamps the moment a ticket is received (the `CrmBackend` calls carry no time
        of their own). The store allocates no ticket numbers: tickets arrive numbered from the
        node's outbox (`crm_bridge.numbers` on the outbox's file), the one source of numbers.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: every transaction below is an explicit BEGIN ... COMMIT.
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            async with db.execute("PRAGMA journal_mode = WAL") as cursor:
                mode = await cursor.fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                # e.g. a file system without shared memory: still correct, only slower reads.
                log.warning("crm store not in WAL mode", path=str(path), journal_mode=mode)
            for pragma in (
                "PRAGMA synchronous = FULL",
                "PRAGMA foreign_keys = ON",
                f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}",
            ):
                await db.execute(pragma)
            version = await migrate(db, STEPS)
        except BaseException:
            await db.close()
            raise
        log.info("crm store open", path=str(path), schema_version=version)
        types = TICKET_TYPES + tuple(t for t in extra_ticket_types if t not in TICKET_TYPES)
        return cls(db, asyncio.Lock(), path=path, ticket_types=types, clock=clock)

    async def close(self) -> None:
        """Close the database (waits for the transaction under way)."""
        async with self._lock:
            await self._db.close()

    @asynccontextmanager
    async def _transaction(self, *, write: bool) -> AsyncIterator[aiosqlite.Connection]:
        """One transaction under the lock; a write takes the database's write lock at once, so
        what it read cannot change before it writes.

        SQLite's operational errors (the file locked by another process past the busy timeout,
        a full disk, an I/O error) are `CrmUnavailableError`: the outbox keeps the ticket and
        tries again, as it would with an external CRM that is down.
        """
        async with self._lock:
            try:
                await self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield self._db
                await self._db.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
                elif isinstance(exc, asyncio.CancelledError):
                    # Perhaps cancelled while the BEGIN waited for the connection's thread: it
                    # still runs there, so end it (queued behind it; an error if it never began).
                    await asyncio.shield(self._end_begun())
                if isinstance(exc, sqlite3.OperationalError):
                    log.warning("crm store unavailable", path=str(self.path), error=str(exc))
                    raise CrmUnavailableError(f"the embedded CRM store: {exc}") from exc
                raise

    async def _end_begun(self) -> None:
        """Roll back a BEGIN whose caller was cancelled; asked unconditionally, as the BEGIN may
        not have run yet (if it failed, there is nothing to roll back: that error is ignored)."""
        with suppress(sqlite3.OperationalError):
            await self._db.execute("ROLLBACK")

    @staticmethod
    async def _one(db: aiosqlite.Connection, sql: str, *params: Any) -> sqlite3.Row | None:
        async with db.execute(sql, params) as cursor:
            row: sqlite3.Row | None = await cursor.fetchone()
        return row

    @staticmethod
    async def _all(db: aiosqlite.Connection, sql: str, *params: Any) -> list[sqlite3.Row]:
        async with db.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    # ------------------------------------------------------------------ tickets

    async def create_ticket(self, ticket: Ticket) -> str:
        """Store the ticket, SUBMITTED, unless its idempotency key is known; the store's
        reference either way (the same for the same key)."""
        ticket.validate(self._types)
        async with self._transaction(write=True) as db:
            known = await self._one(
                db,
                "SELECT id, ticket_id FROM tickets WHERE idempotency_key = ?",
                ticket.idempotency_key,
            )
            if known is not None:
                if known["ticket_id"] != ticket.ticket_id:
                    # The same outcome of the same call, retried under another number: the
                    # caller was told the first one, which stays.
                    log.warning(
                        "ticket retried under another number",
                        idempotency_key=ticket.idempotency_key,
                        ticket_id=known["ticket_id"],
                        retried_as=ticket.ticket_id,
                    )
                return crm_ref(known["id"])
            taken = await self._one(
                db, "SELECT 1 FROM tickets WHERE ticket_id = ?", ticket.ticket_id
            )
            if taken is not None:
                raise CrmRejectedError(
                    f"ticket number {ticket.ticket_id} belongs to another ticket"
                )
            now = self._clock()
            history = list(ticket.history) or [StatusChange(TicketStatus.NEW, ticket.created_at)]
            history.append(StatusChange(TicketStatus.SUBMITTED, now, "received"))
            status = TicketStatus.SUBMITTED
            if ticket.status not in (TicketStatus.NEW, TicketStatus.SUBMITTED):
                # Made already further on (e.g. a question an agent answered on the call).
                status = ticket.status
                history.append(StatusChange(status, now, "as made"))
            values = ticket_values(ticket, status, now)
            cursor = await db.execute(
                # Fixed column names; the values are parameters.
                f"INSERT INTO tickets ({TICKET_COLUMNS}) "  # noqa: S608
                f"VALUES ({', '.join('?' * len(values))})",
                values,
            )
            row_id = cursor.lastrowid
            await cursor.close()
            assert row_id is not None
            await db.executemany(
                "INSERT INTO ticket_history (ticket, status, at, note) VALUES (?, ?, ?, ?)",
                [(row_id, h.status.value, h.at, h.note) for h in history],
            )
        log.info(
            "ticket stored",
            ticket_id=ticket.ticket_id,
            ticket_type=ticket.ticket_type,
            call_id=ticket.call_id,
            crm_ref=crm_ref(row_id),
        )
        return crm_ref(row_id)

    async def _histories(
        self, db: aiosqlite.Connection, row_ids: Sequence[int]
    ) -> dict[int, list[StatusChange]]:
        histories: dict[int, list[StatusChange]] = {row_id: [] for row_id in row_ids}
        rows = await self._all(
            db,
            "SELECT ticket, status, at, note FROM ticket_history "
            "WHERE ticket IN (SELECT value FROM json_each(?)) ORDER BY id",
            json.dumps(list(row_ids)),
        )
        for row in rows:
            histories[row["ticket"]].append(
                StatusChange(TicketStatus(row["status"]), row["at"], row["note"])
            )
        return histories

    async def _get_ticket(self, db: aiosqlite.Connection, ticket_id: str) -> Ticket | None:
        row = await self._one(db, "SELECT * FROM tickets WHERE ticket_id = ?", ticket_id)
        if row is None:
            return None
        return ticket_from_row(row, (await self._histories(db, [row["id"]]))[row["id"]])

    async def get_ticket(self, ticket_id: str) -> Ticket | None:
        """A ticket by its number, with status and history (None if unknown)."""
        async with self._transaction(write=False) as db:
            return await self._get_ticket(db, ticket_id)

    async def list_tickets(
        self,
        status: TicketStatus | None = None,
        since: float | None = None,
        limit: int = 50,
    ) -> list[Ticket]:
        """The newest tickets first: with ``status`` only, made at or after ``since`` only."""
        if not 1 <= limit <= MAX_LIST:
            raise TicketInvalidError("limit", f"{limit} is not in 1..{MAX_LIST}")
        async with self._transaction(write=False) as db:
            rows = await self._all(
                db,
                "SELECT * FROM tickets WHERE (?1 IS NULL OR status = ?1) "
                "AND (?2 IS NULL OR created_at >= ?2) ORDER BY created_at DESC, id DESC LIMIT ?3",
                None if status is None else TicketStatus(status).value,
                since,
                limit,
            )
            histories = await self._histories(db, [row["id"] for row in rows])
        return [ticket_from_row(row, histories[row["id"]]) for row in rows]

    async def set_status(
        self, ticket_id: str, status: TicketStatus, note: str, now: float
    ) -> Ticket:
        """Move a ticket on (a crew took it, it is resolved, closed), with a note for its
        history; the ticket as it is now. Setting the status it has adds a note only."""
        try:
            status = TicketStatus(status)
        except ValueError:
            raise TicketInvalidError("status", f"{status!r} is not a ticket status") from None
        if status is TicketStatus.NEW:
            raise TicketInvalidError("status", "a ticket the CRM holds cannot become new again")
        check_text("note", note, MAX_DESCRIPTION)
        check_time("now", now)
        async with self._transaction(write=True) as db:
            row = await self._one(
                db, "SELECT id, status FROM tickets WHERE ticket_id = ?", ticket_id
            )
            if row is None:
                raise NotFoundError(f"no ticket {ticket_id}")
            if row["status"] == TicketStatus.CLOSED:
                raise TicketClosedError(f"ticket {ticket_id} is closed")
            await db.execute(
                "UPDATE tickets SET status = ?, updated_at = ? WHERE id = ?",
                (status.value, now, row["id"]),
            )
            await db.execute(
                "INSERT INTO ticket_history (ticket, status, at, note) VALUES (?, ?, ?, ?)",
                (row["id"], status.value, now, note),
            )
            ticket = await self._get_ticket(db, ticket_id)
        assert ticket is not None
        log.info(
            "ticket status changed",
            ticket_id=ticket_id,
            status=status.value,
            was=row["status"],
        )
        return ticket

    # ------------------------------------------------------------------ customers and bills

    async def upsert_customer(self, customer: Customer) -> None:
        """Add the customer or replace what is known of them; their phones and accounts move
        to them from whoever had them."""
        check_text("customer_id", customer.customer_id, required=True)
        check_text("name", customer.name)
        for phone in customer.phones:
            if not PHONE.fullmatch(phone):
                raise TicketInvalidError("phones", f"{phone!r}: digits only, optionally with +")
        for account in customer.accounts:
            if not ACCOUNT.fullmatch(account):
                raise TicketInvalidError("accounts", f"{account!r}: 1-32 digits")
        address = customer.address
        async with self._transaction(write=True) as db:
            await db.execute(
                "INSERT INTO customers (customer_id, name, province, city, district, street, "
                "number, address_raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (customer_id) DO UPDATE SET name = excluded.name, "
                "province = excluded.province, city = excluded.city, "
                "district = excluded.district, street = excluded.street, "
                "number = excluded.number, address_raw = excluded.address_raw",
                (
                    customer.customer_id,
                    customer.name,
                    *(getattr(address, level) for level in ADDRESS_LEVELS),
                    address.raw,
                ),
            )
            for table, column, values in (
                ("customer_phones", "phone", customer.phones),
                ("customer_accounts", "account", customer.accounts),
            ):
                # Fixed table and column names from the tuple above, values as parameters.
                await db.execute(
                    f"DELETE FROM {table} WHERE customer_id = ?",  # noqa: S608
                    (customer.customer_id,),
                )
                await db.executemany(
                    f"INSERT OR REPLACE INTO {table} ({column}, customer_id) "  # noqa: S608
                    "VALUES (?, ?)",
                    [(value, customer.customer_id) for value in values],
                )

    async def find_customer(self, *, phone: str = "", account: str = "") -> Customer | None:
        """The customer calling from ``phone`` (exactly as the network gives it) or owning
        ``account``; exactly one of the two is given."""
        if bool(phone) == bool(account):
            raise TicketInvalidError("phone", "give exactly one of phone or account")
        async with self._transaction(write=False) as db:
            if phone:
                owner = await self._one(
                    db, "SELECT customer_id FROM customer_phones WHERE phone = ?", phone
                )
            else:
                owner = await self._one(
                    db, "SELECT customer_id FROM customer_accounts WHERE account = ?", account
                )
            if owner is None:
                return None
            customer_id = owner["customer_id"]
            row = await self._one(db, "SELECT * FROM customers WHERE customer_id = ?", customer_id)
            assert row is not None  # the foreign key keeps owners
            phones = await self._all(
                db,
                "SELECT phone FROM customer_phones WHERE customer_id = ? ORDER BY rowid",
                customer_id,
            )
            accounts = await self._all(
                db,
                "SELECT account FROM customer_accounts WHERE customer_id = ? ORDER BY rowid",
                customer_id,
            )
        return Customer(
            customer_id=customer_id,
            name=row["name"],
            phones=tuple(r["phone"] for r in phones),
            accounts=tuple(r["account"] for r in accounts),
            address=address_from_row(row),
        )

    async def set_bill(self, bill: BillSummary) -> None:
        """Set an account's balance and amount due."""
        if not ACCOUNT.fullmatch(bill.account):
            raise TicketInvalidError("account", "1-32 digits")
        for field in ("balance_fen", "amount_due_fen"):
            value = getattr(bill, field)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TicketInvalidError(field, "a whole number of fen")
        if bill.due_date:
            try:
                date.fromisoformat(bill.due_date)
            except ValueError:
                raise TicketInvalidError("due_date", "an ISO date, YYYY-MM-DD") from None
        async with self._transaction(write=True) as db:
            await db.execute(
                "INSERT INTO bills (account, balance_fen, amount_due_fen, due_date) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (account) DO UPDATE SET "
                "balance_fen = excluded.balance_fen, amount_due_fen = excluded.amount_due_fen, "
                "due_date = excluded.due_date",
                (bill.account, bill.balance_fen, bill.amount_due_fen, bill.due_date),
            )

    async def bill_summary(self, account: str) -> BillSummary | None:
        """The account's balance and amount due (None if no bill is known)."""
        async with self._transaction(write=False) as db:
            row = await self._one(db, "SELECT * FROM bills WHERE account = ?", account)
        if row is None:
            return None
        return BillSummary(
            account=row["account"],
            balance_fen=row["balance_fen"],
            amount_due_fen=row["amount_due_fen"],
            due_date=row["due_date"],
        )

    # ------------------------------------------------------------------ outages

    async def post_outage(
        self,
        area: Address,
        kind: OutageKind,
        cause: str,
        starts_at: float,
        restore_at: float | None = None,
    ) -> Outage:
        """Post a notice for ``area`` (the levels it names; at least one); the outage posted."""
        if not any(getattr(area, level) for level in AREA_LEVELS):
            raise TicketInvalidError("area", "name at least one of province, city, district")
        try:
            kind = OutageKind(kind)
        except ValueError:
            choices = ", ".join(k.value for k in OutageKind)
            raise TicketInvalidError("kind", f"{kind!r} is not one of {choices}") from None
        check_text("cause", cause, required=True)
        check_time("starts_at", starts_at)
        if restore_at is not None and check_time("restore_at", restore_at) <= starts_at:
            raise TicketInvalidError("restore_at", "must be after starts_at")
        async with self._transaction(write=True) as db:
            cursor = await db.execute(
                "INSERT INTO outages (province, city, district, street, kind, cause, "
                "starts_at, restore_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    *(getattr(area, level) for level in AREA_LEVELS),
                    kind.value,
                    cause,
                    starts_at,
                    restore_at,
                ),
            )
            row_id = cursor.lastrowid
            await cursor.close()
            row = await self._one(db, "SELECT * FROM outages WHERE id = ?", row_id)
        assert row is not None
        outage = outage_from_row(row)
        log.info(
            "outage posted",
            outage_id=outage.outage_id,
            kind=kind.value,
            area="".join(getattr(area, level) for level in AREA_LEVELS),
            starts_at=starts_at,
            restore_at=restore_at,
        )
        return outage

    async def end_outage(self, outage_id: str, now: float) -> Outage:
        """Declare an outage over at ``now``; one already ended keeps its end."""
        check_time("now", now)
        if not outage_id.isdigit():
            raise NotFoundError(f"no outage {outage_id}")
        async with self._transaction(write=True) as db:
            await db.execute(
                "UPDATE outages SET ended_at = ? WHERE id = ? AND ended_at IS NULL",
                (now, int(outage_id)),
            )
            row = await self._one(db, "SELECT * FROM outages WHERE id = ?", int(outage_id))
        if row is None:
            raise NotFoundError(f"no outage {outage_id}")
        log.info("outage ended", outage_id=outage_id, ended_at=row["ended_at"])
        return outage_from_row(row)

    async def list_outages(self, active_at: float | None = None) -> list[Outage]:
        """Every notice, most recent start first; only those active at ``active_at`` if given."""
        async with self._transaction(write=False) as db:
            if active_at is None:
                rows = await self._all(db, "SELECT * FROM outages ORDER BY starts_at DESC, id DESC")
            else:
                rows = await self._all(
                    db,
                    "SELECT * FROM outages WHERE starts_at <= ?1 "
                    "AND (ended_at IS NULL OR ended_at > ?1) ORDER BY starts_at DESC, id DESC",
                    active_at,
                )
        return [outage_from_row(row) for row in rows]

    async def outages(self, address: Address, now: float) -> list[Outage]:
        """Notices active at ``now`` whose area contains ``address`` (`Address.within`)."""
        return [o for o in await self.list_outages(active_at=now) if address.within(o.area)]

    # ------------------------------------------------------------------ surveys

    async def record_survey(self, survey: Survey) -> None:
        """Store a rating (`Survey` checked its fields when it was made); a call's first rating
        stays (a retry or a second one is ignored)."""
        async with self._transaction(write=True) as db:
            await db.execute(
                "INSERT INTO surveys (call_id, score, at, agent_id, caller) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (call_id) DO NOTHING",
                (survey.call_id, survey.score, survey.at, survey.agent_id, survey.caller),
            )

    async def get_survey(self, call_id: str) -> Survey | None:
        """The rating a call got (None if none)."""
        async with self._transaction(write=False) as db:
            row = await self._one(db, "SELECT * FROM surveys WHERE call_id = ?", call_id)
        if row is None:
            return None
        return Survey(
            call_id=row["call_id"],
            score=row["score"],
            at=row["at"],
            agent_id=row["agent_id"],
            caller=row["caller"],
        )

    # ------------------------------------------------------------------ demo data

    async def seed_demo(self, now: float) -> DemoSeed:
        """Load the demo customers, bills and outages (`demo_data`): a newcomer's calls then
        find a customer, a balance and an outage. Safe to run again."""
        customers, bills, outages = demo_data(now)
        for customer in customers:
            await self.upsert_customer(customer)
        for bill in bills:
            await self.set_bill(bill)
        added = 0
        posted = await self.list_outages()
        for outage in outages:
            key = (outage.area, outage.kind, outage.cause)
            if any(p.ended_at is None and (p.area, p.kind, p.cause) == key for p in posted):
                continue
            await self.post_outage(
                outage.area, outage.kind, outage.cause, outage.starts_at, outage.restore_at
            )
            added += 1
        log.info("crm demo data loaded", customers=len(customers), outages_added=added)
        return DemoSeed(customers=len(customers), bills=len(bills), outages_added=added)
