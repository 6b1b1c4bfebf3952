"""The UAS core on requests outside a call: OPTIONS, REGISTER, unknown methods, Require, and
response routing by Via (RFC 3261 §8.2, §11, §18.2.2; RFC 3581)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiosipua import SipMessage, SipResponse

from ivr.sip.events import RegisterRequest

DATA = Path(__file__).parent / "data"

REGISTER = (
    b"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKreg1;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:1001@127.0.0.1>;tag=r1\r\n"
    b"To: <sip:1001@127.0.0.1>\r\n"
    b"Call-ID: reg-1@127.0.0.1\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"Contact: <sip:1001@127.0.0.1:5070>\r\n"
    b"Expires: 3600\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_options_gets_200_with_allow_accept_and_a_tag(uas):
    options = uas.load("sipp_options.sip")
    (ok,) = uas.feed(options)
    message = ok.message
    assert isinstance(message, SipResponse)
    assert message.status_code == 200
    assert ok.to_tag
    assert message.headers.get("allow") == [
        "INVITE",
        "ACK",
        "CANCEL",
        "BYE",
        "OPTIONS",
        "UPDATE",
        "INFO",
        "PRACK",
    ]
    assert message.headers.get("accept") == [
        "application/sdp",
        "application/dtmf-relay",
        "application/dtmf",
    ]
    assert ok.header("content-length") == "0"
    assert [s.data for s in uas.feed(options)] == [ok.data]  # a resend: the same answer
    assert uas.core.calls == 0
    uas.assert_clean()


def test_options_gets_503_with_retry_after_once_draining(uas):
    # A dispatcher's OPTIONS probe must take a draining node out (Kamailio's dispatcher marks
    # a destination inactive on a 503), while the calls it still carries go on.
    options = uas.load("sipp_options.sip")
    assert uas.feed(options)[0].status == 200
    assert not uas.core.draining
    uas.core.drain(30)
    assert uas.core.draining
    fresh = options.replace(b"branch=", b"branch=z9hG4bKdrain")
    (refused,) = uas.feed(fresh)
    assert refused.status == 503
    assert refused.message.reason_phrase == "Service Unavailable"
    assert refused.header("retry-after") == "30"
    assert [s.data for s in uas.feed(fresh)] == [refused.data]  # a resend: the same answer
    uas.assert_clean()


def test_unknown_method_gets_405_with_allow(uas):
    message = uas.load("sipp_options.sip").replace(b"OPTIONS", b"SUBSCRIBE")
    (refused,) = uas.feed(message)
    assert refused.status == 405
    assert refused.header("cseq") == "1 SUBSCRIBE"
    assert "OPTIONS" in refused.message.headers.get("allow")
    uas.assert_clean()


def test_register_without_registrar_gets_405(uas):
    (refused,) = uas.feed(REGISTER, ("127.0.0.1", 5070))
    assert refused.status == 405
    assert refused.addr == ("127.0.0.1", 5070)
    assert "REGISTER" not in refused.message.headers.get("allow")
    uas.assert_clean()


def test_register_goes_to_the_registrar_and_its_answer_covers_retransmissions(make_uas):
    uas = make_uas(registrar=True)
    phone = ("127.0.0.1", 5071)  # behind NAT: not the sent-by port
    assert uas.feed(REGISTER, phone) == []
    (event,) = uas.take(RegisterRequest)
    assert event.addr == phone
    assert event.request.method == "REGISTER"
    assert uas.feed(REGISTER, phone) == []  # pending: absorbed, no second event
    assert uas.take(RegisterRequest) == []
    response = uas.core.response_for(event.request, 200, "OK", event.addr)
    response.headers.append("Contact", "<sip:1001@127.0.0.1:5070>;expires=3600")
    uas.do(lambda now: uas.core.send_response(event.request, response, event.addr, now))
    sent = uas.feed(REGISTER, phone)
    assert [(s.status, s.addr) for s in sent] == [(200, phone)]  # rport: the source port
    assert sent[0].header("via") == (
        "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKreg1;rport=5071;received=127.0.0.1"
    )
    assert sent[0].to_tag
    uas.assert_clean()


def test_unanswered_register_is_forgotten(make_uas):
    uas = make_uas(registrar=True)
    uas.feed(REGISTER, ("127.0.0.1", 5070))
    uas.assert_clean()


def test_require_100rel_gets_420(uas):
    invite = uas.load("sipp_invite.sip").replace(
        b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nRequire: 100rel\r\n"
    )
    (refused,) = uas.feed(invite)
    assert refused.status == 420  # §8.2.2.3
    assert refused.header("unsupported") == "100rel"
    uas.feed(uas.caller(invite).ack_failure())
    uas.assert_clean()


def test_in_dialog_bye_info_update_prack_without_dialog_get_481(uas):
    caller = uas.caller()
    for method in ("BYE", "INFO", "UPDATE", "PRACK"):
        (refused,) = uas.feed(caller.request(method, no_tag=True))
        assert refused.status == 481
    (refused,) = uas.feed(
        caller.request("INVITE", to_tag="stale", body=uas.sdp(), content_type="application/sdp")
    )
    assert refused.status == 481
    uas.assert_clean()


def test_response_without_rport_goes_to_the_sent_by_port(uas):
    invite = uas.load("sipp_invite.sip")
    (trying,) = uas.feed(invite, ("127.0.0.1", 40000))
    # §18.2.2: no rport → the sent-by port, even though it came from 40000.
    assert trying.addr == ("127.0.0.1", 5061)
    assert ";received=" not in (trying.header("via") or "")


def test_responses_for_unknown_transactions_are_ignored(uas):
    response = (
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnotours\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 BYE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert uas.feed(response) == []
    assert uas.events == []
    uas.assert_clean()


def test_crlf_keepalive_is_silently_ignored(uas):
    assert uas.feed(b"\r\n\r\n") == []
    assert uas.events == []


def test_caller_without_timer_support_or_update_gets_no_session_timer(uas):
    invite = uas.load("baresip_invite.sip").replace(b",UPDATE,REFER", b",REFER")
    baresip = ("127.0.0.1", 36261)
    uas.feed(invite, baresip)
    call = uas.incoming()
    (ok,) = uas.do(uas.core.answer, call.call_key, uas.ANSWER_SDP)
    # RFC 4028 §9 would make us the refresher, but we refresh with UPDATE only: no timer.
    assert ok.header("session-expires") is None
    assert ok.header("require") is None
    uas.do(uas.core.hangup, call.call_key)


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.sip")))
def test_captured_messages_are_well_framed(name):
    data = (DATA / name).read_bytes()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"\n" not in head.replace(b"\r\n", b"")  # CRLF throughout, as on the wire
    message = SipMessage.parse(data)
    assert message.body == body
    assert int((message.headers.get_first("content-length") or "").strip()) == len(body)
