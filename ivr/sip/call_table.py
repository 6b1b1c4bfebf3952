"""The UAS core's call table: calls and their dialogs, how they end, and what we send in them.

Owns the lifecycle rules `SipCore` relies on: exactly one CallEnded per call; a call leaves the
table once it ended and no transaction needs it; our BYE waits for the ACK (RFC 3261 §15); RFC
4028 session timers run here (BYE when the caller stops refreshing, UPDATE when we refresh), and
our REFERs go out here (RFC 3515).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from aiosipua import SipRequest, SipResponse, generate_branch, parse_address, stringify_uri

from ivr.sip.errors import CallCancelledError, CallStateError, NoSuchCallError
from ivr.sip.events import (
    Addr,
    CallCancelled,
    CallEnded,
    CallKey,
    EndReason,
    ReferAnswered,
    SipEvent,
)
from ivr.sip.messages import Headers, contact_for, next_hop, via_for
from ivr.sip.session_timer import SessionTimer
from ivr.sip.transaction_layer import TransactionLayer
from ivr.sip.transactions import Call, CallState, ClientTx, InviteTx


class CallTable:
    """Every call the core knows, indexed by key, by dialog and by initial INVITE."""

    def __init__(
        self, *, tx: TransactionLayer, events: deque[SipEvent], local: Addr, user_agent: str
    ) -> None:
        self._tx = tx
        self._events = events
        self._local = local
        self._ua = user_agent
        self._calls: dict[CallKey, Call] = {}
        self._dialogs: dict[tuple[str, str], Call] = {}
        self._merged: dict[tuple[str, str, int], InviteTx] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def __iter__(self) -> Iterator[Call]:
        return iter(list(self._calls.values()))

    def add(self, call: Call, merged_id: tuple[str, str, int]) -> None:
        """A new call from an initial INVITE (Call-ID, From tag, CSeq: ``merged_id``)."""
        call.invite.merged_id = merged_id
        call.invites.add(call.invite)
        self._calls[call.key] = call
        self._dialogs[(call.call_id, call.local_tag)] = call
        self._merged[merged_id] = call.invite

    def get(self, call_key: CallKey) -> Call | None:
        """The call by key."""
        return self._calls.get(call_key)

    def dialog(self, call_id: str, local_tag: str) -> Call | None:
        """The call whose dialog a request names (§12.2.2: Call-ID and our tag)."""
        return self._dialogs.get((call_id, local_tag))

    def is_merged(self, merged_id: tuple[str, str, int]) -> bool:
        """Whether an INVITE with this Call-ID, From tag and CSeq is already being handled."""
        return merged_id in self._merged

    def pending(self, call_key: CallKey) -> Call:
        """The call, if the application may still ring, answer or reject it."""
        call = self._calls.get(call_key)
        if call is None:
            raise NoSuchCallError(call_key)
        if call.cancelled:
            raise CallCancelledError(f"{call_key}: the caller cancelled; it must not be answered")
        if call.state is not CallState.RINGING:
            raise CallStateError(f"{call_key}: already {call.state.value}")
        return call

    def deadline(self) -> float | None:
        """The earliest ring or session deadline."""
        return min((d for c in self._calls.values() if (d := c.deadline) is not None), default=None)

    def handle_timer(self, now: float) -> None:
        """Undecided calls are refused (480); session timers fire."""
        for call in self:
            if call.ring_deadline is not None and call.ring_deadline <= now:
                call.ring_deadline = None
                if call.state is CallState.RINGING:
                    self.refuse(call, 480, "Temporarily Unavailable", now)
                    self.end(call, "ring_timeout")
            if call.session_at is not None and call.session_at <= now:
                self._session_due(call, now)

    # ------------------------------------------------------------------ ending

    def end(self, call: Call, reason: EndReason) -> None:
        """Report the end once; the record stays while transactions need it."""
        if not call.ended:
            call.ended = True
            call.session_at = None
            call.ring_deadline = None
            self._events.append(CallEnded(call.key, reason))

    def refuse(
        self, call: Call, status: int, reason: str, now: float, headers: Headers = ()
    ) -> None:
        """A final non-2xx to the call's INVITE: the call is over."""
        self._tx.refuse(call.invite, status, reason, now, headers)
        call.state = CallState.ENDED
        call.ring_deadline = None
        call.session_at = None

    def cancel(self, call: Call, reason: EndReason, now: float) -> None:
        """CANCEL or an early BYE: 487 to the INVITE; it must never be answered (§9.2, §15.1.2)."""
        self.refuse(call, 487, "Request Terminated", now)
        call.cancelled = True
        self._events.append(CallCancelled(call.key))
        self.end(call, reason)

    def stop_2xx(self, call: Call) -> None:
        """No ACK is coming or needed any more: stop resending the call's 2xx responses."""
        for tx in call.pending_acks.values():
            self._tx.stop_2xx(tx)
        call.pending_acks.clear()

    def ack_timeout(self, tx: InviteTx, now: float) -> None:
        """§13.3.1.4: no ACK for our 2xx in 64*T1: confirm the dialog, then end it with BYE."""
        call = tx.call
        if call is None:
            return
        call.pending_acks.pop(tx.cseq, None)
        if call.state in (CallState.ANSWERED, CallState.CONFIRMED) or call.bye_after_ack:
            call.bye_after_ack = False
            self.send_bye(call, now)
            self.end(call, "ack_timeout")
        self.remove_if_done(call)

    def invite_gone(self, tx: InviteTx) -> None:
        """An INVITE transaction ended (Timer H, I or L)."""
        if tx.merged_id is not None and self._merged.get(tx.merged_id) is tx:
            del self._merged[tx.merged_id]
        call = tx.call
        if call is not None:
            call.invites.discard(tx)
            if call.pending_acks.get(tx.cseq) is tx:
                del call.pending_acks[tx.cseq]
            self.remove_if_done(call)

    def remove_if_done(self, call: Call) -> None:
        """Drop an ended call once no transaction needs it (the table is always cleaned)."""
        if call.state is not CallState.ENDED or call.requests:
            return
        if any(tx.holds_call for tx in call.invites):
            return
        if self._calls.get(call.key) is call:
            del self._calls[call.key]
            self._dialogs.pop((call.call_id, call.local_tag), None)

    # ------------------------------------------------------------------ session timers

    def start_timer(self, call: Call, timer: SessionTimer | None, now: float) -> None:
        """RFC 4028 §10: (re)start the session timer from a 2xx we sent or received."""
        call.timer = timer
        call.session_at = timer.next_deadline(now) if timer is not None else None

    def _session_due(self, call: Call, now: float) -> None:
        call.session_at = None
        timer = call.timer
        if timer is None or call.state is not CallState.CONFIRMED:
            return
        if timer.refresher == "uac":
            # RFC 4028 §10: no refresh before the interval ran out: the session is dead.
            self.send_bye(call, now)
            self.end(call, "session_expired")
            return
        # We are the refresher: a bodyless UPDATE (RFC 4028 §7.4), no new offer needed.
        headers = [
            ("Contact", contact_for(self._local)),
            ("Session-Expires", timer.header),
            ("Supported", "timer"),
        ]
        self._send_request(call, "UPDATE", now, headers)

    # ------------------------------------------------------------------ our requests

    def send_bye(self, call: Call, now: float) -> None:
        """Hang up a confirmed call: BYE, resent until answered or Timer F (§15.1.1)."""
        self.stop_2xx(call)
        call.state = CallState.TERMINATING
        call.session_at = None
        self._send_request(call, "BYE", now)

    def send_refer(self, call: Call, refer_to: str, now: float) -> int:
        """Ask the caller's side to call ``refer_to`` (RFC 3515 §2.4.1, RFC 5589 §6); returns
        the REFER's CSeq number, which names its implicit subscription (§2.4.6)."""
        local = parse_address(call.local_header)
        headers = [
            ("Refer-To", f"<{refer_to}>"),
            # RFC 3892: who asks for the transfer (the number the caller dialed, at the hotline).
            ("Referred-By", f"<{stringify_uri(local.uri)}>"),
            # §12.2.1.1 / RFC 3515 §2.4.1: REFER is a target refresh request, it carries Contact.
            ("Contact", contact_for(self._local)),
        ]
        self._send_request(call, "REFER", now, headers)
        call.refers.add(call.local_cseq)
        return call.local_cseq

    def _send_request(self, call: Call, method: str, now: float, headers: Headers = ()) -> None:
        """Send an in-dialog request as a non-INVITE client transaction (§12.2.1.1, §17.1.2)."""
        call.local_cseq += 1
        branch = generate_branch()
        uri, routes, hop = next_hop(call.remote_target, call.route_set, call.source)
        request = SipRequest(method=method, uri=uri)
        request.headers.append("Via", via_for(self._local, branch))
        request.headers.append("Max-Forwards", "70")
        for route in routes:
            request.headers.append("Route", route)
        request.headers.append("From", call.local_header)
        request.headers.append("To", call.remote_header)
        request.headers.append("Call-ID", call.call_id)
        request.headers.append("CSeq", f"{call.local_cseq} {method}")
        for name, value in headers:
            request.headers.append(name, value)
        request.headers.append("User-Agent", self._ua)
        call.requests.add(
            self._tx.start_request(
                call, method, bytes(request), branch=branch, hop=hop, now=now, cseq=call.local_cseq
            )
        )

    def request_done(
        self, request: ClientTx, status: int, response: SipResponse | None, now: float
    ) -> None:
        """Our BYE, UPDATE or REFER got its final response (a 408 stands for Timer F)."""
        call = request.call
        call.requests.discard(request)
        if request.method == "BYE":
            call.state = CallState.ENDED
        elif request.method == "REFER":
            if not 200 <= status < 300:
                call.refers.discard(request.cseq)  # refused: no subscription (RFC 3515 §2.4.2)
            reason = response.reason_phrase if response is not None else "Request Timeout"
            self._events.append(ReferAnswered(call.key, request.cseq, status, reason))
        elif call.state is CallState.CONFIRMED and call.timer is not None:
            if 200 <= status < 300:
                refreshed = response.headers.get_first("session-expires") if response else None
                self.start_timer(call, call.timer.refreshed(refreshed), now)
            elif status in (408, 481):
                # RFC 4028 §10: the refresh found no session at the other end.
                self.send_bye(call, now)
                self.end(call, "session_expired")
            else:
                # 405/501 and the like: the peer takes no UPDATE after all; keep it, untimed.
                self.start_timer(call, None, now)
        self.remove_if_done(call)
