"""Errors the SIP UAS core raises at the application: each has a stable ``error_id``."""

from __future__ import annotations


class SipError(Exception):
    """Base of the SIP package's errors."""

    error_id = "sip-error"


class NoSuchCallError(SipError):
    """The call key is not (or no longer) in the call table."""

    error_id = "no-such-call"


class CallStateError(SipError):
    """The call is in a state where the requested action makes no sense (e.g. answered twice)."""

    error_id = "bad-call-state"


class CallCancelledError(CallStateError):
    """The caller cancelled the call; it must not be rung or answered any more (RFC 3261 §9.2)."""

    error_id = "call-cancelled"
