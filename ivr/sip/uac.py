"""The sans-I/O SIP UAC for agent legs: the hotline calls an agent's phone (RFC 3261 §13, §17.1).

Same shape as the UAS core (`ivr.sip.uas.SipCore`): the owner feeds datagrams with
``receive_datagram(data, addr, now)``, sends what ``datagrams_to_send(now)`` returns, reads
``next_event()`` until ``None`` and calls ``handle_timer(now)`` at ``get_timer()``. No socket,
clock or asyncio in here. Both cores share the hotline's one SIP socket: ``receive_datagram``
returns ``False`` for anything that is not about one of our legs (decided by Call-ID, which we
generate), and the server then gives the datagram to the UAS core.

What happens here:

- INVITE client transaction (§17.1.1): Timer A resends T1, 2T1, 4T1... until a provisional;
  Timer B gives up after 64*T1 (``LegFailed(408)``).
- 180/183 → ``LegRinging``; 2xx → the ACK, built as §13.2.2.4 says: the 2xx's To (with the
  tag the agent chose), a new branch, Route = Record-Route reversed, Request-URI = the 2xx's
  Contact; it is resent for every retransmitted 2xx. A 2xx from a second fork is ACKed and
  hung up. Non-2xx finals are ACKed on the INVITE's branch (§17.1.1.3) → ``LegFailed``.
- 401/407: answered once with digest credentials when configured (§22.2, aiosipua.auth).
- ``cancel``: CANCEL as soon as a provisional came (§9.1), the 487 ACKed; a 2xx that crossed
  the CANCEL is ACKed and hung up. ``bye``: BYE resent on Timer E until Timer F (§17.1.2).
- From the agent, in the dialog: BYE → 200 + ``LegEnded``; re-INVITE/UPDATE → 200 with our
  current SDP (RFC 3264 §8, hold mirrored) + ``LegMediaChanged``, the 2xx resent until the
  ACK; OPTIONS/INFO → 200; retransmissions get the same answer; the rest 481/405/500.

Invariants, each tested: exactly one ``LegFailed`` or ``LegEnded`` per leg; a leg's record
disappears 64*T1 after it ended (late retransmissions are absorbed until then);
``receive_datagram`` never raises.
"""

from __future__ import annotations

import re
import uuid
from collections import deque

from aiosipua import (
    SipMessage,
    SipRequest,
    SipResponse,
    generate_branch,
    generate_tag,
    parse_via,
)
from aiosipua.auth import SipDigestAuth, answer_challenge

from ivr.sip.events import Addr, Malformed
from ivr.sip.local_sdp import LocalSdp, SdpError, parse_body
from ivr.sip.messages import (
    MAX_DATAGRAM,
    Headers,
    cseq_of,
    frame,
    hostport,
    media_type,
    printable,
    tag_of,
    via_for,
)
from ivr.sip.timers import Retransmission, TimerValues
from ivr.sip.transactions import earliest
from ivr.sip.uac_dialog import ALLOW, DialogServer
from ivr.sip.uac_events import (
    LegAnswered,
    LegEnded,
    LegEndReason,
    LegEvent,
    LegFailed,
    LegKey,
    LegRinging,
    LegStateError,
    NoSuchLegError,
)
from ivr.sip.uac_legs import ClientRequest, Leg, LegState, StrayDialog
from ivr.sip.uac_messages import (
    Dialog,
    ack_for_failure,
    build_request,
    cancel_for,
    contact_uri,
    credentials_of,
    dialog_from_2xx,
    in_dialog,
)

# Call-ID of a datagram without parsing it: the cheap test of whether it is ours at all.
_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*([^\s]+)", re.IGNORECASE | re.MULTILINE)


class SipClient:
    """Outbound legs to agent phones over UDP, without I/O (see the module doc)."""

    def __init__(
        self,
        *,
        local_addr: Addr,
        user_agent: str = "hotline95598",
        t1: float = 0.5,
        t2: float = 4.0,
        t4: float = 5.0,
        credentials: SipDigestAuth | None = None,
    ) -> None:
        """Set up a client with no legs.

        ``local_addr`` is the address agents reach us at (Via, Contact): the hotline's SIP
        socket, shared with the UAS core. ``credentials`` answer 401/407 challenges of an
        upstream proxy or PBX (once per request); ``invite`` may override them per leg.
        """
        self._local = local_addr
        self._ua = user_agent
        self._timers = TimerValues(t1=t1, t2=t2, t4=t4)
        self._credentials = credentials
        self._legs: dict[LegKey, Leg] = {}
        self._events: deque[LegEvent] = deque()
        self._outbox: list[tuple[bytes, Addr]] = []
        self._dialogs = DialogServer(
            local=local_addr,
            user_agent=user_agent,
            timers=self._timers,
            send=self._send,
            events=self._events,
            end=self._end,
        )

    # ------------------------------------------------------------------ the sans-I/O surface

    @property
    def legs(self) -> int:
        """Legs in the table (calling, up, or lingering after their end)."""
        return len(self._legs)

    def owns_datagram(self, data: bytes) -> bool:
        """Whether a datagram belongs to one of our legs (by its Call-ID; nothing is parsed)."""
        if not self._legs:
            return False
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        match = _CALL_ID.search(head)
        if match is None:
            return False
        return match.group(1).decode("utf-8", errors="replace") in self._legs

    def owns(self, message: SipMessage) -> bool:
        """Whether a parsed message belongs to one of our legs: responses to our requests and
        the agents' requests inside our legs' dialogs all carry a Call-ID we generated."""
        return (message.headers.get_first("call-id") or "") in self._legs

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> bool:
        """Take one datagram if it is about one of our legs; ``False`` (untouched) if not.

        Never raises: a bad packet must not harm other calls.
        """
        if len(data) > MAX_DATAGRAM or not self.owns_datagram(data):
            return False
        try:
            self._receive(data, addr, now)
        except Exception as exc:  # a bug must not end the process's other calls (CONVENTIONS 7)
            self._malformed(addr, f"internal error: {type(exc).__name__}: {printable(str(exc))}")
        return True

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        """Datagrams to send now, in order, with their destinations."""
        del now  # everything queued is due at once, as in the UAS core
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> LegEvent | None:
        """The next event for the application, or ``None``."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The earliest time ``handle_timer`` must be called, or ``None``."""
        return earliest(*(leg.deadline() for leg in self._legs.values()))

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``."""
        for leg in list(self._legs.values()):
            self._leg_timers(leg, now)

    # ------------------------------------------------------------------ application actions

    def invite(
        self,
        target_uri: str,
        target_addr: Addr,
        sdp_offer: bytes,
        now: float,
        *,
        from_user: str,
        call_id: str | None = None,
        display_name: str | None = None,
        ring_timeout: float | None = None,
        credentials: SipDigestAuth | None = None,
    ) -> LegKey:
        """Call ``target_uri`` (the agent's registered contact) by sending to ``target_addr``.

        ``from_user`` is who calls (the hotline number, or the caller's number for the agent's
        display). ``ring_timeout``: cancel an unanswered leg after that many seconds
        (``LegFailed(487, "ring timeout")``). Raises SdpError for an unusable offer and
        ValueError for a Call-ID already in use.
        """
        key = call_id or f"{uuid.uuid4()}@{self._local[0]}"
        if key in self._legs:
            raise ValueError(f"Call-ID {key} is already a leg")
        tag = generate_tag()
        name = f'"{display_name}" ' if display_name else ""
        leg = Leg(
            key=key,
            local_tag=tag,
            from_header=f"{name}<sip:{from_user}@{hostport(self._local)}>;tag={tag}",
            to_header=f"<{target_uri}>",
            target_uri=target_uri,
            dest=target_addr,
            contact=contact_uri(from_user, self._local),
            sdp=LocalSdp(sdp_offer),
            auth=credentials or self._credentials,
        )
        leg.invite = self._send_invite(leg, sdp_offer, [], now)
        if ring_timeout is not None:
            leg.ring_deadline = now + ring_timeout
        self._legs[key] = leg
        return key

    def cancel(self, leg_key: LegKey, now: float, *, reason: str = "cancelled") -> None:
        """Give up an unanswered leg: ``LegFailed(487, reason)`` now, CANCEL when allowed.

        §9.1: a CANCEL may only follow a provisional; before one, it waits for it (or for the
        final response, or Timer B). A no-op once the leg failed or ended; LegStateError once
        it is up (use ``bye``).
        """
        leg = self._get(leg_key)
        if leg.reported:
            return
        if leg.state is LegState.UP:
            raise LegStateError(f"{leg_key}: answered; hang up with bye")
        leg.cancel_reason = reason
        leg.ring_deadline = None
        self._fail(leg, 487, reason)
        if leg.state is LegState.PROCEEDING:
            self._send_cancel(leg, now)

    def bye(self, leg_key: LegKey, now: float) -> None:
        """Hang up an answered leg: ``LegEnded("local_bye")`` now, BYE resent until answered.

        A no-op once the leg failed or ended; LegStateError while it rings (use ``cancel``).
        """
        leg = self._get(leg_key)
        if leg.reported:
            return
        if leg.state is not LegState.UP:
            raise LegStateError(f"{leg_key}: not answered; give it up with cancel")
        self._end(leg, "local_bye", now)

    def hangup(self, leg_key: LegKey, now: float) -> None:
        """End a leg whatever its state: ``bye`` when up, ``cancel`` before; no-op after."""
        leg = self._legs.get(leg_key)
        if leg is None or leg.reported:
            return
        if leg.state is LegState.UP:
            self.bye(leg_key, now)
        else:
            self.cancel(leg_key, now)

    def update_local_sdp(self, leg_key: LegKey, sdp: bytes) -> None:
        """Replace the SDP that later re-INVITEs and UPDATEs are answered from (SdpError)."""
        self._get(leg_key).sdp.replace(sdp)

    # ------------------------------------------------------------------ sending

    def _send(self, data: bytes, addr: Addr) -> None:
        self._outbox.append((data, addr))

    def _send_invite(
        self, leg: Leg, body: bytes, credentials: Headers, now: float
    ) -> ClientRequest:
        """A new INVITE (the first, or one answering a challenge, §22.2: new branch and CSeq)."""
        leg.local_cseq += 1
        branch = generate_branch()
        request = build_request(
            "INVITE",
            leg.target_uri,
            via=via_for(self._local, branch),
            routes=(),
            from_header=leg.from_header,
            to_header=leg.to_header,
            call_id=leg.key,
            cseq=leg.local_cseq,
            user_agent=self._ua,
            headers=[("Contact", leg.contact), ("Allow", ALLOW), *credentials],
            body=body,
        )
        t1 = self._timers.t1
        data = bytes(request)
        tx = ClientRequest(
            request=request,
            data=data,
            dest=leg.dest,
            branch=branch,
            resend=Retransmission(data, leg.dest, now + t1, t1),  # Timer A
            timeout_at=now + self._timers.transaction_timeout,  # Timer B
            authenticated=bool(credentials),
        )
        self._send(data, leg.dest)
        return tx

    def _start(self, leg: Leg, request: SipRequest, dest: Addr, now: float) -> ClientRequest:
        """Send a non-INVITE request: resent on Timer E until a final or Timer F (§17.1.2)."""
        t1 = self._timers.t1
        data = bytes(request)
        via = parse_via(request.headers.get("via")[0])
        tx = ClientRequest(
            request=request,
            data=data,
            dest=dest,
            branch=via.branch or "",
            resend=Retransmission(data, dest, now + t1, t1),
            timeout_at=now + self._timers.transaction_timeout,
            authenticated=bool(credentials_of(request)),
        )
        leg.requests.add(tx)
        self._send(data, dest)
        return tx

    def _send_cancel(self, leg: Leg, now: float) -> None:
        if leg.cancel_sent or leg.invite.final:
            return
        leg.cancel_sent = True
        leg.cancel_at = now + self._timers.transaction_timeout
        self._start(leg, cancel_for(leg.invite.request), leg.dest, now)

    def _send_bye(
        self, leg: Leg, dialog: Dialog, cseq: int, now: float, credentials: Headers = ()
    ) -> None:
        request, hop = in_dialog(
            dialog,
            "BYE",
            via=via_for(self._local, generate_branch()),
            from_header=leg.from_header,
            call_id=leg.key,
            cseq=cseq,
            user_agent=self._ua,
            fallback=leg.dest,
            headers=credentials,
        )
        self._start(leg, request, hop, now)

    def _ack_2xx(self, leg: Leg, dialog: Dialog, invite: ClientRequest) -> tuple[bytes, Addr]:
        """The ACK of a 2xx (§13.2.2.4): a request of the dialog with the INVITE's CSeq number
        and credentials, a new branch, sent by the dialog's route set, not to the INVITE's
        destination. The To-tag is the 2xx's: a made-up one leaves the agent's phone without
        its ACK, and it hangs up after 64*T1 = 32 s."""
        request, hop = in_dialog(
            dialog,
            "ACK",
            via=via_for(self._local, generate_branch()),
            from_header=leg.from_header,
            call_id=leg.key,
            cseq=invite.cseq,
            user_agent=self._ua,
            fallback=leg.dest,
            headers=credentials_of(invite.request),
        )
        data = bytes(request)
        self._send(data, hop)
        return data, hop

    # ------------------------------------------------------------------ ending, reporting

    def _fail(self, leg: Leg, status: int, reason: str) -> None:
        if not leg.reported:
            leg.reported = True
            self._events.append(LegFailed(leg.key, status, reason))

    def _end(self, leg: Leg, reason: LegEndReason, now: float) -> None:
        """End an answered leg; a local end sends the BYE (§15.1.1)."""
        if not leg.reported:
            leg.reported = True
            self._events.append(LegEnded(leg.key, reason))
        leg.answers.clear()  # no ACK is needed for a session that is over
        if reason != "remote_bye" and leg.dialog is not None and leg.state is LegState.UP:
            leg.local_cseq += 1
            self._send_bye(leg, leg.dialog, leg.local_cseq, now)
        self._finish(leg, now)

    def _finish(self, leg: Leg, now: float) -> None:
        """The protocol is done with the leg; its record absorbs retransmissions for 64*T1."""
        if leg.state is not LegState.ENDED:
            leg.state = LegState.ENDED
            leg.expire_at = now + self._timers.transaction_timeout
        leg.ring_deadline = None
        leg.cancel_at = None
        invite = leg.invite
        if not invite.final:
            invite.resend = None
            invite.timeout_at = None

    # ------------------------------------------------------------------ timers

    def _leg_timers(self, leg: Leg, now: float) -> None:
        timers = self._timers
        invite = leg.invite
        if invite.timeout_at is not None and invite.timeout_at <= now:
            # Timer B (§17.1.1.2): not even a provisional in 64*T1.
            self._fail(leg, 408, "Request Timeout")
            self._finish(leg, now)
        elif invite.resend is not None and invite.resend.next_at <= now:
            # Timer A: the interval doubles every time, without the T2 cap of Timer E.
            self._send(invite.data, invite.dest)
            invite.resend.interval *= 2
            invite.resend.next_at = now + invite.resend.interval
        for request in list(leg.requests):
            if request.timeout_at is not None and request.timeout_at <= now:
                leg.requests.discard(request)  # Timer F: the BYE or CANCEL got no answer
            elif request.resend is not None and request.resend.next_at <= now:
                self._send(request.data, request.dest)  # Timer E
                request.resend.fire(now, timers)
        if leg.ring_deadline is not None and leg.ring_deadline <= now:
            self.cancel(leg.key, now, reason="ring timeout")
        if leg.cancel_at is not None and leg.cancel_at <= now:
            self._finish(leg, now)  # §9.1: no final response 64*T1 after the CANCEL
        self._dialogs.handle_timer(leg, now)
        if (
            leg.state is LegState.ENDED
            and not leg.requests
            and leg.expire_at is not None
            and leg.expire_at <= now
        ):
            del self._legs[leg.key]

    # ------------------------------------------------------------------ receiving

    def _receive(self, data: bytes, addr: Addr, now: float) -> None:
        framed, short = frame(data)
        try:
            message = SipMessage.parse(framed)
        except ValueError as exc:
            self._malformed(addr, f"unparseable: {printable(str(exc))}")
            return
        leg = self._legs.get(message.headers.get_first("call-id") or "")
        if leg is None:
            return  # owns_datagram matched something the parser reads differently: drop
        if isinstance(message, SipRequest):
            self._dialogs.on_request(leg, message, data, addr, now, short_body=short)
        elif not short:  # §18.3: a truncated response is discarded
            self._on_response(leg, message, addr, now)

    def _on_response(self, leg: Leg, response: SipResponse, addr: Addr, now: float) -> None:
        vias = response.headers.get("via")
        cseq = cseq_of(response)
        if not vias or cseq is None:
            self._malformed(addr, f"{response.status_code} without Via or CSeq")
            return
        branch = parse_via(vias[0]).branch or ""
        method = cseq[1]
        candidates = [leg.invite, *leg.old_invites] if method == "INVITE" else leg.requests
        tx = next((t for t in candidates if t.branch == branch and t.method == method), None)
        if tx is None:
            return  # §17.1.3: it matches no transaction of ours (a late BYE response, say)
        if method == "INVITE":
            self._invite_response(leg, tx, response, now)
        else:
            self._request_response(leg, tx, response, now)

    def _invite_response(
        self, leg: Leg, tx: ClientRequest, response: SipResponse, now: float
    ) -> None:
        status = response.status_code
        if status < 200:
            if tx.final or tx is not leg.invite or leg.state is not LegState.CALLING:
                self._ringing(leg, status)
                return
            # §17.1.1.2: Proceeding; no more Timer A, and Timer B no longer applies.
            tx.resend = None
            tx.timeout_at = None
            leg.state = LegState.PROCEEDING
            self._ringing(leg, status)
            if leg.cancel_reason is not None:
                self._send_cancel(leg, now)  # §9.1: the CANCEL waited for this provisional
            return
        if status < 300:
            self._invite_2xx(leg, tx, response, now)
            return
        if tx.final:
            if tx.ack is not None:
                self._send(tx.ack, tx.dest)  # the final again: our ACK was lost (§17.1.1.2)
            return
        tx.final = status
        tx.resend = None
        tx.timeout_at = None
        tx.ack = bytes(ack_for_failure(tx.request, response))
        self._send(tx.ack, tx.dest)
        if tx is not leg.invite or leg.state is LegState.ENDED:
            return
        if status in (401, 407) and self._answer_challenge(leg, tx, response, now):
            return
        reason = response.reason_phrase or str(status)
        self._fail(leg, status, reason)
        self._finish(leg, now)

    def _ringing(self, leg: Leg, status: int) -> None:
        if status in (180, 183) and not leg.ringing_reported and not leg.reported:
            leg.ringing_reported = True
            self._events.append(LegRinging(leg.key, status))

    def _answer_challenge(
        self, leg: Leg, tx: ClientRequest, response: SipResponse, now: float
    ) -> bool:
        """§22.2: resend the INVITE once with credentials; False if that is not possible."""
        if leg.auth is None or tx.authenticated or leg.cancel_reason is not None:
            return False
        header = answer_challenge(
            leg.auth, response, response.status_code, "INVITE", leg.target_uri
        )
        if header is None:
            return False
        leg.old_invites.append(tx)
        leg.invite = self._send_invite(leg, tx.request.body, [header], now)
        return True

    def _invite_2xx(self, leg: Leg, tx: ClientRequest, response: SipResponse, now: float) -> None:
        tag = tag_of(response.headers.get_first("to")) or ""
        if leg.dialog is not None and tag == leg.dialog.remote_tag:
            if leg.ack is not None:
                self._send(*leg.ack)  # the 2xx again: our ACK was lost (§13.2.2.4)
            return
        if leg.dialog is not None or tx is not leg.invite or leg.state is LegState.ENDED:
            self._stray(leg, tx, response, tag, now)
            return
        tx.final = response.status_code
        tx.resend = None
        tx.timeout_at = None
        dialog = dialog_from_2xx(response, tag, leg.target_uri)
        leg.dialog = dialog
        leg.ack = self._ack_2xx(leg, dialog, tx)
        leg.state = LegState.UP
        leg.ring_deadline = None
        leg.cancel_at = None
        if leg.cancel_reason is not None:
            # The 2xx crossed our CANCEL (§9.1 lets that happen): it is ACKed, then hung up.
            self._end(leg, "local_bye", now)
            return
        try:
            if media_type(response.content_type) != "application/sdp":
                raise SdpError("the 2xx carries no SDP answer")
            answer = parse_body(response.body)
            if answer.audio is None or answer.audio.port == 0:
                raise SdpError("the answer rejects the audio stream (port 0)")
        except SdpError as exc:
            # §13.2.2.4: an unacceptable answer is ACKed, then the session is ended with BYE.
            self._fail(leg, 488, f"unusable SDP answer: {exc}")
            self._end(leg, "local_bye", now)
            return
        leg.remote_sdp_body = response.body
        self._events.append(LegAnswered(leg.key, answer))

    def _stray(
        self, leg: Leg, invite: ClientRequest, response: SipResponse, tag: str, now: float
    ) -> None:
        """A 2xx we do not want (another fork, or after we gave up): ACK it, then BYE it."""
        stray = leg.strays.get(tag)
        if stray is not None:
            self._send(stray.ack, stray.ack_dest)
            return
        dialog = dialog_from_2xx(response, tag, leg.target_uri)
        ack, dest = self._ack_2xx(leg, dialog, invite)
        leg.strays[tag] = StrayDialog(dialog, ack, dest)
        self._send_bye(leg, dialog, invite.cseq + 1, now)
        if leg.state is LegState.ENDED and leg.expire_at is not None:
            # Keep absorbing its retransmissions for as long as they may come.
            leg.expire_at = max(leg.expire_at, now + self._timers.transaction_timeout)

    def _request_response(
        self, leg: Leg, tx: ClientRequest, response: SipResponse, now: float
    ) -> None:
        if response.status_code < 200:
            if tx.resend is not None:
                tx.resend.interval = self._timers.t2  # §17.1.2.2: Proceeding resends every T2
            return
        leg.requests.discard(tx)
        status = response.status_code
        if status in (401, 407) and tx.method == "BYE" and not tx.authenticated and leg.auth:
            header = answer_challenge(leg.auth, response, status, "BYE", tx.request.uri)
            dialog = leg.dialog
            if header is not None and dialog is not None:
                leg.local_cseq += 1
                self._send_bye(leg, dialog, leg.local_cseq, now, [header])

    # ------------------------------------------------------------------ the agent's requests

    def _get(self, leg_key: LegKey) -> Leg:
        leg = self._legs.get(leg_key)
        if leg is None:
            raise NoSuchLegError(leg_key)
        return leg

    def _malformed(self, addr: Addr, reason: str) -> None:
        self._events.append(Malformed(addr, reason))
