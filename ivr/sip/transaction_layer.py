"""RFC 3261 §17 over UDP for the UAS core: answers kept and resent, our requests resent, timers.

Server transactions keep their latest response and resend it for a retransmitted request
(§17.2.1, §17.2.2); finals to INVITE are resent on Timer G until the ACK, 2xx until the dialog's
ACK (§13.3.1.4, RFC 6026); our BYE/UPDATE/REFER are resent on Timer E until Timer F (§17.1.2). The
layer knows nothing of calls: `handle_timer` returns what happened, and `SipCore` decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiosipua import SipRequest, SipResponse, generate_tag

from ivr.sip.events import Addr
from ivr.sip.messages import Headers, build_response, contact_for, cseq_of
from ivr.sip.timers import Retransmission, TimerValues
from ivr.sip.transactions import (
    Call,
    ClientTx,
    Incoming,
    InviteTx,
    NonInviteTx,
    TxKey,
    TxState,
    earliest,
)


@dataclass
class Expired:
    """What the transaction timers ended in one `handle_timer` call, for the core to act on."""

    unacked: list[InviteTx] = field(default_factory=list)
    """2xx responses that got no ACK within 64*T1 (§13.3.1.4: the session must be ended)."""
    dropped: list[InviteTx] = field(default_factory=list)
    """INVITE transactions gone for good (Timer H, I or L)."""
    failed: list[ClientTx] = field(default_factory=list)
    """Our requests that got no final response (Timer F)."""


class TransactionLayer:
    """The UAS's transactions: every response it sends and every request of its own."""

    def __init__(self, *, local: Addr, server: str, timers: TimerValues) -> None:
        self.local = local
        self.server = server
        self.timers = timers
        self.invites: dict[TxKey, InviteTx] = {}
        self.replies: dict[TxKey, NonInviteTx] = {}
        self.requests: dict[str, ClientTx] = {}
        self.outbox: list[tuple[bytes, Addr]] = []

    def __len__(self) -> int:
        return len(self.invites) + len(self.replies) + len(self.requests)

    def send(self, data: bytes, addr: Addr) -> None:
        """Queue a datagram."""
        self.outbox.append((data, addr))

    # ------------------------------------------------------------------ INVITE server side

    def open_invite(self, rx: Incoming, to_tag: str, call: Call | None = None) -> InviteTx:
        """A new INVITE server transaction, in Proceeding."""
        tx = InviteTx(rx.key, rx.request, rx.source, rx.reply_to, rx.cseq, to_tag, call)
        self.invites[rx.key] = tx
        return tx

    def invite_response(
        self,
        tx: InviteTx,
        status: int,
        reason: str,
        headers: Headers = (),
        *,
        dialog: bool = False,
        body: bytes = b"",
    ) -> bytes:
        """A response to the transaction's INVITE; ``dialog`` for 1xx-with-tag and 2xx."""
        response = build_response(
            tx.request,
            status,
            reason,
            source=tx.source,
            to_tag=None if status == 100 else tx.to_tag,
            server=self.server,
        )
        if dialog:
            # §12.1.1: responses that create the dialog copy Record-Route and name our Contact.
            for route in tx.request.headers.get("record-route"):
                response.headers.append("Record-Route", route)
            response.headers.append("Contact", contact_for(self.local))
        for name, value in headers:
            response.headers.append(name, value)
        if body:
            response.headers.set_single("Content-Type", "application/sdp")
            response.body = body
        return bytes(response)

    def provisional(self, tx: InviteTx, status: int, reason: str, *, dialog: bool) -> None:
        """Send a 1xx; it is what a retransmitted INVITE gets until the final (§17.2.1)."""
        tx.last = self.invite_response(tx, status, reason, dialog=dialog)
        self.send(tx.last, tx.reply_to)

    def accept(self, tx: InviteTx, body: bytes, headers: Headers, now: float) -> None:
        """A 2xx, resent T1, 2T1, … ≤ T2 until its ACK (`stop_2xx`) or 64*T1 (§13.3.1.4)."""
        tx.last = self.invite_response(tx, 200, "OK", headers, dialog=True, body=body)
        tx.state = TxState.ACCEPTED
        self._resend_until_ack(tx, now)
        tx.expire_at = now + self.timers.transaction_timeout  # Timer L (RFC 6026 §8.7)
        self.send(tx.last, tx.reply_to)

    def refuse(
        self, tx: InviteTx, status: int, reason: str, now: float, headers: Headers = ()
    ) -> None:
        """A non-2xx final, resent on Timer G until the ACK or Timer H (§17.2.1)."""
        tx.last = self.invite_response(tx, status, reason, headers)
        tx.state = TxState.COMPLETED
        self._resend_until_ack(tx, now)
        self.send(tx.last, tx.reply_to)

    def _resend_until_ack(self, tx: InviteTx, now: float) -> None:
        t1 = self.timers.t1
        tx.resend = Retransmission(tx.last, tx.reply_to, now + t1, t1)
        tx.timeout_at = now + self.timers.transaction_timeout

    def stop_2xx(self, tx: InviteTx) -> None:
        """The 2xx got its ACK (or the session ended): no more resends; absorb until Timer L."""
        tx.resend = None
        tx.timeout_at = None

    def invite_retransmitted(self, key: TxKey) -> bool:
        """Answer a retransmitted INVITE, if it is one."""
        tx = self.invites.get(key)
        if tx is None:
            return False
        if tx.state in (TxState.PROCEEDING, TxState.COMPLETED):
            # §17.2.1: resend the latest provisional, or the final response.
            self.send(tx.last, tx.reply_to)
        elif tx.state is TxState.ACCEPTED and tx.timeout_at is not None:
            # RFC 6026 §7.1 absorbs it and waits for our next 2xx retransmission; resending the
            # 2xx now spares the caller that wait, and is what SIPp's retransmission tests expect.
            self.send(tx.last, tx.reply_to)
        return True

    def ack_for_final(self, key: TxKey, now: float) -> bool:
        """Take an ACK for a non-2xx final (same transaction, §17.2.1); False if it is not one."""
        tx = self.invites.get(key)
        if tx is None or tx.state not in (TxState.COMPLETED, TxState.CONFIRMED):
            return False
        if tx.state is TxState.COMPLETED:
            tx.state = TxState.CONFIRMED
            tx.resend = None
            tx.timeout_at = None
            tx.expire_at = now + self.timers.t4  # Timer I: absorb resent ACKs
        return True

    # ------------------------------------------------------------------ non-INVITE server side

    def request_retransmitted(self, key: TxKey) -> bool:
        """Answer a retransmitted non-INVITE request with the same response (§17.2.2)."""
        tx = self.replies.get(key)
        if tx is None:
            return False
        if tx.last is not None:
            self.send(tx.last, tx.reply_to)
        return True

    def reply(
        self,
        rx: Incoming,
        status: int,
        reason: str,
        headers: Headers = (),
        *,
        to_tag: str | None = None,
        body: bytes = b"",
    ) -> None:
        """Answer a non-INVITE request and keep the answer for its retransmissions (Timer J)."""
        tag = to_tag or rx.to_tag or generate_tag()
        response = build_response(
            rx.request, status, reason, source=rx.source, to_tag=tag, server=self.server
        )
        for name, value in headers:
            response.headers.append(name, value)
        if body:
            response.headers.set_single("Content-Type", "application/sdp")
            response.body = body
        data = bytes(response)
        expire = rx.now + self.timers.transaction_timeout
        self.replies[rx.key] = NonInviteTx(rx.key, rx.reply_to, tag, expire, data)
        self.send(data, rx.reply_to)

    def hold_request(self, rx: Incoming) -> None:
        """Keep a request another module answers (REGISTER): retransmissions absorbed meanwhile."""
        expire = rx.now + self.timers.transaction_timeout
        self.replies[rx.key] = NonInviteTx(rx.key, rx.reply_to, generate_tag(), expire)

    def answer_held(self, key: TxKey, data: bytes, final: bool, now: float) -> None:
        """Record another module's response to a held request (Timer J from a final)."""
        tx = self.replies.get(key)
        if tx is not None and final:
            tx.last = data
            tx.expire_at = now + self.timers.transaction_timeout

    def stateless(
        self, request: SipRequest, status: int, reason: str, source: Addr, reply_to: Addr
    ) -> None:
        """A response to a request too broken for a transaction (no usable CSeq, say)."""
        response = build_response(
            request, status, reason, source=source, to_tag=generate_tag(), server=self.server
        )
        self.send(bytes(response), reply_to)

    # ------------------------------------------------------------------ client side

    def start_request(
        self,
        call: Call,
        method: str,
        data: bytes,
        *,
        branch: str,
        hop: Addr,
        now: float,
        cseq: int = 0,
    ) -> ClientTx:
        """Send our request; resent on Timer E until a final response or Timer F (§17.1.2)."""
        t1 = self.timers.t1
        tx = ClientTx(
            branch=branch,
            method=method,
            call=call,
            resend=Retransmission(data, hop, now + t1, t1),
            timeout_at=now + self.timers.transaction_timeout,
            cseq=cseq,
        )
        self.requests[branch] = tx
        self.send(data, hop)
        return tx

    def response(self, response: SipResponse, branch: str) -> ClientTx | None:
        """The request a final response completes (it is forgotten), or ``None``.

        Responses that match nothing are ignored (§17.1.3); a provisional moves the request to
        Proceeding, where it is resent every T2 (§17.1.2.2).
        """
        tx = self.requests.get(branch)
        cseq = cseq_of(response)
        if tx is None or cseq is None or cseq[1] != tx.method:
            return None
        if response.status_code < 200:
            if not tx.proceeding:
                tx.proceeding = True
                tx.resend.interval = self.timers.t2
            return None
        del self.requests[branch]
        return tx

    # ------------------------------------------------------------------ timers

    def deadline(self) -> float | None:
        """The earliest transaction timer."""
        return earliest(
            min(
                (d for tx in self.invites.values() if (d := tx.deadline) is not None), default=None
            ),
            min((tx.expire_at for tx in self.replies.values()), default=None),
            min((tx.deadline for tx in self.requests.values()), default=None),
        )

    def handle_timer(self, now: float) -> Expired:
        """Fire the timers due at ``now``; report what ended."""
        expired = Expired()
        for tx in list(self.invites.values()):
            self._invite_timers(tx, now, expired)
        for reply in list(self.replies.values()):
            if reply.expire_at <= now:  # Timer J (§17.2.2)
                del self.replies[reply.key]
        for request in list(self.requests.values()):
            if request.timeout_at <= now:  # Timer F: the request failed (§17.1.2.2)
                del self.requests[request.branch]
                expired.failed.append(request)
            elif request.resend.next_at <= now:  # Timer E
                self.send(request.resend.data, request.resend.addr)
                request.resend.fire(now, self.timers)
        return expired

    def _invite_timers(self, tx: InviteTx, now: float, expired: Expired) -> None:
        if tx.timeout_at is not None and tx.timeout_at <= now:
            tx.timeout_at = None
            tx.resend = None
            if tx.state is TxState.COMPLETED:  # Timer H: the ACK never came (§17.2.1)
                self._drop(tx, expired)
                return
            expired.unacked.append(tx)
        if tx.resend is not None and tx.resend.next_at <= now:
            self.send(tx.resend.data, tx.resend.addr)  # Timer G, or the 2xx again
            tx.resend.fire(now, self.timers)
        if tx.expire_at is not None and tx.expire_at <= now:  # Timer I or L
            self._drop(tx, expired)

    def _drop(self, tx: InviteTx, expired: Expired) -> None:
        if self.invites.get(tx.key) is tx:
            del self.invites[tx.key]
        expired.dropped.append(tx)
