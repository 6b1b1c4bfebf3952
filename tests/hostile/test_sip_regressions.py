"""Regressions the long fuzz run (bench/fuzz.py --seed 1) found in SIP, on captured-style bytes.

An INVITE whose SDP connection address was not an IP literal (the run's ``c=IN IP4 %00``) was
answered, and every 20 ms the call's RTP sendto asked the resolver for that "host" on the event
loop (`gaierror` in the call's rtp_dropped line): a stall per packet with a real DNS name. Such
offers are now refused with 488, like an offer without audio.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.sip.events import IncomingCall
from ivr.sip.local_sdp import SdpError, parse_body
from ivr.sip.messages import uri_hostport
from ivr.sip.uas import SipCore

INVITE = (Path(__file__).parents[1] / "ivr" / "sip" / "data" / "sipp_invite.sip").read_bytes()
BODY = INVITE.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"c=IN IP4 127.0.0.1", b"c=IN IP4 %00"),  # as captured
        (b"c=IN IP4 127.0.0.1", b"c=IN IP4 media.example.com"),
        (b"m=audio 6000", b"m=audio 99999"),
    ],
)
def test_an_offer_without_a_usable_rtp_address_is_refused_with_488(old: bytes, new: bytes) -> None:
    body = BODY.replace(old, new)
    with pytest.raises(SdpError):
        parse_body(body)
    invite = INVITE.replace(BODY, body).replace(
        b"Content-Length:   222", f"Content-Length: {len(body)}".encode()
    )
    core = SipCore(local_addr=("127.0.0.1", 5060))
    core.receive_datagram(invite, ("127.0.0.1", 5061), 0.0)
    sent = [data for data, _ in core.datagrams_to_send(0.0)]
    assert any(data.startswith(b"SIP/2.0 488 ") for data in sent), sent
    events = []
    while (event := core.next_event()) is not None:
        events.append(event)
    assert not [e for e in events if isinstance(e, IncomingCall)]


def test_an_ip_literal_offer_still_parses() -> None:
    assert parse_body(BODY).rtp_address == ("127.0.0.1", 6000)
    assert parse_body(BODY.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP6 ::1")).rtp_address == (
        "::1",
        6000,
    )


def test_a_target_port_that_cannot_be_sent_to_is_no_destination() -> None:
    assert uri_hostport("sip:1001@127.0.0.1:99999") is None
    assert uri_hostport("sip:1001@127.0.0.1:5070") == ("127.0.0.1", 5070)


def test_socket_errors_are_logged_at_most_once_per_interval() -> None:
    # The long run logged "sip socket error" once per ICMP error (66 lines in 13 s).
    from structlog.testing import capture_logs

    from ivr.sip.server import _Protocol

    protocol = _Protocol(None)  # type: ignore[arg-type]  # error_received never uses the server
    with capture_logs() as logs:
        for _ in range(50):
            protocol.error_received(OSError(22, "Invalid argument"))
    (line,) = [e for e in logs if e["event"] == "sip socket error"]
    assert line["since_last"] == 1
    assert protocol.errors == 49


# Found by bench/fuzz.py --seed 1 (input 1357): a REGISTER whose digest response was not ASCII
# made hmac.compare_digest raise TypeError inside the registrar (in `hotline serve`: an error
# with a traceback, the REGISTER unanswered, the other events of that datagram held back).
CAPTURED_REGISTER = (
    b"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKreg;rport\r\nMax-Forwards: 70\r\n"
    b"From: <sip:1001@127.0.0.1>;tag=r1\r\nTo: <sip:1001@127.0.0.1>\r\n"
    b"Call-ID: reg@127.0.0.1\r\nCSeq: 2 REGISTER\r\n"
    b"Contact: <sip:1001@127.0.0.1:5070>;expires=600\r\nExpires: 600\r\n"
    b'Authorization: Digest username="1001", realm="hotline", nonce="abc", '
    b'uri="sip:127.0.0.1", response="0123456789abcdef0123456789abcde\xffY)\xeb\x0c\xec\x125L4'
    b'\x92\x1df", algorithm=MD5, qop=auth, nc=00000001, cnonce="xyz"\r\n'
    b"Content-Length: 0\r\n\r\n"
)


@pytest.mark.parametrize("user", ["1001", "9999"])
def test_a_non_hex_digest_response_is_a_bad_request_for_any_user(user: str) -> None:
    from ivr.sip.events import RegisterRequest
    from ivr.sip.registrar import Registrar, digest_ha1

    registrar = Registrar({"1001": digest_ha1("1001", "hotline", "secret")})
    core = SipCore(local_addr=("127.0.0.1", 5060), registrar=True)
    core.receive_datagram(
        CAPTURED_REGISTER.replace(b"1001", user.encode()), ("127.0.0.1", 5070), 0.0
    )
    (event,) = [e for e in iter(core.next_event, None) if isinstance(e, RegisterRequest)]
    reply = registrar.handle(event.request, event.addr, 0.0)
    assert (reply.status, reply.outcome) == (400, "bad-response")
