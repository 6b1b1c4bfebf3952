"""The CRM admin API on a real loopback server over a real embedded store and a real outbox
(SQLite in tmp_path): tickets, the outbox and its dead letters, outages, demo data, error ids,
the access rule, and nodes whose CRM is not embedded."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from crm_bridge.backend import CrmBackend
from crm_bridge.embedded import EmbeddedCrm
from crm_bridge.errors import CrmRejectedError, CrmUnavailableError
from crm_bridge.model import (
    Address,
    BillSummary,
    Customer,
    Outage,
    Survey,
    Ticket,
    TicketStatus,
)
from crm_bridge.outbox import DeliveryWorker, Outbox, survey_outbox_id
from ivr.settings import Settings
from ivr.web import create_app
from ivr.web_crm import ticket_json

Serving = Callable[..., AbstractAsyncContextManager[str]]
"""The ``serving`` fixture (tests/conftest.py): ``async with serving(app) as url``."""

TOKEN = "crm-test-token-0123456789"  # noqa: S105 - a test's token, not a credential
T0 = 1_800_000_000.0
HOUR = 3600.0
SURVEY = Survey("call-4", 4, T0 - 5, agent_id="1001", caller="13800138000")
HOME = Address("江苏省", "南京市", "鼓楼区", "中山北路", "100号", "南京市鼓楼区中山北路一百号")


class Clock:
    """The API's ``now``; moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Api:
    """A client of one test server: `call` returns (status, JSON body)."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str | None = None) -> None:
        self.http = http
        self.url = url
        self.token = token

    async def call(
        self, method: str, path: str, body: Any = None, *, raw: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        kwargs: dict[str, Any] = {"headers": headers}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        async with self.http.request(method, self.url + path, **kwargs) as resp:
            assert resp.content_type == "application/json"
            return resp.status, await resp.json()

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        got, answer = await self.call(method, path, body)
        assert got == status, answer
        return answer

    async def error(self, method: str, path: str, body: Any = None) -> tuple[int, str, str]:
        status, answer = await self.call(method, path, body)
        assert set(answer) == {"error_id", "message"}, answer
        return status, answer["error_id"], answer["message"]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def crm(tmp_path: Path, clock: Clock) -> AsyncIterator[EmbeddedCrm]:
    store = await EmbeddedCrm.open(tmp_path / "crm" / "crm.sqlite3", clock=clock)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def outbox(tmp_path: Path, clock: Clock) -> AsyncIterator[Outbox]:
    box = await Outbox.open(tmp_path / "crm" / "outbox.sqlite3", clock=clock)
    try:
        yield box
    finally:
        await box.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.fixture
async def api(
    crm: EmbeddedCrm, outbox: Outbox, clock: Clock, http: aiohttp.ClientSession, serving: Serving
) -> AsyncIterator[Api]:
    app = create_app(Settings(node_id="node-test", web_port=0), crm=crm, outbox=outbox, clock=clock)
    async with serving(app) as url:
        yield Api(http, url)


def fault(n: int, created_at: float = T0) -> Ticket:
    return Ticket(
        ticket_id=f"26011501{n:05d}",
        idempotency_key=f"call-{n}:fault",
        ticket_type="故障报修",
        priority=50,
        created_at=created_at,
        caller="13800138000",
        account="1234567890",
        address=HOME,
        description="家里停电了",
        call_id=f"call-{n}",
        ivr_path=("main_menu", "fault_account"),
        fields={"intent": "fault"},
    )


# ---------------------------------------------------------------------- tickets


async def test_a_ticket_as_the_api_shows_it(api: Api, crm: EmbeddedCrm) -> None:
    ref = await crm.create_ticket(fault(1, T0 - 5))
    shown = await api.ok("GET", "/api/tickets/2601150100001")
    assert shown == {
        "ticket_id": "2601150100001",
        "crm_ref": ref,
        "idempotency_key": "call-1:fault",
        "ticket_type": "故障报修",
        "status": "submitted",
        "priority": 50,
        "urgent": False,
        "created_at": T0 - 5,
        "updated_at": T0,
        "caller": "13800138000",
        "account": "1234567890",
        "customer_id": "",
        "address": {
            "province": "江苏省",
            "city": "南京市",
            "district": "鼓楼区",
            "street": "中山北路",
            "number": "100号",
            "raw": "南京市鼓楼区中山北路一百号",
        },
        "description": "家里停电了",
        "source": "ivr",
        "call_id": "call-1",
        "ivr_path": ["main_menu", "fault_account"],
        "complete": True,
        "fields": {"intent": "fault"},
        "history": [
            {"status": "new", "at": T0 - 5, "note": ""},
            {"status": "submitted", "at": T0, "note": "received"},
        ],
    }
    assert await api.ok("GET", "/api/tickets") == {"tickets": [shown]}


async def test_tickets_listed_newest_first_with_filters(api: Api, crm: EmbeddedCrm) -> None:
    for n in range(1, 5):
        await crm.create_ticket(fault(n, T0 + n * HOUR))
    await crm.set_status("2601150100003", TicketStatus.RESOLVED, "", T0 + 9 * HOUR)

    async def listed(query: str) -> list[str]:
        answer = await api.ok("GET", f"/api/tickets{query}")
        return [t["ticket_id"][-1] for t in answer["tickets"]]

    assert await listed("") == ["4", "3", "2", "1"]
    assert await listed("?limit=2") == ["4", "3"]
    assert await listed("?status=resolved") == ["3"]
    assert await listed("?status=submitted&since=" + str(T0 + 2 * HOUR)) == ["4", "2"]
    assert await listed("?status=closed") == []


async def test_ticket_list_query_errors_name_the_parameter(api: Api) -> None:
    for query, field in (
        ("?status=done", "status"),
        ("?status=new", "status"),
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?limit=ten", "limit"),
        ("?since=yesterday", "since"),
        ("?since=NaN", "since"),
        ("?state=resolved", "state"),
    ):
        status, error_id, message = await api.error("GET", f"/api/tickets{query}")
        assert (status, error_id) == (400, "invalid-request"), query
        assert message.startswith(f"{field}: "), (query, message)


async def test_unknown_ticket(api: Api) -> None:
    status, error_id, message = await api.error("GET", "/api/tickets/2601150199999")
    assert (status, error_id, message) == (404, "no-such-ticket", "no ticket 2601150199999")
    body = {"status": "resolved"}
    status, error_id, _ = await api.error("POST", "/api/tickets/2601150199999/status", body)
    assert (status, error_id) == (404, "no-such-ticket")
    status, error_id, message = await api.error("GET", "/api/tickets/工单")
    assert (status, error_id) == (400, "invalid-request")
    assert message.startswith("ticket_id: ")


async def test_ticket_status_through_its_life(api: Api, crm: EmbeddedCrm, clock: Clock) -> None:
    await crm.create_ticket(fault(1))
    path = "/api/tickets/2601150100001/status"
    clock.now = T0 + 60
    with capture_logs() as logs:
        moved = await api.ok("POST", path, {"status": "in_progress", "note": "抢修班组已出发"})
    assert moved["status"] == "in_progress"
    assert moved["updated_at"] == T0 + 60
    assert moved["history"][-1] == {
        "status": "in_progress",
        "at": T0 + 60,
        "note": "抢修班组已出发",
    }
    changed = [e for e in logs if e["event"] == "crm changed"]
    assert changed == [
        {
            "event": "crm changed",
            "log_level": "info",
            "action": "ticket_status",
            "peer": "127.0.0.1",
            "ticket_id": "2601150100001",
            "status": "in_progress",
        }
    ]
    clock.now = T0 + 120
    closed = await api.ok("POST", path, {"status": "closed"})
    assert closed["history"][-1] == {"status": "closed", "at": T0 + 120, "note": ""}
    status, error_id, _ = await api.error("POST", path, {"status": "resolved"})
    assert (status, error_id) == (409, "ticket-closed")
    assert (await api.ok("GET", "/api/tickets/2601150100001"))["status"] == "closed"


async def test_ticket_status_errors_name_the_field(api: Api, crm: EmbeddedCrm) -> None:
    await crm.create_ticket(fault(1))
    path = "/api/tickets/2601150100001/status"
    for body, field in (
        ({}, "status"),
        ({"status": "new"}, "status"),
        ({"status": "done"}, "status"),
        ({"status": 3}, "status"),
        ({"status": "resolved", "note": 5}, "note"),
        ({"status": "resolved", "note": "注" * 4001}, "note"),
        ({"status": "resolved", "reason": "x"}, "reason"),
    ):
        status, error_id, message = await api.error("POST", path, body)
        assert (status, error_id) == (400, "invalid-request"), body
        assert field in message, (body, message)
    status, answer = await api.call("POST", path, raw='{"status": ')
    assert (status, answer["error_id"]) == (400, "bad-json")
    assert (await api.ok("GET", "/api/tickets/2601150100001"))["status"] == "submitted"


# ---------------------------------------------------------------------- outages


async def test_outages_posted_listed_and_ended(api: Api, clock: Clock) -> None:
    body = {
        "province": "江苏省",
        "city": "南京市",
        "district": "鼓楼区",
        "kind": "fault",
        "cause": "线路故障抢修",
        "restore_at": T0 + 3 * HOUR,
    }
    posted = await api.ok("POST", "/api/outages", body, status=201)
    assert posted == {
        "outage_id": posted["outage_id"],
        "province": "江苏省",
        "city": "南京市",
        "district": "鼓楼区",
        "street": "",
        "area": "江苏省南京市鼓楼区",
        "kind": "fault",
        "cause": "线路故障抢修",
        "starts_at": T0,  # now, when not given
        "restore_at": T0 + 3 * HOUR,
        "ended_at": None,
        "active": True,
    }
    planned = await api.ok(
        "POST",
        "/api/outages",
        {
            "province": "江苏省",
            "city": "南京市",
            "district": "玄武区",
            "street": "珠江路",
            "kind": "planned",
            "cause": "线路检修",
            "starts_at": T0 + 24 * HOUR,
            "restore_at": None,
        },
        status=201,
    )
    assert planned["active"] is False
    assert planned["restore_at"] is None

    async def ids(query: str = "") -> list[str]:
        answer = await api.ok("GET", f"/api/outages{query}")
        return [o["outage_id"] for o in answer["outages"]]

    both = [planned["outage_id"], posted["outage_id"]]
    assert await ids() == both
    assert await ids("?active=false") == both
    assert await ids("?active=true") == [posted["outage_id"]]
    assert await ids(f"?at={T0 + 25 * HOUR}") == both

    clock.now = T0 + 2 * HOUR
    ended = await api.ok("POST", f"/api/outages/{posted['outage_id']}/end")
    assert (ended["ended_at"], ended["active"]) == (T0 + 2 * HOUR, False)
    assert await ids("?active=1") == []
    clock.now = T0 + 5 * HOUR
    again = await api.ok("POST", f"/api/outages/{posted['outage_id']}/end")
    assert again["ended_at"] == T0 + 2 * HOUR


async def test_outage_errors(api: Api) -> None:
    good = {"province": "江苏省", "kind": "fault", "cause": "抢修", "starts_at": T0}
    for changes, field in (
        ({"province": ""}, "area"),
        ({"province": 7}, "province"),
        ({"city": "市\n"}, "city"),
        ({"kind": "storm"}, "kind"),
        ({"kind": None}, "kind"),
        ({"cause": ""}, "cause"),
        ({"cause": None}, "cause"),
        ({"starts_at": "now"}, "starts_at"),
        ({"starts_at": True}, "starts_at"),
        ({"restore_at": T0 - 1}, "restore_at"),
        ({"restore_at": "later"}, "restore_at"),
        ({"number": "1号"}, "number"),
    ):
        body = {k: v for k, v in {**good, **changes}.items() if v is not None}
        status, error_id, message = await api.error("POST", "/api/outages", body)
        assert (status, error_id) == (400, "invalid-request"), changes
        assert field in message, (changes, message)
    for query, field in (("?active=maybe", "active"), ("?at=x", "at"), ("?area=江苏", "area")):
        status, error_id, message = await api.error("GET", f"/api/outages{query}")
        assert (status, error_id) == (400, "invalid-request"), query
        assert message.startswith(f"{field}: ")
    assert await api.ok("GET", "/api/outages") == {"outages": []}
    for outage_id in ("99", "abc"):
        status, error_id, _ = await api.error("POST", f"/api/outages/{outage_id}/end")
        assert (status, error_id) == (404, "no-such-outage")


# ---------------------------------------------------------------------- demo data


async def test_seed_demo(api: Api, crm: EmbeddedCrm) -> None:
    seeded = await api.ok("POST", "/api/crm/seed-demo")
    assert seeded == {"customers": 3, "bills": 3, "outages_added": 2}
    assert await api.ok("POST", "/api/crm/seed-demo") == {
        "customers": 3,
        "bills": 3,
        "outages_added": 0,
    }
    active = await api.ok("GET", "/api/outages?active=true")
    assert [o["area"] for o in active["outages"]] == ["江苏省南京市鼓楼区"]
    assert await crm.find_customer(phone="13800138000") is not None


# ---------------------------------------------------------------------- access


async def test_changes_need_the_token_when_one_is_set(
    crm: EmbeddedCrm, clock: Clock, http: aiohttp.ClientSession, serving: Serving
) -> None:
    await crm.create_ticket(fault(1))
    app = create_app(Settings(api_token=TOKEN), crm=crm, clock=clock)
    async with serving(app) as url:
        anonymous = Api(http, url)
        for path, body in (
            ("/api/tickets/2601150100001/status", {"status": "resolved"}),
            ("/api/outages", {"province": "江苏省", "kind": "fault", "cause": "抢修"}),
            ("/api/outages/1/end", None),
            ("/api/crm/seed-demo", None),
        ):
            status, error_id, _ = await anonymous.error("POST", path, body)
            assert (status, error_id) == (401, "unauthorized"), path
        assert await crm.list_outages() == []
        # Reads are open.
        assert (await anonymous.ok("GET", "/api/tickets/2601150100001"))["status"] == "submitted"
        authorized = Api(http, url, TOKEN)
        moved = await authorized.ok(
            "POST", "/api/tickets/2601150100001/status", {"status": "resolved"}
        )
        assert moved["status"] == "resolved"


# ---------------------------------------------------------------------- other CRMs


class ExternalCrm:
    """A CRM backend that is not the embedded store (as the HTTP adapter is), answering from
    a real store behind it; ``down`` makes it unreachable."""

    name = "external"

    def __init__(self, store: EmbeddedCrm) -> None:
        self.store = store
        self.down = False
        self.refusing = False
        """Refuse new tickets for good, quoting the caller back (as some CRMs do)."""

    async def create_ticket(self, ticket: Ticket) -> str:
        if self.down:
            raise CrmUnavailableError("connection refused")
        if self.refusing:
            raise CrmRejectedError(f"422: caller {ticket.caller} has no account {ticket.account}")
        return await self.store.create_ticket(ticket)

    async def get_ticket(self, ticket_id: str) -> Ticket | None:
        if self.down:
            raise CrmUnavailableError("connection refused")
        return await self.store.get_ticket(ticket_id)

    async def find_customer(self, *, phone: str = "", account: str = "") -> Customer | None:
        return await self.store.find_customer(phone=phone, account=account)

    async def outages(self, address: Address, now: float) -> list[Outage]:
        return await self.store.outages(address, now)

    async def bill_summary(self, account: str) -> BillSummary | None:
        return await self.store.bill_summary(account)

    async def record_survey(self, survey: Survey) -> None:
        if self.down:
            raise CrmUnavailableError("connection refused")
        if self.refusing:
            raise CrmRejectedError(
                f"422: caller {survey.caller} has no survey for {survey.call_id}"
            )
        await self.store.record_survey(survey)

    async def close(self) -> None:
        """The store is the fixture's to close."""


async def test_with_another_crm_only_ticket_reads_work(
    crm: EmbeddedCrm, clock: Clock, http: aiohttp.ClientSession, serving: Serving
) -> None:
    await crm.create_ticket(fault(1))
    external = ExternalCrm(crm)
    async with serving(create_app(Settings(), crm=external, clock=clock)) as url:
        api = Api(http, url)
        shown = await api.ok("GET", "/api/tickets/2601150100001")
        assert shown["status"] == "submitted"
        for method, path, body in (
            ("GET", "/api/tickets", None),
            ("POST", "/api/tickets/2601150100001/status", {"status": "resolved"}),
            ("GET", "/api/outages", None),
            ("POST", "/api/outages", {"province": "江苏省", "kind": "fault", "cause": "抢修"}),
            ("POST", "/api/outages/1/end", None),
            ("POST", "/api/crm/seed-demo", None),
        ):
            status, error_id, message = await api.error(method, path, body)
            assert (status, error_id) == (503, "crm-not-embedded"), path
            assert "'external'" in message
        external.down = True
        status, error_id, message = await api.error("GET", "/api/tickets/2601150100001")
        assert (status, error_id) == (503, "crm-unavailable")
        assert "connection refused" in message
    assert await crm.list_outages() == []


async def test_without_a_crm_the_endpoints_say_so(
    clock: Clock, http: aiohttp.ClientSession, serving: Serving
) -> None:
    async with serving(create_app(Settings(), clock=clock)) as url:
        api = Api(http, url)
        for method, path in (
            ("GET", "/api/tickets"),
            ("GET", "/api/tickets/2601150100001"),
            ("POST", "/api/outages"),
            ("GET", "/api/outbox"),
            ("POST", "/api/outbox/retry"),
        ):
            status, error_id, _ = await api.error(method, path)
            assert (status, error_id) == (503, "crm-unavailable"), path
        async with api.http.get(f"{url}/healthz") as resp:
            assert "outbox" not in await resp.json()


# ---------------------------------------------------------------------- the outbox


def worker(outbox: Outbox, backend: CrmBackend, clock: Clock, attempts: int = 5) -> DeliveryWorker:
    """The real delivery worker, stepped by hand with `run_once`."""
    jitter = random.Random(7)  # noqa: S311 — retry jitter, seeded so runs repeat
    return DeliveryWorker(outbox, backend, attempts, 300.0, clock, rng=jitter)


@pytest.fixture
async def external_api(
    crm: EmbeddedCrm, outbox: Outbox, clock: Clock, http: aiohttp.ClientSession, serving: Serving
) -> AsyncIterator[tuple[Api, ExternalCrm]]:
    """The API of a node whose CRM is external (and can go down or refuse)."""
    external = ExternalCrm(crm)
    app = create_app(Settings(), crm=external, outbox=outbox, clock=clock)
    async with serving(app) as url:
        yield Api(http, url), external


async def test_the_outbox_at_a_glance_without_callers_numbers(
    external_api: tuple[Api, ExternalCrm], outbox: Outbox, clock: Clock
) -> None:
    api, external = external_api
    assert await api.ok("GET", "/api/outbox") == {
        "stats": {
            "backlog": 0,
            "oldest_age_seconds": 0.0,
            "dead_letters": 0,
            "delivered": 0,
            "backlog_by_kind": {"ticket": 0, "survey": 0},
        },
        "dead_letters": [],
    }
    await outbox.submit(fault(1), now=T0 - 100)
    await outbox.submit(replace(fault(2), caller="02583001234"), now=T0 - 50)
    await outbox.submit(fault(3), now=T0 - 10)
    await outbox.submit_survey(SURVEY, now=T0 - 5)
    external.refusing = True
    clock.now = T0 + 1
    assert await worker(outbox, external, clock).run_once(clock.now) == 4
    external.refusing = False
    clock.now = T0 + 30
    # A fourth ticket and a survey are still on their way.
    await outbox.submit(fault(4), now=T0 + 20)
    await outbox.submit_survey(replace(SURVEY, call_id="call-5"), now=T0 + 25)

    status, answer = await api.call("GET", "/api/outbox")
    assert status == 200
    assert answer == {
        "stats": {
            "backlog": 2,
            "oldest_age_seconds": 10.0,
            "dead_letters": 4,
            "delivered": 0,
            "backlog_by_kind": {"ticket": 1, "survey": 1},
        },
        "dead_letters": [
            {
                "id": "2601150100001",
                "kind": "ticket",
                "ticket_type": "故障报修",
                "call_id": "call-1",
                "attempts": 1,
                "last_error": "crm-rejected: 422: caller 138****8000 has no account 1234567890",
                "submitted_at": T0 - 100,
                "dead_at": T0 + 1,
            },
            {
                "id": "2601150100002",
                "kind": "ticket",
                "ticket_type": "故障报修",
                "call_id": "call-2",
                "attempts": 1,
                # A landline caller is masked too: it is the ticket's caller.
                "last_error": "crm-rejected: 422: caller 025****1234 has no account 1234567890",
                "submitted_at": T0 - 50,
                "dead_at": T0 + 1,
            },
            {
                "id": "2601150100003",
                "kind": "ticket",
                "ticket_type": "故障报修",
                "call_id": "call-3",
                "attempts": 1,
                "last_error": "crm-rejected: 422: caller 138****8000 has no account 1234567890",
                "submitted_at": T0 - 10,
                "dead_at": T0 + 1,
            },
            {
                "id": survey_outbox_id(SURVEY),
                "kind": "survey",
                "ticket_type": "",
                "call_id": "call-4",
                "attempts": 1,
                "last_error": "crm-rejected: 422: caller 138****8000 has no survey for call-4",
                "submitted_at": T0 - 5,
                "dead_at": T0 + 1,
            },
        ],
    }
    # The raw answer has no caller number anywhere.
    async with api.http.get(api.url + "/api/outbox") as resp:
        text = await resp.text()
    assert "13800138000" not in text
    assert "02583001234" not in text
    status, error_id, message = await api.error("GET", "/api/outbox?state=dead")
    assert (status, error_id) == (400, "invalid-request")
    assert message.startswith("state: ")


async def test_retry_replays_one_dead_letter_or_all(
    external_api: tuple[Api, ExternalCrm], outbox: Outbox, crm: EmbeddedCrm, clock: Clock
) -> None:
    api, external = external_api
    for n in (1, 2, 3):
        await outbox.submit(fault(n))
    external.refusing = True
    await worker(outbox, external, clock).run_once(clock.now)
    external.refusing = False

    clock.now = T0 + HOUR
    with capture_logs() as logs:
        answer = await api.ok("POST", "/api/outbox/retry", {"id": "2601150100002"})
    assert answer == {"replayed": 1}
    assert [e for e in logs if e["event"] == "crm changed"] == [
        {
            "event": "crm changed",
            "log_level": "info",
            "action": "outbox_retry",
            "peer": "127.0.0.1",
            "item_id": "2601150100002",
            "replayed": 1,
        }
    ]
    replayed = await outbox.get("2601150100002")
    assert replayed is not None
    assert (replayed.state.value, replayed.attempts, replayed.next_at) == ("pending", 0, T0 + HOUR)
    # Not a dead letter (any more, or ever): 404 with its own id.
    for ticket_id in ("2601150100002", "2601150199999"):
        status, error_id, message = await api.error(
            "POST", "/api/outbox/retry", {"ticket_id": ticket_id}
        )
        assert (status, error_id) == (404, "no-such-dead-letter"), ticket_id
        assert ticket_id in message
    for body, field in (
        ({"ticket_id": 2601150100001}, "ticket_id"),
        ({"id": "工单"}, "id"),
        ({"id": "x" * 41}, "id"),
        ({"ticket": "2601150100001"}, "ticket"),
        ({"id": "2601150100001", "ticket_id": "2601150100001"}, "ticket_id"),
    ):
        status, error_id, message = await api.error("POST", "/api/outbox/retry", body)
        assert (status, error_id) == (400, "invalid-request"), body
        assert field in message, (body, message)

    # Every dead letter (no body, or a null id), then delivered by the worker.
    assert await api.ok("POST", "/api/outbox/retry") == {"replayed": 2}
    assert await api.ok("POST", "/api/outbox/retry", {"id": None}) == {"replayed": 0}
    assert await worker(outbox, external, clock).run_once(clock.now) == 3
    stats = (await api.ok("GET", "/api/outbox"))["stats"]
    assert stats == {
        "backlog": 0,
        "oldest_age_seconds": 0.0,
        "dead_letters": 0,
        "delivered": 3,
        "backlog_by_kind": {"ticket": 0, "survey": 0},
    }
    assert await crm.get_ticket("2601150100003") is not None


async def test_a_ticket_the_crm_lacks_is_answered_from_the_outbox(
    external_api: tuple[Api, ExternalCrm], outbox: Outbox, clock: Clock
) -> None:
    api, external = external_api
    await outbox.submit(fault(1), now=T0)
    # Right after the call: not tried yet.
    shown = await api.ok("GET", "/api/tickets/2601150100001")
    assert shown["status"] == "new"
    assert shown["crm_ref"] == ""
    assert shown["delivery"] == {
        "state": "pending",
        "attempts": 0,
        "submitted_at": T0,
        "last_attempt_at": None,
        "next_at": T0,
        "last_error": "",
        "done_at": None,
    }
    # The ticket as the call submitted it.
    assert {k: v for k, v in shown.items() if k != "delivery"} == ticket_json(fault(1))

    # The CRM is down: the read cannot ask it, the outbox answers with the retry to come.
    external.down = True
    clock.now = T0 + 5
    await worker(outbox, external, clock).run_once(clock.now)
    entry = await outbox.get("2601150100001")
    assert entry is not None
    with capture_logs() as logs:
        shown = await api.ok("GET", "/api/tickets/2601150100001")
    assert shown["delivery"] == {
        "state": "pending",
        "attempts": 1,
        "submitted_at": T0,
        "last_attempt_at": T0 + 5,
        "next_at": entry.next_at,
        "last_error": "crm-unavailable: connection refused",
        "done_at": None,
    }
    assert T0 + 5 < entry.next_at <= T0 + 6  # the first retry, a second at most after
    assert [e for e in logs if e["event"] == "ticket answered from the outbox"] == [
        {
            "event": "ticket answered from the outbox",
            "log_level": "info",
            "ticket_id": "2601150100001",
            "reason": "crm-unavailable",
        }
    ]
    # A ticket neither the CRM (down) nor the outbox can answer: the CRM's 503 stands.
    status, error_id, _ = await api.error("GET", "/api/tickets/2601150199999")
    assert (status, error_id) == (503, "crm-unavailable")

    # Out of attempts: a dead letter, with no next attempt.
    clock.now = entry.next_at
    await worker(outbox, external, clock, attempts=1).run_once(clock.now)
    shown = await api.ok("GET", "/api/tickets/2601150100001")
    assert shown["delivery"]["state"] == "dead"
    assert shown["delivery"]["next_at"] is None
    assert shown["delivery"]["done_at"] == clock.now
    assert shown["delivery"]["last_error"].startswith("gave up after 1 attempts: ")

    # Replayed and delivered: the CRM's own answer, without a delivery part.
    external.down = False
    await api.ok("POST", "/api/outbox/retry", {"ticket_id": "2601150100001"})
    await worker(outbox, external, clock).run_once(clock.now)
    shown = await api.ok("GET", "/api/tickets/2601150100001")
    assert "delivery" not in shown
    assert shown["status"] == "submitted"
    assert shown["crm_ref"] != ""
    # Delivered, the CRM holds the truth: down, it is not guessed from the outbox.
    external.down = True
    status, error_id, _ = await api.error("GET", "/api/tickets/2601150100001")
    assert (status, error_id) == (503, "crm-unavailable")


async def test_the_embedded_store_not_yet_holding_a_ticket(
    api: Api, outbox: Outbox, crm: EmbeddedCrm, clock: Clock
) -> None:
    await outbox.submit(fault(1))
    shown = await api.ok("GET", "/api/tickets/2601150100001")
    assert (shown["status"], shown["delivery"]["state"]) == ("new", "pending")
    await worker(outbox, crm, clock).run_once(clock.now)
    shown = await api.ok("GET", "/api/tickets/2601150100001")
    assert (shown["status"], "delivery" in shown) == ("submitted", False)
    status, error_id, _ = await api.error("GET", "/api/tickets/2601150199999")
    assert (status, error_id) == (404, "no-such-ticket")


async def test_healthz_shows_the_outbox(api: Api, outbox: Outbox, clock: Clock) -> None:
    await outbox.submit(fault(1), now=T0 - 42)
    async with api.http.get(f"{api.url}/healthz") as resp:
        health = await resp.json()
    assert health["outbox"] == {"backlog": 1, "oldest_age_seconds": 42.0, "dead_letters": 0}
    async with api.http.get(f"{api.url}/") as resp:
        assert "backlog" in await resp.text()


async def test_retry_needs_the_token_when_one_is_set(
    crm: EmbeddedCrm, outbox: Outbox, clock: Clock, http: aiohttp.ClientSession, serving: Serving
) -> None:
    await outbox.submit(replace(fault(1), ticket_type="未知类型"))  # refused by the store
    await worker(outbox, crm, clock).run_once(clock.now)
    app = create_app(Settings(api_token=TOKEN), crm=crm, outbox=outbox, clock=clock)
    async with serving(app) as url:
        anonymous = Api(http, url)
        for body in (None, {"ticket_id": "2601150100001"}):
            status, error_id, _ = await anonymous.error("POST", "/api/outbox/retry", body)
            assert (status, error_id) == (401, "unauthorized"), body
        wrong = Api(http, url, "not-the-token-0123456789")
        status, error_id, _ = await wrong.error("POST", "/api/outbox/retry")
        assert (status, error_id) == (401, "unauthorized")
        # Reads are open; nothing was replayed.
        assert (await anonymous.ok("GET", "/api/outbox"))["stats"]["dead_letters"] == 1
        authorized = Api(http, url, TOKEN)
        assert await authorized.ok("POST", "/api/outbox/retry") == {"replayed": 1}
    assert (await outbox.stats(clock.now)).dead_letters == 0
