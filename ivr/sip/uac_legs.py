"""Records of the agent-leg UAC: legs, the requests we sent, the answers we keep.

Plain mutable records with no behaviour beyond their deadlines, like `ivr.sip.transactions` for
the UAS: `ivr.sip.uac.SipClient` owns every state change of a leg, `ivr.sip.uac_dialog` the
answers to the agent's requests inside the leg's dialog.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from aiosipua import SipRequest
from aiosipua.auth import SipDigestAuth

from ivr.sip.events import Addr
from ivr.sip.local_sdp import LocalSdp
from ivr.sip.messages import cseq_of
from ivr.sip.timers import Retransmission
from ivr.sip.transactions import TxKey, earliest
from ivr.sip.uac_events import LegKey
from ivr.sip.uac_messages import Dialog


class LegState(Enum):
    """Where a leg stands in the protocol (the application hears of it through events)."""

    CALLING = "calling"
    """INVITE sent, no provisional yet (Timer A resends it)."""
    PROCEEDING = "proceeding"
    """A provisional came: the agent's phone is reached, maybe ringing."""
    UP = "up"
    """2xx received and ACKed: the dialog is confirmed."""
    ENDED = "ended"
    """Over; the record lingers 64*T1 to absorb retransmissions, then goes."""


@dataclass(eq=False)
class ClientRequest:
    """A request we sent on a leg, resent until answered (Timers A/B or E/F, §17.1)."""

    request: SipRequest
    """As sent: CANCEL and the ACK of a non-2xx are built from the INVITE."""
    data: bytes
    """Its exact bytes: retransmissions are byte-identical."""
    dest: Addr
    """Where it went."""
    branch: str
    """Its Via branch: responses match on it and the CSeq method (§17.1.3)."""
    resend: Retransmission | None
    """Timer A (INVITE, doubling without cap) or E (others, capped at T2)."""
    timeout_at: float | None
    """Timer B (INVITE, only while Calling) or F."""
    final: int = 0
    """Status of its final response, 0 while there is none."""
    ack: bytes | None = None
    """INVITE: the ACK of its non-2xx final, resent when the final is (§17.1.1.2)."""
    authenticated: bool = False
    """It carries credentials answering a challenge: a second challenge is final."""

    @property
    def method(self) -> str:
        """The request method."""
        return self.request.method

    @property
    def cseq(self) -> int:
        """Its CSeq number."""
        seq = cseq_of(self.request)
        assert seq is not None  # we built it
        return seq[0]

    @property
    def deadline(self) -> float | None:
        """When the client must next look at it."""
        return earliest(self.resend.next_at if self.resend else None, self.timeout_at)


@dataclass(eq=False)
class HeldReply:
    """Our final response to one of the agent's requests, resent for its retransmissions."""

    data: bytes
    """The response's bytes."""
    dest: Addr
    """Where it went (Via, rport)."""
    expire_at: float
    """Timer J (§17.2.2; Timer L for a re-INVITE's 2xx): then retransmissions are over."""


@dataclass(eq=False)
class PendingAnswer:
    """Our 2xx to a re-INVITE, resent T1, 2T1 … ≤ T2 until its ACK (§13.3.1.4)."""

    reply: HeldReply
    """The 2xx."""
    resend: Retransmission
    """The next resend."""
    timeout_at: float
    """64*T1: no ACK came; the session is ended with BYE."""
    offerless: bool
    """The re-INVITE had no SDP: our 2xx carried an offer, the ACK carries the answer."""


@dataclass(eq=False)
class StrayDialog:
    """A 2xx from a second fork of our INVITE, or one that came too late: ACKed, then BYE."""

    dialog: Dialog
    """The dialog it created."""
    ack: bytes
    """Our ACK, resent for retransmissions of that 2xx."""
    ack_dest: Addr
    """Where the ACK goes."""


@dataclass(eq=False)
class Leg:
    """One outbound leg: its INVITE, its dialog once answered, and what is in flight."""

    key: LegKey
    """Its Call-ID."""
    local_tag: str
    """Our From-tag: the dialog's local tag."""
    from_header: str
    """From of every request we send on the leg."""
    to_header: str
    """To of the INVITE (no tag)."""
    target_uri: str
    """Request-URI of the INVITE: the agent's contact."""
    dest: Addr
    """Where the INVITE (and CANCEL) go: the contact's address, or an outbound proxy."""
    contact: str
    """Our Contact."""
    sdp: LocalSdp
    """Our offer, and later the description re-INVITEs and UPDATEs are answered from."""
    auth: SipDigestAuth | None
    """Credentials for a 401/407, if any."""
    invite: ClientRequest = field(init=False)
    """The current INVITE (a new one after a challenge)."""
    old_invites: list[ClientRequest] = field(default_factory=list)
    """Challenged INVITEs: their retransmitted 401/407 are ACKed again until the leg goes."""
    local_cseq: int = 0
    """CSeq of our last request on the leg."""
    state: LegState = LegState.CALLING
    """Where the leg stands."""
    reported: bool = False
    """LegFailed or LegEnded went out: nothing more is reported."""
    ringing_reported: bool = False
    """LegRinging went out."""
    cancel_reason: str | None = None
    """The application gave up on the leg (``cancel``, ring timeout): never bring it up."""
    cancel_sent: bool = False
    """Our CANCEL is out."""
    cancel_at: float | None = None
    """§9.1: 64*T1 after the CANCEL, the INVITE is given up even without its final response."""
    ring_deadline: float | None = None
    """When an unanswered leg is cancelled (the application's ring timeout)."""
    dialog: Dialog | None = None
    """The dialog the first 2xx created."""
    ack: tuple[bytes, Addr] | None = None
    """Our ACK of that 2xx, resent whenever the 2xx is (§13.2.2.4)."""
    remote_cseq: int | None = None
    """Highest CSeq of the agent's requests (§12.2.2)."""
    remote_sdp_body: bytes = b""
    """The agent's latest SDP body, to report LegMediaChanged only on change."""
    requests: set[ClientRequest] = field(default_factory=set)
    """Our CANCEL and BYEs in flight."""
    replies: dict[TxKey, HeldReply] = field(default_factory=dict)
    """Our answers to the agent's requests, by server transaction, until the leg goes."""
    answers: dict[int, PendingAnswer] = field(default_factory=dict)
    """Our 2xx to re-INVITEs waiting for their ACK, by CSeq number."""
    strays: dict[str, StrayDialog] = field(default_factory=dict)
    """Dialogs of other forks (or late 2xx), by their To-tag."""
    expire_at: float | None = None
    """Once ended: when the record goes."""

    def deadline(self) -> float | None:
        """The earliest time the client must look at this leg."""
        times = [
            self.invite.deadline,
            self.ring_deadline,
            self.cancel_at,
            *(r.deadline for r in self.requests),
            *(a.resend.next_at for a in self.answers.values()),
            *(a.timeout_at for a in self.answers.values()),
            min((r.expire_at for r in self.replies.values()), default=None),
        ]
        if self.state is LegState.ENDED and not self.requests:
            times.append(self.expire_at)
        return earliest(*times)
