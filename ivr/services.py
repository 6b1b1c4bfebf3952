"""The service interfaces a call session uses: CRM (lookups, tickets, surveys) and routing.

The real implementations live in ``crm_bridge`` and ``routing``; until they land, the
``NotConnected*`` classes below say so honestly: every request fails with ``not_connected`` and
the dialog takes its error path. Nothing here pretends a ticket was created.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from ivr.dialog import actions as act
from ivr.dialog import events as ev
from ivr.dialog.engine import CallContext

LOOKUP_SERVICES = frozenset(
    {"customer_by_phone", "bill_summary", "outage_by_address", "ticket_status"}
)
"""Self-service lookups a flow may name; the CRM bridge answers each."""


class ServiceError(Exception):
    """A service could not carry out a request; ``reason`` is short and machine-readable."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


@dataclass(frozen=True)
class LookupReply:
    """What a self-service lookup found."""

    status: ev.ServiceStatus
    """``found``, ``not_found`` or ``error``."""
    data: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Result fields, saved as slots under the lookup node's prefix."""


Feed = Callable[[ev.Event], None]
"""How a service pushes later events (queue position, agent connected) into a call."""


class Crm(Protocol):
    """Customer data, work orders and survey results (the CRM bridge)."""

    async def lookup(self, request: act.Lookup, context: CallContext) -> LookupReply:
        """Answer a self-service lookup."""
        ...

    async def create_ticket(self, request: act.CreateTicket, context: CallContext) -> str:
        """Create a work order and return its number (raises ServiceError)."""
        ...

    async def record_survey(self, request: act.RecordSurvey, context: CallContext) -> None:
        """Store a satisfaction rating (raises ServiceError)."""
        ...


class Routing(Protocol):
    """Queues and agents (the ACD)."""

    async def enqueue(self, request: act.Enqueue, context: CallContext, feed: Feed) -> None:
        """Put the call in line; later QueuePosition / AgentConnected / ... go through feed."""
        ...

    async def leave_queue(self, request: act.LeaveQueue, context: CallContext) -> None:
        """Take the call out of line."""
        ...

    async def return_to_queue(self, request: act.ReturnToQueue, context: CallContext) -> None:
        """The agent's phone could not be reached: the call goes back to its place in line."""
        ...

    async def request_callback(self, request: act.RequestCallback, context: CallContext) -> None:
        """Register a callback (raises ServiceError)."""
        ...


class NotConnectedCrm:
    """No CRM for this call (a simulated call without ``--crm``, a test): every request fails
    with ``not_connected``."""

    name = "not connected (hotline call --crm files tickets in this node's CRM)"

    async def lookup(self, request: act.Lookup, context: CallContext) -> LookupReply:
        """Fail: there is no CRM to ask."""
        raise ServiceError("not_connected", "no CRM bridge is configured")

    async def create_ticket(self, request: act.CreateTicket, context: CallContext) -> str:
        """Fail: there is no CRM to create the ticket in."""
        raise ServiceError("not_connected", "no CRM bridge is configured")

    async def record_survey(self, request: act.RecordSurvey, context: CallContext) -> None:
        """Fail: there is no CRM to store the rating."""
        raise ServiceError("not_connected", "no CRM bridge is configured")


class NotConnectedRouting:
    """No routing for this call (a simulated call has no agents; hotline serve has them): every
    request fails with ``not_connected``."""

    name = "not connected (agents answer calls of hotline serve)"

    async def enqueue(self, request: act.Enqueue, context: CallContext, feed: Feed) -> None:
        """Fail: there is no queue to join."""
        raise ServiceError("not_connected", "no routing service is configured")

    async def leave_queue(self, request: act.LeaveQueue, context: CallContext) -> None:
        """Nothing to leave."""

    async def return_to_queue(self, request: act.ReturnToQueue, context: CallContext) -> None:
        """Nothing to return to."""

    async def request_callback(self, request: act.RequestCallback, context: CallContext) -> None:
        """Fail: there is no routing to call back from."""
        raise ServiceError("not_connected", "no routing service is configured")
