"""Events the SIP UAS core (`ivr.sip.uas.SipCore`) reports to the application, one per fact."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiosipua import SdpMessage, SipRequest

Addr = tuple[str, int]
"""A UDP address: (IP literal, port)."""

CallKey = str
"""Names one call for its whole life: ``"<Call-ID>;<our To-tag>"`` (stable, unique per dialog)."""

EndReason = Literal[
    "bye", "ack_timeout", "cancelled", "rejected", "local_bye", "session_expired", "ring_timeout"
]
"""Why a call ended: caller BYE, no ACK for our 2xx, CANCEL, our final non-2xx, our BYE,
no RFC 4028 refresh, or the application never decided within ``ring_timeout``."""


@dataclass(frozen=True)
class IncomingCall:
    """A new INVITE with a usable SDP offer; answer, ring or reject it by ``call_key``."""

    call_key: CallKey
    """The key for ring/answer/reject/hangup and every later event of this call."""
    call_id: str
    """The SIP Call-ID, for log lines."""
    caller: str
    """User part of the From URI (the caller's number), ``""`` if there is none."""
    caller_display: str
    """Display name of the From header, ``""`` if there is none."""
    dialed: str
    """User part of the Request-URI (falling back to the To URI): the number dialed."""
    remote_sdp: SdpMessage
    """The caller's SDP offer, parsed; it has an audio stream with an address."""
    addr: Addr
    """The UDP address the INVITE came from."""


@dataclass(frozen=True)
class CallAcked:
    """The ACK for our 2xx arrived: the dialog is confirmed, media may flow both ways."""

    call_key: CallKey
    """The call that is now confirmed."""


@dataclass(frozen=True)
class CallCancelled:
    """The caller gave up before we answered; the call must never be answered."""

    call_key: CallKey
    """The call that was cancelled (a CallEnded follows at once)."""


@dataclass(frozen=True)
class CallEnded:
    """The call is over for the application: stop its media. Exactly one per IncomingCall."""

    call_key: CallKey
    """The call that ended."""
    reason: EndReason
    """Why it ended."""


@dataclass(frozen=True)
class MediaChanged:
    """A re-INVITE or UPDATE brought a new SDP; it was answered with the current local SDP."""

    call_key: CallKey
    """The call whose remote media changed."""
    remote_sdp: SdpMessage
    """The new remote SDP."""
    hold: bool
    """The caller put us on hold (sendonly, inactive or c=0.0.0.0): stop sending audio."""


@dataclass(frozen=True)
class DtmfInfo:
    """A key press carried by SIP INFO (application/dtmf-relay or application/dtmf)."""

    call_key: CallKey
    """The call the key belongs to."""
    digit: str
    """One of ``0123456789*#ABCD``."""


@dataclass(frozen=True)
class RegisterRequest:
    """A REGISTER for the registrar module; answer it with ``SipCore.send_response``."""

    request: SipRequest
    """The parsed REGISTER (do not mutate it)."""
    addr: Addr
    """The UDP address it came from."""


@dataclass(frozen=True)
class ReferAnswered:
    """The final response to our REFER (RFC 3515 §2.4.2): 2xx accepted, else refused. Timer F
    without any final response is reported as 408."""

    call_key: CallKey
    """The call the REFER was sent in."""
    refer_id: int
    """The REFER's CSeq number: the ``id`` of its subscription (RFC 3515 §2.4.6)."""
    status: int
    """The final status (202 Accepted when the peer takes it on)."""
    reason: str
    """Its reason phrase."""


@dataclass(frozen=True)
class ReferNotify:
    """A NOTIFY of a REFER's implicit subscription (RFC 3515 §2.4.4); it was answered 200."""

    call_key: CallKey
    """The call the REFER was sent in."""
    refer_id: int
    """The REFER it reports on (its CSeq number)."""
    subscription_state: str
    """The Subscription-State header (``active;expires=60``, ``terminated;reason=noresource``);
    ``""`` when the peer left it out."""
    body: bytes
    """The message/sipfrag body: the status line of the transferee's INVITE to the target."""


@dataclass(frozen=True)
class Malformed:
    """Input that was dropped or refused as broken, for one rate-limited log line upstream."""

    addr: Addr
    """Where it came from."""
    reason: str
    """What was wrong, short and without the payload."""


SipEvent = (
    IncomingCall
    | CallAcked
    | CallCancelled
    | CallEnded
    | MediaChanged
    | DtmfInfo
    | RegisterRequest
    | ReferAnswered
    | ReferNotify
    | Malformed
)
