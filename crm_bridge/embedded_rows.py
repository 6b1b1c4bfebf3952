"""Rows of the embedded CRM store to and from the model, and the checks on what operators write.

The model checks tickets and surveys when they are made; customers, bills and outage notices
come from operators and seed files, so the store checks them here, with `TicketInvalidError`
naming the field as everywhere else.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections.abc import Sequence

from crm_bridge.errors import TicketInvalidError
from crm_bridge.model import (
    MAX_FIELD,
    Address,
    Outage,
    OutageKind,
    StatusChange,
    Ticket,
    TicketSource,
    TicketStatus,
)

CRM_REF_PREFIX = "emb-"
"""The store's references are ``emb-<row id>``: never mistaken for a ticket number."""

PHONE = re.compile(r"\+?[0-9]{1,20}")
"""A phone number as the network gives it."""
ACCOUNT = re.compile(r"[0-9]{1,32}")
"""An account number (户号)."""
AREA_LEVELS = ("province", "city", "district", "street")
"""The levels an outage's area may name."""
ADDRESS_LEVELS = (*AREA_LEVELS, "number")
"""The structured parts of an address (its raw text is kept besides)."""

TICKET_COLUMNS = (
    "ticket_id, idempotency_key, ticket_type, priority, urgent, caller, account, customer_id, "
    "province, city, district, street, number, address_raw, description, source, call_id, "
    "ivr_path, complete, fields, status, created_at, updated_at"
)
"""The columns `ticket_values` fills, in its order."""


def check_text(field: str, value: str, limit: int = MAX_FIELD, *, required: bool = False) -> str:
    """``value`` if it is text of at most ``limit`` characters without NUL (and, if
    ``required``, not blank)."""
    if not isinstance(value, str):
        raise TicketInvalidError(field, "must be text")
    if required and not value.strip():
        raise TicketInvalidError(field, "required")
    if len(value) > limit:
        raise TicketInvalidError(field, f"is {len(value)} characters long; at most {limit}")
    if "\x00" in value:
        raise TicketInvalidError(field, "contains a NUL character")
    return value


def check_time(field: str, value: float) -> float:
    """``value`` as a float if it is a finite time in seconds since the epoch."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TicketInvalidError(field, f"{value!r} is not a time (seconds since the epoch)")
    return float(value)


def crm_ref(row_id: int) -> str:
    """The store's reference of the ticket in row ``row_id``."""
    return f"{CRM_REF_PREFIX}{row_id}"


def ticket_values(ticket: Ticket, status: TicketStatus, now: float) -> tuple[object, ...]:
    """The values of `TICKET_COLUMNS` for a ticket received at ``now`` with ``status``."""
    address = ticket.address
    return (
        ticket.ticket_id,
        ticket.idempotency_key,
        ticket.ticket_type,
        ticket.priority,
        int(ticket.urgent),
        ticket.caller,
        ticket.account,
        ticket.customer_id,
        *(getattr(address, level) for level in ADDRESS_LEVELS),
        address.raw,
        ticket.description,
        ticket.source.value,
        ticket.call_id,
        json.dumps(list(ticket.ivr_path), ensure_ascii=False),
        int(ticket.complete),
        json.dumps(dict(ticket.fields), ensure_ascii=False, sort_keys=True),
        status.value,
        ticket.created_at,
        now,
    )


def address_from_row(row: sqlite3.Row) -> Address:
    """The address held in a row's address columns."""
    return Address(
        province=row["province"],
        city=row["city"],
        district=row["district"],
        street=row["street"],
        number=row["number"],
        raw=row["address_raw"],
    )


def ticket_from_row(row: sqlite3.Row, history: Sequence[StatusChange]) -> Ticket:
    """The ticket in a row of ``tickets``, with its history."""
    return Ticket(
        ticket_id=row["ticket_id"],
        idempotency_key=row["idempotency_key"],
        ticket_type=row["ticket_type"],
        priority=row["priority"],
        created_at=row["created_at"],
        urgent=bool(row["urgent"]),
        caller=row["caller"],
        account=row["account"],
        customer_id=row["customer_id"],
        address=address_from_row(row),
        description=row["description"],
        source=TicketSource(row["source"]),
        call_id=row["call_id"],
        ivr_path=tuple(json.loads(row["ivr_path"])),
        complete=bool(row["complete"]),
        fields=json.loads(row["fields"]),
        status=TicketStatus(row["status"]),
        updated_at=row["updated_at"],
        history=tuple(history),
        crm_ref=crm_ref(row["id"]),
    )


def outage_from_row(row: sqlite3.Row) -> Outage:
    """The notice in a row of ``outages``."""
    return Outage(
        outage_id=str(row["id"]),
        area=Address(
            province=row["province"],
            city=row["city"],
            district=row["district"],
            street=row["street"],
        ),
        kind=OutageKind(row["kind"]),
        cause=row["cause"],
        starts_at=row["starts_at"],
        restore_at=row["restore_at"],
        ended_at=row["ended_at"],
    )
