"""The agent-leg UAC on wire bytes with an explicit clock: INVITE retransmission (Timers A/B),
provisional handling, the ACK of a 2xx (To-tag, branch, Route set, Request-URI; RFC 3261
§13.2.2.4), the ACK of a non-2xx (§17.1.1.3), CANCEL (§9.1), BYE both ways with Timer E/F,
re-INVITE/OPTIONS from the agent, digest challenges (§22.2). Every path ends with an empty
table."""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from aiosipua import SipMessage, SipRequest, SipResponse, parse_auth, parse_via
from aiosipua.auth import SipDigestAuth
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.sip.events import Addr, Malformed
from ivr.sip.local_sdp import SdpError
from ivr.sip.messages import tag_of
from ivr.sip.uac import SipClient
from ivr.sip.uac_events import (
    LegAnswered,
    LegEnded,
    LegEvent,
    LegFailed,
    LegMediaChanged,
    LegRinging,
    LegStateError,
    NoSuchLegError,
)
from ivr.sip.uac_messages import sdp_offer

HOTLINE: Addr = ("127.0.0.1", 5060)
AGENT: Addr = ("127.0.0.1", 5070)
PROXY: Addr = ("10.0.0.7", 5060)
TARGET = "sip:1001@127.0.0.1:5070"
OFFER = sdp_offer("127.0.0.1", 30000)

INVITE_SENDS = [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
"""Timer A: T1 doubling without a cap, until Timer B at 64*T1 = 32 s (T1 = 0.5 s)."""

BYE_SENDS = [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
"""Timer E: T1 doubling, capped at T2 = 4 s, until Timer F at 32 s."""

E = TypeVar("E")


def answer_sdp(port: int = 40000, direction: str = "sendrecv", formats: str = "8 101") -> bytes:
    names = {"0": "PCMU/8000", "8": "PCMA/8000", "101": "telephone-event/8000"}
    lines = [
        "v=0",
        "o=agent 1 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} RTP/AVP {formats}",
        *(f"a=rtpmap:{f} {names[f]}" for f in formats.split()),
        f"a={direction}",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass
class Sent:
    """One datagram the client emitted, parsed."""

    at: float
    data: bytes
    addr: Addr

    @property
    def message(self) -> SipRequest | SipResponse:
        return SipMessage.parse(self.data)

    @property
    def request(self) -> SipRequest:
        message = self.message
        assert isinstance(message, SipRequest), self.data
        return message

    @property
    def response(self) -> SipResponse:
        message = self.message
        assert isinstance(message, SipResponse), self.data
        return message

    @property
    def method(self) -> str:
        return self.request.method

    def header(self, name: str) -> str | None:
        return self.message.headers.get_first(name)

    def headers(self, name: str) -> list[str]:
        return self.message.headers.get(name)

    @property
    def branch(self) -> str:
        return parse_via(self.headers("via")[0]).branch or ""


def respond(
    request: bytes,
    status: int,
    reason: str,
    *,
    tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> bytes:
    """What a UAS answers to `request`: Vias, From, To (+ its tag), Call-ID, CSeq copied."""
    parsed = SipMessage.parse(request)
    assert isinstance(parsed, SipRequest)
    response = SipResponse(status_code=status, reason_phrase=reason)
    for via in parsed.headers.get("via"):
        response.headers.append("Via", via)
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = parsed.headers.get_first(name) or ""
        if name == "To" and tag and tag_of(value) is None:
            value = f"{value};tag={tag}"
        response.headers.append(name, value)
    for name, value in headers:
        response.headers.append(name, value)
    if body:
        response.headers.append("Content-Type", "application/sdp")
        response.body = body
    return bytes(response)


class Harness:
    """A SipClient on a fake clock; output parsed, events collected."""

    def __init__(self, **options: Any) -> None:
        self.client = SipClient(local_addr=HOTLINE, **options)
        self.now = 0.0
        self.events: list[LegEvent] = []

    def _collect(self) -> list[Sent]:
        sent = [Sent(self.now, d, a) for d, a in self.client.datagrams_to_send(self.now)]
        while (event := self.client.next_event()) is not None:
            self.events.append(event)
        return sent

    def call(self, target: str = TARGET, addr: Addr = AGENT, **kw: Any) -> tuple[str, Sent]:
        """Start a leg; its key and the INVITE sent."""
        leg = self.client.invite(target, addr, OFFER, self.now, from_user="95598", **kw)
        (invite,) = self._collect()
        return leg, invite

    def feed(self, data: bytes, addr: Addr = AGENT, *, ours: bool = True) -> list[Sent]:
        assert self.client.receive_datagram(data, addr, self.now) is ours
        return self._collect()

    def do(self, action: Any, *args: Any) -> list[Sent]:
        action(*args, self.now)
        return self._collect()

    def at(self, t: float) -> list[Sent]:
        """Move the clock to `t`, firing every timer on the way at its own time."""
        assert t >= self.now
        sent: list[Sent] = []
        while (due := self.client.get_timer()) is not None and due <= t:
            self.now = max(due, self.now)
            self.client.handle_timer(self.now)
            sent += self._collect()
        self.now = t
        return sent

    def run_out(self, limit: int = 10_000) -> list[Sent]:
        sent: list[Sent] = []
        for _ in range(limit):
            due = self.client.get_timer()
            if due is None:
                return sent
            sent += self.at(max(due, self.now))
        raise AssertionError("timers never ran out")

    def take(self, kind: type[E]) -> list[E]:
        found = [e for e in self.events if isinstance(e, kind)]
        self.events = [e for e in self.events if not isinstance(e, kind)]
        return found

    def assert_clean(self) -> None:
        self.run_out()
        assert self.client.legs == 0
        assert self.client.get_timer() is None
        internal = [e for e in self.events if isinstance(e, Malformed) and "internal" in e.reason]
        assert not internal

    def answered(
        self, *, headers: Iterable[tuple[str, str]] = (), tag: str = "agent-tag"
    ) -> tuple[str, Sent, Sent]:
        """A leg rung and answered; (key, INVITE, ACK)."""
        leg, invite = self.call()
        self.feed(respond(invite.data, 180, "Ringing", tag=tag))
        contact = [("Contact", "<sip:1001@127.0.0.1:5070;transport=udp>")]
        (ack,) = self.feed(
            respond(invite.data, 200, "OK", tag=tag, headers=[*contact, *headers], body=SDP)
        )
        self.events.clear()
        return leg, invite, ack


SDP = answer_sdp()


@pytest.fixture
def uac() -> Iterator[Harness]:
    """A client at t=0; after the test every timer runs and the table must be empty."""
    harness = Harness()
    yield harness
    harness.assert_clean()


def agent_request(
    invite: Sent,
    method: str,
    cseq: int,
    *,
    to_tag: str = "agent-tag",
    from_tag: str | None = None,
    branch: str | None = None,
    body: bytes = b"",
    headers: Iterable[str] = (),
) -> bytes:
    """A request the agent sends inside the leg's dialog (From/To swapped, §12.2.1.1)."""
    ours = invite.header("from") or ""
    our_tag = from_tag or tag_of(ours)
    agent_to = re.sub(r";tag=[^;>]+", "", invite.header("to") or "")
    lines = [
        f"{method} sip:95598@127.0.0.1:5060 SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch or f'z9hG4bK-agent-{method}-{cseq}'}",
        f"From: {agent_to};tag={to_tag}",
        f"To: {re.sub(r';tag=[^;>]+', '', ours)};tag={our_tag}",
        f"Call-ID: {invite.header('call-id')}",
        f"CSeq: {cseq} {method}",
        "Contact: <sip:1001@127.0.0.1:5070>",
        "Max-Forwards: 70",
        *headers,
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


# --------------------------------------------------------------------------- the INVITE


def test_invite_bytes(uac):
    leg, invite = uac.call()
    assert invite.addr == AGENT
    request = invite.request
    assert (request.method, request.uri) == ("INVITE", TARGET)
    via = parse_via(invite.headers("via")[0])
    assert (via.host, via.port) == HOTLINE
    assert (via.branch or "").startswith("z9hG4bK")
    assert "rport" in via.params
    assert invite.header("max-forwards") == "70"
    assert tag_of(invite.header("from"))  # our tag: the dialog's local tag
    assert invite.header("from").startswith("<sip:95598@127.0.0.1:5060>")
    assert invite.header("to") == f"<{TARGET}>"  # no tag in an initial request
    assert invite.header("call-id") == leg
    assert invite.header("cseq") == "1 INVITE"
    assert invite.header("contact") == "<sip:95598@127.0.0.1:5060>"
    assert invite.header("content-type") == "application/sdp"
    assert request.body == OFFER
    uac.do(uac.client.cancel, leg)


def test_invite_is_resent_on_timer_a_until_timer_b_then_408(uac):
    leg, invite = uac.call()
    sent = uac.at(40.0)
    assert [s.at for s in sent] == INVITE_SENDS[1:]
    assert all(s.data == invite.data and s.addr == AGENT for s in sent)
    assert uac.take(LegFailed) == [LegFailed(leg, 408, "Request Timeout")]
    assert uac.events == []


def test_provisional_stops_retransmission_and_rings_once(uac):
    leg, invite = uac.call()
    assert uac.feed(respond(invite.data, 100, "Trying")) == []
    assert uac.at(40.0) == []  # Proceeding: no Timer A, no Timer B
    assert uac.events == []
    uac.feed(respond(invite.data, 180, "Ringing", tag="t1"))
    uac.feed(respond(invite.data, 180, "Ringing", tag="t1"))
    uac.feed(respond(invite.data, 183, "Session Progress", tag="t1"))
    assert uac.take(LegRinging) == [LegRinging(leg, 180)]
    uac.do(uac.client.cancel, leg)
    uac.feed(respond(invite.data, 487, "Request Terminated", tag="t1"))


# --------------------------------------------------------------------------- 2xx and its ACK


def test_ack_of_2xx_has_the_2xx_to_tag_a_new_branch_and_the_reversed_route_set(uac):
    leg, invite = uac.call(addr=PROXY)
    record_route = [
        ("Record-Route", "<sip:10.0.0.9;lr>"),
        ("Record-Route", "<sip:10.0.0.8;lr>, <sip:10.0.0.7;lr>"),
    ]
    ok = respond(
        invite.data,
        200,
        "OK",
        tag="a6c85cf",
        headers=[("Contact", "<sip:1001@10.1.2.3:5072;transport=udp>"), *record_route],
        body=SDP,
    )
    (ack,) = uac.feed(ok, PROXY)
    (answered,) = uac.take(LegAnswered)
    assert answered.leg == leg
    assert answered.remote_sdp.rtp_address == ("127.0.0.1", 40000)
    request = ack.request
    assert request.method == "ACK"
    assert request.uri == "sip:1001@10.1.2.3:5072;transport=udp"  # the 2xx's Contact
    assert ack.headers("route") == ["<sip:10.0.0.7;lr>", "<sip:10.0.0.8;lr>", "<sip:10.0.0.9;lr>"]
    assert ack.addr == ("10.0.0.7", 5060)  # the first route (loose routing)
    assert tag_of(ack.header("to")) == "a6c85cf"  # the 2xx's tag, never a made-up one
    assert ack.header("to") == f"<{TARGET}>;tag=a6c85cf"
    assert ack.header("from") == invite.header("from")
    assert ack.header("call-id") == leg
    assert ack.header("cseq") == "1 ACK"  # the INVITE's number
    assert ack.branch != invite.branch  # an ACK of a 2xx is a transaction of its own
    assert ack.branch.startswith("z9hG4bK")
    assert request.body == b""
    # The 2xx again (our ACK was lost): the same ACK again, no second LegAnswered.
    (again,) = uac.feed(ok, PROXY)
    assert again.data == ack.data
    assert again.addr == ack.addr
    assert uac.events == []
    uac.do(uac.client.bye, leg)


def test_ack_without_record_route_goes_to_the_contact(uac):
    leg, _, ack = uac.answered()
    assert ack.request.uri == "sip:1001@127.0.0.1:5070;transport=udp"
    assert ack.headers("route") == []
    assert ack.addr == AGENT
    assert ack.header("to") == f"<{TARGET}>;tag=agent-tag"
    uac.do(uac.client.bye, leg)


def test_a_leg_stays_up_past_32_seconds_with_nothing_sent(uac):
    """The pyVoIP failure: its ACK had a made-up To-tag, the phone resent its 2xx for 32 s,
    then hung up. Here the ACK is right and the client has nothing to do while the leg is up."""
    leg, _, _ = uac.answered()
    assert uac.client.get_timer() is None
    assert uac.at(60.0) == []
    assert uac.events == []
    uac.do(uac.client.bye, leg)


@pytest.mark.parametrize("body", [b"", answer_sdp(port=0)], ids=["no SDP", "audio refused"])
def test_2xx_without_a_usable_answer_is_acked_then_hung_up(uac, body):
    leg, invite = uac.call()
    contact = [("Contact", "<sip:1001@127.0.0.1:5070>")]
    ack, bye = uac.feed(respond(invite.data, 200, "OK", tag="x", headers=contact, body=body))
    assert (ack.method, bye.method) == ("ACK", "BYE")
    assert tag_of(bye.header("to")) == "x"
    assert bye.header("cseq") == "2 BYE"
    (failed,) = uac.take(LegFailed)
    assert (failed.leg, failed.status) == (leg, 488)
    assert uac.events == []
    uac.feed(respond(bye.data, 200, "OK"))


def test_second_fork_2xx_is_acked_and_hung_up(uac):
    leg, invite, _ = uac.answered(tag="fork-a")
    other = respond(
        invite.data,
        200,
        "OK",
        tag="fork-b",
        headers=[("Contact", "<sip:1002@127.0.0.1:5071>")],
        body=SDP,
    )
    ack_b, bye_b = uac.feed(other)
    assert (ack_b.method, bye_b.method) == ("ACK", "BYE")
    assert tag_of(ack_b.header("to")) == tag_of(bye_b.header("to")) == "fork-b"
    assert ack_b.addr == bye_b.addr == ("127.0.0.1", 5071)
    assert uac.events == []  # the leg is still the first fork's
    (again,) = uac.feed(other)  # its retransmission gets the same ACK, no second BYE
    assert again.data == ack_b.data
    uac.feed(respond(bye_b.data, 200, "OK"), ("127.0.0.1", 5071))
    uac.do(uac.client.bye, leg)


# --------------------------------------------------------------------------- non-2xx


def test_non_2xx_final_is_acked_on_the_invite_branch(uac):
    leg, invite = uac.call()
    uac.feed(respond(invite.data, 180, "Ringing", tag="busy1"))
    busy = respond(invite.data, 486, "Busy Here", tag="busy1")
    (ack,) = uac.feed(busy)
    request = ack.request
    assert request.method == "ACK"
    assert request.uri == TARGET  # the INVITE's Request-URI (§17.1.1.3)
    assert ack.headers("via") == invite.headers("via")  # same branch: same transaction
    assert ack.header("to") == f"<{TARGET}>;tag=busy1"
    assert ack.header("from") == invite.header("from")
    assert ack.header("cseq") == "1 ACK"
    assert ack.addr == AGENT
    assert uac.take(LegFailed) == [LegFailed(leg, 486, "Busy Here")]
    uac.take(LegRinging)
    (again,) = uac.feed(busy)  # the final again: our ACK was lost
    assert again.data == ack.data
    assert uac.events == []


# --------------------------------------------------------------------------- CANCEL


def test_cancel_while_ringing_sends_cancel_then_acks_the_487(uac):
    leg, invite = uac.call()
    uac.feed(respond(invite.data, 180, "Ringing", tag="r1"))
    uac.take(LegRinging)
    (cancel,) = uac.do(uac.client.cancel, leg)
    assert uac.take(LegFailed) == [LegFailed(leg, 487, "cancelled")]  # reported at once
    request = cancel.request
    assert (request.method, request.uri) == ("CANCEL", TARGET)
    assert cancel.headers("via") == invite.headers("via")  # §9.1: the INVITE's branch
    assert cancel.header("to") == invite.header("to")  # no tag
    assert cancel.header("from") == invite.header("from")
    assert cancel.header("cseq") == "1 CANCEL"
    assert cancel.addr == AGENT
    assert uac.feed(respond(cancel.data, 200, "OK", tag="r1")) == []
    (ack,) = uac.feed(respond(invite.data, 487, "Request Terminated", tag="r1"))
    assert ack.method == "ACK"
    assert ack.branch == invite.branch
    assert ack.header("cseq") == "1 ACK"
    assert uac.events == []
    assert uac.client.hangup(leg, uac.now) is None  # a no-op now


def test_cancel_before_any_provisional_waits_for_one(uac):
    leg, invite = uac.call()
    assert uac.do(uac.client.cancel, leg) == []  # §9.1: not before a provisional
    assert uac.take(LegFailed) == [LegFailed(leg, 487, "cancelled")]
    (cancel,) = uac.feed(respond(invite.data, 100, "Trying"))
    assert cancel.method == "CANCEL"
    uac.feed(respond(cancel.data, 200, "OK"))
    uac.feed(respond(invite.data, 487, "Request Terminated", tag="z"))
    assert uac.events == []


def test_cancel_without_any_answer_gives_up_after_timer_b(uac):
    leg, _ = uac.call()
    uac.do(uac.client.cancel, leg)
    uac.run_out()
    assert uac.take(LegFailed) == [LegFailed(leg, 487, "cancelled")]  # no second event


def test_2xx_crossing_the_cancel_is_acked_and_hung_up(uac):
    leg, invite = uac.call()
    uac.feed(respond(invite.data, 180, "Ringing", tag="x1"))
    (cancel,) = uac.do(uac.client.cancel, leg)
    contact = [("Contact", "<sip:1001@127.0.0.1:5070>")]
    ack, bye = uac.feed(respond(invite.data, 200, "OK", tag="x1", headers=contact, body=SDP))
    assert (ack.method, bye.method) == ("ACK", "BYE")
    assert tag_of(ack.header("to")) == "x1"
    uac.feed(respond(cancel.data, 481, "Call/Transaction Does Not Exist"))
    uac.feed(respond(bye.data, 200, "OK"))
    assert [type(e) for e in uac.events] == [LegRinging, LegFailed]  # never LegAnswered


def test_unanswered_cancel_is_resent_and_the_invite_given_up(uac):
    leg, invite = uac.call()
    uac.feed(respond(invite.data, 180, "Ringing", tag="q"))
    uac.do(uac.client.cancel, leg)
    sent = uac.at(40.0)
    assert [s.method for s in sent] == ["CANCEL"] * (len(BYE_SENDS) - 1)
    assert [s.at for s in sent] == BYE_SENDS[1:]


def test_ring_timeout_cancels(uac):
    leg, invite = uac.call(ring_timeout=20.0)
    uac.feed(respond(invite.data, 180, "Ringing", tag="rt"))
    (cancel,) = uac.at(20.0)
    assert cancel.method == "CANCEL"
    assert uac.take(LegFailed) == [LegFailed(leg, 487, "ring timeout")]
    uac.feed(respond(cancel.data, 200, "OK"))
    uac.feed(respond(invite.data, 487, "Request Terminated", tag="rt"))


# --------------------------------------------------------------------------- BYE


def test_bye_is_resent_on_timer_e_until_timer_f(uac):
    leg, invite, ack = uac.answered()
    (bye,) = uac.do(uac.client.bye, leg)
    assert uac.take(LegEnded) == [LegEnded(leg, "local_bye")]  # at once: stop the media
    request = bye.request
    assert request.uri == ack.request.uri
    assert bye.addr == ack.addr
    assert bye.header("to") == ack.header("to")
    assert bye.header("from") == invite.header("from")
    assert bye.header("cseq") == "2 BYE"
    assert bye.branch not in (invite.branch, ack.branch)
    sent = uac.at(40.0)
    assert [s.at for s in sent] == BYE_SENDS[1:]
    assert all(s.data == bye.data for s in sent)
    assert uac.events == []


def test_bye_answered_stops_resending(uac):
    leg, _, _ = uac.answered()
    (bye,) = uac.do(uac.client.bye, leg)
    uac.at(1.0)
    assert uac.feed(respond(bye.data, 200, "OK")) == []
    assert uac.at(40.0) == []


def test_bye_while_ringing_is_refused_and_cancel_when_up_too(uac):
    leg, invite = uac.call()
    with pytest.raises(LegStateError):
        uac.client.bye(leg, uac.now)
    contact = [("Contact", "<sip:1001@127.0.0.1:5070>")]
    uac.feed(respond(invite.data, 200, "OK", tag="u", headers=contact, body=SDP))
    with pytest.raises(LegStateError):
        uac.client.cancel(leg, uac.now)
    with pytest.raises(NoSuchLegError):
        uac.client.bye("nope", uac.now)
    (bye,) = uac.do(uac.client.hangup, leg)
    assert bye.method == "BYE"


def test_agent_bye_gets_200_and_ends_the_leg(uac):
    leg, invite, _ = uac.answered()
    bye = agent_request(invite, "BYE", 1)
    (ok,) = uac.feed(bye)
    assert ok.response.status_code == 200
    assert ok.addr == AGENT
    assert ok.header("to") == re.search(r"To: (.*)\r\n", bye.decode()).group(1)
    assert ok.header("cseq") == "1 BYE"
    assert uac.take(LegEnded) == [LegEnded(leg, "remote_bye")]
    (again,) = uac.feed(bye)  # retransmitted: the same 200, no second event
    assert again.data == ok.data
    assert uac.events == []
    assert uac.client.bye(leg, uac.now) is None  # a no-op now


def test_byes_crossing(uac):
    leg, invite, _ = uac.answered()
    (ours,) = uac.do(uac.client.bye, leg)
    (ok,) = uac.feed(agent_request(invite, "BYE", 1))
    assert ok.response.status_code == 200
    uac.feed(respond(ours.data, 200, "OK"))
    assert uac.take(LegEnded) == [LegEnded(leg, "local_bye")]


# --------------------------------------------------------------------------- agent requests


def test_agent_reinvite_hold_is_answered_from_our_sdp_until_acked(uac):
    leg, invite, _ = uac.answered()
    reinvite = agent_request(invite, "INVITE", 2, body=answer_sdp(direction="sendonly"))
    (ok,) = uac.feed(reinvite)
    response = ok.response
    assert response.status_code == 200
    assert ok.header("contact") == "<sip:95598@127.0.0.1:5060>"
    assert b"a=recvonly" in response.body  # RFC 3264 §6.1: sendonly mirrored
    assert b"m=audio 30000 RTP/AVP 8 101" in response.body  # our port, their codec
    (changed,) = uac.take(LegMediaChanged)
    assert (changed.leg, changed.hold) == (leg, True)
    (resent,) = uac.at(0.5)  # our 2xx is resent until the ACK
    assert resent.data == ok.data
    (again,) = uac.feed(reinvite)  # a retransmitted re-INVITE: the same 2xx
    assert again.data == ok.data
    assert uac.feed(agent_request(invite, "ACK", 2, branch="z9hG4bK-ack2")) == []
    assert uac.at(10.0) == []
    assert uac.events == []
    uac.do(uac.client.bye, leg)


def test_agent_reinvite_never_acked_ends_the_leg(uac):
    leg, invite, _ = uac.answered()
    uac.feed(agent_request(invite, "INVITE", 2, body=answer_sdp()))
    sent = uac.at(32.2)
    *resent, bye = sent
    assert bye.method == "BYE"
    assert bye.at == 32.0  # 64*T1 without an ACK (§13.3.1.4)
    assert [s.at for s in resent] == BYE_SENDS[1:]  # our 2xx, T1 doubling up to T2
    assert all(s.response.status_code == 200 for s in resent)
    assert uac.take(LegEnded) == [LegEnded(leg, "ack_timeout")]


def test_offerless_reinvite_gets_our_offer_and_the_ack_brings_the_answer(uac):
    leg, invite, _ = uac.answered()
    (ok,) = uac.feed(agent_request(invite, "INVITE", 2))
    assert b"m=audio 30000 RTP/AVP 0 8 101" in ok.response.body
    assert uac.events == []
    ack = agent_request(invite, "ACK", 2, body=answer_sdp(port=40002), branch="z9hG4bK-a")
    uac.feed(ack)
    (changed,) = uac.take(LegMediaChanged)
    assert changed.remote_sdp.rtp_address == ("127.0.0.1", 40002)
    uac.do(uac.client.bye, leg)


def test_options_info_and_strangers_in_the_dialog(uac):
    leg, invite, _ = uac.answered()
    (ok,) = uac.feed(agent_request(invite, "OPTIONS", 5))
    assert ok.response.status_code == 200
    assert "INVITE" in (ok.header("allow") or "")
    (info,) = uac.feed(agent_request(invite, "INFO", 6))
    assert info.response.status_code == 200
    (stale,) = uac.feed(agent_request(invite, "INFO", 4))
    assert stale.response.status_code == 500  # §12.2.2: CSeq went backwards
    (wrong,) = uac.feed(agent_request(invite, "BYE", 7, to_tag="someone-else"))
    assert wrong.response.status_code == 481
    (odd,) = uac.feed(agent_request(invite, "MESSAGE", 8))
    assert odd.response.status_code == 405
    assert uac.events == []
    uac.do(uac.client.bye, leg)


def test_update_with_a_bad_sdp_is_refused_and_the_leg_stays(uac):
    leg, invite, _ = uac.answered()
    (bad,) = uac.feed(agent_request(invite, "UPDATE", 2, body=b"v=0\r\nm=audio abc RTP/AVP 0\r\n"))
    assert bad.response.status_code == 400
    (nothing,) = uac.feed(agent_request(invite, "UPDATE", 3, body=answer_sdp(formats="101")))
    assert nothing.response.status_code == 488
    uac.take(Malformed)
    assert uac.events == []
    uac.do(uac.client.bye, leg)


# --------------------------------------------------------------------------- digest auth


def _digest_ok(header: str, password: str, method: str) -> bool:
    creds = parse_auth(header).params

    def h(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - RFC 2617 digest

    ha1 = h(f"{creds['username']}:{creds['realm']}:{password}")
    ha2 = h(f"{method}:{creds['uri']}")
    qop = f"{creds['nc']}:{creds['cnonce']}:auth:" if "qop" in creds else ""
    return creds["response"] == h(f"{ha1}:{creds['nonce']}:{qop}{ha2}")


def test_407_is_answered_once_with_credentials():
    uac = Harness(credentials=SipDigestAuth("hotline", "s3cret"))
    leg, invite = uac.call(addr=PROXY)
    challenge = ("Proxy-Authenticate", 'Digest realm="pbx", nonce="abc123", qop="auth"')
    ack, retry = uac.feed(respond(invite.data, 407, "Proxy Authentication Required",
                                  tag="p", headers=[challenge]), PROXY)  # fmt: skip
    assert ack.method == "ACK"
    assert ack.branch == invite.branch
    assert retry.method == "INVITE"
    assert retry.branch != invite.branch  # §22.2: a new transaction...
    assert retry.header("cseq") == "2 INVITE"  # ...with the next CSeq,
    assert retry.header("call-id") == invite.header("call-id")  # the same Call-ID
    assert retry.header("from") == invite.header("from")  # and From tag
    authorization = retry.header("proxy-authorization") or ""
    assert _digest_ok(authorization, "s3cret", "INVITE")
    assert uac.events == []
    contact = [("Contact", "<sip:1001@127.0.0.1:5070>")]
    (ack2,) = uac.feed(respond(retry.data, 200, "OK", tag="ok", headers=contact, body=SDP), PROXY)
    assert ack2.header("cseq") == "2 ACK"
    assert ack2.header("proxy-authorization") == authorization  # §13.2.2.4: same credentials
    assert [type(e) for e in uac.events] == [LegAnswered]
    uac.do(uac.client.bye, leg)
    uac.assert_clean()


def test_a_second_challenge_fails_the_leg():
    uac = Harness(credentials=SipDigestAuth("hotline", "wrong"))
    leg, invite = uac.call()
    challenge = [("WWW-Authenticate", 'Digest realm="pbx", nonce="n1"')]
    _, retry = uac.feed(respond(invite.data, 401, "Unauthorized", tag="a", headers=challenge))
    assert _digest_ok(retry.header("authorization") or "", "wrong", "INVITE")
    (ack,) = uac.feed(respond(retry.data, 401, "Unauthorized", tag="b", headers=challenge))
    assert ack.branch == retry.branch
    assert uac.take(LegFailed) == [LegFailed(leg, 401, "Unauthorized")]
    uac.assert_clean()


def test_a_challenge_without_credentials_fails_the_leg(uac):
    leg, invite = uac.call()
    challenge = [("WWW-Authenticate", 'Digest realm="pbx", nonce="n1"')]
    (ack,) = uac.feed(respond(invite.data, 401, "Unauthorized", tag="a", headers=challenge))
    assert ack.method == "ACK"
    assert uac.take(LegFailed) == [LegFailed(leg, 401, "Unauthorized")]


# --------------------------------------------------------------------------- sharing the socket


def test_only_datagrams_of_our_legs_are_taken(uac):
    foreign = respond(
        b"INVITE sip:95598@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:95598@127.0.0.1>\r\nCall-ID: inbound-1\r\n"
        b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        200,
        "OK",
    )
    assert not uac.client.receive_datagram(foreign, AGENT, 0.0)  # no legs at all
    leg, invite = uac.call()
    assert not uac.client.receive_datagram(foreign, AGENT, 0.0)
    assert not uac.client.receive_datagram(b"\r\n\r\n", AGENT, 0.0)
    assert uac.client.owns(SipMessage.parse(respond(invite.data, 100, "Trying")))
    assert not uac.client.owns(SipMessage.parse(foreign))
    # Compact form (i:) is recognised too.
    compact = respond(invite.data, 100, "Trying").replace(b"Call-ID:", b"i:")
    assert uac.client.receive_datagram(compact, AGENT, 0.0)
    uac.do(uac.client.cancel, leg)


def test_garbage_for_a_leg_never_raises(uac):
    leg, invite = uac.call()
    call_id = invite.header("call-id")
    for junk in (
        f"SIP/2.0 abc OK\r\nCall-ID: {call_id}\r\n\r\n".encode(),
        f"SIP/2.0 200 OK\r\nCall-ID: {call_id}\r\n\r\n".encode(),  # no Via, no CSeq
        f"BYE sip:x SIP/2.0\r\nCall-ID: {call_id}\r\n\r\n".encode(),  # no Via
        f"BYE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4:5;branch=z9hG4bKq\r\n"
        f"Call-ID: {call_id}\r\nCSeq: x BYE\r\n\r\n".encode(),
    ):
        uac.feed(junk)
    assert uac.take(Malformed)
    assert [e for e in uac.events if not isinstance(e, Malformed)] == []
    uac.do(uac.client.cancel, leg)


def test_invite_refuses_a_bad_offer_and_a_reused_call_id(uac):
    with pytest.raises(SdpError):
        uac.client.invite(TARGET, AGENT, b"v=0\r\n", 0.0, from_user="95598")
    leg, _ = uac.call(call_id="fixed@host")
    with pytest.raises(ValueError, match="already"):
        uac.client.invite(TARGET, AGENT, OFFER, 0.0, from_user="95598", call_id="fixed@host")
    uac.do(uac.client.cancel, leg)


# --------------------------------------------------------------------------- invariants

_RESPONSES = st.sampled_from(
    [(100, "Trying"), (180, "Ringing"), (183, "Progress"), (200, "OK"), (486, "Busy Here"),
     (487, "Request Terminated"), (603, "Decline")]
)  # fmt: skip
_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("response"), _RESPONSES, st.sampled_from(["t1", "t2"])),
        st.tuples(st.just("wait"), st.floats(0.1, 20.0), st.just("")),
        st.tuples(st.sampled_from(["cancel", "hangup", "agent_bye"]), st.just(0), st.just("")),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(_STEPS)
def test_every_leg_reports_one_end_and_leaves_the_table(steps):
    uac = Harness()
    leg, invite = uac.call()
    contact = [("Contact", "<sip:1001@127.0.0.1:5070>")]
    for kind, arg, tag in steps:
        if kind == "response":
            assert isinstance(arg, tuple)
            status, reason = arg
            body = SDP if status == 200 else b""
            data = respond(invite.data, status, reason, tag=tag, headers=contact, body=body)
            uac.feed(data, ours=uac.client.legs == 1)
        elif kind == "wait":
            assert isinstance(arg, float)
            uac.at(uac.now + arg)
        elif kind == "agent_bye":
            uac.feed(agent_request(invite, "BYE", 1, to_tag="t1"), ours=uac.client.legs == 1)
        else:
            # cancel once answered, or anything after the leg is gone: refused, no harm
            with contextlib.suppress(LegStateError, NoSuchLegError):
                getattr(uac.client, kind)(leg, uac.now)
            uac._collect()
    uac.client.hangup(leg, uac.now)
    uac._collect()
    ends = [e for e in uac.events if isinstance(e, (LegFailed, LegEnded))]
    assert len(ends) == 1, uac.events
    answered = [e for e in uac.events if isinstance(e, LegAnswered)]
    assert len(answered) <= 1
    if answered:
        assert isinstance(ends[0], LegEnded)
    uac.assert_clean()


# --------------------------------------------------------------------------- odds and ends


def test_a_provisional_to_our_bye_slows_its_resends_to_t2(uac):
    leg, _, _ = uac.answered()
    (bye,) = uac.do(uac.client.bye, leg)
    uac.feed(respond(bye.data, 100, "Trying"))
    sent = uac.at(14.0)
    # §17.1.2.2: the running Timer E fires, then every T2 in Proceeding.
    assert [s.at for s in sent] == [0.5, 4.5, 8.5, 12.5]
    uac.feed(respond(bye.data, 200, "OK"))


def test_a_challenged_bye_is_resent_once_with_credentials():
    uac = Harness(credentials=SipDigestAuth("hotline", "s3cret"))
    leg, _, _ = uac.answered()
    (bye,) = uac.do(uac.client.bye, leg)
    challenge = [("WWW-Authenticate", 'Digest realm="pbx", nonce="b1", qop="auth"')]
    (again,) = uac.feed(respond(bye.data, 401, "Unauthorized", headers=challenge))
    assert again.method == "BYE"
    assert again.header("cseq") == "3 BYE"
    assert _digest_ok(again.header("authorization") or "", "s3cret", "BYE")
    assert uac.feed(respond(again.data, 401, "Unauthorized", headers=challenge)) == []  # once
    assert uac.take(LegEnded) == [LegEnded(leg, "local_bye")]
    uac.assert_clean()


def test_reinvite_answers_follow_update_local_sdp_and_refuse_other_bodies(uac):
    leg, invite, _ = uac.answered()
    uac.client.update_local_sdp(leg, sdp_offer("127.0.0.1", 30002, payload_types=(8,)))
    (ok,) = uac.feed(agent_request(invite, "INVITE", 2, body=answer_sdp(formats="0 8 101")))
    assert b"m=audio 30002 RTP/AVP 8 101" in ok.response.body
    (cancel,) = uac.feed(agent_request(invite, "CANCEL", 2, branch="z9hG4bK-agent-INVITE-2"))
    assert cancel.response.status_code == 200  # the re-INVITE is already answered (§9.2)
    uac.feed(agent_request(invite, "ACK", 2, branch="z9hG4bK-ack"))
    text = agent_request(invite, "INVITE", 3, body=b"hello").replace(
        b"application/sdp", b"text/plain"
    )
    (refused,) = uac.feed(text)
    assert refused.response.status_code == 415
    uac.take(LegMediaChanged)
    assert uac.events == []
    uac.do(uac.client.bye, leg)
