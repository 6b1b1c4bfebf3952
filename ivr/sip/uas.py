"""The sans-I/O SIP UAS core: calls and dialogs (RFC 3261 §12-15) for incoming calls over UDP.

Modelled on aioquic: the owner feeds datagrams with ``receive_datagram(data, addr, now)``, sends
whatever ``datagrams_to_send(now)`` returns, reads ``next_event()`` until it is ``None``, and calls
``handle_timer(now)`` at ``get_timer()``. There is no socket, clock or asyncio in here; time is
always an argument. The application decides each call with ``ring``/``answer``/``reject``/
``hangup`` (and may ``refer`` an answered call elsewhere); the rest (100 Trying, ACK matching,
CANCEL, BYE both ways, re-INVITE and UPDATE answers, session timers, the NOTIFYs a REFER brings,
refusing garbage) happens here. Retransmissions and transaction timers
live in `ivr.sip.transaction_layer`; the call table, hang-up rules and session timers in
`ivr.sip.call_table`; pure wire helpers in `ivr.sip.messages`.

aiosipua provides the parser, serializer and SDP model; none of its transaction/UAS classes
are used (see docs/decisions/0004-sip-engine.md for why).

Invariants, each tested: one IncomingCall per INVITE transaction however often it is resent;
exactly one CallEnded per IncomingCall; every call and transaction record disappears once its
timers have run; ``receive_datagram`` never raises.
"""

from __future__ import annotations

import secrets
from collections import deque

from aiosipua import (
    SdpMessage,
    SipMessage,
    SipRequest,
    SipResponse,
    generate_tag,
    parse_address,
    parse_via,
    stringify_uri,
)

from ivr.sip.call_table import CallTable
from ivr.sip.errors import CallStateError, NoSuchCallError
from ivr.sip.events import (
    Addr,
    CallAcked,
    CallKey,
    DtmfInfo,
    IncomingCall,
    Malformed,
    MediaChanged,
    ReferNotify,
    RegisterRequest,
    SipEvent,
)
from ivr.sip.local_sdp import LocalSdp, SdpError, SdpSyntaxError, is_hold, parse_body
from ivr.sip.messages import (
    ACCEPTED_BODIES,
    ALLOWED_METHODS,
    MAX_DATAGRAM,
    SUPPORTED_EXTENSIONS,
    Headers,
    build_response,
    contact_for,
    cseq_of,
    display_name,
    dtmf_digit,
    frame,
    header_tokens,
    hostport,
    media_type,
    printable,
    request_problem,
    response_addr,
    uri_user,
    with_tag,
)
from ivr.sip.session_timer import (
    MIN_SE,
    IntervalTooSmall,
    SessionTimer,
    negotiate,
    peer_allows_update,
    read_request,
)
from ivr.sip.timers import TimerValues
from ivr.sip.transaction_layer import TransactionLayer
from ivr.sip.transactions import (
    Call,
    CallState,
    Incoming,
    InviteTx,
    TxKey,
    TxState,
    earliest,
    server_key,
)

_DTMF_BODIES = ("application/dtmf-relay", "application/dtmf")
_GONE = (481, "Call/Transaction Does Not Exist")


class SipCore:
    """A SIP user agent server for incoming calls over UDP, without I/O (see the module doc)."""

    def __init__(
        self,
        *,
        local_addr: Addr,
        user_agent: str = "hotline95598",
        t1: float = 0.5,
        t2: float = 4.0,
        t4: float = 5.0,
        session_expires: int | None = 1800,
        min_se: int = MIN_SE,
        ring_timeout: float = 60.0,
        registrar: bool = False,
    ) -> None:
        """Set up an empty core.

        ``local_addr`` is the address peers reach us at (Via, Contact), never 0.0.0.0.
        ``session_expires`` is the RFC 4028 interval we ask for (``None``: only when the caller
        asks). ``ring_timeout`` refuses calls the application left undecided (480).
        ``registrar`` turns REGISTER into RegisterRequest events instead of 405.
        """
        self._local = local_addr
        self._ua = user_agent
        self._tx = TransactionLayer(
            local=local_addr, server=user_agent, timers=TimerValues(t1=t1, t2=t2, t4=t4)
        )
        self._session_expires = session_expires
        self._min_se = min_se
        self._ring_timeout = ring_timeout
        self._registrar = registrar
        self._allow = ", ".join((*ALLOWED_METHODS, "REGISTER") if registrar else ALLOWED_METHODS)
        self._events: deque[SipEvent] = deque()
        self._draining_retry_after: int | None = None
        self._table = CallTable(
            tx=self._tx, events=self._events, local=local_addr, user_agent=user_agent
        )

    # ------------------------------------------------------------------ the sans-I/O surface

    @property
    def calls(self) -> int:
        """Calls in the table (ringing, up, or ending)."""
        return len(self._table)

    @property
    def transactions(self) -> int:
        """Server and client transactions still kept (retransmission absorbers included)."""
        return len(self._tx)

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """Take one UDP datagram. Never raises: a bad packet must not harm other calls."""
        try:
            self._receive(data, addr, now)
        except Exception as exc:  # a bug must not end the process's other calls (CONVENTIONS 7)
            self._malformed(addr, f"internal error: {type(exc).__name__}: {printable(str(exc))}")

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        """Datagrams to send now, in order, with their destinations."""
        del now  # everything queued is due at once; the argument mirrors aioquic's API
        out, self._tx.outbox = self._tx.outbox, []
        return out

    def next_event(self) -> SipEvent | None:
        """The next event for the application, or ``None``."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The earliest time ``handle_timer`` must be called, or ``None`` if nothing is pending."""
        return earliest(self._tx.deadline(), self._table.deadline())

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``."""
        expired = self._tx.handle_timer(now)
        for tx in expired.unacked:
            self._table.ack_timeout(tx, now)
        for tx in expired.dropped:
            self._table.invite_gone(tx)
        for request in expired.failed:  # Timer F: as good as a 408 (§8.1.3.1)
            self._table.request_done(request, 408, None, now)
        self._table.handle_timer(now)

    # ------------------------------------------------------------------ application decisions

    def drain(self, retry_after: int) -> None:
        """The node stops taking calls: out-of-dialog OPTIONS get 503 with Retry-After from now
        on, so a dispatcher's keep-alive probes (Kamailio's dispatcher, RFC 3261 §11) take this
        node out while its calls finish. New INVITEs are the application's to refuse."""
        self._draining_retry_after = retry_after

    @property
    def draining(self) -> bool:
        """Whether `drain` was called."""
        return self._draining_retry_after is not None

    def ring(self, call_key: CallKey, now: float) -> None:
        """Send 180 Ringing (it creates the early dialog: our To-tag, Contact)."""
        del now
        self._tx.provisional(self._table.pending(call_key).invite, 180, "Ringing", dialog=True)

    def answer(self, call_key: CallKey, sdp_answer: bytes, now: float) -> None:
        """Send 200 OK with the SDP answer; it is resent until the ACK (§13.3.1.4).

        Raises CallCancelledError if the caller cancelled, CallStateError if the call was
        already decided, NoSuchCallError if it is gone, SdpError if the answer is not SDP.
        """
        call = self._table.pending(call_key)
        call.sdp = LocalSdp(sdp_answer)
        call.ring_deadline = None
        call.state = CallState.ANSWERED
        self._accept(call.invite, sdp_answer, call.timer, now)

    def reject(
        self,
        call_key: CallKey,
        status: int,
        reason: str,
        now: float,
        *,
        retry_after: int | None = None,
    ) -> None:
        """Refuse the call with a final 3xx-6xx (e.g. 486, 503 with ``retry_after``, 488).

        It is resent until the ACK (Timer G) or Timer H. Raises like ``answer``.
        """
        if not 300 <= status <= 699:
            raise ValueError(f"reject needs a final non-2xx status, not {status}")
        call = self._table.pending(call_key)
        headers = [("Retry-After", str(retry_after))] if retry_after is not None else []
        self._table.refuse(call, status, reason, now, headers)
        self._table.end(call, "rejected")

    def hangup(self, call_key: CallKey, now: float) -> None:
        """End the call from our side, whatever its state; a no-op if it is already over.

        Up: BYE, resent on Timer E until a final response or Timer F. Answered but not ACKed:
        the BYE waits for the ACK (or the ACK timeout), as RFC 3261 §15 requires. Ringing: a 480
        final response (a UAS cannot BYE an early dialog), reported as ``rejected``.
        """
        call = self._table.get(call_key)
        if call is None or call.ended:
            return
        if call.state is CallState.RINGING:
            self._table.refuse(call, 480, "Temporarily Unavailable", now)
            self._table.end(call, "rejected")
        elif call.state is CallState.ANSWERED:
            call.state = CallState.TERMINATING
            call.bye_after_ack = True
            self._table.end(call, "local_bye")
        elif call.state is CallState.CONFIRMED:
            self._table.send_bye(call, now)
            self._table.end(call, "local_bye")

    def refer(self, call_key: CallKey, refer_to: str, now: float) -> int:
        """Blind transfer: ask the caller's side (PBX, SBC, phone) to call ``refer_to``.

        An in-dialog REFER (RFC 3515, RFC 5589 §6) with Referred-By, resent on Timer E; its
        final response comes as ReferAnswered, the transferee's progress as ReferNotify (each
        NOTIFY answered 200 here). Returns the REFER's CSeq number, the ``refer_id`` of those
        events. Raises NoSuchCallError, or CallStateError unless the call is up (ACKed).
        """
        call = self._table.get(call_key)
        if call is None or call.ended:
            raise NoSuchCallError(call_key)
        if call.state is not CallState.CONFIRMED:
            raise CallStateError(f"{call_key}: {call.state.value}, not up")
        return self._table.send_refer(call, refer_to, now)

    def update_local_sdp(self, call_key: CallKey, sdp: bytes) -> None:
        """Replace the SDP that later re-INVITEs and UPDATEs are answered with.

        Raises NoSuchCallError, CallStateError before ``answer``, SdpError for a bad body.
        """
        call = self._table.get(call_key)
        if call is None:
            raise NoSuchCallError(call_key)
        if call.sdp is None:
            raise CallStateError(f"{call_key}: not answered yet")
        call.sdp.replace(sdp)

    def response_for(
        self, request: SipRequest, status: int, reason: str, addr: Addr
    ) -> SipResponse:
        """A response to a RegisterRequest's request, with Via, tags and Server filled in."""
        held = self._tx.replies.get(self._key_of(request))
        tag = held.to_tag if held is not None else generate_tag()
        return build_response(request, status, reason, source=addr, to_tag=tag, server=self._ua)

    def send_response(
        self, request: SipRequest, response: SipResponse, addr: Addr, now: float
    ) -> None:
        """Send a registrar's response; a final one also answers the REGISTER's retransmissions."""
        data = bytes(response)
        self._tx.answer_held(self._key_of(request), data, response.status_code >= 200, now)
        self._tx.send(data, response_addr(parse_via(request.headers.get("via")[0]), addr))

    # ------------------------------------------------------------------ receiving

    def _receive(self, data: bytes, addr: Addr, now: float) -> None:
        if len(data) > MAX_DATAGRAM:
            self._malformed(addr, f"oversized datagram ({len(data)} bytes)")
            return
        if not data.strip(b"\r\n\t "):
            return  # a CRLF keep-alive (RFC 5626 §3.5.1), not an error
        framed, short = frame(data)
        try:
            message = SipMessage.parse(framed)
        except ValueError as exc:
            self._malformed(addr, f"unparseable: {printable(str(exc))}")
            return
        if isinstance(message, SipRequest):
            self._on_request(message, data, addr, now, short_body=short)
        elif not short:  # §18.3: a truncated response is discarded
            vias = message.headers.get("via")
            request = self._tx.response(message, parse_via(vias[0]).branch or "") if vias else None
            if request is not None:
                self._table.request_done(request, message.status_code, message, now)

    def _on_request(
        self, request: SipRequest, data: bytes, addr: Addr, now: float, *, short_body: bool
    ) -> None:
        method = request.method
        vias = request.headers.get("via")
        if not vias:
            self._malformed(addr, f"{printable(method)} without Via: no route for a response")
            return
        top = parse_via(vias[0])
        reply_to = response_addr(top, addr)
        problem = request_problem(request, data, short_body=short_body)
        cseq = cseq_of(request)
        if problem is not None or cseq is None:
            status, reason = problem or (400, "bad CSeq")
            self._malformed(addr, f"{printable(method)}: {reason}")
            if method != "ACK":  # an ACK is never answered (§17.1.1.3)
                phrase = "Version Not Supported" if status == 505 else f"Bad Request ({reason})"
                self._tx.stateless(request, status, phrase, addr, reply_to)
            return
        key = server_key(request, top, cseq[0], "INVITE" if method == "ACK" else method)
        rx = Incoming(request, addr, reply_to, key, cseq[0], now)
        if method == "ACK":
            self._on_ack(rx)
            return
        if method == "INVITE":
            retransmitted = self._tx.invite_retransmitted(key)
        else:
            retransmitted = self._tx.request_retransmitted(key)
        if retransmitted:
            return
        if method == "CANCEL":
            self._on_cancel(rx, server_key(request, top, cseq[0], "INVITE"))
        else:
            self._on_new_request(rx)

    def _on_new_request(self, rx: Incoming) -> None:
        # §8.2.2.3: an option tag we do not implement in Require is refused with 420.
        required = header_tokens(rx.request.headers.get("require"))
        unsupported = [tag for tag in required if tag not in SUPPORTED_EXTENSIONS]
        if unsupported:
            self._refuse(rx, 420, "Bad Extension", [("Unsupported", ", ".join(unsupported))])
        elif rx.to_tag is not None:
            self._in_dialog(rx, rx.to_tag)
        elif rx.method == "INVITE":
            self._new_invite(rx)
        elif rx.method == "OPTIONS" and self._draining_retry_after is not None:
            retry = [("Retry-After", str(self._draining_retry_after))]
            self._tx.reply(rx, 503, "Service Unavailable", retry)
        elif rx.method == "OPTIONS":
            self._tx.reply(rx, 200, "OK", self._capabilities())
        elif rx.method == "REGISTER" and self._registrar:
            self._tx.hold_request(rx)
            self._events.append(RegisterRequest(rx.request, rx.source))
        elif rx.method in ("BYE", "INFO", "UPDATE", "PRACK"):
            self._tx.reply(rx, *_GONE)
        else:
            self._tx.reply(rx, 405, "Method Not Allowed", [("Allow", self._allow)])

    # ------------------------------------------------------------------ INVITE, ACK, CANCEL

    def _new_invite(self, rx: Incoming) -> None:
        request = rx.request
        tx = self._tx.open_invite(rx, generate_tag())
        merged_id = (rx.call_id, rx.from_tag, rx.cseq)
        if self._table.is_merged(merged_id):
            # §8.2.2.2: the same request reached us twice by different paths: answer one only.
            self._tx.refuse(tx, 482, "Loop Detected", rx.now)
            return
        offer = self._offer(rx, tx)
        if offer is None:
            return
        if offer.audio is None or offer.audio.port == 0:
            self._tx.refuse(tx, 488, "Not Acceptable Here", rx.now, self._warning("no audio"))
            return
        allows_update = peer_allows_update(request)
        agreed, timer = self._negotiate(rx, tx, allows_update)
        if not agreed:
            return
        contacts = request.contact
        from_header = request.headers.get_first("from") or ""
        call = Call(
            key=f"{rx.call_id};{tx.to_tag}",
            call_id=rx.call_id,
            local_tag=tx.to_tag,
            remote_tag=rx.from_tag,
            local_header=with_tag(request.headers.get_first("to") or "", tx.to_tag),
            remote_header=from_header,
            remote_target=stringify_uri(
                (contacts[0] if contacts else parse_address(from_header)).uri
            ),
            route_set=list(request.headers.get("record-route")),  # §12.1.1
            source=rx.source,
            invite=tx,
            remote_cseq=rx.cseq,
            peer_allows_update=allows_update,
            remote_sdp_body=request.body,
            timer=timer,
            ring_deadline=rx.now + self._ring_timeout,
        )
        tx.call = call
        self._table.add(call, merged_id)
        # §8.2.6.1 / §17.2.1: 100 Trying at once stops the caller's INVITE retransmissions.
        self._tx.provisional(tx, 100, "Trying", dialog=False)
        dialed = uri_user(request.uri) or uri_user(request.headers.get_first("to") or "")
        self._events.append(
            IncomingCall(
                call_key=call.key,
                call_id=call.call_id,
                caller=uri_user(from_header),
                caller_display=display_name(from_header),
                dialed=dialed,
                remote_sdp=offer,
                addr=rx.source,
            )
        )

    def _offer(self, rx: Incoming, tx: InviteTx) -> SdpMessage | None:
        """The INVITE's SDP offer, or ``None`` after refusing the INVITE (tx completed)."""
        request = rx.request
        if not request.body:
            # Offerless INVITEs (offer in our 2xx, answer in the ACK) are not supported.
            self._tx.refuse(tx, 488, "Not Acceptable Here", rx.now, self._warning("SDP required"))
            return None
        if media_type(request.content_type) != "application/sdp":
            # §8.2.3: a body type we do not understand.
            self._tx.refuse(
                tx, 415, "Unsupported Media Type", rx.now, [("Accept", "application/sdp")]
            )
            return None
        try:
            return parse_body(request.body)
        except SdpSyntaxError:
            self._malformed(rx.source, f"{rx.method}: unparseable SDP")
            self._tx.refuse(tx, 400, "Bad Request (malformed SDP)", rx.now)
        except SdpError as exc:
            self._tx.refuse(tx, 488, "Not Acceptable Here", rx.now, self._warning(str(exc)))
        return None

    def _negotiate(
        self, rx: Incoming, tx: InviteTx | None, allows_update: bool
    ) -> tuple[bool, SessionTimer | None]:
        """RFC 4028 §9 for an INVITE or UPDATE: (True, timer), or (False, _) once refused."""
        try:
            request = read_request(rx.request)
        except ValueError:
            self._malformed(rx.source, f"{rx.method}: bad Session-Expires or Min-SE")
            self._refuse(rx, 400, "Bad Request (Session-Expires)", tx=tx)
            return False, None
        timer = negotiate(
            request,
            local_expires=self._session_expires,
            peer_allows_update=allows_update,
            local_min_se=self._min_se,
        )
        if isinstance(timer, IntervalTooSmall):  # the caller may retry with our Min-SE
            min_se = [("Min-SE", str(timer.min_se))]
            self._refuse(rx, 422, "Session Interval Too Small", min_se, tx=tx)
            return False, None
        return True, timer

    def _reinvite(self, rx: Incoming, call: Call) -> None:
        tx = self._tx.open_invite(rx, call.local_tag, call)
        call.invites.add(tx)
        if call.state is CallState.RINGING:
            # §14.2: an INVITE while the first has no final response: 500 with Retry-After 0-10.
            retry = [("Retry-After", str(secrets.randbelow(11)))]
            self._tx.refuse(tx, 500, "Server Internal Error", rx.now, retry)
            return
        offer: SdpMessage | None = None
        if rx.request.body and (offer := self._offer(rx, tx)) is None:
            return
        agreed, timer = self._negotiate(rx, tx, call.peer_allows_update)
        if not agreed:
            return
        assert call.sdp is not None  # answered (RINGING was refused above)
        try:
            body = call.sdp.render(offer)
        except SdpError as exc:
            # §14.2: a refused re-INVITE leaves the session as it was.
            self._tx.refuse(tx, 488, "Not Acceptable Here", rx.now, self._warning(str(exc)))
            return
        self._refresh_target(call, rx.request)
        tx.offerless = offer is None
        self._accept(tx, body, timer, rx.now)
        if offer is not None:
            self._media_changed(call, rx.request.body, offer)

    def _accept(self, tx: InviteTx, body: bytes, timer: SessionTimer | None, now: float) -> None:
        """A 2xx to an INVITE of a call: resent until the dialog's ACK; starts the timer."""
        call = tx.call
        assert call is not None
        headers = [("Allow", self._allow), ("Supported", "timer")]
        if timer is not None:
            headers += timer.response_headers
        self._tx.accept(tx, body, headers, now)
        call.pending_acks[tx.cseq] = tx
        self._table.start_timer(call, timer, now)

    def _on_ack(self, rx: Incoming) -> None:
        if self._tx.ack_for_final(rx.key, rx.now):
            return  # §17.2.1: the ACK for our non-2xx belongs to its INVITE transaction
        # §13.3.1.4 / §17.1.1.3: the ACK for a 2xx is a transaction of its own, matched to the
        # dialog and to the INVITE by CSeq number.
        call = self._table.dialog(rx.call_id, rx.to_tag or "")
        if call is None:
            call = self._ack_with_wrong_to_tag(rx)
        if call is None or rx.from_tag != call.remote_tag:
            return  # never answer an ACK; an ACK for nothing is dropped
        invite = call.pending_acks.pop(rx.cseq, None)
        if invite is None:
            return  # an ACK for a retransmitted 2xx we already had the ACK for
        self._tx.stop_2xx(invite)
        if invite.offerless and rx.request.body:
            try:
                answer = parse_body(rx.request.body)
            except SdpError:
                self._malformed(rx.source, "ACK: unusable SDP answer")
            else:
                self._media_changed(call, rx.request.body, answer)
        if invite is call.invite:
            if call.state is CallState.ANSWERED:
                call.state = CallState.CONFIRMED
                self._events.append(CallAcked(call.key))
            elif call.bye_after_ack:
                call.bye_after_ack = False
                self._table.send_bye(call, rx.now)
        self._table.remove_if_done(call)

    def _ack_with_wrong_to_tag(self, rx: Incoming) -> Call | None:
        """Some phones (pyVoIP 1.6.8) put a made-up To-tag in the ACK for our 2xx. We create one
        dialog per INVITE, so an ACK naming our Call-ID, the caller's From-tag and a CSeq that
        awaits its ACK can only mean that call: accept it rather than drop the caller at 32 s
        (be liberal in what you accept; §13.3.1.4 ACK matching is by dialog)."""
        for call in self._table:
            if (
                call.call_id == rx.call_id
                and call.remote_tag == rx.from_tag
                and rx.cseq in call.pending_acks
            ):
                return call
        return None

    def _on_cancel(self, rx: Incoming, invite_key: TxKey) -> None:
        tx = self._tx.invites.get(invite_key)
        if tx is None:
            self._tx.reply(rx, *_GONE)  # §9.2
            return
        # §9.2: 200 to the CANCEL with the To-tag of the INVITE's responses...
        self._tx.reply(rx, 200, "OK", to_tag=tx.to_tag)
        call = tx.call
        if tx.state is TxState.PROCEEDING and call is not None:
            # ...and 487 to the INVITE; a CANCEL after the final response changes nothing.
            self._table.cancel(call, "cancelled", rx.now)

    # ------------------------------------------------------------------ requests in a dialog

    def _in_dialog(self, rx: Incoming, to_tag: str) -> None:
        call = self._table.dialog(rx.call_id, to_tag)
        if call is None or call.remote_tag != rx.from_tag or call.state is CallState.ENDED:
            self._refuse(rx, *_GONE)  # §12.2.2
            return
        if rx.cseq < call.remote_cseq:
            self._refuse(rx, 500, "Server Internal Error (CSeq out of order)")  # §12.2.2
            return
        call.remote_cseq = rx.cseq
        method = rx.method
        if call.state is CallState.TERMINATING:
            if method != "BYE":
                self._refuse(rx, *_GONE)
                return
            self._tx.reply(rx, 200, "OK")  # both sides hung up at once: agree
            if call.bye_after_ack:  # ours had not left yet: it need not
                call.bye_after_ack = False
                self._table.stop_2xx(call)
                call.state = CallState.ENDED
                self._table.remove_if_done(call)
        elif method == "INVITE":
            self._reinvite(rx, call)
        elif method == "BYE":
            self._on_bye(rx, call)
        elif method == "UPDATE":
            self._on_update(rx, call)
        elif method == "INFO":
            self._on_info(rx, call)
        elif method == "OPTIONS":
            self._tx.reply(rx, 200, "OK", self._capabilities())
        elif method == "PRACK":
            self._tx.reply(rx, 200, "OK")
        elif method == "NOTIFY":
            self._on_notify(rx, call)
        else:
            self._tx.reply(rx, 405, "Method Not Allowed", [("Allow", self._allow)])

    def _on_bye(self, rx: Incoming, call: Call) -> None:
        self._tx.reply(rx, 200, "OK")
        if call.state is CallState.RINGING:
            # §15.1.2: a BYE on the early dialog; the pending INVITE gets 487.
            self._table.cancel(call, "bye", rx.now)
        else:
            self._table.stop_2xx(call)  # no ACK will come for a session the caller ended
            call.state = CallState.ENDED
            self._table.end(call, "bye")
        self._table.remove_if_done(call)

    def _on_update(self, rx: Incoming, call: Call) -> None:
        offer: SdpMessage | None = None
        body = b""
        if rx.request.body:
            if media_type(rx.request.content_type) != "application/sdp":
                self._tx.reply(rx, 415, "Unsupported Media Type", [("Accept", "application/sdp")])
                return
            try:
                offer = parse_body(rx.request.body)
                if call.sdp is None:
                    raise SdpError("no local SDP before the answer")
                body = call.sdp.render(offer)
            except SdpSyntaxError:
                self._malformed(rx.source, "UPDATE: unparseable SDP")
                self._tx.reply(rx, 400, "Bad Request (malformed SDP)")
                return
            except SdpError as exc:
                self._tx.reply(rx, 488, "Not Acceptable Here", self._warning(str(exc)))
                return
        up = call.state in (CallState.ANSWERED, CallState.CONFIRMED)
        agreed, timer = self._negotiate(rx, None, call.peer_allows_update) if up else (True, None)
        if not agreed:
            return
        self._refresh_target(call, rx.request)
        # RFC 3311 §5.2: a 2xx to UPDATE carries Contact; RFC 4028 §9 the timer it agrees.
        headers = [("Contact", contact_for(self._local))]
        if timer is not None:
            headers += timer.response_headers
        self._tx.reply(rx, 200, "OK", headers, body=body)
        if up:
            self._table.start_timer(call, timer, rx.now)
        if offer is not None:
            self._media_changed(call, rx.request.body, offer)

    def _on_info(self, rx: Incoming, call: Call) -> None:
        digit = dtmf_digit(rx.request.content_type, rx.request.body)
        if digit is not None:
            self._tx.reply(rx, 200, "OK")
            self._events.append(DtmfInfo(call.key, digit))
        elif not rx.request.body or media_type(rx.request.content_type) in _DTMF_BODIES:
            self._tx.reply(rx, 200, "OK")  # an empty keep-alive INFO, or a flash: no key
        else:
            self._tx.reply(rx, 415, "Unsupported Media Type", [("Accept", ", ".join(_DTMF_BODIES))])

    def _on_notify(self, rx: Incoming, call: Call) -> None:
        """A NOTIFY of the subscription one of our REFERs created (RFC 3515 §2.4.4-2.4.6)."""
        headers = rx.request.headers
        package, _, params = (headers.get_first("event") or headers.get_first("o") or "").partition(
            ";"
        )
        if package.strip().lower() != "refer":
            self._tx.reply(rx, 489, "Bad Event", [("Allow-Events", "refer")])  # RFC 6665 §8.2.1
            return
        refer_id = _subscription_id(params, call.refers)
        if refer_id is None:
            # RFC 6665 §4.1.3: no such subscription (never REFERred, or it has terminated).
            self._tx.reply(rx, 481, "Subscription Does Not Exist")
            return
        state = headers.get_first("subscription-state") or ""
        if state.split(";", 1)[0].strip().lower() == "terminated":
            call.refers.discard(refer_id)
        self._tx.reply(rx, 200, "OK")
        self._events.append(ReferNotify(call.key, refer_id, state, rx.request.body))

    def _media_changed(self, call: Call, body: bytes, sdp: SdpMessage) -> None:
        if body != call.remote_sdp_body:  # a session refresh often resends the same SDP
            call.remote_sdp_body = body
            self._events.append(MediaChanged(call.key, sdp, is_hold(sdp)))

    def _refresh_target(self, call: Call, request: SipRequest) -> None:
        """§12.2.2: a re-INVITE or UPDATE may move the remote target (its Contact)."""
        contacts = request.contact
        if contacts:
            call.remote_target = stringify_uri(contacts[0].uri)

    # ------------------------------------------------------------------ refusals, bookkeeping

    def _refuse(
        self,
        rx: Incoming,
        status: int,
        reason: str,
        headers: Headers = (),
        *,
        tx: InviteTx | None = None,
    ) -> None:
        """A final non-2xx for any request: INVITEs get (or use) a transaction, others a reply."""
        if rx.method != "INVITE":
            self._tx.reply(rx, status, reason, headers)
            return
        if tx is None:
            tx = self._tx.open_invite(rx, rx.to_tag or generate_tag())
        self._tx.refuse(tx, status, reason, rx.now, headers)

    def _capabilities(self) -> list[tuple[str, str]]:
        return [
            ("Allow", self._allow),
            ("Accept", ", ".join(ACCEPTED_BODIES)),
            ("Supported", "timer"),
            ("Contact", contact_for(self._local)),
        ]

    def _warning(self, text: str) -> list[tuple[str, str]]:
        # §20.43: 399 is the miscellaneous warning; the text is ours, never the peer's bytes.
        return [("Warning", f'399 {hostport(self._local)} "{text.replace(chr(34), chr(39))}"')]

    def _key_of(self, request: SipRequest) -> TxKey:
        cseq = cseq_of(request)
        top = parse_via(request.headers.get("via")[0])
        return server_key(request, top, cseq[0] if cseq else 0, request.method)

    def _malformed(self, addr: Addr, reason: str) -> None:
        self._events.append(Malformed(addr, reason))


def _subscription_id(event_params: str, refers: set[int]) -> int | None:
    """Which REFER a NOTIFY's ``Event: refer;id=N`` names (RFC 3515 §2.4.6), or ``None``.

    Without ``id`` (allowed for the first REFER of a dialog) it is our latest REFER.
    """
    for param in event_params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "id":
            value = value.strip()
            number = int(value) if value.isascii() and value.isdigit() else None
            return number if number in refers else None
    return max(refers, default=None)
