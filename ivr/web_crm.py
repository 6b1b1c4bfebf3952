"""The CRM admin API: tickets (工单) listed, read and moved on; this node's outbox and its dead
letters; outage notices posted and ended; the demo data loaded.

Reading a ticket is part of every CRM backend (`CrmBackend.get_ticket`), so it works whatever
the node's CRM is; a ticket the CRM does not have yet (or cannot be asked about, being down) is
answered from this node's outbox with its ``delivery``. The outbox endpoints work with any
backend too. The rest are the embedded store's own operations: with an external CRM they
answer 503 ``crm-not-embedded`` (that CRM has its own tools). Errors: ``no-such-ticket`` /
``no-such-outage`` / ``no-such-dead-letter`` 404, ``invalid-request`` 400 naming the field,
``ticket-closed`` 409, ``crm-unavailable`` 503 (no CRM or outbox on this node, or the CRM
cannot be reached), ``crm-rejected`` 502. Who may change state is `ivr.web_api`'s rule.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from crm_bridge.backend import CrmBackend
from crm_bridge.embedded import MAX_LIST, EmbeddedCrm, TicketClosedError
from crm_bridge.errors import (
    CrmRejectedError,
    CrmUnavailableError,
    NotFoundError,
    TicketInvalidError,
)
from crm_bridge.model import MAX_DESCRIPTION, Address, Outage, OutageKind, Ticket, TicketStatus
from crm_bridge.outbox import DeliveryState, Outbox, OutboxEntry, OutboxKind, OutboxStats
from ivr.logs import mask_phone, mask_phone_numbers
from ivr.web_api import ApiError, Handler, invalid, json_body, number, text_field

log = structlog.get_logger(__name__)

DEFAULT_LIMIT = 50
"""Tickets `GET /api/tickets` answers when no limit is given."""

STATUS_CHOICES = tuple(s.value for s in TicketStatus if s is not TicketStatus.NEW)
"""Statuses an operator may set (``new`` only ever means "not yet in the CRM")."""

OUTAGE_FIELDS = frozenset(
    {"province", "city", "district", "street", "kind", "cause", "starts_at", "restore_at"}
)
"""What `POST /api/outages` takes."""


@dataclass(frozen=True)
class CrmApi:
    """What the handlers need: the node's CRM (None when it has none) and the clock."""

    backend: CrmBackend | None
    """The node's CRM backend."""
    clock: Callable[[], float]
    """Seconds since the epoch: the ``now`` of status changes, outage ends and "active"."""
    outbox: Outbox | None = None
    """This node's outbox (None when it has none)."""


CRM_KEY = web.AppKey("crm_api", CrmApi)


def _dumps(value: Any) -> str:
    # Addresses, causes and notes are Mandarin: keep them readable in the answer.
    return json.dumps(value, ensure_ascii=False)


def _backend(request: web.Request) -> tuple[CrmBackend, float]:
    """The node's CRM and ``now`` (503 ``crm-unavailable`` when the node has no CRM)."""
    api = request.app[CRM_KEY]
    if api.backend is None:
        raise ApiError("crm-unavailable", "no CRM is connected on this node", status=503)
    return api.backend, api.clock()


async def _answer(request: web.Request, work: Awaitable[Any]) -> web.StreamResponse:
    """Await a handler's work: the bridge's errors become ApiErrors, a dict becomes JSON (200),
    a response goes as it is."""
    try:
        answer = await work
    except TicketInvalidError as exc:
        raise invalid(exc.field, exc.problem) from None
    except TicketClosedError as exc:
        raise ApiError(exc.error_id, str(exc), status=409) from None
    except NotFoundError as exc:
        raise ApiError(exc.error_id, str(exc), status=404) from None
    except CrmUnavailableError as exc:
        log.warning("crm unreachable", path=request.path, error=str(exc))
        raise ApiError(exc.error_id, f"the CRM cannot be reached: {exc}", status=503) from None
    except CrmRejectedError as exc:
        raise ApiError(exc.error_id, f"the CRM refused: {exc}", status=502) from None
    if isinstance(answer, web.StreamResponse):
        return answer
    return web.json_response(answer, dumps=_dumps)


def _any_backend(handler: Callable[[web.Request, CrmBackend, float], Awaitable[Any]]) -> Handler:
    """For what every CRM backend does: the handler gets the backend and ``now``."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        backend, now = _backend(request)
        return await _answer(request, handler(request, backend, now))

    return wrapped


def _embedded(handler: Callable[[web.Request, EmbeddedCrm, float], Awaitable[Any]]) -> Handler:
    """For the embedded store's own operations: 503 ``crm-not-embedded`` with another CRM."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        backend, now = _backend(request)
        if not isinstance(backend, EmbeddedCrm):
            raise ApiError(
                "crm-not-embedded",
                f"this node's CRM is {backend.name!r}; only the embedded store is run through "
                "this API (use the CRM's own tools)",
                status=503,
            )
        return await _answer(request, handler(request, backend, now))

    return wrapped


# ---------------------------------------------------------------------- JSON forms


def ticket_json(ticket: Ticket) -> dict[str, Any]:
    """A ticket as the API shows it."""
    address = ticket.address
    return {
        "ticket_id": ticket.ticket_id,
        "crm_ref": ticket.crm_ref,
        "idempotency_key": ticket.idempotency_key,
        "ticket_type": ticket.ticket_type,
        "status": ticket.status.value,
        "priority": ticket.priority,
        "urgent": ticket.urgent,
        "created_at": ticket.created_at,
        "updated_at": ticket.updated_at,
        "caller": ticket.caller,
        "account": ticket.account,
        "customer_id": ticket.customer_id,
        "address": {
            "province": address.province,
            "city": address.city,
            "district": address.district,
            "street": address.street,
            "number": address.number,
            "raw": address.raw,
        },
        "description": ticket.description,
        "source": ticket.source.value,
        "call_id": ticket.call_id,
        "ivr_path": list(ticket.ivr_path),
        "complete": ticket.complete,
        "fields": dict(ticket.fields),
        "history": [{"status": h.status.value, "at": h.at, "note": h.note} for h in ticket.history],
    }


def stats_json(stats: OutboxStats) -> dict[str, Any]:
    """The outbox at a glance, as `GET /api/outbox` and /healthz show it."""
    return {
        "backlog": stats.backlog,
        "oldest_age_seconds": round(stats.oldest_age_seconds, 3),
        "dead_letters": stats.dead_letters,
        "delivered": stats.delivered,
        "backlog_by_kind": {kind.value: stats.backlog_by_kind.get(kind, 0) for kind in OutboxKind},
    }


def _error_text(entry: OutboxEntry) -> str:
    """The last error without phone numbers: a CRM's refusal may quote the ticket (or survey)
    back. Mobile numbers are masked wherever they are; its own caller (a landline too) by name."""
    error = entry.last_error
    caller = entry.item.caller
    if caller:
        # Under a phone key `ivr.logs` masks every 7+ digit run, landlines included.
        masked = mask_phone_numbers(None, "", {"caller": caller})["caller"]
        error = error.replace(caller, str(masked))
    return mask_phone(error)


def delivery_json(entry: OutboxEntry) -> dict[str, Any]:
    """How a ticket's delivery to the CRM goes (``next_at`` only while it is pending)."""
    pending = entry.state is DeliveryState.PENDING
    return {
        "state": entry.state.value,
        "attempts": entry.attempts,
        "submitted_at": entry.submitted_at,
        "last_attempt_at": entry.last_attempt_at,
        "next_at": entry.next_at if pending else None,
        "last_error": _error_text(entry),
        "done_at": entry.done_at,
    }


def dead_letter_json(entry: OutboxEntry) -> dict[str, Any]:
    """A dead letter in `GET /api/outbox`: its ``id`` (what `POST /api/outbox/retry` takes: a
    ticket's number, a survey's ``survey-…`` id), ``kind``, the ticket's type ('' for a
    survey), the call, how often tried, why and when; no caller."""
    item = entry.item
    return {
        "id": entry.item_id,
        "kind": entry.kind.value,
        "ticket_type": item.ticket_type if isinstance(item, Ticket) else "",
        "call_id": item.call_id,
        "attempts": entry.attempts,
        "last_error": _error_text(entry),
        "submitted_at": entry.submitted_at,
        "dead_at": entry.done_at,
    }


def area_text(area: Address) -> str:
    """An area as one line, the way it is read out (江苏省南京市鼓楼区)."""
    return "".join((area.province, area.city, area.district, area.street))


def outage_json(outage: Outage, now: float) -> dict[str, Any]:
    """An outage notice, and whether it is active at ``now``."""
    return {
        "outage_id": outage.outage_id,
        "province": outage.area.province,
        "city": outage.area.city,
        "district": outage.area.district,
        "street": outage.area.street,
        "area": area_text(outage.area),
        "kind": outage.kind.value,
        "cause": outage.cause,
        "starts_at": outage.starts_at,
        "restore_at": outage.restore_at,
        "ended_at": outage.ended_at,
        "active": outage.active(now),
    }


# ---------------------------------------------------------------------- request parts


def _query(request: web.Request, allowed: frozenset[str]) -> Mapping[str, str]:
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise invalid(unknown[0], f"not a parameter here; this takes {', '.join(sorted(allowed))}")
    return request.query


def _query_number(query: Mapping[str, str], name: str) -> float | None:
    if name not in query:
        return None
    try:
        value = number(json.loads(query[name]))
    except ValueError:
        value = None
    if value is None:
        raise invalid(name, "must be a number (seconds since the epoch)")
    return value


def _time_field(body: Mapping[str, Any], name: str) -> float | None:
    """An optional time field (seconds since the epoch; null or absent: None)."""
    if body.get(name) is None:
        return None
    value = number(body[name])
    if value is None:
        raise invalid(name, "must be a number (seconds since the epoch) or null")
    return value


def _status(value: object) -> TicketStatus:
    if value not in STATUS_CHOICES:
        raise invalid("status", f"must be one of {', '.join(STATUS_CHOICES)}")
    return TicketStatus(str(value))


_TICKET_ID = re.compile(r"[A-Za-z0-9-]{1,40}")
"""What a ticket number may be (as `crm_bridge.model.Ticket` checks it)."""


def _ticket_id(request: web.Request) -> str:
    ticket_id = request.match_info["ticket_id"]
    if not _TICKET_ID.fullmatch(ticket_id):
        raise invalid("ticket_id", "1-40 letters, digits or '-'")
    return ticket_id


def _no_such_ticket(ticket_id: str) -> ApiError:
    return ApiError("no-such-ticket", f"no ticket {ticket_id}", status=404)


def _changed(request: web.Request, action: str, **details: Any) -> None:
    """Who changed what, for the log (the store logs the change itself too)."""
    log.info("crm changed", action=action, peer=request.remote, **details)


# ---------------------------------------------------------------------- tickets


@_embedded
async def list_tickets(request: web.Request, crm: EmbeddedCrm, now: float) -> dict[str, Any]:
    """`GET /api/tickets?status=&since=&limit=`: the newest tickets first."""
    query = _query(request, frozenset({"status", "since", "limit"}))
    status = _status(query["status"]) if "status" in query else None
    since = _query_number(query, "since")
    limit_text = query.get("limit", str(DEFAULT_LIMIT))
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIST:
        raise invalid("limit", f"a whole number 1..{MAX_LIST}")
    tickets = await crm.list_tickets(status=status, since=since, limit=int(limit_text))
    return {"tickets": [ticket_json(t) for t in tickets]}


@_any_backend
async def get_ticket(request: web.Request, crm: CrmBackend, now: float) -> dict[str, Any]:
    """`GET /api/tickets/{ticket_id}`: a ticket with its status and history; one the CRM does
    not have yet (or cannot be asked about) is answered from the outbox, as it was submitted,
    with its ``delivery`` (`delivery_json`)."""
    ticket_id = _ticket_id(request)
    try:
        ticket = await crm.get_ticket(ticket_id)
    except CrmUnavailableError:
        # Right after a call with the CRM down, the ticket the caller was told is here.
        undelivered = await _undelivered(request, ticket_id)
        if undelivered is None:
            raise
        log.info("ticket answered from the outbox", ticket_id=ticket_id, reason="crm-unavailable")
        return {**ticket_json(undelivered[0]), "delivery": delivery_json(undelivered[1])}
    if ticket is None:
        undelivered = await _undelivered(request, ticket_id)
        if undelivered is None:
            raise _no_such_ticket(ticket_id)
        return {**ticket_json(undelivered[0]), "delivery": delivery_json(undelivered[1])}
    return ticket_json(ticket)


async def _undelivered(request: web.Request, ticket_id: str) -> tuple[Ticket, OutboxEntry] | None:
    """The outbox's row for a ticket not delivered yet (pending or dead), if any. A delivered
    one is the CRM's to answer: the outbox only holds it as it was submitted. (A survey's row
    is no ticket.)"""
    outbox = request.app[CRM_KEY].outbox
    entry = None if outbox is None else await outbox.get(ticket_id)
    if entry is None or entry.state is DeliveryState.DELIVERED:
        return None
    if not isinstance(entry.item, Ticket):
        return None
    return entry.item, entry


@_embedded
async def set_ticket_status(request: web.Request, crm: EmbeddedCrm, now: float) -> dict[str, Any]:
    """`POST /api/tickets/{ticket_id}/status` ``{"status", "note"}``."""
    ticket_id = _ticket_id(request)
    body = await json_body(request, allowed=frozenset({"status", "note"}))
    if "status" not in body:
        raise invalid("status", f"required: one of {', '.join(STATUS_CHOICES)}")
    status = _status(body["status"])
    note = text_field(body, "note", default="", max_length=MAX_DESCRIPTION)
    try:
        ticket = await crm.set_status(ticket_id, status, note, now)
    except NotFoundError:
        raise _no_such_ticket(ticket_id) from None
    _changed(request, "ticket_status", ticket_id=ticket_id, status=status.value)
    return ticket_json(ticket)


# ---------------------------------------------------------------------- the outbox

MAX_DEAD_LETTERS_SHOWN = MAX_LIST
"""Dead letters `GET /api/outbox` lists at most (the oldest; ``stats.dead_letters`` counts all)."""


def _outbox(request: web.Request) -> tuple[Outbox, float]:
    """This node's outbox and ``now`` (503 ``crm-unavailable`` when it has none)."""
    api = request.app[CRM_KEY]
    if api.outbox is None:
        raise ApiError("crm-unavailable", "no CRM outbox is open on this node", status=503)
    return api.outbox, api.clock()


async def get_outbox(request: web.Request) -> web.StreamResponse:
    """`GET /api/outbox`: ``stats`` (backlog, oldest age, dead letters, delivered) and the
    ``dead_letters``, oldest first (`dead_letter_json`: no caller numbers)."""
    outbox, now = _outbox(request)
    _query(request, frozenset())
    stats = await outbox.stats(now)
    dead = await outbox.dead_letters()
    answer = {
        "stats": stats_json(stats),
        "dead_letters": [dead_letter_json(e) for e in dead[:MAX_DEAD_LETTERS_SHOWN]],
    }
    return web.json_response(answer, dumps=_dumps)


async def retry_outbox(request: web.Request) -> web.StreamResponse:
    """`POST /api/outbox/retry` ``{"id": optional}``: replay that dead letter (a ticket's number
    or a survey's id; ``ticket_id`` is taken too, as before surveys), or every one: pending
    again, due at once, attempts from zero. ``{"replayed": n}``."""
    outbox, now = _outbox(request)
    body = await json_body(request, allowed=frozenset({"id", "ticket_id"}))
    if "id" in body and "ticket_id" in body:
        raise invalid("ticket_id", "give id alone")
    name = "ticket_id" if "ticket_id" in body else "id"
    item_id = body.get(name)
    if item_id is not None and (not isinstance(item_id, str) or not _TICKET_ID.fullmatch(item_id)):
        raise invalid(name, "1-40 letters, digits or '-', or null for every one")
    try:
        replayed = await outbox.retry(item_id, now=now)
    except NotFoundError:
        raise ApiError(
            "no-such-dead-letter", f"{item_id} is not a dead letter in this node's outbox", 404
        ) from None
    _changed(request, "outbox_retry", item_id=item_id, replayed=replayed)
    return web.json_response({"replayed": replayed}, dumps=_dumps)


# ---------------------------------------------------------------------- outages


@_embedded
async def list_outages(request: web.Request, crm: EmbeddedCrm, now: float) -> dict[str, Any]:
    """`GET /api/outages?active=true|false&at=EPOCH`: every notice, most recent start first;
    with ``active=true`` only those active now, with ``at`` those active then."""
    query = _query(request, frozenset({"active", "at"}))
    active = query.get("active", "false").lower()
    if active not in ("true", "false", "1", "0"):
        raise invalid("active", "true or false")
    at = _query_number(query, "at")
    if at is None and active in ("true", "1"):
        at = now
    outages = await crm.list_outages(active_at=at)
    return {"outages": [outage_json(o, now) for o in outages]}


@_embedded
async def post_outage(request: web.Request, crm: EmbeddedCrm, now: float) -> web.Response:
    """`POST /api/outages` ``{"province", "city", "district", "street", "kind", "cause",
    "starts_at", "restore_at"}`` (starts_at default now, restore_at unknown): 201."""
    body = await json_body(request, allowed=OUTAGE_FIELDS)
    area = Address(
        province=text_field(body, "province", default=""),
        city=text_field(body, "city", default=""),
        district=text_field(body, "district", default=""),
        street=text_field(body, "street", default=""),
    )
    kinds = [k.value for k in OutageKind]
    kind = body.get("kind")
    if kind not in kinds:
        raise invalid("kind", f"required: one of {', '.join(kinds)}")
    cause = text_field(body, "cause")
    starts_at = _time_field(body, "starts_at")
    outage = await crm.post_outage(
        area,
        OutageKind(kind),
        cause,
        now if starts_at is None else starts_at,
        _time_field(body, "restore_at"),
    )
    _changed(request, "outage_post", outage_id=outage.outage_id, area=area_text(area))
    return web.json_response(outage_json(outage, now), status=201, dumps=_dumps)


@_embedded
async def end_outage(request: web.Request, crm: EmbeddedCrm, now: float) -> dict[str, Any]:
    """`POST /api/outages/{outage_id}/end`: the notice is over now (an ended one keeps its
    end)."""
    outage_id = request.match_info["outage_id"]
    await json_body(request, allowed=frozenset())
    try:
        outage = await crm.end_outage(outage_id, now)
    except NotFoundError:
        raise ApiError("no-such-outage", f"no outage {outage_id}", status=404) from None
    _changed(request, "outage_end", outage_id=outage_id)
    return outage_json(outage, now)


# ---------------------------------------------------------------------- demo data


@_embedded
async def seed_demo(request: web.Request, crm: EmbeddedCrm, now: float) -> dict[str, Any]:
    """`POST /api/crm/seed-demo`: load the demo customers, bills and outages (again: nothing
    doubles)."""
    await json_body(request, allowed=frozenset())
    seeded = await crm.seed_demo(now)
    _changed(request, "seed_demo", outages_added=seeded.outages_added)
    return {
        "customers": seeded.customers,
        "bills": seeded.bills,
        "outages_added": seeded.outages_added,
    }


def add_crm_routes(
    app: web.Application,
    backend: CrmBackend | None,
    clock: Callable[[], float],
    outbox: Outbox | None = None,
) -> None:
    """Add the tickets, outbox, outages and demo-data endpoints to ``app``."""
    app[CRM_KEY] = CrmApi(backend, clock, outbox)
    app.router.add_routes(
        [
            web.get("/api/tickets", list_tickets),
            web.get("/api/tickets/{ticket_id}", get_ticket),
            web.post("/api/tickets/{ticket_id}/status", set_ticket_status),
            web.get("/api/outbox", get_outbox),
            web.post("/api/outbox/retry", retry_outbox),
            web.get("/api/outages", list_outages),
            web.post("/api/outages", post_outage),
            web.post("/api/outages/{outage_id}/end", end_outage),
            web.post("/api/crm/seed-demo", seed_demo),
        ]
    )
