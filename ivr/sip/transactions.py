"""Transaction and call records of the UAS core, and how requests are matched to them.

Plain mutable records with no behaviour beyond their deadlines: `ivr.sip.uas.SipCore` owns every
state change, so the whole protocol reads in one place. Server transactions follow RFC 3261
§17.2 (with RFC 6026's Accepted state for 2xx), client transactions §17.1.2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from aiosipua import SipRequest, Via

from ivr.sip.events import Addr, CallKey
from ivr.sip.local_sdp import LocalSdp
from ivr.sip.messages import MAGIC_COOKIE, bare_host, tag_of
from ivr.sip.session_timer import SessionTimer
from ivr.sip.timers import Retransmission

TxKey = tuple[str | int, ...]
"""Identifies a server transaction (RFC 3261 §17.2.3)."""


@dataclass(frozen=True, slots=True)
class Incoming:
    """One request that passed the basic checks, with what every handler needs."""

    request: SipRequest
    """The parsed request."""
    source: Addr
    """Where it came from."""
    reply_to: Addr
    """Where its responses go (RFC 3261 §18.2.2, RFC 3581)."""
    key: TxKey
    """Its server transaction."""
    cseq: int
    """Its CSeq number."""
    now: float
    """When it arrived."""

    @property
    def method(self) -> str:
        """The request method."""
        return self.request.method

    @property
    def call_id(self) -> str:
        """The Call-ID."""
        return self.request.headers.get_first("call-id") or ""

    @property
    def to_tag(self) -> str | None:
        """The To tag: present on requests inside a dialog."""
        return tag_of(self.request.headers.get_first("to"))

    @property
    def from_tag(self) -> str:
        """The From tag (``""`` for RFC 2543 peers without one)."""
        return tag_of(self.request.headers.get_first("from")) or ""


def server_key(request: SipRequest, top_via: Via, seq: int, method: str) -> TxKey:
    """The server transaction a request belongs to; pass ``method="INVITE"`` for ACK and CANCEL.

    RFC 3261 §17.2.3: branch (with the magic cookie), sent-by and method. The Call-ID is added
    although the RFC does not need it: a UA that reuses branches across calls (it happens) then
    loses only its own retransmission matching, not other calls. Without the cookie (RFC 2543
    peers) the Call-ID, From tag, CSeq number and the whole top Via stand in.
    """
    branch = top_via.branch or ""
    call_id = request.headers.get_first("call-id") or ""
    if branch.startswith(MAGIC_COOKIE):
        return (branch, bare_host(top_via.host), top_via.port or 5060, call_id, method)
    return (
        "rfc2543",
        call_id,
        tag_of(request.headers.get_first("from")) or "",
        seq,
        (request.headers.get_first("via") or "").strip(),
        method,
    )


class TxState(Enum):
    """States of an INVITE server transaction (RFC 3261 Figure 7, RFC 6026 Figure 5)."""

    PROCEEDING = "proceeding"
    """No final response yet; retransmitted INVITEs get the latest provisional."""
    COMPLETED = "completed"
    """Non-2xx final sent, resent on Timer G until the ACK or Timer H."""
    ACCEPTED = "accepted"
    """2xx sent; resent until the dialog's ACK (by the core, §13.3.1.4) until Timer L."""
    CONFIRMED = "confirmed"
    """ACK for the non-2xx arrived; later ACKs are absorbed until Timer I."""


def earliest(*deadlines: float | None) -> float | None:
    """The earliest of some optional deadlines."""
    present = [d for d in deadlines if d is not None]
    return min(present) if present else None


@dataclass(eq=False)
class InviteTx:
    """An INVITE server transaction: the initial INVITE of a call, a re-INVITE, or a refusal."""

    key: TxKey
    """Its match key."""
    request: SipRequest
    """The INVITE, to build later responses from (ring, answer, reject, 487)."""
    source: Addr
    """Where the INVITE came from (for Via ``received``/``rport``)."""
    reply_to: Addr
    """Where responses go (RFC 3261 §18.2.2, RFC 3581)."""
    cseq: int
    """The INVITE's CSeq number: the dialog's ACK for our 2xx carries the same."""
    to_tag: str
    """Our To-tag in every response but 100 Trying (the dialog's local tag)."""
    call: Call | None = None
    """The call this INVITE belongs to; ``None`` for refusals that never became calls."""
    state: TxState = TxState.PROCEEDING
    """Where it is in RFC 3261 Figure 7 / RFC 6026 Figure 5."""
    last: bytes = b""
    """The latest response, resent when the INVITE is retransmitted."""
    resend: Retransmission | None = None
    """Timer G (non-2xx) or 2xx retransmission, while waiting for the ACK."""
    timeout_at: float | None = None
    """Timer H (non-2xx), or the 64*T1 wait for the ACK of our 2xx (§13.3.1.4)."""
    expire_at: float | None = None
    """Timer I (after the ACK of a non-2xx) or Timer L (after a 2xx): then the record goes."""
    offerless: bool = False
    """A re-INVITE without SDP: our 2xx carried an offer, the ACK carries the answer."""
    merged_id: tuple[str, str, int] | None = None
    """Call-ID, From tag and CSeq of an initial INVITE, to spot merged requests (§8.2.2.2)."""

    @property
    def deadline(self) -> float | None:
        """When the core must next look at this transaction."""
        resend_at = self.resend.next_at if self.resend else None
        return earliest(resend_at, self.timeout_at, self.expire_at)

    @property
    def holds_call(self) -> bool:
        """Whether the call must stay in the table for this transaction's sake."""
        if self.state is TxState.ACCEPTED:
            return self.timeout_at is not None
        return True


@dataclass(eq=False)
class NonInviteTx:
    """A non-INVITE server transaction (§17.2.2): its final response, resent on retransmissions."""

    key: TxKey
    """Its match key."""
    reply_to: Addr
    """Where responses go."""
    to_tag: str
    """Our To-tag for its responses."""
    expire_at: float
    """Timer J after the final response (or a cap while the registrar has not answered)."""
    last: bytes | None = None
    """The latest response; ``None`` while a REGISTER waits for the registrar."""


@dataclass(eq=False)
class ClientTx:
    """Our own non-INVITE request: BYE, session refresh UPDATE or REFER (§17.1.2, Timers E, F)."""

    branch: str
    """The Via branch responses are matched on (§17.1.3)."""
    method: str
    """BYE, UPDATE or REFER (matched against the response's CSeq method)."""
    call: Call
    """The call it belongs to; it keeps the call in the table until it completes."""
    resend: Retransmission
    """Timer E: T1 doubling up to T2, T2 once a provisional came (Proceeding)."""
    timeout_at: float
    """Timer F: 64*T1 after sending, the transaction gives up."""
    proceeding: bool = False
    """A provisional response arrived."""
    cseq: int = 0
    """Its CSeq number (a REFER's names its subscription, RFC 3515 §2.4.6)."""

    @property
    def deadline(self) -> float:
        """When the core must next look at this transaction."""
        return min(self.resend.next_at, self.timeout_at)


class CallState(Enum):
    """Where a call stands, from the INVITE to the last transaction."""

    RINGING = "ringing"
    """The initial INVITE waits for the application: ring, answer or reject."""
    ANSWERED = "answered"
    """Our 2xx is out, the ACK has not come."""
    CONFIRMED = "confirmed"
    """The ACK came; the call is up."""
    TERMINATING = "terminating"
    """We hung up: our BYE is in flight, or waits for the ACK before it may go (§15)."""
    ENDED = "ended"
    """Over; the record goes once no transaction needs it."""


@dataclass(eq=False)
class Call:
    """One call: the dialog (RFC 3261 §12) and what the core does for it."""

    key: CallKey
    """``"<Call-ID>;<local tag>"``."""
    call_id: str
    """The SIP Call-ID."""
    local_tag: str
    """Our To-tag: the dialog's local tag."""
    remote_tag: str
    """The caller's From tag (``""`` for RFC 2543 peers)."""
    local_header: str
    """From header of requests we send: the INVITE's To with our tag."""
    remote_header: str
    """To header of requests we send: the INVITE's From."""
    remote_target: str
    """Where in-dialog requests go: the latest Contact URI (§12.2.1.1)."""
    route_set: list[str]
    """The INVITE's Record-Route, in order (§12.1.1)."""
    source: Addr
    """Where the INVITE came from; the next hop when a URI has no IP literal."""
    invite: InviteTx
    """The initial INVITE transaction."""
    remote_cseq: int
    """Highest CSeq seen from the caller (§12.2.2)."""
    peer_allows_update: bool
    """Whether we may refresh the session with UPDATE."""
    state: CallState = CallState.RINGING
    """Where the call stands."""
    local_cseq: int = 0
    """CSeq of our last request in this dialog."""
    sdp: LocalSdp | None = None
    """Our description, once answered."""
    remote_sdp_body: bytes = b""
    """The caller's latest SDP body, to report MediaChanged only on change."""
    timer: SessionTimer | None = None
    """The RFC 4028 session timer in force, if any."""
    session_at: float | None = None
    """When to BYE (caller refreshes) or to send an UPDATE (we refresh)."""
    ring_deadline: float | None = None
    """When an undecided call is refused (480)."""
    bye_after_ack: bool = False
    """We hung up before the ACK: the BYE goes when it comes or the 2xx gives up (§15)."""
    cancelled: bool = False
    """CANCEL (or an early BYE) ended it before an answer: never answer it."""
    ended: bool = False
    """CallEnded was reported."""
    pending_acks: dict[int, InviteTx] = field(default_factory=dict)
    """2xx responses waiting for their ACK, by CSeq number."""
    invites: set[InviteTx] = field(default_factory=set)
    """INVITE transactions of this call still alive."""
    requests: set[ClientTx] = field(default_factory=set)
    """Our requests in flight."""
    refers: set[int] = field(default_factory=set)
    """CSeq numbers of our REFERs whose implicit subscription may still NOTIFY (RFC 3515)."""

    @property
    def deadline(self) -> float | None:
        """The call's own next deadline (its transactions have theirs)."""
        return earliest(self.session_at, self.ring_deadline)
