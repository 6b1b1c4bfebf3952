"""`hotline tickets ...` (with this node's outbox), `hotline outages ...` and `hotline crm ...`:
the CRM admin API from a terminal.

Like `hotline agents` (`ivr.cli_routing`): one request to the running hotline, printed as a
table or lines (or the API's JSON with ``--json``); exit 0 on success, 1 when the hotline
refused (its ``error_id`` and message go to stderr), 2 when it could not be reached.
"""

from __future__ import annotations

import argparse
import re
import time
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from ivr.cli_routing import Command, clock_time, duration, table

_RELATIVE = re.compile(r"([+-])(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def time_option(text: str) -> float:
    """Parse a time (argparse type): ``now``, ``+2h`` / ``-30m`` / ``+1d`` from now, or an ISO
    date-time (``2026-11-27T14:00``, this machine's local time unless it carries an offset such
    as ``+08:00``). Seconds since the epoch."""
    value = text.strip()
    if value == "now":
        return time.time()
    relative = _RELATIVE.fullmatch(value)
    if relative:
        sign, amount, unit = relative.groups()
        offset = float(amount) * _UNITS[unit]
        return time.time() + (offset if sign == "+" else -offset)
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected now, +2h, -30m, +1d or a date-time like 2026-11-27T14:00"
        ) from None


# ---------------------------------------------------------------------- text output


def _address_text(address: dict[str, str]) -> str:
    parts = "".join(address[k] for k in ("province", "city", "district", "street", "number"))
    return parts or address["raw"] or "-"


def _priority_text(ticket: dict[str, Any]) -> str:
    # A hazard (wire down, shock, fire) must stand out in a list.
    return f"{ticket['priority']}!" if ticket["urgent"] else str(ticket["priority"])


def render_tickets(answer: dict[str, Any]) -> str:
    tickets = answer["tickets"]
    if not tickets:
        return "no tickets"
    rows = [
        [
            t["ticket_id"],
            t["ticket_type"],
            t["status"],
            _priority_text(t),
            clock_time(t["created_at"]),
            t["caller"] or "-",
            t["account"] or "-",
            _address_text(t["address"]),
        ]
        for t in tickets
    ]
    headers = ["TICKET", "TYPE", "STATUS", "PRI", "CREATED", "CALLER", "ACCOUNT", "ADDRESS"]
    return table(headers, rows)


def render_ticket(ticket: dict[str, Any]) -> str:
    lines = [
        ("ticket", ticket["ticket_id"]),
        ("type", ticket["ticket_type"]),
        ("status", ticket["status"]),
        ("priority", _priority_text(ticket) + (" (urgent)" if ticket["urgent"] else "")),
        ("created", clock_time(ticket["created_at"])),
        ("caller", ticket["caller"] or "-"),
        ("account", ticket["account"] or "-"),
        ("address", _address_text(ticket["address"])),
        ("description", ticket["description"] or "-"),
        ("source", ticket["source"]),
        ("call", ticket["call_id"] or "-"),
        ("crm ref", ticket["crm_ref"] or "-"),
    ]
    if not ticket["complete"]:
        lines.append(("complete", "no (the caller hung up before the end)"))
    lines.extend((f"field {name}", value) for name, value in sorted(ticket["fields"].items()))
    if "delivery" in ticket:
        lines.extend(_delivery_lines(ticket["ticket_id"], ticket["delivery"]))
    history = [[clock_time(h["at"]), h["status"], h["note"]] for h in ticket["history"]]
    fields = table(["", ""], lines).split("\n", 1)[1]
    if not history:  # not in the CRM yet: it has no history there
        return f"{fields}\nhistory: none yet"
    return "\n".join(
        [
            fields,
            "history:",
            table(["  AT", "STATUS", "NOTE"], [["  " + h[0], *h[1:]] for h in history]),
        ]
    )


def _delivery_lines(ticket_id: str, delivery: dict[str, Any]) -> list[tuple[str, str]]:
    """How a ticket answered from the outbox (not in the CRM yet) is getting there."""
    tries = f"{delivery['attempts']} attempt{'s' if delivery['attempts'] != 1 else ''}"
    if delivery["state"] == "dead":
        done = delivery["done_at"]
        since = f" since {clock_time(done)}" if done is not None else ""
        state = f"a dead letter{since} after {tries}: `hotline tickets retry {ticket_id}`"
    else:
        next_at = delivery["next_at"]
        state = f"waiting in the outbox, {tries} so far"
        if next_at is not None:
            state += f", next at {clock_time(next_at)}"
    lines = [("delivery", state)]
    if delivery["last_error"]:
        lines.append(("last error", delivery["last_error"]))
    return lines


def render_outbox(answer: dict[str, Any]) -> str:
    stats = answer["stats"]
    oldest = f", the oldest waiting {duration(stats['oldest_age_seconds'])}"
    kinds = ", ".join(
        f"{n} {kind}{'' if n == 1 else 's'}" for kind, n in stats["backlog_by_kind"].items() if n
    )
    dead_letters = stats["dead_letters"]
    summary = (
        f"outbox: {stats['backlog']} waiting{f' ({kinds})' if kinds else ''}"
        f"{oldest if stats['backlog'] else ''}, "
        f"{dead_letters} dead letter{'' if dead_letters == 1 else 's'}, "
        f"{stats['delivered']} delivered"
    )
    dead = answer["dead_letters"]
    if not dead:
        return summary
    rows = [
        [
            d["id"],
            d["kind"],
            d["ticket_type"] or "-",
            str(d["attempts"]),
            clock_time(d["submitted_at"]),
            clock_time(d["dead_at"]) if d["dead_at"] is not None else "-",
            d["last_error"] or "-",
        ]
        for d in dead
    ]
    headers = ["ID", "KIND", "TYPE", "TRIES", "SUBMITTED", "DEAD", "LAST ERROR"]
    parts = [summary, table(headers, rows)]
    if stats["dead_letters"] > len(dead):
        parts.append(f"({stats['dead_letters'] - len(dead)} more not shown)")
    parts.append("replay with `hotline tickets retry [ID]`")
    return "\n".join(parts)


def render_replayed(answer: dict[str, Any]) -> str:
    replayed = answer["replayed"]
    if not replayed:
        return "no dead letters to replay"
    plural = "s" if replayed != 1 else ""
    return f"{replayed} dead letter{plural} replayed: due for delivery now"


def _outage_state(outage: dict[str, Any]) -> str:
    if outage["ended_at"] is not None:
        return f"ended {clock_time(outage['ended_at'])}"
    return "active" if outage["active"] else "upcoming"


def render_outages(answer: dict[str, Any]) -> str:
    outages = answer["outages"]
    if not outages:
        return "no outage notices"
    rows = [
        [
            o["outage_id"],
            o["kind"],
            o["area"],
            o["cause"],
            clock_time(o["starts_at"]),
            clock_time(o["restore_at"]) if o["restore_at"] is not None else "-",
            _outage_state(o),
        ]
        for o in outages
    ]
    return table(["ID", "KIND", "AREA", "CAUSE", "STARTS", "RESTORE", "STATE"], rows)


def render_outage(outage: dict[str, Any]) -> str:
    restore = outage["restore_at"]
    until = f", restore by {clock_time(restore)}" if restore is not None else ""
    return (
        f"outage {outage['outage_id']}: {outage['kind']} in {outage['area']} ({outage['cause']}), "
        f"from {clock_time(outage['starts_at'])}{until}: {_outage_state(outage)}"
    )


def render_seeded(answer: dict[str, Any]) -> str:
    return (
        f"demo data loaded: {answer['customers']} customers, {answer['bills']} bills, "
        f"{answer['outages_added']} outage notices added (try `hotline call`: the caller "
        "13800138000 owns account 1234567890 in an area with an outage)"
    )


# ---------------------------------------------------------------------- commands


def _ticket_path(ticket_id: str, action: str = "") -> str:
    path = f"/api/tickets/{quote(ticket_id, safe='')}"
    return f"{path}/{action}" if action else path


def tickets_request(args: argparse.Namespace) -> Command:
    """The request of one `hotline tickets` command."""
    action: str = args.tickets_command
    if action == "list":
        query: dict[str, str] = {"limit": str(args.limit)}
        if args.status is not None:
            query["status"] = args.status
        return Command("GET", f"/api/tickets?{urlencode(query)}", None, render_tickets)
    if action == "show":
        return Command("GET", _ticket_path(args.ticket_id), None, render_ticket)
    if action == "status":
        body = {"status": args.status, "note": args.note}
        return Command("POST", _ticket_path(args.ticket_id, "status"), body, render_ticket)
    if action == "outbox":
        return Command("GET", "/api/outbox", None, render_outbox)
    if action == "retry":
        retry = {} if args.ticket_id is None else {"id": args.ticket_id}
        return Command("POST", "/api/outbox/retry", retry, render_replayed)
    raise ValueError(f"unknown tickets command {action!r}")


def outages_request(args: argparse.Namespace) -> Command:
    """The request of one `hotline outages` command."""
    action: str = args.outages_command
    if action == "list":
        path = "/api/outages?active=true" if args.active else "/api/outages"
        return Command("GET", path, None, render_outages)
    if action == "end":
        path = f"/api/outages/{quote(args.outage_id, safe='')}/end"
        return Command("POST", path, None, render_outage)
    body: dict[str, Any] = {"kind": args.kind, "cause": args.cause}
    for level in ("province", "city", "district", "street"):
        if getattr(args, level) is not None:
            body[level] = getattr(args, level)
    if args.starts_at is not None:
        body["starts_at"] = args.starts_at
    if args.restore_at is not None:
        body["restore_at"] = args.restore_at
    return Command("POST", "/api/outages", body, render_outage)


def crm_request(args: argparse.Namespace) -> Command:
    """The request of one `hotline crm` command (``seed-demo``)."""
    return Command("POST", "/api/crm/seed-demo", None, render_seeded)
