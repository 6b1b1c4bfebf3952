"""JSON forms of the bridge's data: tickets as the outbox stores them, and every body the HTTP
adapter sends or reads.

Encoding is total. Decoding treats its input as untrusted (a CRM's answer, a file on disk): every
field is type-checked and size-checked, and any problem is a `TicketInvalidError` naming the
field (dotted for nested ones) — never a KeyError or a TypeError from deep inside.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeVar

from crm_bridge.errors import TicketInvalidError
from crm_bridge.model import (
    MAX_DESCRIPTION,
    MAX_EXTRA_FIELDS,
    MAX_FIELD,
    Address,
    BillSummary,
    Customer,
    Outage,
    OutageKind,
    StatusChange,
    Survey,
    Ticket,
    TicketSource,
    TicketStatus,
)

Json = dict[str, Any]
"""A JSON object as `json` reads and writes it."""

MAX_LIST = 500
"""Items any list in an answer may hold (ivr_path, history, phones, outages)."""

_ADDRESS_FIELDS = ("province", "city", "district", "street", "number", "raw")


class Fields:
    """Typed reads from one JSON object; `where` is the object's dotted place, for errors."""

    def __init__(self, data: object, where: str = "") -> None:
        if not isinstance(data, dict):
            raise TicketInvalidError(where or "(body)", "is not a JSON object")
        self.data: Mapping[str, object] = data
        """The object."""
        self.where = where
        """Its dotted place in the document ('' at the top)."""

    def name(self, key: str) -> str:
        """The dotted name of ``key`` in this object."""
        return f"{self.where}.{key}" if self.where else key

    def _get(self, key: str, default: object) -> object:
        if key in self.data and self.data[key] is not None:
            return self.data[key]
        if default is None:
            raise TicketInvalidError(self.name(key), "is missing")
        return default

    def text(self, key: str, default: str | None = None, limit: int = MAX_FIELD) -> str:
        """A string of at most ``limit`` characters (``default`` when absent; required if None)."""
        value = self._get(key, default)
        if not isinstance(value, str):
            raise TicketInvalidError(self.name(key), f"must be a string, not {_kind(value)}")
        if len(value) > limit:
            raise TicketInvalidError(
                self.name(key), f"is {len(value)} characters long; at most {limit}"
            )
        return value

    def integer(self, key: str, default: int | None = None) -> int:
        """An integer (JSON numbers with a fraction, and booleans, are refused)."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TicketInvalidError(self.name(key), f"must be an integer, not {_kind(value)}")
        return value

    def number(self, key: str, default: float | None = None) -> float:
        """A finite number."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TicketInvalidError(self.name(key), f"must be a number, not {_kind(value)}")
        if not math.isfinite(value):
            raise TicketInvalidError(self.name(key), "must be finite")
        return float(value)

    def optional_number(self, key: str) -> float | None:
        """A finite number, or None when absent or null."""
        if self.data.get(key) is None:
            return None
        return self.number(key)

    def flag(self, key: str, default: bool) -> bool:
        """A boolean."""
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise TicketInvalidError(self.name(key), f"must be true or false, not {_kind(value)}")
        return value

    def items(self, key: str) -> list[object]:
        """A list of at most `MAX_LIST` items (empty when absent)."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise TicketInvalidError(self.name(key), f"must be a list, not {_kind(value)}")
        if len(value) > MAX_LIST:
            raise TicketInvalidError(self.name(key), f"has {len(value)} items; at most {MAX_LIST}")
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        """A list of strings."""
        out = []
        for i, item in enumerate(self.items(key)):
            if not isinstance(item, str) or len(item) > MAX_FIELD:
                raise TicketInvalidError(
                    f"{self.name(key)}[{i}]", f"must be a string of at most {MAX_FIELD} characters"
                )
            out.append(item)
        return tuple(out)

    def strings(self, key: str) -> dict[str, str]:
        """An object of string values (empty when absent)."""
        value = self.data.get(key)
        if value is None:
            return {}
        inner = Fields(value, self.name(key))
        if len(inner.data) > MAX_EXTRA_FIELDS:
            raise TicketInvalidError(
                self.name(key), f"has {len(inner.data)} fields; at most {MAX_EXTRA_FIELDS}"
            )
        return {k: inner.text(k, limit=MAX_DESCRIPTION) for k in inner.data}

    def child(self, key: str) -> Fields | None:
        """A nested object, or None when absent or null."""
        value = self.data.get(key)
        return None if value is None else Fields(value, self.name(key))


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


_E = TypeVar("_E", TicketStatus, TicketSource, OutageKind)


def _member(kind: type[_E], fields: Fields, key: str, default: str | None = None) -> _E:
    value = fields.text(key, default)
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise TicketInvalidError(fields.name(key), f"{value!r} is not one of {allowed}") from None


# ---------------------------------------------------------------------- address


def address_to_dict(address: Address) -> Json:
    """An address as JSON (every level, empty strings included)."""
    return {name: getattr(address, name) for name in _ADDRESS_FIELDS}


def address_from_fields(fields: Fields | None) -> Address:
    """An address from its object (absent: the empty address)."""
    if fields is None:
        return Address()
    values = {
        name: fields.text(name, "", MAX_DESCRIPTION if name == "raw" else MAX_FIELD)
        for name in _ADDRESS_FIELDS
    }
    return Address(**values)


# ---------------------------------------------------------------------- ticket


def ticket_to_dict(ticket: Ticket) -> Json:
    """A ticket as JSON, every field (the outbox stores this; `ticket_from_dict` reverses it)."""
    return {
        "ticket_id": ticket.ticket_id,
        "idempotency_key": ticket.idempotency_key,
        "ticket_type": ticket.ticket_type,
        "priority": ticket.priority,
        "created_at": ticket.created_at,
        "urgent": ticket.urgent,
        "caller": ticket.caller,
        "account": ticket.account,
        "customer_id": ticket.customer_id,
        "address": address_to_dict(ticket.address),
        "description": ticket.description,
        "source": ticket.source.value,
        "call_id": ticket.call_id,
        "ivr_path": list(ticket.ivr_path),
        "complete": ticket.complete,
        "fields": dict(ticket.fields),
        "status": ticket.status.value,
        "updated_at": ticket.updated_at,
        "history": [
            {"status": change.status.value, "at": change.at, "note": change.note}
            for change in ticket.history
        ],
        "crm_ref": ticket.crm_ref,
    }


CREATION_FIELDS = frozenset(
    {
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
    }
)
"""The fields a ticket is created with (the rest — status, history, crm_ref — are the CRM's)."""


def ticket_from_dict(data: object, where: str = "") -> Ticket:
    """A ticket from JSON; fields the CRM keeps (status, history, crm_ref) may be absent."""
    f = Fields(data, where)
    history = []
    for i, item in enumerate(f.items("history")):
        step = Fields(item, f"{f.name('history')}[{i}]")
        history.append(
            StatusChange(
                status=_member(TicketStatus, step, "status"),
                at=step.number("at"),
                note=step.text("note", "", MAX_DESCRIPTION),
            )
        )
    path = f.texts("ivr_path")
    return Ticket(
        ticket_id=f.text("ticket_id"),
        idempotency_key=f.text("idempotency_key"),
        ticket_type=f.text("ticket_type"),
        priority=f.integer("priority"),
        created_at=f.number("created_at"),
        urgent=f.flag("urgent", False),
        caller=f.text("caller", ""),
        account=f.text("account", ""),
        customer_id=f.text("customer_id", ""),
        address=address_from_fields(f.child("address")),
        description=f.text("description", "", MAX_DESCRIPTION),
        source=_member(TicketSource, f, "source", TicketSource.IVR.value),
        call_id=f.text("call_id", ""),
        ivr_path=path,
        complete=f.flag("complete", True),
        fields=f.strings("fields"),
        status=_member(TicketStatus, f, "status", TicketStatus.NEW.value),
        updated_at=f.number("updated_at", 0.0),
        history=tuple(history),
        crm_ref=f.text("crm_ref", ""),
    )


# ---------------------------------------------------------------------- the rest


def customer_from_dict(data: object, where: str = "") -> Customer:
    """A customer from JSON."""
    f = Fields(data, where)
    return Customer(
        customer_id=f.text("customer_id"),
        name=f.text("name"),
        phones=f.texts("phones"),
        accounts=f.texts("accounts"),
        address=address_from_fields(f.child("address")),
    )


def bill_from_dict(data: object, where: str = "") -> BillSummary:
    """A bill summary from JSON (money in integer fen)."""
    f = Fields(data, where)
    return BillSummary(
        account=f.text("account"),
        balance_fen=f.integer("balance_fen"),
        amount_due_fen=f.integer("amount_due_fen"),
        due_date=f.text("due_date", ""),
    )


def outage_from_dict(data: object, where: str = "") -> Outage:
    """An outage notice from JSON."""
    f = Fields(data, where)
    return Outage(
        outage_id=f.text("outage_id"),
        area=address_from_fields(f.child("area")),
        kind=_member(OutageKind, f, "kind"),
        cause=f.text("cause", "", MAX_DESCRIPTION),
        starts_at=f.number("starts_at"),
        restore_at=f.optional_number("restore_at"),
        ended_at=f.optional_number("ended_at"),
    )


def survey_to_dict(survey: Survey) -> Json:
    """A survey result as JSON."""
    return {
        "call_id": survey.call_id,
        "score": survey.score,
        "at": survey.at,
        "agent_id": survey.agent_id,
        "caller": survey.caller,
    }


def survey_from_dict(data: object, where: str = "") -> Survey:
    """A survey result from JSON (as the outbox stores it)."""
    f = Fields(data, where)
    return Survey(
        call_id=f.text("call_id"),
        score=f.integer("score"),
        at=f.number("at"),
        agent_id=f.text("agent_id", ""),
        caller=f.text("caller", ""),
    )


FIELD_NAMES: dict[str, tuple[str, ...]] = {
    "ticket": tuple(ticket_to_dict(Ticket("0", "k", "t", 0, 0.0))),
    "history": ("status", "at", "note"),
    "address": _ADDRESS_FIELDS,
    "customer": ("customer_id", "name", "phones", "accounts", "address"),
    "outage": ("outage_id", "area", "kind", "cause", "starts_at", "restore_at", "ended_at"),
    "bill": ("account", "balance_fen", "amount_due_fen", "due_date"),
    "survey": tuple(survey_to_dict(Survey("c", 1, 0.0))),
}
"""The JSON field names of each kind of object (what a CRM field map may rename)."""

NESTED: dict[str, dict[str, str]] = {
    "ticket": {"address": "address", "history": "history"},
    "customer": {"address": "address"},
    "outage": {"area": "address"},
}
"""Fields holding objects (or lists of objects) of another kind: kind -> field -> its kind."""
