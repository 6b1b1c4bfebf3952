"""The CRM bridge's domain: work orders (工单), customers, bills, outage notices, survey results.

Plain frozen dataclasses, validated on construction with `TicketInvalidError` naming the field, so a
bad ticket is refused where it is made, never half-way through delivery. Money is in fen (integer
分) and times are seconds since the epoch: no floats for money, no time zones in the data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from crm_bridge.errors import TicketInvalidError

_EMPTY: Mapping[str, str] = MappingProxyType({})

TICKET_TYPES: tuple[str, ...] = (
    "故障报修",
    "咨询",
    "业扩报装",
    "投诉",
    "举报",
    "建议",
    "表扬",
    "服务申请",
)
"""The 95598 work-order types; an operator may allow more (`Ticket.validate(types=...)`)."""

MAX_DESCRIPTION = 4000
"""Characters of free text a ticket's description may hold."""
MAX_FIELD = 200
"""Characters any other text field may hold."""
MAX_EXTRA_FIELDS = 64
"""How many extra IVR fields (slots) a ticket carries at most."""

_DIGITS = re.compile(r"[0-9]{0,32}")
_PHONE = re.compile(r"\+?[0-9]{0,20}")
_TICKET_ID = re.compile(r"[0-9A-Za-z-]{1,40}")


class TicketSource(StrEnum):
    """Who made the ticket."""

    IVR = "ivr"
    """Self-service: the IVR alone."""
    IVR_AGENT = "ivr_agent"
    """Started in the IVR, completed by an agent."""
    AGENT = "agent"
    """Made by an agent."""


class TicketStatus(StrEnum):
    """Where a ticket is in its life."""

    NEW = "new"
    """Made locally; not yet confirmed by the CRM."""
    SUBMITTED = "submitted"
    """The CRM has it."""
    IN_PROGRESS = "in_progress"
    """A crew or department works on it."""
    RESOLVED = "resolved"
    """Done; the customer may still be called for a return visit."""
    CLOSED = "closed"
    """Closed for good."""


class OutageKind(StrEnum):
    """Why the power is off."""

    PLANNED = "planned"
    """Announced maintenance (计划停电)."""
    FAULT = "fault"
    """A fault being repaired (故障停电)."""


def _text(name: str, value: str, limit: int = MAX_FIELD) -> None:
    if len(value) > limit:
        raise TicketInvalidError(name, f"is {len(value)} characters long; at most {limit}")
    if "\x00" in value:
        raise TicketInvalidError(name, "contains a NUL character")


@dataclass(frozen=True)
class Address:
    """A structured address, with what the caller actually said."""

    province: str = ""
    """省 / 自治区 / 直辖市."""
    city: str = ""
    """市 / 地区 / 自治州."""
    district: str = ""
    """区 / 县."""
    street: str = ""
    """街道 / 乡镇 / 路 (what follows the district)."""
    number: str = ""
    """门牌号 and the rest (building, unit, room)."""
    raw: str = ""
    """The utterance or text it was parsed from."""

    def __post_init__(self) -> None:
        for name in ("province", "city", "district", "street", "number"):
            _text(f"address.{name}", getattr(self, name))
        _text("address.raw", self.raw, MAX_DESCRIPTION)

    @property
    def known(self) -> bool:
        """Whether anything at all is known."""
        return any((self.province, self.city, self.district, self.street, self.number, self.raw))

    def within(self, area: Address) -> bool:
        """Whether this address lies in ``area``: each level ``area`` names matches (an empty
        level in ``area`` matches anything; an empty level here matches nothing named)."""
        return all(
            not want or getattr(self, name) == want
            for name, want in (
                ("province", area.province),
                ("city", area.city),
                ("district", area.district),
                ("street", area.street),
            )
        )


@dataclass(frozen=True)
class StatusChange:
    """One step in a ticket's history."""

    status: TicketStatus
    """The status entered."""
    at: float
    """When."""
    note: str = ""
    """Why, or what was done."""


@dataclass(frozen=True)
class Ticket:
    """A work order (工单)."""

    ticket_id: str
    """The number the caller is told; allocated locally, so it exists before the CRM answers."""
    idempotency_key: str
    """Stable for one outcome of one call (`idempotency_key(call_id, outcome)`): the CRM creates
    at most one ticket per key however often it is asked."""
    ticket_type: str
    """One of the allowed types (`TICKET_TYPES` unless the operator allows more)."""
    priority: int
    """0..100; higher is more urgent (a hazard is 100)."""
    created_at: float
    """When it was made."""
    urgent: bool = False
    """A safety hazard (wire down, shock, fire): the crew must go now."""
    caller: str = ""
    """The calling number (ANI)."""
    account: str = ""
    """The customer's account number (户号), when known."""
    customer_id: str = ""
    """The CRM's customer id, when known."""
    address: Address = field(default_factory=Address)
    """Where, when it matters (faults, new connections)."""
    description: str = ""
    """Free text: what the caller said or the agent wrote."""
    source: TicketSource = TicketSource.IVR
    """Who made it."""
    call_id: str = ""
    """The call it came from."""
    ivr_path: tuple[str, ...] = ()
    """The flow nodes the caller walked through."""
    complete: bool = True
    """False for a partial report (the caller hung up before the flow finished)."""
    fields: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """Everything else the IVR collected (slots), for the CRM's record."""
    status: TicketStatus = TicketStatus.NEW
    """Where it is now."""
    updated_at: float = 0.0
    """When it last changed (0: never since created)."""
    history: tuple[StatusChange, ...] = ()
    """Every status it went through, oldest first."""
    crm_ref: str = ""
    """The CRM's own id for it, once delivered."""

    def __post_init__(self) -> None:
        if not _TICKET_ID.fullmatch(self.ticket_id):
            raise TicketInvalidError("ticket_id", "1-40 letters, digits or '-'")
        if not self.idempotency_key or len(self.idempotency_key) > MAX_FIELD:
            raise TicketInvalidError("idempotency_key", f"must be 1-{MAX_FIELD} characters")
        if not 0 <= self.priority <= 100:
            raise TicketInvalidError("priority", f"{self.priority} is not in 0..100")
        if not _PHONE.fullmatch(self.caller):
            raise TicketInvalidError("caller", "digits only, optionally with a leading +")
        if not _DIGITS.fullmatch(self.account):
            raise TicketInvalidError("account", "digits only")
        for name in ("customer_id", "call_id", "crm_ref", "ticket_type"):
            _text(name, getattr(self, name))
        _text("description", self.description, MAX_DESCRIPTION)
        if len(self.ivr_path) > 500:
            raise TicketInvalidError("ivr_path", "more than 500 nodes")
        if len(self.fields) > MAX_EXTRA_FIELDS:
            raise TicketInvalidError(
                "fields", f"{len(self.fields)} fields; at most {MAX_EXTRA_FIELDS}"
            )
        for key, value in self.fields.items():
            _text(f"fields.{key}", key)
            _text(f"fields.{key}", value, MAX_DESCRIPTION)
        object.__setattr__(self, "source", TicketSource(self.source))
        object.__setattr__(self, "status", TicketStatus(self.status))
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))

    def validate(self, types: tuple[str, ...] = TICKET_TYPES) -> Ticket:
        """Check the type against the allowed ones; returns self (TicketInvalidError otherwise)."""
        if self.ticket_type not in types:
            raise TicketInvalidError(
                "ticket_type", f"{self.ticket_type!r} is not one of {', '.join(types)}"
            )
        return self


def idempotency_key(call_id: str, outcome: str) -> str:
    """The key of what one outcome of one call makes (the same on every retry): a ticket, or
    the call's survey (`SURVEY_OUTCOME`)."""
    return f"{call_id}:{outcome}"


SURVEY_OUTCOME = "survey"
"""The outcome a call's satisfaction rating is keyed by (`Survey.idempotency_key`)."""


@dataclass(frozen=True)
class Customer:
    """A customer as the CRM knows them."""

    customer_id: str
    """The CRM's id."""
    name: str
    """Display name (for the agent's screen pop; never read out by the IVR)."""
    phones: tuple[str, ...] = ()
    """Numbers the customer is known to call from."""
    accounts: tuple[str, ...] = ()
    """Account numbers (户号)."""
    address: Address = field(default_factory=Address)
    """Where the supply point is."""


@dataclass(frozen=True)
class BillSummary:
    """What the billing self-service reads back."""

    account: str
    """The account number (户号)."""
    balance_fen: int
    """Prepaid balance (negative: owed), in fen."""
    amount_due_fen: int
    """What is due now, in fen."""
    due_date: str = ""
    """When it is due, ISO date (YYYY-MM-DD), or empty."""


@dataclass(frozen=True)
class Outage:
    """A notice of a power cut in an area."""

    outage_id: str
    """Its id."""
    area: Address
    """Where: the levels it names (an empty level means the whole of the level above)."""
    kind: OutageKind
    """Planned or fault."""
    cause: str
    """What the IVR reads out (e.g. 线路检修)."""
    starts_at: float
    """When the power went or goes off."""
    restore_at: float | None = None
    """Estimated restoration, if known."""
    ended_at: float | None = None
    """When it was declared over (None: ongoing or upcoming)."""

    def active(self, now: float) -> bool:
        """Whether callers from the area should hear of it at ``now``."""
        return self.starts_at <= now and (self.ended_at is None or now < self.ended_at)


@dataclass(frozen=True)
class Survey:
    """A satisfaction rating after a call."""

    call_id: str
    """The call rated."""
    score: int
    """1 (very dissatisfied) .. 5 (very satisfied)."""
    at: float
    """When it was given."""
    agent_id: str = ""
    """The agent rated, when there was one."""
    caller: str = ""
    """The calling number."""

    def __post_init__(self) -> None:
        if isinstance(self.score, bool) or not isinstance(self.score, int):
            raise TicketInvalidError("score", "must be a whole number")
        if not 1 <= self.score <= 5:
            raise TicketInvalidError("score", f"{self.score} is not in 1..5")
        if not self.call_id:
            raise TicketInvalidError("call_id", "required")
        _text("call_id", self.call_id)
        _text("agent_id", self.agent_id)
        if not _PHONE.fullmatch(self.caller):
            raise TicketInvalidError("caller", "digits only, optionally with a leading +")
        if not math.isfinite(self.at):
            raise TicketInvalidError("at", f"{self.at!r} is not a time (seconds since the epoch)")

    @property
    def idempotency_key(self) -> str:
        """One rating per call: the CRM stores the first survey with this key, however often it
        is sent (``<call id>:survey``)."""
        return idempotency_key(self.call_id, SURVEY_OUTCOME)
