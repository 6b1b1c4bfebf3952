"""The desk's work order (工单): the draft pre-filled from what the IVR learned, and the version
the agent edited, checked before it goes to the CRM bridge.

Pure: no routing, no CRM, no clock. `draft` reads the screen-pop context routing holds for the
call (the dialog's slots); `DeskTicket.parse` reads what the desk sends back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from crm_bridge.model import MAX_DESCRIPTION, MAX_FIELD

TYPE_BY_INTENT: Mapping[str, str] = {
    "hazard": "故障报修",
    "fault": "故障报修",
    "billing": "咨询",
    "bill_balance": "咨询",
    "consultation": "咨询",
    "new_connection": "业扩报装",
    "complaint": "投诉",
    "report": "举报",
    "suggestion": "建议",
    "praise": "表扬",
    "ticket_status": "咨询",
}
"""The work-order type an intent the IVR recognized suggests."""

TYPE_BY_SKILL: Mapping[str, str] = {
    "hazard": "故障报修",
    "fault_repair": "故障报修",
    "billing": "咨询",
    "new_connection": "业扩报装",
    "complaint": "投诉",
}
"""The type a queue suggests when the IVR recorded no intent."""

DEFAULT_TYPE = "咨询"
"""The type of a call nothing else tells about (an agent asked for at once)."""

_DIGITS = re.compile(r"[0-9]{0,32}")
_PHONE = re.compile(r"\+?[0-9]{0,20}")

_PATH_KEYS = ("path", "ivr_path")
"""Context keys that may hold the way the caller walked through the flow."""


class DraftError(ValueError):
    """A field of the desk's work order is wrong; ``field`` names it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class DeskTicket:
    """A work order as the desk shows and edits it."""

    ticket_type: str
    """One of the allowed work-order types."""
    caller: str = ""
    """The calling number (digits, an optional +)."""
    account: str = ""
    """The account number (户号), digits."""
    address: str = ""
    """The address as the IVR understood it (or the agent corrected it)."""
    address_confidence: str = ""
    """How sure the recognizer was of the address (0..1), as the IVR recorded it; empty if
    typed or unknown."""
    intent: str = ""
    """What the caller wanted, as the IVR understood it."""
    description: str = ""
    """What happened, from the IVR path and the agent's notes."""
    urgent: bool = False
    """A safety hazard (wire down, shock, fire)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)

    @classmethod
    def parse(cls, body: Mapping[str, Any], types: tuple[str, ...]) -> DeskTicket:
        """The desk's edited ticket (`DraftError` naming the field when one is wrong)."""
        known = {f for f in cls.__dataclass_fields__}
        for key in body:
            if key not in known:
                raise DraftError(key, f"not a work-order field; fields: {', '.join(sorted(known))}")
        values: dict[str, Any] = {}
        for key in known - {"urgent"}:
            value = body.get(key, "")
            if not isinstance(value, str):
                raise DraftError(key, "must be text")
            limit = MAX_DESCRIPTION if key == "description" else MAX_FIELD
            if len(value) > limit:
                raise DraftError(key, f"at most {limit} characters")
            values[key] = value.strip()
        urgent = body.get("urgent", False)
        if not isinstance(urgent, bool):
            raise DraftError("urgent", "must be true or false")
        if values["ticket_type"] not in types:
            raise DraftError("ticket_type", f"must be one of {', '.join(types)}")
        if not _PHONE.fullmatch(values["caller"]):
            raise DraftError("caller", "digits only, optionally with a leading +")
        if not _DIGITS.fullmatch(values["account"]):
            raise DraftError("account", "digits only")
        return cls(urgent=urgent, **values)


def suggested_type(context: Mapping[str, str], skill: str) -> str:
    """The type the IVR's findings suggest: a pending ticket's, the intent's, the queue's."""
    pending = context.get("pending_ticket", "")
    if pending:
        return pending
    intent = context.get("intent", "")
    return TYPE_BY_INTENT.get(intent) or TYPE_BY_SKILL.get(skill) or DEFAULT_TYPE


def draft(context: Mapping[str, Any], skill: str) -> DeskTicket:
    """The work order the desk opens with for a call: everything the IVR learned."""
    text = {str(k): str(v) for k, v in context.items()}
    caller = text.get("caller", "")
    account = text.get("account", "")
    lines = []
    if text.get("intent"):
        lines.append(f"IVR 诉求 intent: {text['intent']}")
    path = next((text[k] for k in _PATH_KEYS if text.get(k)), "")
    if path:
        lines.append(f"IVR 路径 path: {path}")
    for key, label in (
        ("outage", "停电信息 known outage"),
        ("ticket_id", "IVR 工单 IVR ticket"),
        ("queue.exit_reason", "排队结果 queue"),
    ):
        if text.get(key):
            lines.append(f"{label}: {text[key]}")
    return DeskTicket(
        ticket_type=suggested_type(text, skill),
        caller=caller if _PHONE.fullmatch(caller) else "",
        account=account if _DIGITS.fullmatch(account) else "",
        address=text.get("address", "")[:MAX_FIELD],
        address_confidence=text.get("address_confidence", ""),
        intent=text.get("intent", ""),
        description="\n".join(lines)[:MAX_DESCRIPTION],
        urgent=text.get("hazard") == "yes",
    )
