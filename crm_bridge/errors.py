"""The CRM bridge's errors: each has a stable ``error_id`` (for the API) and says whether trying
again later can help."""

from __future__ import annotations


class CrmError(Exception):
    """Base of the bridge's errors."""

    error_id = "crm-error"
    retryable = False
    """Whether the same request may succeed later (the outbox keeps trying)."""


class TicketInvalidError(CrmError, ValueError):
    """A ticket (or survey) field is wrong; ``field`` names it."""

    error_id = "invalid-ticket"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        """The offending field (dotted for nested ones: ``address.city``)."""
        self.problem = problem
        """What is wrong with it."""


class CrmUnavailableError(CrmError):
    """The CRM cannot be reached, timed out, or answered 5xx/429: try again later."""

    error_id = "crm-unavailable"
    retryable = True


class CrmRejectedError(CrmError):
    """The CRM refused the request for good (4xx, or an answer that makes no sense)."""

    error_id = "crm-rejected"


class NotFoundError(CrmError):
    """No such ticket, customer or outage."""

    error_id = "not-found"
