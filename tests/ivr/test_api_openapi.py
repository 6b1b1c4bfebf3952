"""The hotline's own API document, docs/api-openapi.yaml (``ivr/openapi.yaml``), held against the
app both ways.

- The document is valid OpenAPI 3.1, and the app serves it at ``/api/openapi.yaml``.
- Every ``/api/`` route the app registers is in the document, and every path in the document is
  a route (`undocumented`: the failure names each route and its handler).
- A run driving every route on a real server (real Redis, the embedded CRM, a browser session
  and the CLI's token) validates with openapi-core: every request that succeeded, and every
  answer, errors included; every operation of the document is exercised.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from openapi_core import OpenAPI
from openapi_core.templating.paths.finders import APICallPathFinder
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename
from redis.asyncio import Redis

from crm_bridge.embedded import EmbeddedCrm
from crm_bridge.model import Address, Ticket
from ivr.accounts import Role, UserFile
from ivr.crm_runtime import CrmRuntime
from ivr.settings import Settings
from ivr.web import create_app
from ivr.web_auth import COOKIE, CSRF_HEADER
from ivr.web_openapi import document_text
from routing.model import NewCall
from routing.store import RoutingStore

Serving = Callable[..., AbstractAsyncContextManager[str]]
ROOT = Path(__file__).parents[2]
DOCUMENT = ROOT / "docs" / "api-openapi.yaml"
METHODS = ("get", "put", "post", "delete", "patch")
TOKEN = "api-test-token-0123456789"  # noqa: S105 - a test's token, not a credential
PASSWORD = "correct horse battery"  # noqa: S105 - a test account's password
T0 = 1_800_000_000.0


def document() -> dict[str, Any]:
    spec, _ = read_from_filename(str(DOCUMENT))
    return dict(spec)


def documented(spec: dict[str, Any]) -> set[tuple[str, str]]:
    """(METHOD, path) of every operation in the document."""
    return {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in METHODS
    }


def api_routes(app: web.Application) -> dict[tuple[str, str], str]:
    """(METHOD, path as registered) of every /api/ route -> its handler (module.name). HEAD is
    aiohttp's companion of each GET, documented with it."""
    routes = {}
    for route in app.router.routes():
        resource = route.resource
        path = resource.canonical if resource is not None else ""
        if path.startswith("/api/") and route.method != "HEAD":
            handler = route.handler
            name = f"{handler.__module__}.{getattr(handler, '__qualname__', handler)}"
            routes[(route.method, path)] = name
    return routes


def undocumented(app: web.Application, spec: dict[str, Any]) -> list[str]:
    """What keeps the app and the document apart, one line each (empty when they agree)."""
    routes = api_routes(app)
    ops = documented(spec)
    lines = [
        f"route not in docs/api-openapi.yaml: {method} {path} ({handler}); add it to "
        f"ivr/openapi.yaml under paths: {path}: {method.lower()}:"
        for (method, path), handler in sorted(routes.items())
        if (method, path) not in ops
    ]
    lines += [
        f"docs/api-openapi.yaml names {method} {path}, which the app does not register"
        for method, path in sorted(ops - set(routes))
    ]
    return lines


def test_the_document_is_valid_openapi_3_1() -> None:
    spec = document()
    validate(spec)  # raises, naming the place, if it is not
    assert spec["openapi"].startswith("3.1.")
    # One file: the package's copy is the repository's document.
    assert DOCUMENT.read_text(encoding="utf-8") == document_text()
    ids = [
        op["operationId"]
        for item in spec["paths"].values()
        for method, op in item.items()
        if method in METHODS
    ]
    assert all(ids)
    assert len(ids) == len(set(ids))


def test_every_api_route_is_documented_and_every_path_is_a_route(tmp_path: Path) -> None:
    app = create_app(Settings(var_dir=tmp_path))
    problems = undocumented(app, document())
    assert not problems, "\n".join(problems)
    assert len(api_routes(app)) >= 34


def test_the_coverage_check_names_what_is_missing(tmp_path: Path) -> None:
    """The check can fail, and says exactly what to add (or remove)."""

    async def wrap_up(request: web.Request) -> web.Response:
        raise NotImplementedError

    app = create_app(Settings(var_dir=tmp_path))
    app.router.add_post("/api/desk/wrap-up", wrap_up)
    spec = copy.deepcopy(document())
    del spec["paths"]["/api/outages"]["post"]
    spec["paths"]["/api/nowhere"] = spec["paths"]["/api/session"]
    problems = undocumented(app, spec)
    assert problems == [
        "route not in docs/api-openapi.yaml: POST /api/desk/wrap-up "
        f"({__name__}.test_the_coverage_check_names_what_is_missing.<locals>.wrap_up); "
        "add it to ivr/openapi.yaml under paths: /api/desk/wrap-up: post:",
        "route not in docs/api-openapi.yaml: POST /api/outages (ivr.web_crm.post_outage); "
        "add it to ivr/openapi.yaml under paths: /api/outages: post:",
        "docs/api-openapi.yaml names GET /api/nowhere, which the app does not register",
    ]


# ---------------------------------------------------------------------- real exchanges


@dataclass
class Exchange:
    """One request to the server and its answer, as they crossed the socket."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    cookies: dict[str, str]
    body: bytes
    status: int
    content_type: str
    answer: bytes


@dataclass
class Client:
    """Sends requests as the CLI (the token) or as a browser (a session), recording each."""

    http: aiohttp.ClientSession
    url: str
    exchanges: list[Exchange]
    token: str = ""
    cookie: str = ""
    csrf: str = ""
    extra_headers: dict[str, str] = field(default_factory=dict)

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        stream: bool = False,
    ) -> tuple[int, Any]:
        headers = dict(self.extra_headers)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.cookie:
            headers["Sec-Fetch-Site"] = "same-origin"
            if self.csrf:
                headers[CSRF_HEADER] = self.csrf
        data = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
        if data:
            headers["Content-Type"] = "application/json"
        cookies = {COOKIE: self.cookie} if self.cookie else {}
        async with self.http.request(
            method,
            self.url + path,
            params=query or {},
            data=data or None,
            headers=headers,
            cookies=cookies,
        ) as resp:
            if stream and resp.status == 200:
                answer = b""
                while not answer.startswith(b"data: "):
                    answer = await resp.content.readline()
            else:
                answer = await resp.read()
            if COOKIE in resp.cookies and resp.cookies[COOKIE].value:
                self.cookie = resp.cookies[COOKIE].value
            self.exchanges.append(
                Exchange(
                    method,
                    path,
                    dict(query or {}),
                    headers,
                    cookies,
                    data,
                    resp.status,
                    resp.content_type,
                    answer,
                )
            )
            if resp.content_type == "application/json":
                return resp.status, json.loads(answer)
            return resp.status, answer.decode()

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, answer = await self.call(method, path, body, **kw)
        assert 200 <= status < 300, (method, path, answer)
        return answer

    async def error(self, status: int, method: str, path: str, body: Any = None) -> str:
        got, answer = await self.call(method, path, body)
        assert got == status, (method, path, answer)
        return str(answer["error_id"])


@pytest.fixture
async def server(
    redis_servers: Any, tmp_path: Path, serving: Serving
) -> AsyncIterator[tuple[str, RoutingStore, EmbeddedCrm]]:
    # One Redis kind is enough here: routing and sessions are tested on both.
    client = Redis.from_url(redis_servers.get("system").url, decode_responses=True)
    await client.flushall()
    store = RoutingStore(client, tenant="t1")
    users = UserFile(tmp_path / "users.json")
    users.add("1001", Role.AGENT, PASSWORD, name="王芳", skills={"fault_repair": 5})
    settings = Settings(var_dir=tmp_path, api_token=TOKEN)
    runtime = CrmRuntime(settings)  # the embedded store, its outbox and the calls' CRM service
    await runtime.start()
    crm = runtime.backend
    assert isinstance(crm, EmbeddedCrm)
    app = create_app(
        settings,
        routing=store,
        crm=crm,
        outbox=runtime.outbox,
        tickets=runtime.service,
        clock=lambda: T0,
    )
    try:
        async with serving(app) as url:
            yield url, store, crm
    finally:
        await runtime.stop()
        await client.aclose()


async def drive_every_route(
    url: str, store: RoutingStore, crm: EmbeddedCrm, exchanges: list[Exchange]
) -> None:
    """Each route, with answers that succeed and answers that fail."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        cli = Client(http, url, exchanges, token=TOKEN)
        assert "openapi: 3.1" in await cli.ok("GET", "/api/openapi.yaml")
        # The CRM admin.
        await cli.ok("POST", "/api/crm/seed-demo")
        outage = await cli.ok(
            "POST",
            "/api/outages",
            {"city": "南京市", "district": "鼓楼区", "kind": "fault", "cause": "线路故障"},
        )
        await cli.ok("GET", "/api/outages", query={"active": "true"})
        await cli.ok("POST", f"/api/outages/{outage['outage_id']}/end")
        assert await cli.error(404, "POST", "/api/outages/nope/end") == "no-such-outage"
        assert await cli.error(400, "POST", "/api/outages", {"kind": "x"}) == "invalid-request"
        ticket = Ticket(
            ticket_id="2611270100001",
            idempotency_key="call-1:fault",
            ticket_type="故障报修",
            priority=50,
            created_at=T0,
            caller="13800138000",
            account="1234567890",
            address=Address("江苏省", "南京市", "鼓楼区", "中山北路", "100号", "中山北路一百号"),
            description="家里停电了",
            call_id="call-1",
            ivr_path=("main_menu", "fault_account"),
            fields={"intent": "fault"},
        )
        await crm.create_ticket(ticket)
        await cli.ok("GET", "/api/tickets", query={"limit": "5"})
        await cli.ok("GET", f"/api/tickets/{ticket.ticket_id}")
        await cli.ok("POST", f"/api/tickets/{ticket.ticket_id}/status", {"status": "in_progress"})
        assert await cli.error(404, "GET", "/api/tickets/2611270199999") == "no-such-ticket"
        body = {"status": "lost"}
        path = f"/api/tickets/{ticket.ticket_id}/status"
        assert await cli.error(400, "POST", path, body) == "invalid-request"
        await cli.ok("GET", "/api/outbox")
        await cli.ok("POST", "/api/outbox/retry", {})
        assert await cli.error(404, "POST", "/api/outbox/retry", {"id": "x1"}) == (
            "no-such-dead-letter"
        )
        # Queues and agents.
        await cli.ok("PUT", "/api/queues/fault_repair", {"reservation_timeout": 30})
        bad = {"colour": "red"}
        assert await cli.error(400, "PUT", "/api/queues/fault_repair", bad) == (
            "invalid-queue-config"
        )
        login = {"skills": {"fault_repair": 5}, "name": "李强", "ready": True}
        await cli.ok("POST", "/api/agents/1002/login", login)
        await cli.ok("PUT", "/api/agents/1002/skills", {"skills": {"fault_repair": 6}})
        await store.enqueue(NewCall("c1", {"fault_repair": 3}, context={"intent": "停电"}), T0)
        await cli.ok("GET", "/api/agents")
        await cli.ok("GET", "/api/agents/1002")
        assert await cli.error(404, "GET", "/api/agents/nobody") == "no-such-agent"
        await cli.ok("GET", "/api/calls/c1")
        assert await cli.error(404, "GET", "/api/calls/nope") == "no-such-call"
        await cli.ok("GET", "/api/queues")
        await cli.ok("GET", "/api/queues/fault_repair")
        await cli.ok("POST", "/api/agents/1002/reject", {"call_id": "c1"})
        await cli.ok("POST", "/api/agents/1002/ready")
        changed = await cli.ok("POST", "/api/agents/1002/accept", {"call_id": "c1"})
        assert changed["call_id"] == "c1"
        assert await cli.error(409, "POST", "/api/agents/1002/logout") == "agent-busy"
        await cli.ok("POST", "/api/agents/1002/complete")
        await cli.ok("POST", "/api/agents/1002/not-ready", {"reason": "lunch"})
        await cli.ok("POST", "/api/agents/1002/logout")
        assert await cli.error(400, "POST", "/api/agents/1002/ready", {"x": 1}) == (
            "invalid-request"
        )
        # Statistics and the wallboard.
        await cli.ok("GET", "/api/stats/live")
        await cli.ok("GET", "/api/stats/intervals", query={"since": str(T0 - 3600)})
        query = {"interval": "x"}
        status, answer = await cli.call("GET", "/api/stats/intervals", query=query)
        assert (status, answer["error_id"]) == (400, "invalid-request")
        await cli.ok("GET", "/api/wallboard")
        await cli.ok("GET", "/api/wallboard/stream", stream=True)
        assert await Client(http, url, exchanges).error(401, "GET", "/api/wallboard") == (
            "login-required"
        )
        # A browser: the session and the desk.
        browser = Client(http, url, exchanges, extra_headers={"Sec-Fetch-Site": "same-origin"})
        wrong = {"username": "1001", "password": "not-the-password"}
        assert await browser.error(401, "POST", "/api/session/login", wrong) == ("bad-credentials")
        right = {"username": "1001", "password": PASSWORD}
        browser.csrf = (await browser.ok("POST", "/api/session/login", right))["csrf_token"]
        await browser.ok("GET", "/api/session")
        await browser.ok("GET", "/api/desk")
        await browser.ok("POST", "/api/desk/signin", {"contact": "sip:1001@10.0.0.5"})
        await browser.ok("GET", "/api/desk/stream", stream=True)
        assert await browser.error(403, "GET", "/api/stats/live") == "forbidden-role"
        await browser.ok("POST", "/api/agents/1001/ready")
        # The desk's work on a call: the draft, the work order, a transfer, ending to the survey.
        context = {"intent": "停电", "caller": "13800138000", "account": "1234567890"}
        await store.enqueue(NewCall("c2", {"fault_repair": 3}, context=context), T0)
        await browser.ok("POST", "/api/agents/1001/accept", {"call_id": "c2"})
        draft = (await browser.ok("GET", "/api/desk"))["work"]["draft"]
        code = "已派工"
        body = {"call_id": "c2", "code": code, "ticket": draft}
        await browser.ok("POST", "/api/desk/ticket", body)
        body = {"call_id": "c2", "code": code, "ticket": {**draft, "account": "x"}}
        assert await browser.error(400, "POST", "/api/desk/ticket", body) == "invalid-request"
        body = {"call_id": "c9", "code": code}
        assert await browser.error(403, "POST", "/api/desk/end", body) == "not-your-call"
        await browser.ok("POST", "/api/desk/transfer", {"call_id": "c2", "skill": "billing"})
        await browser.ok("POST", "/api/agents/1001/ready")  # wrap-up done early
        await store.enqueue(NewCall("c3", {"fault_repair": 3}, context=context), T0)
        await browser.ok("POST", "/api/agents/1001/accept", {"call_id": "c3"})
        await browser.ok("POST", "/api/desk/end", {"call_id": "c3", "code": "已解决"})
        await browser.ok("POST", "/api/session/logout")
        assert await browser.error(401, "GET", "/api/session") == "session-expired"


def contract(base: str) -> OpenAPI:
    spec = copy.deepcopy(document())
    spec["servers"] = [{"url": base}]
    return OpenAPI.from_dict(spec)


def problems(errors: Iterable[Exception]) -> list[str]:
    """What openapi-core found, down to the schema's own words."""
    out = []
    for error in errors:
        cause = error.__cause__
        details = getattr(cause, "schema_errors", None) or ([cause] if cause else [])
        said = [str(getattr(d, "message", d))[:300] for d in details]
        out.append(f"{type(error).__name__}: {said}")
    return out


async def test_every_route_keeps_the_document(
    server: tuple[str, RoutingStore, EmbeddedCrm],
) -> None:
    url, store, crm = server
    exchanges: list[Exchange] = []
    await drive_every_route(url, store, crm, exchanges)
    api = contract(url)
    finder = APICallPathFinder(api.spec)
    exercised: set[tuple[str, str]] = set()
    for exchange in exchanges:
        request = MockRequest(
            url,
            exchange.method,
            exchange.path,
            args=exchange.query,
            headers=exchange.headers,
            cookies=exchange.cookies,
            data=exchange.body,
            content_type=exchange.headers.get("Content-Type", ""),
        )
        where = f"{exchange.method} {exchange.path} -> {exchange.status}"
        if exchange.status < 300:
            # Requests meant to fail (a bad body, no login) are refused by the document too.
            errors = api.unmarshal_request(request).errors
            assert not errors, (where, problems(errors))
        response = MockResponse(
            exchange.answer, exchange.status, content_type=exchange.content_type
        )
        errors = api.unmarshal_response(request, response).errors
        assert not errors, (where, problems(errors))
        if exchange.status >= 400:
            assert set(json.loads(exchange.answer)) == {"error_id", "message"}, where
        found = finder.find(exchange.method.lower(), url + exchange.path)
        parameters = found.operation / "parameters" if "parameters" in found.operation else []
        declared = {p["name"] for p in parameters if p["in"] == "query"}
        assert set(exchange.query) <= declared, (where, sorted(set(exchange.query) - declared))
        if exchange.status < 300:
            exercised.add((exchange.method, str(found.path.parts[-1])))
    missing = documented(document()) - exercised
    assert not missing, f"operations the run never exercised: {sorted(missing)}"


async def test_a_wrong_answer_is_caught(server: tuple[str, RoutingStore, EmbeddedCrm]) -> None:
    """The check can fail: an answer with a field the document lacks, an error without its id."""
    url, _, _ = server
    api = contract(url)
    request = MockRequest(url, "post", "/api/session/logout", cookies={COOKIE: "x"})
    extra = MockResponse(json.dumps({"logged_out": True, "colour": "red"}).encode(), 200)
    assert api.unmarshal_response(request, extra).errors
    no_id = MockResponse(json.dumps({"message": "no"}).encode(), 401)
    assert api.unmarshal_response(request, no_id).errors
    fine = MockResponse(json.dumps({"error_id": "session-expired", "message": "m"}).encode(), 401)
    assert not api.unmarshal_response(request, fine).errors
