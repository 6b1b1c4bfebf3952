"""Routing's errors; each carries a stable ``error_id`` for the HTTP API and the IVR."""

from __future__ import annotations


class RoutingError(Exception):
    """A routing request could not be carried out."""

    error_id = "routing-error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(f"{self.error_id}: {detail}" if detail else self.error_id)
        self.detail = detail


class NoSuchAgentError(RoutingError):
    """The agent id is unknown (never logged in)."""

    error_id = "no-such-agent"


class InvalidTransitionError(RoutingError):
    """The agent's current state does not allow the request (ready while on a call...)."""

    error_id = "invalid-transition"


class AgentBusyError(InvalidTransitionError):
    """The agent is on a call: log out or go not ready after it."""

    error_id = "agent-busy"


class NoSuchReservationError(RoutingError):
    """Accept or reject of a call that is not (or no longer) offered to this agent."""

    error_id = "no-such-reservation"


class AlreadyQueuedError(RoutingError):
    """The call id is already in routing (a second Enqueue for the same call)."""

    error_id = "already-queued"


ERRORS: dict[str, type[RoutingError]] = {
    cls.error_id: cls
    for cls in (
        NoSuchAgentError,
        InvalidTransitionError,
        AgentBusyError,
        NoSuchReservationError,
        AlreadyQueuedError,
    )
}
"""The error ids the Lua script raises, and their classes."""
