"""CrmService: the session driver's `Crm` interface (``ivr.services``) over the CRM bridge.

This is the one CRM module that knows the IVR's action types and slot names; ``crm_bridge``
knows nothing of dialogs. A work order is made here from what the call collected, given a number
allocated on this node, and written to the node's outbox in the same transaction before the
caller hears the number: the CRM being down costs the caller nothing, the delivery worker brings
the ticket over later. A survey goes through the outbox the same way. Lookups ask the backend
directly (a caller waits for the answer), and a failed lookup takes the flow's error path.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

import aiosqlite
import structlog

from crm_bridge.backend import CrmBackend
from crm_bridge.errors import CrmError, CrmUnavailableError, NotFoundError, TicketInvalidError
from crm_bridge.model import (
    MAX_DESCRIPTION,
    MAX_EXTRA_FIELDS,
    MAX_FIELD,
    TICKET_TYPES,
    Address,
    Customer,
    Outage,
    Survey,
    Ticket,
    TicketSource,
    TicketStatus,
    idempotency_key,
)
from crm_bridge.numbers import CHINA_TIME, TicketNumbers
from crm_bridge.outbox import Outbox
from ivr.desk_ticket import DeskTicket
from ivr.dialog import actions as act
from ivr.dialog.engine import CallContext
from ivr.services import LookupReply, ServiceError
from speech.address import ParsedAddress, parse_address

log = structlog.get_logger("crm")

T = TypeVar("T")

STATUS_TEXT: Mapping[TicketStatus, str] = {
    TicketStatus.NEW: "已受理，正在转交处理部门",
    TicketStatus.SUBMITTED: "已受理，正在安排处理",
    TicketStatus.IN_PROGRESS: "正在处理中",
    TicketStatus.RESOLVED: "已处理完毕",
    TicketStatus.CLOSED: "已办结",
}
"""What the ticket-status self-service reads out for each status."""

_PHONE = re.compile(r"\+?[0-9]{1,20}")

DESK_PRIORITY: Mapping[str, int] = {"故障报修": 50, "投诉": 40, "举报": 40, "业扩报装": 30}
"""A desk work order's priority by type (an urgent one is 100, others 20)."""

_DESCRIBED = ("intent", "hazard", "address", "account", "callback_number", "queue.exit_reason")
"""Slots written into a ticket's description, in this order, when present."""


class CrmService:
    """Tickets and surveys through this node's outbox; lookups straight to the backend."""

    def __init__(
        self,
        backend: CrmBackend,
        outbox: Outbox,
        numbers: TicketNumbers,
        *,
        clock: Callable[[], float] = time.time,
        ticket_types: tuple[str, ...] = TICKET_TYPES,
        region: tuple[str, str] = ("", ""),
    ) -> None:
        self.backend = backend
        self.outbox = outbox
        self.numbers = numbers
        self.clock = clock
        self.ticket_types = ticket_types
        """Work-order types the operator allows."""
        self.region = region
        """The hotline's province and city: they fill what a caller leaves out of an address."""

    @property
    def name(self) -> str:
        """For logs and the health page."""
        return self.backend.name

    # ------------------------------------------------------------------ tickets

    async def create_ticket(self, request: act.CreateTicket, context: CallContext) -> str:
        """Queue the work order and return its number (the same one if asked again)."""
        now = self.clock()
        outcome = f"{request.ticket_type}:{'complete' if request.complete else 'partial'}"
        key = idempotency_key(context.call_id, outcome)

        async def make(db: aiosqlite.Connection) -> Ticket:
            number = await self.numbers.allocate_in_transaction(now)
            return self._ticket(number, key, request, context, now)

        try:
            # Checked before anything is written: an unknown type is a flow error to fix.
            self._ticket("0", key, request, context, now).validate(self.ticket_types)
            ticket = await self.outbox.submit_new(key, make, now=now)
        except TicketInvalidError as exc:
            log.error("ticket refused", field=exc.field, problem=exc.problem)
            raise ServiceError("invalid_ticket", str(exc)) from exc
        log.info(
            "ticket queued",
            ticket_id=ticket.ticket_id,
            ticket_type=ticket.ticket_type,
            urgent=ticket.urgent,
            complete=ticket.complete,
        )
        return ticket.ticket_id

    def _ticket(
        self,
        number: str,
        key: str,
        request: act.CreateTicket,
        context: CallContext,
        now: float,
    ) -> Ticket:
        slots = request.fields
        spoken = slots.get("address", "")
        address = _understood(slots, spoken)
        if address is None:
            address = _address(self._parse(spoken)) if spoken else Address()
        account = slots.get("account", "")
        return Ticket(
            ticket_id=number,
            idempotency_key=key,
            ticket_type=request.ticket_type,
            priority=max(0, min(100, request.priority)),
            created_at=now,
            urgent=slots.get("hazard") == "yes",
            caller=context.caller if context.caller.lstrip("+").isdigit() else "",
            account=account if account.isdigit() else "",
            address=address,
            description=_description(slots),
            source=TicketSource.IVR_AGENT if slots.get("agent_id") else TicketSource.IVR,
            call_id=context.call_id[:MAX_FIELD],
            ivr_path=tuple(request.path[-500:]),
            complete=request.complete,
            fields=_fields(slots),
        )

    async def desk_ticket(
        self, desk: DeskTicket, *, call_id: str, agent_id: str, code: str, skill: str = ""
    ) -> Ticket:
        """Queue the work order an agent completed on the desk, with their wrap-up code; one
        per call (its key is ``<call id>:desk``): completing again answers the first."""
        now = self.clock()
        key = idempotency_key(call_id[:MAX_FIELD], "desk")
        extra = {
            "wrap_code": code,
            "agent_id": agent_id,
            "intent": desk.intent,
            "address_confidence": desk.address_confidence,
            "queue.skill": skill,
        }

        def build(number: str) -> Ticket:
            return Ticket(
                ticket_id=number,
                idempotency_key=key,
                ticket_type=desk.ticket_type,
                priority=100 if desk.urgent else DESK_PRIORITY.get(desk.ticket_type, 20),
                created_at=now,
                urgent=desk.urgent,
                caller=desk.caller,
                account=desk.account,
                address=_address(self._parse(desk.address)) if desk.address else Address(),
                description=_clip(desk.description, MAX_DESCRIPTION),
                source=TicketSource.IVR_AGENT,
                call_id=call_id[:MAX_FIELD],
                fields={k: _clip(v, MAX_FIELD) for k, v in extra.items() if v},
            )

        async def make(db: aiosqlite.Connection) -> Ticket:
            return build(await self.numbers.allocate_in_transaction(now))

        try:
            build("0").validate(self.ticket_types)
            ticket = await self.outbox.submit_new(key, make, now=now)
        except TicketInvalidError as exc:
            raise ServiceError("invalid_ticket", str(exc)) from exc
        log.info(
            "desk ticket queued",
            ticket_id=ticket.ticket_id,
            ticket_type=ticket.ticket_type,
            agent_id=agent_id,
            wrap_code=code,
        )
        return ticket

    def _parse(self, text: str) -> ParsedAddress:
        province, city = self.region
        return parse_address(text, default_province=province, default_city=city)

    # ------------------------------------------------------------------ lookups

    async def lookup(self, request: act.Lookup, context: CallContext) -> LookupReply:
        """Answer a self-service lookup from the backend."""
        params = request.params
        match request.service:
            case "customer_by_phone":
                phone = params.get("caller") or context.caller
                if not _is_phone(phone):
                    return LookupReply("not_found")  # anonymous, or a SIP URI's user part
                customer = await _ask(self.backend.find_customer(phone=phone))
                return _customer_reply(customer)
            case "bill_summary":
                account = params.get("account", "")
                if not account.isdigit():
                    return LookupReply("not_found")
                bill = await _ask(self.backend.bill_summary(account))
                if bill is None:
                    return LookupReply("not_found")
                return LookupReply(
                    "found",
                    {
                        "balance": _yuan(bill.balance_fen),
                        "amount_due": _yuan(bill.amount_due_fen),
                        "due_date": bill.due_date,
                    },
                )
            case "outage_by_address":
                return await self._outage(params, context)
            case "ticket_status":
                return await self._ticket_status(params.get("ticket_id", ""))
            case _:
                raise ServiceError("unknown_lookup", f"no lookup named {request.service!r}")

    async def _outage(self, params: Mapping[str, str], context: CallContext) -> LookupReply:
        """A known outage where the caller is: by the spoken address, else the account's
        address, else the address of the customer calling from this number."""
        now = self.clock()
        places: list[Address] = []
        if params.get("district") or params.get("city"):
            # The dialog understood the address (corrected against the street list).
            places.append(
                Address(
                    province=params.get("province", ""),
                    city=params.get("city", ""),
                    district=params.get("district", ""),
                    street=params.get("street", "")[:MAX_FIELD],
                )
            )
        elif params.get("address"):
            parsed = self._parse(params["address"])
            if parsed.district or parsed.city:
                places.append(_address(parsed))
        account = params.get("account", "")
        if not places and account.isdigit():
            customer = await _ask(self.backend.find_customer(account=account))
            if customer is not None and customer.address.known:
                places.append(customer.address)
        caller = params.get("caller") or context.caller
        if not places and _is_phone(caller):
            customer = await _ask(self.backend.find_customer(phone=caller))
            if customer is not None and customer.address.known:
                places.append(customer.address)
        for place in places:
            outages = await _ask(self.backend.outages(place, now))
            if outages:
                return LookupReply("found", _outage_slots(outages[0], now))
        return LookupReply("not_found")

    async def _ticket_status(self, ticket_id: str) -> LookupReply:
        if not ticket_id.isdigit():
            return LookupReply("not_found")
        ticket = await _ask(self.backend.get_ticket(ticket_id))
        if ticket is None:
            # Not in the CRM yet: it may still be on its way from this node's outbox.
            entry = await self.outbox.get(ticket_id)
            if entry is None:
                return LookupReply("not_found")
            return LookupReply("found", {"status_text": STATUS_TEXT[TicketStatus.NEW]})
        text = STATUS_TEXT[ticket.status]
        if ticket.history and ticket.history[-1].note:
            text = f"{text}：{ticket.history[-1].note}"
        return LookupReply("found", {"status_text": text, "status": ticket.status.value})

    # ------------------------------------------------------------------ surveys

    async def record_survey(self, request: act.RecordSurvey, context: CallContext) -> None:
        """Queue the rating in this node's outbox (the worker brings it to the CRM, as it does
        tickets: a CRM that is down loses no survey). A call's first rating stays."""
        now = self.clock()
        try:
            survey = Survey(
                call_id=context.call_id[:MAX_FIELD],
                score=request.score,
                at=now,
                agent_id=request.agent_id[:MAX_FIELD],
                caller=context.caller if context.caller.lstrip("+").isdigit() else "",
            )
            kept = await self.outbox.submit_survey(survey, now=now)
        except TicketInvalidError as exc:
            log.error("survey refused", field=exc.field, problem=exc.problem)
            raise ServiceError("invalid_survey", str(exc)) from exc
        log.info("survey queued", score=kept.score, repeated=kept != survey)


async def _ask(work: Awaitable[T]) -> T:
    """Await a backend call, turning the bridge's failures into the IVR's ServiceError."""
    try:
        return await work
    except NotFoundError as exc:
        raise ServiceError("not_found", str(exc)) from exc
    except CrmUnavailableError as exc:
        log.warning("crm unavailable", error=str(exc))
        raise ServiceError("crm_unavailable", str(exc)) from exc
    except CrmError as exc:
        log.error("crm refused", error_id=exc.error_id, error=str(exc))
        raise ServiceError(exc.error_id.replace("-", "_"), str(exc)) from exc


def _is_phone(text: str) -> bool:
    """Whether a CRM can be asked for the customer calling from ``text`` (digits, an optional
    +): an anonymous or withheld caller is nobody to look up."""
    return _PHONE.fullmatch(text) is not None


def _address(parsed: ParsedAddress) -> Address:
    return Address(
        province=parsed.province,
        city=parsed.city,
        district=parsed.district,
        street=parsed.street[:MAX_FIELD],
        number=parsed.number[:MAX_FIELD],
        raw=parsed.raw[:MAX_DESCRIPTION],
    )


def _understood(slots: Mapping[str, str], spoken: str) -> Address | None:
    """The address as the dialog understood it (``address.district`` …, corrected against the
    street list and confirmed by the caller where it was in doubt); None when it has none."""
    if not slots.get("address.status"):
        return None
    return Address(
        province=slots.get("address.province", ""),
        city=slots.get("address.city", ""),
        district=slots.get("address.district", ""),
        street=slots.get("address.street", "")[:MAX_FIELD],
        number=slots.get("address.number", "")[:MAX_FIELD],
        raw=spoken[:MAX_DESCRIPTION],
    )


def _clip(value: str, limit: int) -> str:
    return value.replace("\x00", "")[:limit]


def _fields(slots: Mapping[str, str]) -> dict[str, str]:
    """The slots a ticket carries: clipped rather than refused, so an odd slot never costs a
    caller their work order."""
    out: dict[str, str] = {}
    for key in sorted(slots)[:MAX_EXTRA_FIELDS]:
        out[_clip(key, MAX_FIELD)] = _clip(slots[key], MAX_DESCRIPTION)
    return out


def _description(slots: Mapping[str, str]) -> str:
    parts = [f"{name}: {slots[name]}" for name in _DESCRIBED if slots.get(name)]
    return _clip("; ".join(parts), MAX_DESCRIPTION)


def _yuan(fen: int) -> str:
    """Fen as a yuan amount with two decimals (the readback says 元角分)."""
    return str(Decimal(fen).scaleb(-2).quantize(Decimal("0.01")))


def _customer_reply(customer: Customer | None) -> LookupReply:
    if customer is None:
        return LookupReply("not_found")
    return LookupReply(
        "found",
        {
            "customer_id": customer.customer_id,
            "account": customer.accounts[0] if customer.accounts else "",
        },
    )


def _when(at: float, now: float) -> str:
    """A time as the IVR says it: 今天/明天 17点30分, else 12月15日 17点."""
    moment = datetime.fromtimestamp(at, CHINA_TIME)
    today = datetime.fromtimestamp(now, CHINA_TIME).date()
    days = (moment.date() - today).days
    day = {0: "今天", 1: "明天"}.get(days, f"{moment.month}月{moment.day}日")
    minute = f"{moment.minute}分" if moment.minute else ""
    return f"{day}{moment.hour}点{minute}"


def _outage_slots(outage: Outage, now: float) -> dict[str, str]:
    area = outage.area
    where = "".join(p for p in (area.district, area.street) if p) or area.city or area.province
    return {
        "area": where,
        "cause": outage.cause,
        "kind": outage.kind.value,
        "restore_at": _when(outage.restore_at, now) if outage.restore_at else "",
        "outage_id": outage.outage_id,
    }
