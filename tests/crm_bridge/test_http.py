"""The HTTP adapter against a real aiohttp server playing the CRM (tests/crm_bridge/fake_crm.py):
the contract's requests, authentication, and every way an answer can be wrong."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from crm_bridge.codec import ticket_to_dict
from crm_bridge.errors import CrmRejectedError, CrmUnavailableError, TicketInvalidError
from crm_bridge.http import FieldMap, HttpCrm
from crm_bridge.model import (
    Address,
    BillSummary,
    Customer,
    OutageKind,
    Survey,
    Ticket,
    TicketStatus,
    idempotency_key,
)

sys.path.insert(0, str(Path(__file__).parent))
from fake_crm import FakeCrm

T0 = 1_800_000_000.0
SECRET = "s3cret-key-for-tests"  # noqa: S105 — the fake CRM's test key
TIMEOUT = 10.0
"""The client's timeout: generous, so a busy machine never turns an answer into a timeout."""
SHORT = 0.2
"""The timeout of the one client meant to time out (the CRM holds that request longer)."""


def ticket(n: int = 1) -> Ticket:
    return Ticket(
        ticket_id=f"26112701{n:05d}",
        idempotency_key=idempotency_key(f"call-{n}", "fault_report"),
        ticket_type="故障报修",
        priority=100,
        urgent=True,
        created_at=T0,
        caller="+8613812345678",
        account="1234567890",
        address=Address(province="北京市", district="朝阳区", raw="朝阳区建国路1号"),
        description="电线落地",
        call_id=f"call-{n}",
        ivr_path=("welcome", "hazard"),
        fields={"hazard": "wire_down"},
    )


@pytest.fixture
async def crm() -> AsyncIterator[FakeCrm]:
    server = await FakeCrm().start()
    yield server
    await server.stop()


@pytest.fixture
async def client(crm: FakeCrm) -> AsyncIterator[HttpCrm]:
    http = HttpCrm(crm.url, timeout=TIMEOUT)
    yield http
    await http.close()


# ---------------------------------------------------------------------- tickets


async def test_create_sends_the_ticket_and_its_key(crm: FakeCrm, client: HttpCrm) -> None:
    t = ticket()
    assert await client.create_ticket(t) == "CRM-1"
    method, path, headers = crm.seen[-1]
    assert (method, path) == ("POST", "/api/tickets")
    assert headers["Idempotency-Key"] == t.idempotency_key
    assert headers["Content-Type"] == "application/json"
    body = {k: v for k, v in crm.tickets[t.idempotency_key].items() if k != "crm_ref"}
    expected = ticket_to_dict(t)
    for field in ("status", "updated_at", "history", "crm_ref"):
        del expected[field]
    assert body == expected
    assert body["address"]["district"] == "朝阳区"
    assert body["ivr_path"] == ["welcome", "hazard"]


async def test_asked_twice_the_crm_keeps_one_ticket(crm: FakeCrm, client: HttpCrm) -> None:
    t = ticket()
    assert await client.create_ticket(t) == "CRM-1"
    assert await client.create_ticket(t) == "CRM-1"
    assert crm.created == {t.ticket_id: 1}
    assert [status for *_, status in crm.attempts] == ["ok", "ok"]


async def test_a_key_reused_for_another_ticket_is_refused(crm: FakeCrm, client: HttpCrm) -> None:
    await client.create_ticket(ticket(1))
    other = Ticket(**{**ticket(2).__dict__, "idempotency_key": ticket(1).idempotency_key})
    with pytest.raises(CrmRejectedError) as caught:
        await client.create_ticket(other)
    assert str(caught.value) == (
        "POST /tickets (2611270100002): the CRM answered 422: key-reused: "
        "this key was used for another ticket"
    )


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("500", "the CRM answered 500: unavailable: try again later"),
        ("429", "the CRM answered 429: unavailable: try again later"),
        ("timeout", f"no answer within {SHORT:g} s"),
        ("drop", "ServerDisconnectedError: Server disconnected"),
        ("drop-before", "ServerDisconnectedError: Server disconnected"),
    ],
)
async def test_what_may_pass_is_unavailable(
    crm: FakeCrm, client: HttpCrm, fault: str, message: str
) -> None:
    crm.script(fault)
    crm.hold_seconds = 1.0
    impatient = HttpCrm(crm.url, timeout=SHORT if fault == "timeout" else TIMEOUT)
    try:
        with pytest.raises(CrmUnavailableError) as caught:
            await impatient.create_ticket(ticket())
    finally:
        await impatient.close()
    assert str(caught.value) == f"POST /tickets ({ticket().ticket_id}): {message}"
    await crm.idle()
    # Whether or not the CRM committed, asking again gives one ticket.
    assert await client.create_ticket(ticket()) == "CRM-1"
    assert crm.created == {ticket().ticket_id: 1}


async def test_a_request_while_the_same_key_is_in_progress_is_unavailable(
    crm: FakeCrm, client: HttpCrm
) -> None:
    crm.script("pause-before-commit")
    slow = HttpCrm(crm.url, timeout=30.0)
    try:
        first = asyncio.create_task(slow.create_ticket(ticket()))
        await crm.paused.wait()
        with pytest.raises(CrmUnavailableError) as caught:
            await client.create_ticket(ticket())
        assert "409: request-in-progress" in str(caught.value)
        crm.release()
        assert await first == "CRM-1"
    finally:
        await slow.close()
    assert crm.created == {ticket().ticket_id: 1}


async def test_no_crm_listening_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: the connection is refused
        http = HttpCrm(f"http://127.0.0.1:{port}/api", timeout=SHORT)
        try:
            with pytest.raises(CrmUnavailableError) as caught:
                await http.create_ticket(ticket())
        finally:
            await http.close()
    assert "ClientConnectorError" in str(caught.value)


@pytest.mark.parametrize(
    ("fault", "problem"),
    [
        ("malformed", "the CRM's answer is not JSON (Unterminated string starting at"),
        ("missing", "the CRM's answer is unusable: crm_ref: is missing"),
        (
            "oversized",
            "the CRM's answer is unusable: crm_ref: is 10000 characters long; at most 200",
        ),
    ],
)
async def test_an_answer_that_makes_no_sense_is_refused(
    crm: FakeCrm, client: HttpCrm, fault: str, problem: str
) -> None:
    crm.script(fault)
    with pytest.raises(CrmRejectedError) as caught:
        await client.create_ticket(ticket())
    assert str(caught.value).startswith(f"POST /tickets ({ticket().ticket_id}): {problem}")


async def test_an_answer_too_big_is_not_read(crm: FakeCrm) -> None:
    crm.customers.append(
        {"customer_id": "c1", "name": "张三" * 100, "phones": ["13812345678"], "accounts": []}
    )
    http = HttpCrm(crm.url, timeout=TIMEOUT, max_answer_bytes=100)
    try:
        with pytest.raises(CrmRejectedError) as caught:
            await http.find_customer(phone="13812345678")
    finally:
        await http.close()
    assert str(caught.value) == "GET /customers?phone=…: the CRM's answer is over 100 bytes"


async def test_get_ticket_reads_status_and_history(crm: FakeCrm, client: HttpCrm) -> None:
    await client.create_ticket(ticket())
    got = await client.get_ticket(ticket().ticket_id)
    assert got is not None
    assert got.status is TicketStatus.SUBMITTED
    assert got.crm_ref == "CRM-1"
    assert [(h.status, h.at) for h in got.history] == [(TicketStatus.SUBMITTED, T0)]
    assert got.address == ticket().address
    assert got.fields == ticket().fields
    assert await client.get_ticket("2611270199999") is None
    with pytest.raises(TicketInvalidError):
        await client.get_ticket("../customers")
    with pytest.raises(TicketInvalidError):
        await client.bill_summary("1/../2")


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ({"ticket_id": 5}, "ticket_id: must be a string, not an integer"),
        (
            {**ticket_to_dict(ticket()), "priority": 1.5},
            "priority: must be an integer, not a number",
        ),
        (
            {**ticket_to_dict(ticket()), "status": "lost"},
            "status: 'lost' is not one of new, submitted, in_progress, resolved, closed",
        ),
        (
            {**ticket_to_dict(ticket()), "history": [{"status": "new"}]},
            "history[0].at: is missing",
        ),
        (
            {**ticket_to_dict(ticket()), "address": {"city": ["x"]}},
            "address.city: must be a string, not a list",
        ),
        (
            {**ticket_to_dict(ticket()), "caller": "phone"},
            "caller: digits only, optionally with a leading +",
        ),
        ([1, 2], "(body): is not a JSON object"),
    ],
)
async def test_a_broken_ticket_answer_names_the_field(
    crm: FakeCrm, client: HttpCrm, answer: object, problem: str
) -> None:
    path = f"/api/tickets/{ticket().ticket_id}"
    crm.raw_answers[path] = (200, json.dumps(answer).encode())
    with pytest.raises(CrmRejectedError) as caught:
        await client.get_ticket(ticket().ticket_id)
    assert str(caught.value) == f"GET {path[4:]}: the CRM's answer is unusable: {problem}"


async def test_nan_is_not_a_number(crm: FakeCrm, client: HttpCrm) -> None:
    crm.raw_answers["/api/accounts/1234567890/bill"] = (
        200,
        b'{"account": "1234567890", "balance_fen": NaN, "amount_due_fen": 0}',
    )
    with pytest.raises(CrmRejectedError) as caught:
        await client.bill_summary("1234567890")
    assert "not JSON (NaN is not a JSON number)" in str(caught.value)


async def test_a_redirect_is_not_followed(crm: FakeCrm, client: HttpCrm) -> None:
    crm.raw_answers["/api/accounts/1/bill"] = (302, b"")
    with pytest.raises(CrmRejectedError) as caught:
        await client.bill_summary("1")
    assert str(caught.value) == "GET /accounts/…/bill: the CRM answered 302"


# ---------------------------------------------------------------------- the rest


async def test_customers_by_phone_or_account(crm: FakeCrm, client: HttpCrm) -> None:
    crm.customers.append(
        {
            "customer_id": "c1",
            "name": "张三",
            "phones": ["+8613812345678"],
            "accounts": ["1234567890"],
            "address": {"province": "北京市", "district": "朝阳区"},
            "vip_level": 3,  # the CRM's own field: ignored
        }
    )
    expected = Customer(
        customer_id="c1",
        name="张三",
        phones=("+8613812345678",),
        accounts=("1234567890",),
        address=Address(province="北京市", district="朝阳区"),
    )
    assert await client.find_customer(phone="+8613812345678") == expected
    assert crm.seen[-1][1] == "/api/customers?phone=%2B8613812345678"
    assert await client.find_customer(account="1234567890") == expected
    assert await client.find_customer(account="999") is None
    with pytest.raises(TicketInvalidError):
        await client.find_customer(phone="1", account="2")


async def test_only_a_phone_number_or_an_account_is_asked_about(
    crm: FakeCrm, client: HttpCrm
) -> None:
    for phone, account in (("anonymous", ""), ("+86 138", ""), ("", "12a"), ("", "1" * 33)):
        with pytest.raises(TicketInvalidError):
            await client.find_customer(phone=phone, account=account)
    assert crm.seen == []


async def test_a_customer_without_a_name_is_refused(crm: FakeCrm, client: HttpCrm) -> None:
    crm.raw_answers["/api/customers?account=1"] = (200, b'{"customer_id": "c1"}')
    with pytest.raises(CrmRejectedError) as caught:
        await client.find_customer(account="1")
    assert str(caught.value) == (
        "GET /customers?account=…: the CRM's answer is unusable: name: is missing"
    )


async def test_outages_active_in_the_area_most_recent_first(crm: FakeCrm, client: HttpCrm) -> None:
    def notice(n: int, starts: float, ended: float | None = None, **area: str) -> dict[str, Any]:
        return {
            "outage_id": f"o{n}",
            "area": area,
            "kind": "fault",
            "cause": "线路故障",
            "starts_at": starts,
            "restore_at": starts + 3600,
            "ended_at": ended,
        }

    crm.outages = [
        notice(1, T0 - 600, province="北京市"),
        notice(2, T0 - 60, province="北京市", district="朝阳区"),
        notice(3, T0 - 60, province="北京市", district="海淀区"),
        notice(4, T0 - 900, T0 - 300, province="北京市"),
        notice(5, T0 + 60, province="北京市"),
    ]
    found = await client.outages(Address(province="北京市", district="朝阳区"), T0)
    assert [o.outage_id for o in found] == ["o2", "o1"]
    assert found[0].kind is OutageKind.FAULT
    assert found[0].restore_at == T0 - 60 + 3600
    assert found[0].area == Address(province="北京市", district="朝阳区")


async def test_an_ended_outage_is_never_announced(crm: FakeCrm, client: HttpCrm) -> None:
    ended = {
        "outage_id": "o1",
        "area": {"province": "北京市"},
        "kind": "planned",
        "cause": "检修",
        "starts_at": T0 - 900,
        "ended_at": T0 - 300,
    }
    crm.raw_answers["/api/outages"] = (200, json.dumps({"outages": [ended]}).encode())
    assert await client.outages(Address(province="北京市"), T0) == []


async def test_an_outage_of_an_unknown_kind_is_refused(crm: FakeCrm, client: HttpCrm) -> None:
    odd = {"outage_id": "o1", "area": {}, "kind": "alien", "starts_at": T0}
    crm.raw_answers["/api/outages"] = (200, json.dumps({"outages": [odd]}).encode())
    with pytest.raises(CrmRejectedError) as caught:
        await client.outages(Address(province="北京市"), T0)
    assert str(caught.value) == (
        "GET /outages: the CRM's answer is unusable: outages[0].kind: 'alien' is not one of "
        "planned, fault"
    )


async def test_bill_in_fen(crm: FakeCrm, client: HttpCrm) -> None:
    crm.bills["1234567890"] = {
        "account": "1234567890",
        "balance_fen": -1250,
        "amount_due_fen": 8860,
        "due_date": "2026-12-15",
    }
    assert await client.bill_summary("1234567890") == BillSummary(
        "1234567890", -1250, 8860, "2026-12-15"
    )
    assert await client.bill_summary("0000") is None
    crm.bills["1"] = {"account": "1", "balance_fen": 12.5, "amount_due_fen": 0}
    with pytest.raises(CrmRejectedError) as caught:
        await client.bill_summary("1")
    assert str(caught.value).endswith("balance_fen: must be an integer, not a number")
    crm.bills["2"] = {"account": "3", "balance_fen": 0, "amount_due_fen": 0}
    with pytest.raises(CrmRejectedError):
        await client.bill_summary("2")


async def test_surveys_are_idempotent_per_call(crm: FakeCrm, client: HttpCrm) -> None:
    survey = Survey(call_id="call-1", score=5, at=T0, agent_id="a7", caller="13812345678")
    await client.record_survey(survey)
    await client.record_survey(survey)
    assert crm.surveys == {
        "call-1": {
            "call_id": "call-1",
            "score": 5,
            "at": T0,
            "agent_id": "a7",
            "caller": "13812345678",
        }
    }
    assert [h["Idempotency-Key"] for m, _, h in crm.seen if m == "POST"] == ["call-1:survey"] * 2
    assert crm.surveys_created == {"call-1": 1}
    # Another rating for the same call is the CRM's to refuse (the outbox never sends one).
    with pytest.raises(CrmRejectedError, match="422: key-reused"):
        await client.record_survey(Survey(call_id="call-1", score=1, at=T0))


# ---------------------------------------------------------------------- field map


def test_field_map_file(tmp_path: Path) -> None:
    path = tmp_path / "map.toml"
    path.write_text('[ticket]\nticket_type = "category"\n\n[address]\ndistrict = "county"\n')
    fmap = FieldMap.load(path)
    assert fmap.crm_name("ticket", "ticket_type") == "category"
    assert fmap.crm_name("ticket", "caller") == "caller"
    assert fmap.outgoing("customer", {"address": {"district": "x"}}) == {"address": {"county": "x"}}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[tickets]\nx = "y"\n', "[tickets] is not one of ticket, history, address"),
        ('[ticket]\nnope = "y"\n', "[ticket] nope: no such field"),
        ("[ticket]\ncaller = 5\n", "[ticket] caller: must be a non-empty string"),
        ('[ticket]\ncaller = "account"\n', "[ticket] two fields would be called 'account'"),
        ("ticket = 1\n", "ticket must be a table"),
        ("[ticket\n", "Expected ']'"),
    ],
)
def test_a_wrong_field_map_says_where(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "map.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"^field map ") as caught:
        FieldMap.load(path)
    assert str(caught.value).startswith(f"field map {path}: {problem}")


async def test_field_map_renames_both_ways(tmp_path: Path) -> None:
    path = tmp_path / "map.toml"
    path.write_text(
        '[ticket]\nticket_type = "category"\ncrm_ref = "id"\n'
        '[address]\ndistrict = "county"\n'
        '[customer]\nname = "display_name"\n'
    )
    crm = await FakeCrm(ref_field="id").start()
    http = HttpCrm(crm.url, timeout=TIMEOUT, field_map=path)
    try:
        assert await http.create_ticket(ticket()) == "CRM-1"
        sent = crm.tickets[ticket().idempotency_key]
        assert sent["category"] == "故障报修"
        assert "ticket_type" not in sent
        assert sent["address"]["county"] == "朝阳区"
        crm.customers.append({"customer_id": "c1", "display_name": "李四", "phones": ["1"]})
        found = await http.find_customer(phone="1")
        assert found is not None
        assert found.name == "李四"
        crm.customers[0] = {"customer_id": "c1", "name": "李四", "phones": ["1"]}
        with pytest.raises(CrmRejectedError) as caught:
            await http.find_customer(phone="1")
        assert str(caught.value).endswith("name (the CRM's 'display_name'): is missing")
    finally:
        await http.close()
        await crm.stop()


# ---------------------------------------------------------------------- authentication


@pytest.mark.parametrize("auth", ["bearer", "hmac"])
async def test_authenticated_requests_pass(auth: str) -> None:
    crm = await FakeCrm(auth=auth, secret=SECRET, clock=lambda: T0 + 100).start()
    http = HttpCrm(crm.url, auth=auth, secret=SECRET, timeout=TIMEOUT, clock=lambda: T0)  # type: ignore[arg-type]
    try:
        assert await http.create_ticket(ticket()) == "CRM-1"
        # A query with characters that must be escaped: signed exactly as sent.
        crm.customers.append({"customer_id": "c1", "name": "王五", "phones": ["+8613812345678"]})
        assert await http.find_customer(phone="+8613812345678") is not None
        assert await http.outages(Address(province="北京市", street="建国路 1号"), T0) == []
        assert await http.bill_summary("404") is None
    finally:
        await http.close()
        await crm.stop()
    if auth == "hmac":
        headers = crm.seen[0][2]
        assert headers["X-Hotline-Timestamp"] == str(int(T0))
        assert len(headers["X-Hotline-Signature"]) == 64


@pytest.mark.parametrize(
    ("auth", "secret", "skew", "answer"),
    [
        ("bearer", "wrong-token", 0.0, "401: unauthorized: missing or wrong bearer token"),
        ("hmac", "wrong-key", 0.0, "401: bad-signature: the signature does not match"),
        (
            "hmac",
            SECRET,
            1000.0,
            "401: bad-signature: the timestamp is too far from the CRM's time",
        ),
    ],
)
async def test_wrong_credentials_are_refused(
    auth: str, secret: str, skew: float, answer: str
) -> None:
    crm = await FakeCrm(auth=auth, secret=SECRET, clock=lambda: T0).start()
    http = HttpCrm(crm.url, auth=auth, secret=secret, timeout=TIMEOUT, clock=lambda: T0 + skew)  # type: ignore[arg-type]
    try:
        with pytest.raises(CrmRejectedError) as caught:
            await http.create_ticket(ticket())
    finally:
        await http.close()
        await crm.stop()
    assert str(caught.value) == f"POST /tickets ({ticket().ticket_id}): the CRM answered {answer}"
    assert crm.tickets == {}


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="http"):
        HttpCrm("ftp://crm/api")
    with pytest.raises(ValueError, match="needs a secret"):
        HttpCrm("http://crm/api", auth="hmac")
    with pytest.raises(ValueError, match="positive"):
        HttpCrm("http://crm/api", timeout=0)
