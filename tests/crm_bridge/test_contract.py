"""The CRM contract, docs/crm-openapi.yaml, held against the code both ways.

- The document is valid OpenAPI 3.1 (openapi-spec-validator).
- Every request `HttpCrm` sends — path, method, parameters, the ``Idempotency-Key`` header, the
  authentication of each ``crm_auth`` mode, the JSON body (no field the document lacks) — and
  every answer the fake CRM gives, errors included, validate against it (openapi-core, on the
  requests and answers as they crossed the loopback socket).
- Every operation in the document is used by `HttpCrm`, and every query parameter it sends is
  declared, so neither side can drift alone.
- An answer the document allows, less any one field, is taken by the hotline's decoders exactly
  when the document still allows it: the required fields are the same on both sides.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from openapi_core import OpenAPI
from openapi_core.templating.paths.finders import APICallPathFinder
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

from crm_bridge.codec import (
    CREATION_FIELDS,
    bill_from_dict,
    customer_from_dict,
    outage_from_dict,
    ticket_from_dict,
    ticket_to_dict,
)
from crm_bridge.errors import CrmRejectedError, CrmUnavailableError, TicketInvalidError
from crm_bridge.http import HttpCrm
from crm_bridge.model import Address, Survey, Ticket, idempotency_key

sys.path.insert(0, str(Path(__file__).parent))
from fake_crm import Exchange, FakeCrm

DOCUMENT = Path(__file__).parents[2] / "docs" / "crm-openapi.yaml"
T0 = 1_800_000_000.0
SECRET = "s3cret-token-0123456789"  # noqa: S105 — the fake CRM's test key
SECURITY = {
    "none": [{}],
    "bearer": [{"bearer": []}],
    "hmac": [{"hmac": [], "hmac_timestamp": []}],
}
"""What each ``crm_auth`` mode must satisfy: one requirement of the document's ``security``."""


def document() -> dict[str, Any]:
    spec, _ = read_from_filename(str(DOCUMENT))
    return dict(spec)


def contract(base_url: str, auth: str = "none") -> OpenAPI:
    """The document as a CRM at ``base_url`` (the value of ``crm_url``) speaks it, with the
    security requirement of one ``crm_auth`` mode."""
    spec = copy.deepcopy(document())
    requirements = [dict(r) for r in spec["security"]]
    assert SECURITY[auth][0] in requirements, f"the document has no {auth} requirement"
    spec["servers"] = [{"url": base_url}]
    spec["security"] = SECURITY[auth]
    return OpenAPI.from_dict(spec)


def ticket(n: int = 1) -> Ticket:
    return Ticket(
        ticket_id=f"26112701{n:05d}",
        idempotency_key=idempotency_key(f"call-{n}", "故障报修:complete"),
        ticket_type="故障报修",
        priority=100,
        created_at=T0,
        urgent=True,
        caller="+8613812345678",
        account="3201234567",
        customer_id="C-1",
        address=Address("江苏省", "南京市", "鼓楼区", "中山北路", "100号", "鼓楼区中山北路一百号"),
        description="电线掉下来了",
        call_id=f"sip-{n}@pbx.example",
        ivr_path=("welcome", "main_menu", "hazard"),
        complete=True,
        fields={"hazard": "yes"},
    )


CUSTOMER = {
    "customer_id": "C-1",
    "name": "王五",
    "phones": ["+8613812345678"],
    "accounts": ["3201234567"],
    "address": {"province": "江苏省", "city": "南京市", "district": "鼓楼区", "raw": ""},
}
OUTAGE = {
    "outage_id": "O-1",
    "area": {"province": "江苏省", "city": "南京市", "district": "鼓楼区"},
    "kind": "fault",
    "cause": "线路故障",
    "starts_at": T0 - 600,
    "restore_at": T0 + 3600,
    "ended_at": None,
}
BILL = {"account": "3201234567", "balance_fen": -1250, "amount_due_fen": 8800, "due_date": ""}


async def every_operation(crm: FakeCrm, http: HttpCrm) -> None:
    """Each `HttpCrm` operation, with the answers a CRM gives: found, not found, a repeat, a
    key reused, in progress, down."""
    crm.customers.append(CUSTOMER)
    crm.outages.append(OUTAGE)
    crm.bills[BILL["account"]] = BILL
    assert await http.create_ticket(ticket(1)) == "CRM-1"  # 201
    assert await http.create_ticket(ticket(1)) == "CRM-1"  # 200: a repeat
    with pytest.raises(CrmRejectedError, match="422"):
        await http.create_ticket(Ticket(**{**ticket(1).__dict__, "priority": 1}))
    crm.script("500", "429")
    for _ in range(2):
        with pytest.raises(CrmUnavailableError):
            await http.create_ticket(ticket(2))
    # A repeat while the first request with its key is still being handled: 409.
    crm.script("pause-before-commit")
    first = asyncio.create_task(http.create_ticket(ticket(3)))
    await crm.paused.wait()
    with pytest.raises(CrmUnavailableError, match="409"):
        await http.create_ticket(ticket(3))
    crm.release()
    assert await first == "CRM-2"

    shown = await http.get_ticket(ticket(1).ticket_id)
    assert shown is not None
    assert shown.crm_ref == "CRM-1"
    assert await http.get_ticket("2611270199999") is None
    assert await http.find_customer(phone="+8613812345678") is not None
    assert await http.find_customer(account="3201234567") is not None
    assert await http.find_customer(phone="13900000000") is None
    assert len(await http.outages(Address("江苏省", "南京市", "鼓楼区", "中山北路"), T0)) == 1
    assert await http.outages(Address(city="上海市"), T0) == []
    assert await http.bill_summary("3201234567") is not None
    assert await http.bill_summary("1111111111") is None
    survey = Survey("sip-1@pbx.example", 5, T0, agent_id="1001", caller="+8613812345678")
    await http.record_survey(survey)  # 201
    await http.record_survey(survey)  # 200: a repeat
    with pytest.raises(CrmRejectedError, match="422"):
        await http.record_survey(Survey("sip-1@pbx.example", 1, T0))
    crm.script("500")
    with pytest.raises(CrmUnavailableError):
        await http.record_survey(Survey("sip-2@pbx.example", 3, T0))


def request_of(base: str, exchange: Exchange) -> MockRequest:
    return MockRequest(
        base,
        exchange.method,
        exchange.path,
        args=exchange.query,
        headers=exchange.headers,
        data=exchange.body,
        content_type=exchange.headers.get("Content-Type", ""),
    )


def response_of(exchange: Exchange) -> MockResponse:
    return MockResponse(exchange.answer, exchange.status, content_type=exchange.content_type)


def problems(errors: list[Exception]) -> list[str]:
    """What openapi-core found, down to the schema's own words."""
    out = []
    for error in errors:
        cause = error.__cause__
        details = getattr(cause, "schema_errors", None) or ([cause] if cause else [])
        out.append(f"{type(error).__name__}: {error} {[str(d)[:300] for d in details]}")
    return out


def exchanges_checked(crm: FakeCrm, auth: str) -> Iterator[tuple[Exchange, str]]:
    """Validate every exchange; yield each with the operation it was."""
    base = crm.url.removesuffix("/api")
    api = contract(crm.url, auth)
    finder = APICallPathFinder(api.spec)
    assert crm.exchanges
    for exchange in crm.exchanges:
        request = request_of(base, exchange)
        where = f"{exchange.method} {exchange.path} -> {exchange.status}"
        request_errors = api.unmarshal_request(request).errors
        assert not request_errors, (where, problems(request_errors))
        response_errors = api.unmarshal_response(request, response_of(exchange)).errors
        assert not response_errors, (where, problems(response_errors))
        found = finder.find(exchange.method.lower(), base + exchange.path)
        # openapi-core ignores query parameters a document does not declare: no such drift.
        parameters = found.operation / "parameters" if "parameters" in found.operation else []
        declared = {p["name"] for p in parameters if p["in"] == "query"}
        assert set(exchange.query) <= declared, (where, sorted(set(exchange.query) - declared))
        yield exchange, str(found.operation["operationId"])


def test_the_document_is_valid_openapi_3_1() -> None:
    spec = document()
    validate(spec)  # raises, naming the place, if it is not
    assert spec["openapi"].startswith("3.1.")


@pytest.mark.parametrize("auth", ["none", "bearer", "hmac"])
async def test_every_request_and_answer_keeps_the_contract(auth: str) -> None:
    crm = await FakeCrm(auth=auth, secret=SECRET, clock=lambda: T0).start()
    http = HttpCrm(
        crm.url,
        auth=auth,  # type: ignore[arg-type]  # one of the modes
        secret=SECRET if auth != "none" else None,
        timeout=5.0,
        clock=lambda: T0,
    )
    try:
        await every_operation(crm, http)
    finally:
        await http.close()
        await crm.stop()
    used = {operation for _, operation in exchanges_checked(crm, auth)}
    # No operation of the document that the hotline never calls, and none it calls undocumented.
    documented = {
        operation["operationId"]
        for path in document()["paths"].values()
        for operation in path.values()
        if isinstance(operation, dict) and "operationId" in operation
    }
    assert used == documented
    statuses = {(e.method, e.status) for e in crm.exchanges}
    assert {("POST", 201), ("POST", 200), ("POST", 409), ("POST", 422)} <= statuses
    assert {("POST", 500), ("POST", 429), ("GET", 200), ("GET", 404)} <= statuses


@pytest.mark.parametrize("auth", ["bearer", "hmac"])
async def test_a_refusal_of_credentials_keeps_the_contract(auth: str) -> None:
    crm = await FakeCrm(auth=auth, secret=SECRET, clock=lambda: T0).start()
    wrong = "wrong-secret"  # a key the fake CRM refuses
    http = HttpCrm(crm.url, auth=auth, secret=wrong, timeout=5.0, clock=lambda: T0)  # type: ignore[arg-type]
    try:
        with pytest.raises(CrmRejectedError, match="401"):
            await http.create_ticket(ticket())
    finally:
        await http.close()
        await crm.stop()
    assert [(e.status, op) for e, op in exchanges_checked(crm, auth)] == [(401, "createTicket")]


async def test_a_request_the_document_lacks_is_caught() -> None:
    """The check can fail: a body with a field the document does not name, a survey sent
    without its key, a request without its credentials."""
    crm = await FakeCrm().start()
    try:
        api = contract(crm.url, "bearer")
        base = crm.url.removesuffix("/api")
        body = {**_creation_body(), "colour": "red"}
        extra = MockRequest(
            base,
            "post",
            "/api/tickets",
            headers={"Idempotency-Key": "k", "Authorization": "Bearer x"},
            data=json.dumps(body).encode(),
        )
        assert "unevaluated" in " ".join(problems(api.unmarshal_request(extra).errors)).lower()
        survey = {"call_id": "c1", "score": 5, "at": T0}
        wrong_key = MockRequest(
            base,
            "post",
            "/api/surveys",
            headers={"Idempotency-Key": "survey:c1", "Authorization": "Bearer x"},
            data=json.dumps(survey).encode(),
        )
        assert api.unmarshal_request(wrong_key).errors
        anonymous = MockRequest(base, "get", "/api/accounts/1234/bill", content_type="")
        assert api.unmarshal_request(anonymous).errors
    finally:
        await crm.stop()


def _creation_body() -> dict[str, Any]:
    return {k: v for k, v in ticket_to_dict(ticket()).items() if k in CREATION_FIELDS}


# ---------------------------------------------------------------------- required fields


def _ticket_answer() -> dict[str, Any]:
    return {
        **_creation_body(),
        "status": "submitted",
        "updated_at": T0,
        "history": [{"status": "submitted", "at": T0, "note": ""}],
        "crm_ref": "CRM-1",
    }


ANSWERS: list[tuple[str, str, Callable[[], Any], Callable[[object], object]]] = [
    ("GET", "/api/tickets/2611270100001", _ticket_answer, ticket_from_dict),
    ("GET", "/api/customers", lambda: CUSTOMER, customer_from_dict),
    ("GET", "/api/accounts/3201234567/bill", lambda: BILL, bill_from_dict),
    ("GET", "/api/outages", lambda: {"outages": [OUTAGE]}, outage_from_dict),
]


@pytest.mark.parametrize(("method", "path", "answer", "decode"), ANSWERS)
def test_the_document_and_the_decoders_require_the_same_fields(
    method: str, path: str, answer: Callable[[], Any], decode: Callable[[object], object]
) -> None:
    base = "http://crm.test"
    api = contract(base + "/api")
    query = {"phone": "1"} if path.endswith("customers") else {}
    if path.endswith("outages"):
        query = {"at": "1.000"}
    request = MockRequest(base, method, path, args=query, content_type="")

    def allowed(data: dict[str, Any]) -> bool:
        wrapped = {"outages": [data]} if path.endswith("outages") else data
        response = MockResponse(json.dumps(wrapped).encode(), 200)
        return not api.unmarshal_response(request, response).errors

    def taken(data: dict[str, Any]) -> bool:
        try:
            decode(data)
        except TicketInvalidError:
            return False
        return True

    full = answer()
    item = full["outages"][0] if path.endswith("outages") else full
    assert allowed(item), "the full answer must keep the document"
    assert taken(item)
    for name in item:
        less = {k: v for k, v in item.items() if k != name}
        assert allowed(less) == taken(less), (
            f"without {name!r}: the document {'allows' if allowed(less) else 'refuses'} it, "
            f"the hotline {'takes' if taken(less) else 'refuses'} it"
        )
