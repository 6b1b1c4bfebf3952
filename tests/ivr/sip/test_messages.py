"""SIP wire helpers: Via stamping and routing (RFC 3261 §18, RFC 3581), framing (§18.3), URIs,
responses (§8.2.6), INFO DTMF bodies."""

from __future__ import annotations

import logging

import pytest
from aiosipua import SipMessage, SipRequest, parse_via

from ivr.sip.messages import (
    build_response,
    dtmf_digit,
    frame,
    header_tokens,
    is_ip_literal,
    media_type,
    response_addr,
    stamp_via,
    uri_hostport,
    uri_user,
    with_tag,
)


@pytest.mark.parametrize(
    ("via", "source", "stamped", "destination"),
    [
        (
            "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKa",
            ("127.0.0.1", 5061),
            "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKa",
            ("127.0.0.1", 5061),
        ),
        (
            "SIP/2.0/UDP 10.0.0.5:5061;branch=z9hG4bKa",
            ("192.0.2.1", 40000),
            "SIP/2.0/UDP 10.0.0.5:5061;branch=z9hG4bKa;received=192.0.2.1",
            ("192.0.2.1", 5061),
        ),
        (
            "SIP/2.0/UDP 10.0.0.5:5061;branch=z9hG4bKa;rport",
            ("192.0.2.1", 40000),
            "SIP/2.0/UDP 10.0.0.5:5061;branch=z9hG4bKa;rport=40000;received=192.0.2.1",
            ("192.0.2.1", 40000),
        ),
        (
            "SIP/2.0/UDP phone.example;branch=z9hG4bKa",
            ("192.0.2.1", 5060),
            "SIP/2.0/UDP phone.example;branch=z9hG4bKa;received=192.0.2.1",
            ("192.0.2.1", 5060),
        ),
        (
            "SIP/2.0/UDP 10.0.0.5:99999;branch=z9hG4bKa",
            ("192.0.2.1", 40000),
            "SIP/2.0/UDP 10.0.0.5:99999;branch=z9hG4bKa;received=192.0.2.1",
            ("192.0.2.1", 40000),
        ),
    ],
)
def test_via_stamping_and_response_routing(via, source, stamped, destination):
    assert stamp_via(via, source) == stamped
    assert response_addr(parse_via(via), source) == destination


def test_frame_trims_extra_bytes_and_flags_short_bodies(caplog):
    message = b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 3\r\n\r\nabcdef"
    assert frame(message) == (b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 3\r\n\r\nabc", False)
    short = b"OPTIONS sip:a SIP/2.0\r\nl:  10\r\n\r\nabc"
    assert frame(short) == (b"OPTIONS sip:a SIP/2.0\r\nl:  3\r\n\r\nabc", True)
    assert frame(b"OPTIONS sip:a SIP/2.0\r\n\r\nabc") == (
        b"OPTIONS sip:a SIP/2.0\r\n\r\nabc",
        False,
    )
    cut = b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 10\r\nVia: SIP/2.0/UDP h"
    assert frame(cut) == (cut.replace(b"10", b"0"), True)
    garbage = b"OPTIONS sip:a SIP/2.0\r\nContent-Length: x\r\n\r\nabc"
    assert frame(garbage) == (garbage, False)
    with caplog.at_level(logging.DEBUG):
        for data in (message, short, cut):
            SipMessage.parse(frame(data)[0])
    assert caplog.records == []  # nothing a peer can use to flood the log


def test_uri_user_and_hostport():
    assert uri_user('"Alice" <sip:alice@127.0.0.1>;tag=1') == "alice"
    assert uri_user("sip:95598@127.0.0.1:5060") == "95598"
    assert uri_user("<tel:+8610095598;phone-context=cn>") == "+8610095598"
    assert uri_user("sip:%2B8613800138000@gw") == "+8613800138000"
    assert uri_user("<sip:127.0.0.1>") == ""
    assert uri_hostport("sip:alice@127.0.0.1:36261;transport=udp") == ("127.0.0.1", 36261)
    assert uri_hostport("<sip:10.8.0.1;lr>") == ("10.8.0.1", 5060)
    assert uri_hostport("sip:alice@pbx.example") is None
    assert is_ip_literal("[::1]")
    assert not is_ip_literal("pbx.example")


def test_small_header_helpers():
    assert media_type("Application/SDP; charset=utf-8") == "application/sdp"
    assert media_type(None) == ""
    assert header_tokens(["timer, path", "Replaces"]) == ["timer", "path", "replaces"]
    assert with_tag("<sip:95598@h>", "abc") == "<sip:95598@h>;tag=abc"
    assert with_tag("<sip:95598@h>;tag=x", "abc") == "<sip:95598@h>;tag=x"


def test_build_response_copies_what_8_2_6_2_says():
    request = SipMessage.parse(
        b"INVITE sip:95598@h SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKp1\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.2:5080;branch=z9hG4bKu1\r\n"
        b"From: <sip:a@h>;tag=f\r\nTo: <sip:95598@h>\r\nCall-ID: c\r\nCSeq: 5 INVITE\r\n"
        b"Timestamp: 54\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(request, SipRequest)
    trying = build_response(
        request, 100, "Trying", source=("10.0.0.1", 5060), to_tag=None, server="s"
    )
    assert trying.headers.get("via") == [
        "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKp1",
        "SIP/2.0/UDP 10.0.0.2:5080;branch=z9hG4bKu1",
    ]
    assert trying.headers.get_first("timestamp") == "54"  # §8.2.6.1
    ok = build_response(request, 200, "OK", source=("10.0.0.1", 5060), to_tag="t", server="s")
    assert ok.headers.get_first("to") == "<sip:95598@h>;tag=t"
    assert ok.headers.get_first("timestamp") is None
    assert ok.headers.get_first("server") == "s"
    assert ok.headers.get_first("cseq") == "5 INVITE"


@pytest.mark.parametrize(
    ("content_type", "body", "digit"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", "5"),
        ("application/dtmf-relay", b"Signal=*\nDuration=100", "*"),
        ("application/dtmf-relay", b"Signal=10\r\n", "*"),
        ("application/dtmf-relay", b"Signal=a\r\n", "A"),
        ("application/dtmf-relay", b"Signal=16\r\n", None),  # flash is not a key
        ("application/dtmf-relay", b"Duration=160\r\n", None),
        ("application/dtmf-relay", b"Signal=\r\n", None),
        ("application/dtmf", b"#", "#"),
        ("application/dtmf", b"11", "#"),
        ("application/dtmf", b"55", None),
        ("text/plain", b"5", None),
        (None, b"Signal=5", None),
    ],
)
def test_dtmf_bodies(content_type, body, digit):
    assert dtmf_digit(content_type, body) == digit
