"""A CRM in a dict, for the outbox's tests: an honest `CrmBackend` (one ticket per idempotency
key) that fails on command, so delivery is tested without a network."""

from __future__ import annotations

import asyncio
from collections import Counter, deque

from crm_bridge.errors import CrmRejectedError, CrmUnavailableError, TicketInvalidError
from crm_bridge.model import Address, BillSummary, Customer, Outage, Survey, Ticket

FAULTS = (
    "ok",  # create (or find) the ticket, return its reference
    "down",  # CrmUnavailableError, nothing created
    "lost",  # create the ticket, then CrmUnavailableError (the answer was lost)
    "reject",  # CrmRejectedError, nothing created
    "invalid",  # TicketInvalidError, nothing created
    "bug",  # RuntimeError: a defect in a backend
)
"""What one create_ticket (or record_survey) call may do."""


class MemoryCrm:
    """Tickets by idempotency key; `faults` scripts the next calls, `default_fault` the rest."""

    name = "memory"

    def __init__(self) -> None:
        self.tickets: dict[str, Ticket] = {}
        """Idempotency key -> the ticket created."""
        self.refs: dict[str, str] = {}
        """Idempotency key -> the CRM's reference."""
        self.created: Counter[str] = Counter()
        """Ticket id -> tickets created with it (exactly once: all 1)."""
        self.calls: list[tuple[str, str, str]] = []
        """(ticket id, idempotency key, fault) of every create_ticket call."""
        self.faults: deque[str] = deque()
        self.default_fault = "ok"
        self.answered = asyncio.Event()
        """Set whenever a create_ticket call returns a reference."""
        self.surveys: dict[str, Survey] = {}
        """Call id -> the survey stored (the first)."""
        self.surveys_stored: Counter[str] = Counter()
        """Call id -> surveys stored for it (exactly once: all 1)."""
        self.survey_calls: list[tuple[str, str, str]] = []
        """(call id, idempotency key, fault) of every record_survey call."""
        self.closed = False

    def script(self, *faults: str) -> None:
        for fault in faults:
            assert fault in FAULTS, fault
        self.faults.extend(faults)

    async def create_ticket(self, ticket: Ticket) -> str:
        fault = self.faults.popleft() if self.faults else self.default_fault
        self.calls.append((ticket.ticket_id, ticket.idempotency_key, fault))
        if fault == "down":
            raise CrmUnavailableError("connection refused")
        if fault == "reject":
            raise CrmRejectedError("the CRM answered 400: bad-ticket: unknown district")
        if fault == "invalid":
            raise TicketInvalidError("ticket_type", "'维修' is not a type the CRM knows")
        if fault == "bug":
            raise RuntimeError("adapter defect")
        key = ticket.idempotency_key
        if key not in self.tickets:
            self.tickets[key] = ticket
            self.refs[key] = f"M-{len(self.refs) + 1}"
            self.created[ticket.ticket_id] += 1
        if fault == "lost":
            raise CrmUnavailableError("connection reset after the request was sent")
        self.answered.set()
        return self.refs[key]

    async def get_ticket(self, ticket_id: str) -> Ticket | None:
        return next((t for t in self.tickets.values() if t.ticket_id == ticket_id), None)

    async def find_customer(self, *, phone: str = "", account: str = "") -> Customer | None:
        return None

    async def outages(self, address: Address, now: float) -> list[Outage]:
        return []

    async def bill_summary(self, account: str) -> BillSummary | None:
        return None

    async def record_survey(self, survey: Survey) -> None:
        """Takes the next fault too (``lost``: stored, then the answer is lost)."""
        fault = self.faults.popleft() if self.faults else self.default_fault
        self.survey_calls.append((survey.call_id, survey.idempotency_key, fault))
        if fault == "down":
            raise CrmUnavailableError("connection refused")
        if fault == "reject":
            raise CrmRejectedError("the CRM answered 400: bad-survey: unknown agent")
        if fault == "invalid":
            raise TicketInvalidError("agent_id", "not an agent the CRM knows")
        if fault == "bug":
            raise RuntimeError("adapter defect")
        if survey.call_id not in self.surveys:
            self.surveys[survey.call_id] = survey
            self.surveys_stored[survey.call_id] += 1
        if fault == "lost":
            raise CrmUnavailableError("connection reset after the request was sent")

    async def close(self) -> None:
        self.closed = True
