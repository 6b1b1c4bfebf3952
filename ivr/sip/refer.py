"""One blind transfer by REFER, as a pure state machine: sent → accepted → succeeded or failed.

The hotline is the transferor (RFC 5589 §6): it REFERs the caller's side (the PBX or SBC, the
transferee) to the agent (the transfer target) and learns how the transferee's INVITE to the
agent went from the NOTIFYs of the implicit subscription (RFC 3515 §2.4.4), each carrying a
message/sipfrag status line. No I/O and no clock: responses, NOTIFYs and the time come in as
arguments, the deadline goes out as data (``deadline``, ``handle_timer``). `SipCore` sends the
REFER and answers the NOTIFYs; `ivr.sip.refer_transfers` pumps this machine for each call.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

REFER_TIMEOUT = 45.0
"""Seconds from the REFER to the transferee's final word. The agent had accepted the call in
routing, so their phone answers within seconds; a PBX that takes the REFER but never reports an
outcome must not keep the caller waiting (the call falls back to the bridge)."""


class ReferState(Enum):
    """Where a transfer stands."""

    SENT = "sent"
    """The REFER is out, no final response and no NOTIFY yet."""
    ACCEPTED = "accepted"
    """2xx to the REFER (or a first NOTIFY): the transferee is calling the target."""
    SUCCEEDED = "succeeded"
    """A NOTIFY reported a 2xx from the target: the caller talks to the agent now."""
    FAILED = "failed"
    """Refused, failed, or no outcome in time."""


OutcomeKind = Literal["transferred", "refused", "failed", "timeout"]
"""How a transfer ended: the target answered; the REFER got a non-2xx; the transferee reported
a failure (or ended the subscription without a final status); nothing decided in time."""


@dataclass(frozen=True)
class ReferOutcome:
    """How a transfer ended."""

    kind: OutcomeKind
    """transferred, refused, failed or timeout (the ``outcome`` label of the metric)."""
    status: int
    """The status that decided: the target's (from the sipfrag), the REFER's final response
    when it was refused, 408 when nothing came in time, 0 when the subscription ended without
    a final status."""
    detail: str
    """What happened, for the log line."""

    @property
    def succeeded(self) -> bool:
        """The transferee reached the target (sipfrag 2xx): the caller talks to the agent."""
        return self.kind == "transferred"


def sipfrag_status(body: bytes) -> int | None:
    """The status code of a message/sipfrag body's start line (``SIP/2.0 180 Ringing``), or
    ``None`` if the body does not start with a SIP status line (RFC 3420; RFC 3515 §2.4.5)."""
    line = body.lstrip(b"\r\n\t ").split(b"\n", 1)[0].strip()
    parts = line.split(None, 2)
    if len(parts) < 2 or parts[0].upper() != b"SIP/2.0":
        return None
    code = parts[1]
    if len(code) != 3 or not code.isdigit() or not 100 <= int(code) <= 699:
        return None
    return int(code)


def subscription_terminated(state: str) -> bool:
    """Whether a Subscription-State header value says ``terminated`` (RFC 6665 §8.2.3)."""
    return state.split(";", 1)[0].strip().lower() == "terminated"


class ReferTransfer:
    """One REFER and its subscription. Feed it the REFER's final response (`on_response`), each
    NOTIFY (`on_notify`) and the timer (`handle_timer` at `deadline`); each returns the outcome
    once, when the transfer is decided, and ``None`` otherwise (and for anything after)."""

    def __init__(self, refer_id: int, now: float, timeout: float = REFER_TIMEOUT) -> None:
        self.refer_id = refer_id
        """The REFER's CSeq number: events naming another REFER are not for this transfer."""
        self.state = ReferState.SENT
        self.outcome: ReferOutcome | None = None
        """Set once the transfer is decided."""
        self.progress: int | None = None
        """The latest provisional status the transferee reported (100 Trying, 180 Ringing)."""
        self._deadline: float | None = now + timeout

    @property
    def deadline(self) -> float | None:
        """When `handle_timer` must be called; ``None`` once decided."""
        return self._deadline

    @property
    def done(self) -> bool:
        """Whether the transfer is decided."""
        return self.outcome is not None

    def on_response(self, status: int, reason: str) -> ReferOutcome | None:
        """The REFER's final response (a 408 also stands for none at all, Timer F)."""
        if self.done:
            return None
        if 200 <= status < 300:
            self.state = ReferState.ACCEPTED
            return None
        # RFC 3515 §2.4.2: refused (405/501 from a peer without REFER, 403/603 by policy); a 408
        # is also what the core reports when no final response came at all (Timer F).
        kind: OutcomeKind = "timeout" if status == 408 else "refused"
        return self._decide(kind, status, f"REFER refused: {status} {reason}".strip())

    def on_notify(self, subscription_state: str, body: bytes) -> ReferOutcome | None:
        """A NOTIFY of the subscription: progress, or the target's final answer."""
        if self.done:
            return None
        # A NOTIFY implies the REFER was accepted, whether or not its 202 got here first.
        self.state = ReferState.ACCEPTED
        status = sipfrag_status(body)
        if status is not None and status >= 200:
            if status < 300:
                return self._decide("transferred", status, f"the target answered: {status}")
            return self._decide("failed", status, f"the target refused: {status}")
        if status is not None:
            self.progress = status
        if subscription_terminated(subscription_state):
            # RFC 3515 §2.4.7: the subscription may end early (noresource, timeout) without a
            # final status; the transfer's outcome is then unknown: treat it as failed.
            return self._decide("failed", 0, f"subscription ended ({subscription_state})")
        return None

    def handle_timer(self, now: float) -> ReferOutcome | None:
        """Give up when no outcome came in time."""
        if self.done or self._deadline is None or now < self._deadline:
            return None
        where = "the REFER got no answer" if self.state is ReferState.SENT else "no final NOTIFY"
        return self._decide("timeout", 408, f"{where} in time")

    def _decide(self, kind: OutcomeKind, status: int, detail: str) -> ReferOutcome:
        self.state = ReferState.SUCCEEDED if kind == "transferred" else ReferState.FAILED
        self.outcome = ReferOutcome(kind, status, detail)
        self._deadline = None
        return self.outcome
