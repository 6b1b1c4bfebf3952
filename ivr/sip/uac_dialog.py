"""The agent's side of an outbound leg's dialog: what an agent phone may send us, answered.

Inside a leg's dialog the hotline is the UAS of the agent's requests: BYE → 200 (the leg ends),
re-INVITE/UPDATE → 200 with our current SDP (RFC 3264 §8: the codec list cut to the offer, hold
mirrored), the 2xx of a re-INVITE resent until its ACK (RFC 3261 §13.3.1.4), OPTIONS and INFO →
200, a request outside the dialog → 481 (§12.2.2), a CSeq going backwards → 500. Every answer
is kept for the request's retransmissions until Timer J (§17.2.2).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from aiosipua import SipRequest, parse_via, stringify_uri

from ivr.sip.events import Addr, Malformed
from ivr.sip.local_sdp import SdpError, SdpSyntaxError, is_hold, parse_body
from ivr.sip.messages import (
    Headers,
    build_response,
    cseq_of,
    hostport,
    media_type,
    printable,
    request_problem,
    response_addr,
)
from ivr.sip.timers import Retransmission, TimerValues
from ivr.sip.transactions import Incoming, server_key
from ivr.sip.uac_events import LegEndReason, LegEvent, LegMediaChanged
from ivr.sip.uac_legs import HeldReply, Leg, LegState, PendingAnswer

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO"
"""Methods an agent may send us inside a leg's dialog."""

_GONE = (481, "Call/Transaction Does Not Exist")

EndLeg = Callable[[Leg, LegEndReason, float], None]
"""How the client ends a leg (report LegEnded, BYE unless the agent hung up)."""


class DialogServer:
    """Answers the agent's requests inside our legs' dialogs; keeps answers for retransmissions."""

    def __init__(
        self,
        *,
        local: Addr,
        user_agent: str,
        timers: TimerValues,
        send: Callable[[bytes, Addr], None],
        events: deque[LegEvent],
        end: EndLeg,
    ) -> None:
        self._local = local
        self._ua = user_agent
        self._timers = timers
        self._send = send
        self._events = events
        self._end = end

    def handle_timer(self, leg: Leg, now: float) -> None:
        """Resend our 2xx to re-INVITEs (end the leg if one is never ACKed); Timer J."""
        for cseq, answer in list(leg.answers.items()):
            if answer.timeout_at <= now:
                # §13.3.1.4: our 2xx to the agent's re-INVITE never got its ACK.
                del leg.answers[cseq]
                self._end(leg, "ack_timeout", now)
            elif answer.resend.next_at <= now:
                self._send(answer.reply.data, answer.reply.dest)
                answer.resend.fire(now, self._timers)
        for key, reply in list(leg.replies.items()):
            if reply.expire_at <= now:
                del leg.replies[key]  # Timer J: the request's retransmissions are over

    def on_request(
        self,
        leg: Leg,
        request: SipRequest,
        data: bytes,
        addr: Addr,
        now: float,
        *,
        short_body: bool,
    ) -> None:
        """Answer a request the agent sent with one of our legs' Call-IDs.

        ``data`` is the datagram (for the SIP version and Content-Length checks of
        `ivr.sip.messages.request_problem`), ``short_body`` what `ivr.sip.messages.frame` said.
        """
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
            if method != "ACK":  # an ACK is never answered
                phrase = "Version Not Supported" if status == 505 else f"Bad Request ({reason})"
                response = build_response(
                    request, status, phrase, source=addr, to_tag=leg.local_tag, server=self._ua
                )
                self._send(bytes(response), reply_to)
            return
        rx = Incoming(
            request, addr, reply_to, server_key(request, top, cseq[0], method), cseq[0], now
        )
        if method == "ACK":
            self._on_ack(leg, rx)
            return
        held = leg.replies.get(rx.key)
        if held is not None:
            self._send(held.data, held.dest)  # a retransmission: the same answer (§17.2)
            return
        dialog = leg.dialog
        in_dialog_ = (
            dialog is not None and rx.to_tag == leg.local_tag and rx.from_tag == dialog.remote_tag
        )
        if method == "CANCEL":
            # §9.2: only a re-INVITE could be cancelled, and we answer those at once.
            invite_key = server_key(request, top, cseq[0], "INVITE")
            self._reply(leg, rx, *((200, "OK") if invite_key in leg.replies else _GONE))
            return
        if not in_dialog_ or leg.state is not LegState.UP:
            if in_dialog_ and method == "BYE":
                self._reply(leg, rx, 200, "OK")  # our BYE and theirs crossed: agree
            else:
                self._reply(leg, rx, *_GONE)  # §12.2.2
            return
        if leg.remote_cseq is not None and rx.cseq < leg.remote_cseq:
            self._reply(leg, rx, 500, "Server Internal Error (CSeq out of order)")  # §12.2.2
            return
        leg.remote_cseq = rx.cseq
        if method == "BYE":
            self._reply(leg, rx, 200, "OK")
            self._end(leg, "remote_bye", now)
        elif method in ("INVITE", "UPDATE"):
            self._on_offer(leg, rx)
        elif method == "OPTIONS":
            self._reply(leg, rx, 200, "OK", [("Allow", ALLOW), ("Accept", "application/sdp")])
        elif method == "INFO":
            self._reply(leg, rx, 200, "OK")  # agent-side keys are not forwarded (bridge doc)
        else:
            self._reply(leg, rx, 405, "Method Not Allowed", [("Allow", ALLOW)])

    def _on_offer(self, leg: Leg, rx: Incoming) -> None:
        """A re-INVITE (§14.2) or UPDATE (RFC 3311): answered from our current SDP."""
        request = rx.request
        offer = None
        if request.body:
            if media_type(request.content_type) != "application/sdp":
                self._reply(leg, rx, 415, "Unsupported Media Type", [("Accept", "application/sdp")])
                return
            try:
                offer = parse_body(request.body)
            except SdpSyntaxError:
                self._malformed(rx.source, f"{rx.method}: unparseable SDP")
                self._reply(leg, rx, 400, "Bad Request (malformed SDP)")
                return
            except SdpError as exc:
                self._reply(leg, rx, 488, "Not Acceptable Here", self._warning(str(exc)))
                return
        try:
            body = leg.sdp.render(offer)
        except SdpError as exc:
            # §14.2: a refused re-INVITE leaves the session as it was.
            self._reply(leg, rx, 488, "Not Acceptable Here", self._warning(str(exc)))
            return
        contacts = request.contact
        if contacts and leg.dialog is not None:
            leg.dialog.remote_target = stringify_uri(contacts[0].uri)  # §12.2.2: a new target
        headers = [("Contact", leg.contact), ("Allow", ALLOW)]
        reply = self._reply(leg, rx, 200, "OK", headers, body=body)
        if rx.method == "INVITE":
            t1 = self._timers.t1
            leg.answers[rx.cseq] = PendingAnswer(
                reply=reply,
                resend=Retransmission(reply.data, reply.dest, rx.now + t1, t1),
                timeout_at=rx.now + self._timers.transaction_timeout,
                offerless=offer is None,
            )
        if offer is not None:
            self._media_changed(leg, request.body)

    def _on_ack(self, leg: Leg, rx: Incoming) -> None:
        """The ACK of our 2xx to a re-INVITE: stop resending it (§13.3.1.4)."""
        dialog = leg.dialog
        if dialog is None or rx.to_tag != leg.local_tag or rx.from_tag != dialog.remote_tag:
            return  # an ACK is never answered; one for nothing is dropped
        answer = leg.answers.pop(rx.cseq, None)
        if answer is not None and answer.offerless and rx.request.body:
            self._media_changed(leg, rx.request.body)

    def _media_changed(self, leg: Leg, body: bytes) -> None:
        if body == leg.remote_sdp_body:
            return  # a session refresh often resends the same SDP
        try:
            sdp = parse_body(body)
        except SdpError:
            return
        leg.remote_sdp_body = body
        self._events.append(LegMediaChanged(leg.key, sdp, is_hold(sdp)))

    def _reply(
        self,
        leg: Leg,
        rx: Incoming,
        status: int,
        reason: str,
        headers: Headers = (),
        *,
        body: bytes = b"",
    ) -> HeldReply:
        """Answer one of the agent's requests; the answer is kept for its retransmissions."""
        response = build_response(
            rx.request, status, reason, source=rx.source, to_tag=leg.local_tag, server=self._ua
        )
        for name, value in headers:
            response.headers.append(name, value)
        if body:
            response.headers.set_single("Content-Type", "application/sdp")
            response.body = body
        reply = HeldReply(bytes(response), rx.reply_to, rx.now + self._timers.transaction_timeout)
        leg.replies[rx.key] = reply
        self._send(reply.data, reply.dest)
        return reply

    # ------------------------------------------------------------------ helpers

    def _warning(self, text: str) -> list[tuple[str, str]]:
        # §20.43: 399 is the miscellaneous warning; the text is ours, never the peer's bytes.
        return [("Warning", f'399 {hostport(self._local)} "{text.replace(chr(34), chr(39))}"')]

    def _malformed(self, addr: Addr, reason: str) -> None:
        self._events.append(Malformed(addr, reason))
