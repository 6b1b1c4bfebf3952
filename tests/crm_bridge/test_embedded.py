"""The embedded CRM end to end on real SQLite files: tickets (idempotent, with history),
customers, bills, outages, surveys, demo data, and the schema migrations."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest
from structlog.testing import capture_logs

from crm_bridge.embedded import EmbeddedCrm, TicketClosedError, store_path
from crm_bridge.embedded_schema import STEPS
from crm_bridge.errors import (
    CrmRejectedError,
    CrmUnavailableError,
    NotFoundError,
    TicketInvalidError,
)
from crm_bridge.migrations import SchemaTooNewError, migrate, schema_version
from crm_bridge.model import (
    Address,
    BillSummary,
    Customer,
    OutageKind,
    StatusChange,
    Survey,
    Ticket,
    TicketSource,
    TicketStatus,
)
from crm_bridge.numbers import SEQUENCE_TABLE, TicketNumbers
from crm_bridge.outbox import DeliveryState, DeliveryWorker, Outbox, outbox_path, survey_outbox_id
from tests.crm_bridge.busy_sqlite import occupy

T0 = 1_800_000_000.0
HOUR = 3600.0
GULOU = Address("江苏省", "南京市", "鼓楼区")
HOME = Address("江苏省", "南京市", "鼓楼区", "中山北路", "100号", "南京市鼓楼区中山北路一百号")


class Clock:
    """The store's clock for when a ticket is received; moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return store_path(tmp_path / "var")


@pytest.fixture
async def crm(path: Path, clock: Clock) -> AsyncIterator[EmbeddedCrm]:
    store = await EmbeddedCrm.open(path, clock=clock, extra_ticket_types=("回访",))
    try:
        yield store
    finally:
        await store.close()


def fault(number: str = "2611270100001", call_id: str = "call-1", **changes: object) -> Ticket:
    values: dict[str, object] = {
        "ticket_id": number,
        "idempotency_key": f"{call_id}:fault",
        "ticket_type": "故障报修",
        "priority": 50,
        "created_at": T0 - 5,
        "caller": "13800138000",
        "account": "1234567890",
        "address": HOME,
        "description": "家里停电了",
        "call_id": call_id,
        "ivr_path": ("main_menu", "fault_account", "fault_address"),
        "fields": {"intent": "fault", "hazard": "no"},
    }
    values.update(changes)
    return Ticket(**values)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- the file


async def test_the_file_is_under_var_crm_in_wal_with_full_sync(
    tmp_path: Path, crm: EmbeddedCrm
) -> None:
    assert crm.path == tmp_path / "var" / "crm" / "crm.sqlite3"
    assert crm.path.is_file()
    assert crm.name == "embedded"
    # The store's own connection (the pragmas are per connection).
    db = crm._db
    for pragma, expected in (("journal_mode", "wal"), ("synchronous", 2), ("foreign_keys", 1)):
        async with db.execute(f"PRAGMA {pragma}") as cursor:
            row = await cursor.fetchone()
        assert row is not None
        assert row[0] == expected, pragma
    assert await schema_version(db) == len(STEPS)


# ---------------------------------------------------------------------- tickets


async def test_a_ticket_is_stored_once_per_key_and_read_back_whole(
    crm: EmbeddedCrm, clock: Clock
) -> None:
    made = fault(urgent=True, complete=False, source=TicketSource.IVR_AGENT, customer_id="c-1")
    ref = await crm.create_ticket(made)
    clock.now += 60
    assert await crm.create_ticket(made) == ref
    assert ref.startswith("emb-")

    stored = await crm.get_ticket(made.ticket_id)
    assert stored is not None
    assert stored.status is TicketStatus.SUBMITTED
    assert stored.crm_ref == ref
    assert stored.updated_at == T0
    assert stored.history == (
        StatusChange(TicketStatus.NEW, T0 - 5),
        StatusChange(TicketStatus.SUBMITTED, T0, "received"),
    )
    # Everything else as it was made.
    for name in (
        "ticket_id",
        "idempotency_key",
        "ticket_type",
        "priority",
        "created_at",
        "urgent",
        "caller",
        "account",
        "customer_id",
        "address",
        "description",
        "source",
        "call_id",
        "ivr_path",
        "complete",
        "fields",
    ):
        assert getattr(stored, name) == getattr(made, name), name
    assert len(await crm.list_tickets()) == 1


async def test_a_retry_under_another_number_keeps_the_first(crm: EmbeddedCrm) -> None:
    ref = await crm.create_ticket(fault("2611270100001"))
    with capture_logs() as logs:
        assert await crm.create_ticket(fault("2611270100002")) == ref
    assert await crm.get_ticket("2611270100002") is None
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "ticket retried under another number"
    ]
    assert logs[0]["ticket_id"] == "2611270100001"


async def test_a_number_taken_by_another_ticket_is_refused(crm: EmbeddedCrm) -> None:
    await crm.create_ticket(fault("2611270100001", call_id="call-1"))
    with pytest.raises(CrmRejectedError, match="2611270100001"):
        await crm.create_ticket(fault("2611270100001", call_id="call-2"))
    assert len(await crm.list_tickets()) == 1


async def test_ticket_types_are_the_95598_ones_and_the_extra_ones(crm: EmbeddedCrm) -> None:
    with pytest.raises(TicketInvalidError) as excinfo:
        await crm.create_ticket(fault(ticket_type="闲聊"))
    assert excinfo.value.field == "ticket_type"
    await crm.create_ticket(fault(ticket_type="回访"))
    assert [t.ticket_type for t in await crm.list_tickets()] == ["回访"]


async def test_a_ticket_made_further_on_keeps_its_status(crm: EmbeddedCrm, clock: Clock) -> None:
    answered = fault(
        ticket_type="咨询",
        source=TicketSource.AGENT,
        status=TicketStatus.RESOLVED,
        history=(StatusChange(TicketStatus.NEW, T0 - 5, "agent 1001"),),
    )
    await crm.create_ticket(answered)
    stored = await crm.get_ticket(answered.ticket_id)
    assert stored is not None
    assert stored.status is TicketStatus.RESOLVED
    assert [(h.status, h.note) for h in stored.history] == [
        (TicketStatus.NEW, "agent 1001"),
        (TicketStatus.SUBMITTED, "received"),
        (TicketStatus.RESOLVED, "as made"),
    ]


async def test_status_changes_go_into_the_history(crm: EmbeddedCrm) -> None:
    await crm.create_ticket(fault())
    number = fault().ticket_id
    with capture_logs() as logs:
        moved = await crm.set_status(number, TicketStatus.IN_PROGRESS, "抢修班组已出发", T0 + 60)
    assert moved.status is TicketStatus.IN_PROGRESS
    assert moved.updated_at == T0 + 60
    assert logs == [
        {
            "event": "ticket status changed",
            "log_level": "info",
            "ticket_id": number,
            "status": "in_progress",
            "was": "submitted",
        }
    ]
    # The same status again adds a note only.
    await crm.set_status(number, TicketStatus.IN_PROGRESS, "已到达现场", T0 + 600)
    await crm.set_status(number, TicketStatus.RESOLVED, "已恢复供电", T0 + 3600)
    closed = await crm.set_status(number, TicketStatus.CLOSED, "", T0 + 7200)
    assert [(h.status.value, h.at, h.note) for h in closed.history[2:]] == [
        ("in_progress", T0 + 60, "抢修班组已出发"),
        ("in_progress", T0 + 600, "已到达现场"),
        ("resolved", T0 + 3600, "已恢复供电"),
        ("closed", T0 + 7200, ""),
    ]
    assert await crm.get_ticket(number) == closed

    with pytest.raises(TicketClosedError) as closed_error:
        await crm.set_status(number, TicketStatus.IN_PROGRESS, "reopen", T0 + 8000)
    assert closed_error.value.error_id == "ticket-closed"


async def test_status_change_refusals(crm: EmbeddedCrm) -> None:
    await crm.create_ticket(fault())
    number = fault().ticket_id
    with pytest.raises(NotFoundError):
        await crm.set_status("2611270100099", TicketStatus.RESOLVED, "", T0)
    for status, note, now, field in (
        (TicketStatus.NEW, "", T0, "status"),
        ("done", "", T0, "status"),
        (TicketStatus.RESOLVED, "注" * 4001, T0, "note"),
        (TicketStatus.RESOLVED, "", float("inf"), "now"),
    ):
        with pytest.raises(TicketInvalidError) as excinfo:
            await crm.set_status(number, status, note, now)  # type: ignore[arg-type]
        assert excinfo.value.field == field
    stored = await crm.get_ticket(number)
    assert stored is not None
    assert stored.status is TicketStatus.SUBMITTED


async def test_list_tickets_newest_first_by_status_and_time(crm: EmbeddedCrm, clock: Clock) -> None:
    for n in range(1, 6):
        await crm.create_ticket(
            fault(f"26112701{n:05d}", call_id=f"call-{n}", created_at=T0 + n * HOUR)
        )
    await crm.set_status("2611270100002", TicketStatus.RESOLVED, "", T0 + 10 * HOUR)
    await crm.set_status("2611270100004", TicketStatus.RESOLVED, "", T0 + 10 * HOUR)

    def numbers(tickets: list[Ticket]) -> list[str]:
        return [t.ticket_id[-1] for t in tickets]

    assert numbers(await crm.list_tickets()) == ["5", "4", "3", "2", "1"]
    assert numbers(await crm.list_tickets(limit=2)) == ["5", "4"]
    assert numbers(await crm.list_tickets(status=TicketStatus.RESOLVED)) == ["4", "2"]
    assert numbers(await crm.list_tickets(since=T0 + 3 * HOUR)) == ["5", "4", "3"]
    assert numbers(await crm.list_tickets(TicketStatus.SUBMITTED, T0 + 3 * HOUR)) == ["5", "3"]
    assert [len(t.history) for t in await crm.list_tickets()] == [2, 3, 2, 3, 2]
    for limit in (0, 501):
        with pytest.raises(TicketInvalidError) as excinfo:
            await crm.list_tickets(limit=limit)
        assert excinfo.value.field == "limit"


async def test_tickets_survive_a_restart(path: Path, clock: Clock) -> None:
    crm = await EmbeddedCrm.open(path, clock=clock)
    ref = await crm.create_ticket(fault())
    await crm.close()
    crm = await EmbeddedCrm.open(path, clock=clock)
    try:
        assert await crm.create_ticket(fault()) == ref
        stored = await crm.get_ticket(fault().ticket_id)
        assert stored is not None
        assert stored.description == "家里停电了"
    finally:
        await crm.close()


async def test_an_unknown_ticket_is_none(crm: EmbeddedCrm) -> None:
    assert await crm.get_ticket("2611270100001") is None
    assert await crm.list_tickets() == []


# ---------------------------------------------------------------------- customers and bills


async def test_customers_by_phone_and_by_account(crm: EmbeddedCrm) -> None:
    wang = Customer("c-1", "王芳", ("13700137000", "02584001234"), ("3209876543",), HOME)
    await crm.upsert_customer(wang)
    assert await crm.find_customer(phone="02584001234") == wang
    assert await crm.find_customer(account="3209876543") == wang
    assert await crm.find_customer(phone="13700137001") is None
    assert await crm.find_customer(account="3209876544") is None

    # An update replaces the phones and accounts.
    moved = Customer("c-1", "王芳", ("13700137000",), ("3209876543", "3209876544"), GULOU)
    await crm.upsert_customer(moved)
    assert await crm.find_customer(phone="02584001234") is None
    assert await crm.find_customer(account="3209876544") == moved

    # A number given to someone else is theirs now.
    li = Customer("c-2", "李娜", ("13700137000",))
    await crm.upsert_customer(li)
    assert await crm.find_customer(phone="13700137000") == li
    found = await crm.find_customer(account="3209876543")
    assert found is not None
    assert found.phones == ()


@pytest.mark.parametrize(
    ("customer", "field"),
    [
        (Customer("", "无名"), "customer_id"),
        (Customer("c-1", "名" * 201), "name"),
        (Customer("c-1", "王芳", phones=("137-0013",)), "phones"),
        (Customer("c-1", "王芳", accounts=("320x",)), "accounts"),
        (Customer("c-1", "王芳", accounts=("",)), "accounts"),
    ],
)
async def test_customer_fields_are_checked(
    crm: EmbeddedCrm, customer: Customer, field: str
) -> None:
    with pytest.raises(TicketInvalidError) as excinfo:
        await crm.upsert_customer(customer)
    assert excinfo.value.field == field


async def test_find_customer_takes_exactly_one_key(crm: EmbeddedCrm) -> None:
    with pytest.raises(TicketInvalidError, match="exactly one"):
        await crm.find_customer()
    with pytest.raises(TicketInvalidError, match="exactly one"):
        await crm.find_customer(phone="13800138000", account="1234567890")


async def test_bills(crm: EmbeddedCrm) -> None:
    assert await crm.bill_summary("1234567890") is None
    await crm.set_bill(BillSummary("1234567890", 12850, 0, "2026-12-15"))
    await crm.set_bill(BillSummary("3201234567", -4320, 4320))
    assert await crm.bill_summary("1234567890") == BillSummary("1234567890", 12850, 0, "2026-12-15")
    await crm.set_bill(BillSummary("1234567890", 50, 100, "2027-01-15"))
    assert await crm.bill_summary("1234567890") == BillSummary("1234567890", 50, 100, "2027-01-15")
    assert await crm.bill_summary("3201234567") == BillSummary("3201234567", -4320, 4320, "")


@pytest.mark.parametrize(
    ("bill", "field"),
    [
        (BillSummary("12345x", 0, 0), "account"),
        (BillSummary("1234567890", 0, 0, "15/12/2026"), "due_date"),
        (BillSummary("1234567890", 1.5, 0), "balance_fen"),  # type: ignore[arg-type]
        (BillSummary("1234567890", 0, True), "amount_due_fen"),
    ],
)
async def test_bill_fields_are_checked(crm: EmbeddedCrm, bill: BillSummary, field: str) -> None:
    with pytest.raises(TicketInvalidError) as excinfo:
        await crm.set_bill(bill)
    assert excinfo.value.field == field


# ---------------------------------------------------------------------- outages


async def test_outages_for_an_address_while_active(crm: EmbeddedCrm) -> None:
    district = await crm.post_outage(GULOU, OutageKind.FAULT, "线路故障抢修", T0, T0 + 3 * HOUR)
    street = await crm.post_outage(
        Address("江苏省", "南京市", "鼓楼区", "中山北路"),
        OutageKind.PLANNED,
        "线路检修",
        T0 + HOUR,
        T0 + 9 * HOUR,
    )
    elsewhere = await crm.post_outage(
        Address("江苏省", "南京市", "玄武区"), OutageKind.FAULT, "变压器故障", T0
    )
    assert district.outage_id != street.outage_id
    assert district.area == GULOU
    assert district.ended_at is None

    def ids(outages: list[object]) -> list[str]:
        return [o.outage_id for o in outages]  # type: ignore[attr-defined]

    assert ids(await crm.outages(HOME, T0 - 1)) == []
    assert ids(await crm.outages(HOME, T0)) == [district.outage_id]
    # Most recent start first; the estimated restoration does not end a notice.
    assert ids(await crm.outages(HOME, T0 + 10 * HOUR)) == [street.outage_id, district.outage_id]
    other_street = Address("江苏省", "南京市", "鼓楼区", "湖南路")
    assert ids(await crm.outages(other_street, T0 + 2 * HOUR)) == [district.outage_id]
    assert ids(await crm.outages(Address("江苏省", "南京市"), T0 + 2 * HOUR)) == []
    assert ids(await crm.outages(Address(), T0 + 2 * HOUR)) == []

    ended = await crm.end_outage(district.outage_id, T0 + 2 * HOUR)
    assert ended.ended_at == T0 + 2 * HOUR
    assert ids(await crm.outages(HOME, T0 + 2 * HOUR - 1)) == [
        street.outage_id,
        district.outage_id,
    ]
    assert ids(await crm.outages(HOME, T0 + 2 * HOUR)) == [street.outage_id]
    # Ending again keeps the first end.
    again = await crm.end_outage(district.outage_id, T0 + 5 * HOUR)
    assert again.ended_at == T0 + 2 * HOUR

    assert ids(await crm.list_outages()) == [
        street.outage_id,
        elsewhere.outage_id,
        district.outage_id,
    ]
    assert ids(await crm.list_outages(active_at=T0 + 3 * HOUR)) == [
        street.outage_id,
        elsewhere.outage_id,
    ]


async def test_ending_an_unknown_outage(crm: EmbeddedCrm) -> None:
    for outage_id in ("1", "abc", ""):
        with pytest.raises(NotFoundError):
            await crm.end_outage(outage_id, T0)


@pytest.mark.parametrize(
    ("post", "field"),
    [
        ((Address(), "fault", "抢修", T0, None), "area"),
        ((Address(number="1号"), "fault", "抢修", T0, None), "area"),
        ((GULOU, "storm", "抢修", T0, None), "kind"),
        ((GULOU, "fault", "", T0, None), "cause"),
        ((GULOU, "fault", "  ", T0, None), "cause"),
        ((GULOU, "fault", "因" * 201, T0, None), "cause"),
        ((GULOU, "fault", "抢修", float("nan"), None), "starts_at"),
        ((GULOU, "fault", "抢修", T0, T0), "restore_at"),
        ((GULOU, "fault", "抢修", T0, float("inf")), "restore_at"),
    ],
)
async def test_outage_fields_are_checked(
    crm: EmbeddedCrm, post: tuple[Address, str, str, float, float | None], field: str
) -> None:
    with pytest.raises(TicketInvalidError) as excinfo:
        await crm.post_outage(*post)  # type: ignore[arg-type]
    assert excinfo.value.field == field
    assert await crm.list_outages() == []


# ---------------------------------------------------------------------- surveys


async def test_a_call_keeps_its_first_rating(crm: EmbeddedCrm) -> None:
    assert await crm.get_survey("call-1") is None
    first = Survey("call-1", 5, T0, agent_id="1001", caller="13800138000")
    await crm.record_survey(first)
    await crm.record_survey(first)
    await crm.record_survey(Survey("call-1", 1, T0 + 10))
    await crm.record_survey(Survey("call-2", 3, T0 + 20))
    assert await crm.get_survey("call-1") == first
    assert await crm.get_survey("call-2") == Survey("call-2", 3, T0 + 20)


# ---------------------------------------------------------------------- demo data


async def test_demo_data_gives_the_default_caller_a_customer_a_bill_and_an_outage(
    crm: EmbeddedCrm,
) -> None:
    seeded = await crm.seed_demo(T0)
    assert (seeded.customers, seeded.bills, seeded.outages_added) == (3, 3, 2)
    customer = await crm.find_customer(phone="13800138000")  # `hotline call`'s default caller
    assert customer is not None
    assert customer.accounts == ("1234567890",)
    bill = await crm.bill_summary("1234567890")
    assert bill is not None
    assert bill.balance_fen == 12850
    assert bill.due_date > "2027-01-01"  # 15 days after T0 (2027-01-15 in Beijing)
    active = await crm.outages(customer.address, T0)
    assert [(o.kind, o.cause) for o in active] == [(OutageKind.FAULT, "线路故障抢修")]
    other = await crm.find_customer(account="3201234567")
    assert other is not None
    assert await crm.outages(other.address, T0) == []
    assert len(await crm.outages(other.address, T0 + 25 * HOUR)) == 1  # planned, tomorrow

    # Again: nothing doubled; an ended demo outage is posted anew.
    again = await crm.seed_demo(T0 + 60)
    assert again.outages_added == 0
    assert len(await crm.list_outages()) == 2
    await crm.end_outage(active[0].outage_id, T0 + 120)
    assert (await crm.seed_demo(T0 + 180)).outages_added == 1
    assert len(await crm.outages(customer.address, T0 + 180)) == 1


# ---------------------------------------------------------------------- migrations


async def test_a_version_1_database_is_migrated_and_keeps_its_data(path: Path) -> None:
    path.parent.mkdir(parents=True)
    async with aiosqlite.connect(path, isolation_level=None) as db:
        assert await migrate(db, STEPS, target=1) == 1
        await db.execute(
            "INSERT INTO tickets VALUES (7, '2611270100001', 'call-1:fault', '故障报修', 50, 0, "
            "'13800138000', '1234567890', '', '江苏省', '南京市', '鼓楼区', '', '', '', "
            "'停电', 'ivr', 'call-1', '[\"main_menu\"]', 1, '{}', 'submitted', ?, ?)",
            (T0, T0),
        )
        await db.execute(
            "INSERT INTO ticket_history (ticket, status, at, note) VALUES (7, 'submitted', ?, '')",
            (T0,),
        )
        # An older hotline kept an (unused) ticket number sequence in the store too.
        await TicketNumbers.attach(db, 1)

    with capture_logs() as logs:
        crm = await EmbeddedCrm.open(path)
    try:
        assert [e["version"] for e in logs if e["event"] == "crm store migrated"] == [2, 3]
        stored = await crm.get_ticket("2611270100001")
        assert stored is not None
        assert stored.crm_ref == "emb-7"
        assert stored.address == GULOU
        assert stored.ivr_path == ("main_menu",)
        assert stored.history == (StatusChange(TicketStatus.SUBMITTED, T0),)
    finally:
        await crm.close()
    with sqlite3.connect(path) as plain:
        indexes = {r[0] for r in plain.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        tables = {r[0] for r in plain.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert plain.execute("PRAGMA user_version").fetchone() == (len(STEPS),)
    plain.close()
    assert {"tickets_by_status", "outages_by_start", "ticket_history_by_ticket"} <= indexes
    # Ticket numbers come from the node's outbox alone.
    assert SEQUENCE_TABLE not in tables


async def test_a_failed_step_leaves_the_previous_version(tmp_path: Path) -> None:
    steps = [
        ("CREATE TABLE a (x INTEGER) STRICT",),
        ("CREATE TABLE b (x INTEGER) STRICT", "INSERT INTO nowhere VALUES (1)"),
    ]
    async with aiosqlite.connect(tmp_path / "m.sqlite3", isolation_level=None) as db:
        with pytest.raises(sqlite3.OperationalError, match="nowhere"):
            await migrate(db, steps)
        assert await schema_version(db) == 1
        assert not db.in_transaction
        async with db.execute("SELECT name FROM sqlite_master") as cursor:
            assert [r[0] for r in await cursor.fetchall()] == ["a"]
        # Migrating to where it is changes nothing.
        assert await migrate(db, steps, target=1) == 1
        with pytest.raises(ValueError, match="target"):
            await migrate(db, steps, target=3)


async def test_a_database_from_a_newer_hotline_is_refused(path: Path) -> None:
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as plain:
        plain.execute(f"PRAGMA user_version = {len(STEPS) + 1}")
    plain.close()
    with pytest.raises(SchemaTooNewError) as excinfo:
        await EmbeddedCrm.open(path)
    assert excinfo.value.error_id == "crm-store-too-new"
    assert f"version {len(STEPS) + 1}" in str(excinfo.value)


# ---------------------------------------------------------------------- a locked file


async def test_a_locked_file_is_unavailable_for_now_not_a_lost_ticket(crm: EmbeddedCrm) -> None:
    # Wait briefly for the lock: the default (seconds) is for operators, not for this test.
    await crm._db.execute("PRAGMA busy_timeout = 20")
    with sqlite3.connect(crm.path, isolation_level=None) as other:
        other.execute("BEGIN IMMEDIATE")  # another process writing, e.g. an operator's shell
        with capture_logs() as logs, pytest.raises(CrmUnavailableError) as excinfo:
            await crm.create_ticket(fault())
        assert excinfo.value.retryable
        assert "locked" in str(excinfo.value)
        assert [e["event"] for e in logs] == ["crm store unavailable"]
        # Reads in WAL mode do not wait for the writer.
        assert await crm.get_ticket(fault().ticket_id) is None
        other.execute("ROLLBACK")
    other.close()
    ref = await crm.create_ticket(fault())
    stored = await crm.get_ticket(fault().ticket_id)
    assert stored is not None
    assert stored.crm_ref == ref


async def test_a_survey_given_while_the_store_is_locked_arrives_once(
    crm: EmbeddedCrm, tmp_path: Path, clock: Clock
) -> None:
    """The store cannot be written for a while: the survey waits in the outbox, then is
    stored once."""
    await crm._db.execute("PRAGMA busy_timeout = 20")
    survey = Survey("call-1", 2, T0, agent_id="1001", caller="13800138000")
    async with await Outbox.open(outbox_path(tmp_path / "node"), clock=clock) as box:
        await box.submit_survey(survey, now=T0)
        worker = DeliveryWorker(box, crm, clock=clock)
        with sqlite3.connect(crm.path, isolation_level=None) as other:
            other.execute("BEGIN IMMEDIATE")
            assert await worker.run_once(T0) == 1
            other.execute("ROLLBACK")
        other.close()
        entry = await box.get(survey_outbox_id(survey))
        assert entry is not None
        assert entry.state is DeliveryState.PENDING
        assert "locked" in entry.last_error
        assert await crm.get_survey("call-1") is None
        assert await worker.run_once(T0 + 300) == 1
        assert await worker.run_once(T0 + 600) == 0
        assert (await box.stats(T0 + 600)).delivered == 1
    assert await crm.get_survey("call-1") == survey
    with sqlite3.connect(crm.path) as plain:
        assert plain.execute("SELECT COUNT(*) FROM surveys").fetchone() == (1,)
    plain.close()


async def test_a_write_cancelled_while_beginning_leaves_no_transaction_open(
    crm: EmbeddedCrm,
) -> None:
    """Cancelled while its BEGIN waits for the connection's thread (busy), a write must not leave
    that BEGIN open: every later transaction would fail "within a transaction"."""
    db = crm._db
    busy = await occupy(db)
    create = asyncio.ensure_future(crm.create_ticket(fault("2611270100001", call_id="call-1")))
    await asyncio.sleep(0.01)  # the write waits for its BEGIN, queued behind it
    assert not busy.done()
    create.cancel()
    with pytest.raises(asyncio.CancelledError):
        await create
    await busy
    assert await crm.create_ticket(fault("2611270100002", call_id="call-2"))
    assert not db.in_transaction
