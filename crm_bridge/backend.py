"""The interface every CRM backend implements: the embedded SQLite store and the HTTP adapter.

A backend is only ever asked to do one thing once per request; retries, idempotency keys and the
durable outbox are the bridge's business (`crm_bridge.outbox`), so a backend stays simple. Errors:
`CrmUnavailableError` (try again later) or `CrmRejectedError` / `TicketInvalidError` (do not).
"""

from __future__ import annotations

from typing import Protocol

from crm_bridge.model import Address, BillSummary, Customer, Outage, Survey, Ticket


class CrmBackend(Protocol):
    """Tickets, customers, bills, outages and surveys, wherever the utility keeps them."""

    name: str
    """Short name for logs and /healthz (``embedded``, ``http``)."""

    async def create_ticket(self, ticket: Ticket) -> str:
        """Create the ticket unless one with its idempotency key exists; return the CRM's own
        reference for it either way (the same one for the same key)."""
        ...

    async def get_ticket(self, ticket_id: str) -> Ticket | None:
        """A ticket by the number the caller was told, with its status and history."""
        ...

    async def find_customer(self, *, phone: str = "", account: str = "") -> Customer | None:
        """The customer calling from ``phone`` or owning ``account`` (exactly one is given)."""
        ...

    async def outages(self, address: Address, now: float) -> list[Outage]:
        """Notices active at ``now`` for an area containing ``address``, most recent first."""
        ...

    async def bill_summary(self, account: str) -> BillSummary | None:
        """The account's balance and amount due."""
        ...

    async def record_survey(self, survey: Survey) -> None:
        """Store a satisfaction rating (idempotent per call id)."""
        ...

    async def close(self) -> None:
        """Release connections and files."""
        ...
