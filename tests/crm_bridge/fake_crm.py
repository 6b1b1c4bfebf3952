"""The CRM, played by a real aiohttp server on a free loopback port, for the HTTP adapter's tests.

It keeps the contract of docs/crm-openapi.yaml the way an honest CRM would: one ticket per
idempotency key (a repeat answers 200 with the same reference, a request while the first with
the same key is still being processed answers 409), the same for surveys (one per call),
authentication checked as the document says. Each POST /tickets or /surveys takes the next
*fault* from a script, so a test can make any attempt fail in any way: before or after the
ticket (or survey) is committed, by status, by timeout, by a dropped connection, by a broken
answer, or by pausing inside the request until the test lets it go.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

FAULTS = (
    "ok",  # commit, answer 201 (200 for a key already known)
    "slow",  # wait `slow_seconds` (less than the client's timeout), then as ok
    "500",  # answer 500, commit nothing
    "429",  # answer 429, commit nothing
    "timeout",  # hold the request `hold_seconds` (past the client's timeout), then commit
    "drop",  # commit, then drop the connection without an answer
    "drop-before",  # drop the connection, commit nothing
    "malformed",  # commit, answer 200 with a body that is not JSON
    "missing",  # commit, answer 200 with JSON lacking crm_ref
    "oversized",  # commit, answer 200 with a 10,000-character crm_ref
    "pause-before-commit",  # wait for `release()`, then as ok
    "pause-after-commit",  # commit, then wait for `release()`, then answer
)
"""What a POST /tickets or POST /surveys attempt may do (a survey's answer has no body to
break: malformed, missing and oversized only send it a broken one)."""

HMAC_SKEW_SECONDS = 300.0


@dataclass(frozen=True)
class Exchange:
    """One request as it arrived and the answer it got (for checks against the contract)."""

    method: str
    path: str
    """The path, percent-decoded (without the query)."""
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int
    content_type: str
    answer: bytes


def _error(status: int, error_id: str, message: str) -> web.Response:
    return web.json_response({"error_id": error_id, "message": message}, status=status)


@dataclass
class FakeCrm:
    """A CRM on 127.0.0.1; `start` it, point `HttpCrm` at `url`, `stop` it."""

    auth: str = "none"
    """none, bearer or hmac: what requests must carry."""
    secret: str = ""
    """The bearer token or HMAC key it accepts."""
    clock: Callable[[], float] = time.time
    """Its time, for HMAC timestamps."""
    faults: deque[str] = field(default_factory=deque)
    """Faults for the next POST /tickets and /surveys attempts, in order."""
    default_fault: str = "ok"
    """The fault once the script is used up ("500": the CRM is down)."""
    ref_field: str = "crm_ref"
    """What the CRM calls its reference in answers (a field map may rename it)."""
    slow_seconds: float = 0.05
    hold_seconds: float = 0.3
    tickets: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Idempotency key -> the ticket as created (the body received, plus crm_ref)."""
    created: Counter[str] = field(default_factory=Counter)
    """Ticket id -> how many tickets the CRM created with it (exactly once: all 1)."""
    attempts: list[tuple[str, str, str]] = field(default_factory=list)
    """(Idempotency-Key header, ticket_id, fault) of every POST /tickets received."""
    bodies: dict[str, set[str]] = field(default_factory=dict)
    """Idempotency key -> every distinct body sent with it."""
    customers: list[dict[str, Any]] = field(default_factory=list)
    outages: list[dict[str, Any]] = field(default_factory=list)
    bills: dict[str, Any] = field(default_factory=dict)
    surveys: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Call id -> the survey as stored (the body received)."""
    surveys_created: Counter[str] = field(default_factory=Counter)
    """Call id -> how many surveys the CRM stored for it (exactly once: all 1)."""
    survey_attempts: list[tuple[str, str, str]] = field(default_factory=list)
    """(Idempotency-Key header, call_id, fault) of every POST /surveys received."""
    raw_answers: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    """Path -> (status, body) answered verbatim to GETs of that path (broken answers)."""
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    """(method, raw path, headers) of every request."""
    exchanges: list[Exchange] = field(default_factory=list)
    """Every request with its answer (a dropped connection's answer is never sent)."""
    paused: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a request is paused inside the CRM."""
    in_flight: int = 0
    """POST /tickets and /surveys requests being handled right now."""
    url: str = ""
    _in_progress: set[str] = field(default_factory=set)
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _refs: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, port: int = 0) -> FakeCrm:
        """Listen on ``port`` (0: a free one); a CRM that comes back listens where it was."""
        app = web.Application(middlewares=[self._authenticate])
        app.router.add_post("/api/tickets", self._create_ticket)
        app.router.add_get("/api/tickets/{ticket_id}", self._get_ticket)
        app.router.add_get("/api/customers", self._find_customer)
        app.router.add_get("/api/outages", self._outages)
        app.router.add_get("/api/accounts/{account}/bill", self._bill)
        app.router.add_post("/api/surveys", self._survey)
        # A held request must not keep the test waiting at shutdown.
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/api"
        self._idle.set()
        return self

    async def stop(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def port(self) -> int:
        """Where it listens (or listened)."""
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    def release(self) -> None:
        """Let paused requests go on."""
        self._release.set()

    async def idle(self) -> None:
        """Wait until no POST is being handled (held or paused ones finished)."""
        await self._idle.wait()

    def script(self, *faults: str) -> None:
        """Queue faults for the next attempts."""
        for fault in faults:
            assert fault in FAULTS, fault
        self.faults.extend(faults)

    def by_ticket_id(self) -> dict[str, dict[str, Any]]:
        """The CRM's tickets by the number the caller was told."""
        return {t["ticket_id"]: t for t in self.tickets.values()}

    # ------------------------------------------------------------------ auth

    @web.middleware
    async def _authenticate(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        body = await request.read()
        self.seen.append((request.method, request.raw_path, dict(request.headers)))
        response: web.StreamResponse
        if self.auth == "bearer" and (
            request.headers.get("Authorization") != f"Bearer {self.secret}"
        ):
            response = _error(401, "unauthorized", "missing or wrong bearer token")
        elif self.auth == "hmac" and (problem := self._check_signature(request, body)):
            response = _error(401, "bad-signature", problem)
        else:
            response = await handler(request)
        answer = response.body if isinstance(response, web.Response) else b""
        self.exchanges.append(
            Exchange(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=dict(request.headers),
                body=body,
                status=response.status,
                content_type=response.content_type,
                answer=answer if isinstance(answer, bytes) else b"",
            )
        )
        return response

    def _check_signature(self, request: web.Request, body: bytes) -> str:
        # The recipe of docs/crm-openapi.yaml, written out here rather than imported, so the
        # test checks the adapter against the document and not against itself.
        stamp = request.headers.get("X-Hotline-Timestamp", "")
        given = request.headers.get("X-Hotline-Signature", "")
        if not stamp.isdigit() or not given:
            return "X-Hotline-Timestamp and X-Hotline-Signature are required"
        if abs(self.clock() - int(stamp)) > HMAC_SKEW_SECONDS:
            return "the timestamp is too far from the CRM's time"
        canonical = "\n".join(
            [request.method, request.raw_path, stamp, hashlib.sha256(body).hexdigest()]
        )
        wanted = hmac.new(self.secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(wanted, given):
            return "the signature does not match"
        return ""

    # ------------------------------------------------------------------ tickets

    async def _create_ticket(self, request: web.Request) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key", "")
        raw = await request.read()
        body = json.loads(raw)
        fault = self.faults.popleft() if self.faults else self.default_fault
        self.attempts.append((key, str(body.get("ticket_id")), fault))
        if not key:
            return _error(400, "no-idempotency-key", "Idempotency-Key is required")
        self.bodies.setdefault(key, set()).add(json.dumps(body, sort_keys=True))
        return await self._handle(request, key, body, fault, self._commit)

    async def _handle(
        self,
        request: web.Request,
        key: str,
        body: dict[str, Any],
        fault: str,
        commit: Callable[[str, dict[str, Any]], tuple[int, dict[str, Any] | None]],
    ) -> web.StreamResponse:
        self.in_flight += 1
        self._idle.clear()
        try:
            return await self._apply(request, key, body, fault, commit)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def _apply(
        self,
        request: web.Request,
        key: str,
        body: dict[str, Any],
        fault: str,
        commit: Callable[[str, dict[str, Any]], tuple[int, dict[str, Any] | None]],
    ) -> web.StreamResponse:
        if fault in ("500", "429"):
            return _error(int(fault), "unavailable", "try again later")
        if fault == "drop-before":
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if key in self._in_progress:
            return _error(409, "request-in-progress", "a request with this key is in progress")
        self._in_progress.add(key)
        try:
            if fault == "slow":
                await asyncio.sleep(self.slow_seconds)
            elif fault == "timeout":
                await asyncio.sleep(self.hold_seconds)
            elif fault == "pause-before-commit":
                await self._pause()
            status, answer = commit(key, body)
            if status == 422:
                what = "ticket" if "ticket_id" in body else "survey"
                return _error(422, "key-reused", f"this key was used for another {what}")
        finally:
            self._in_progress.discard(key)
        if fault == "pause-after-commit":
            await self._pause()
        if fault == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if fault == "malformed":
            return web.Response(
                status=200, text='{"crm_ref": "CRM-', content_type="application/json"
            )
        if fault == "missing":
            return web.json_response({"ticket_id": body.get("ticket_id")})
        if fault == "oversized":
            return web.json_response({self.ref_field: "R" * 10_000})
        if answer is None:
            return web.Response(status=status)
        return web.json_response(answer, status=status)

    async def _pause(self) -> None:
        self.paused.set()
        await self._release.wait()

    def _commit(self, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        existing = self.tickets.get(key)
        status = 201
        if existing is not None:
            same = {k: v for k, v in existing.items() if k != "crm_ref"} == body
            status = 200 if same else 422
        else:
            existing = {**body, "crm_ref": f"CRM-{next(self._refs)}"}
            self.tickets[key] = existing
            self.created[str(body.get("ticket_id"))] += 1
        return status, {"ticket_id": existing.get("ticket_id"), self.ref_field: existing["crm_ref"]}

    async def _get_ticket(self, request: web.Request) -> web.StreamResponse:
        if request.raw_path in self.raw_answers:
            return self._raw(request.raw_path)
        ticket = self.by_ticket_id().get(request.match_info["ticket_id"])
        if ticket is None:
            return _error(404, "not-found", "no such ticket")
        return web.json_response(
            {
                **ticket,
                "status": "submitted",
                "history": [{"status": "submitted", "at": ticket["created_at"], "note": ""}],
            }
        )

    def _raw(self, path: str) -> web.Response:
        status, body = self.raw_answers[path]
        return web.Response(status=status, body=body, content_type="application/json")

    # ------------------------------------------------------------------ the rest

    async def _find_customer(self, request: web.Request) -> web.StreamResponse:
        if request.raw_path in self.raw_answers:
            return self._raw(request.raw_path)
        phone, account = request.query.get("phone"), request.query.get("account")
        if bool(phone) == bool(account):
            return _error(400, "bad-query", "give phone or account")
        for customer in self.customers:
            if phone in customer.get("phones", []) or account in customer.get("accounts", []):
                return web.json_response(customer)
        return _error(404, "not-found", "no such customer")

    async def _outages(self, request: web.Request) -> web.StreamResponse:
        if request.path in self.raw_answers:
            return self._raw(request.path)
        at = float(request.query["at"])
        found = []
        for notice in self.outages:
            area = notice["area"]
            if notice["starts_at"] > at or (notice.get("ended_at") or at + 1) <= at:
                continue
            if all(
                not area.get(level) or request.query.get(level) == area[level]
                for level in ("province", "city", "district", "street")
            ):
                found.append(notice)
        return web.json_response({"outages": found})

    async def _bill(self, request: web.Request) -> web.StreamResponse:
        if request.raw_path in self.raw_answers:
            return self._raw(request.raw_path)
        bill = self.bills.get(request.match_info["account"])
        if bill is None:
            return _error(404, "not-found", "no such account")
        return web.json_response(bill)

    async def _survey(self, request: web.Request) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key", "")
        body = json.loads(await request.read())
        fault = self.faults.popleft() if self.faults else self.default_fault
        self.survey_attempts.append((key, str(body.get("call_id")), fault))
        if key != f"{body.get('call_id')}:survey":
            return _error(400, "bad-key", "Idempotency-Key must be <call_id>:survey")
        return await self._handle(request, key, body, fault, self._store_survey)

    def _store_survey(self, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        existing = self.surveys.get(body["call_id"])
        if existing is not None:
            return (200 if existing == body else 422), None
        self.surveys[body["call_id"]] = body
        self.surveys_created[body["call_id"]] += 1
        return 201, None
