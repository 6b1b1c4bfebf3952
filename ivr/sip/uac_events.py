"""Events the SIP UAC for agent legs (`ivr.sip.uac.SipClient`) reports, and its errors.

Every leg ends with exactly one ``LegFailed`` (it never came up) or one ``LegEnded`` (it was
answered and is now over). Ends the application asked for (``cancel``, ``bye``) are reported
at once, when asked: media can stop then, while the protocol finishes in the background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiosipua import SdpMessage

from ivr.sip.errors import SipError
from ivr.sip.events import Malformed

LegKey = str
"""Names one outbound leg for its whole life: its Call-ID (we generate it, so it is unique)."""

LegEndReason = Literal["remote_bye", "local_bye", "ack_timeout"]
"""Why an answered leg ended: the agent hung up, we hung up, or the agent never ACKed the 2xx
we sent to one of its re-INVITEs (RFC 3261 §13.3.1.4: the session is then ended with BYE)."""


@dataclass(frozen=True)
class LegRinging:
    """The agent's phone rings (180) or sends early progress (183); reported once per leg."""

    leg: LegKey
    """The leg that rings."""
    status: int
    """180 or 183."""


@dataclass(frozen=True)
class LegAnswered:
    """The agent answered (2xx, already ACKed); media may flow both ways."""

    leg: LegKey
    """The leg that is now up."""
    remote_sdp: SdpMessage
    """The SDP answer of the 2xx, parsed; it has an audio stream with an address."""


@dataclass(frozen=True)
class LegFailed:
    """The leg never came up: a final non-2xx, a timeout, an unusable answer, or our cancel."""

    leg: LegKey
    """The leg that failed."""
    status: int
    """The final status (486 busy, 603 declined, ...); 408 when nothing answered (Timer B);
    487 after ``cancel`` whatever raced it; 488 when the 2xx carried no usable SDP answer."""
    reason: str
    """The reason phrase of the response, or what happened on our side (e.g. ``ring timeout``)."""


@dataclass(frozen=True)
class LegEnded:
    """An answered leg is over: stop its media. Exactly one per ``LegAnswered``."""

    leg: LegKey
    """The leg that ended."""
    reason: LegEndReason
    """Why it ended."""


@dataclass(frozen=True)
class LegMediaChanged:
    """The agent's re-INVITE or UPDATE brought a new SDP; it was answered from our current SDP."""

    leg: LegKey
    """The leg whose remote media changed."""
    remote_sdp: SdpMessage
    """The new remote SDP."""
    hold: bool
    """The agent put the leg on hold (sendonly, inactive or c=0.0.0.0): stop sending audio."""


LegEvent = LegRinging | LegAnswered | LegFailed | LegEnded | LegMediaChanged | Malformed
"""Everything ``SipClient.next_event`` returns (Malformed: broken input for one of our legs)."""


class NoSuchLegError(SipError):
    """The leg key is not (or no longer) in the client's table."""

    error_id = "no-such-leg"


class LegStateError(SipError):
    """The leg is in a state where the action makes no sense (BYE while ringing, say)."""

    error_id = "bad-leg-state"
