"""Broken input: a 400/488 where a response can be routed, otherwise a Malformed event and nothing
sent; never an exception, never a leaked call or transaction, never harm to other calls."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.sip.errors import SipError
from ivr.sip.events import CallEnded, IncomingCall, Malformed


def malformed(uas) -> list[str]:
    return [e.reason for e in uas.take(Malformed)]


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\xff\xfe garbage \x80",
        b"SIP/2.0 abc Broken\r\n\r\n",
        b"INVITE\r\n\r\n",
        b"hello",
    ],
)
def test_unparseable_bytes_are_dropped_with_malformed(uas, data):
    assert uas.feed(data) == []
    assert malformed(uas)
    uas.assert_clean()


def test_oversized_datagram_is_dropped_unread(uas):
    invite = uas.load("sipp_invite.sip")
    huge = invite.replace(b"Subject: Performance Test", b"Subject: " + b"x" * 70_000)
    assert uas.feed(huge) == []
    assert malformed(uas) == [f"oversized datagram ({len(huge)} bytes)"]
    uas.assert_clean()


def test_request_without_via_is_dropped(uas):
    invite = uas.load("sipp_invite.sip").replace(
        b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-1-0\r\n", b""
    )
    assert uas.feed(invite) == []
    assert malformed(uas) == ["INVITE without Via: no route for a response"]
    uas.assert_clean()


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        (b'From: "Caller" <sip:13800138000@127.0.0.1:5061>;tag=4242SIPpTag001\r\n', "from"),
        (b"Call-ID: 1-4242@127.0.0.1\r\n", "call-id"),
        (b"CSeq: 1 INVITE\r\n", "cseq"),
        (b"To: <sip:95598@127.0.0.1:5060>\r\n", "to"),
    ],
)
def test_missing_mandatory_header_gets_400_routed_by_via(uas, header, missing):
    invite = uas.load("sipp_invite.sip").replace(header, b"")
    (refused,) = uas.feed(invite)
    assert refused.status == 400
    assert refused.message.reason_phrase == f"Bad Request (missing {missing})"
    assert refused.addr == uas.SIPP
    assert malformed(uas) == [f"INVITE: missing {missing}"]
    assert uas.take(IncomingCall) == []
    uas.assert_clean()


def test_ack_missing_headers_is_never_answered(uas):
    caller = uas.caller()
    ack = caller.ack().replace(b"CSeq: 1 ACK\r\n", b"")
    assert uas.feed(ack) == []
    assert malformed(uas) == ["ACK: missing cseq"]


@pytest.mark.parametrize(
    ("old", "new", "status", "reason"),
    [
        (b"CSeq: 1 INVITE", b"CSeq: one INVITE", 400, "bad CSeq"),
        (b"CSeq: 1 INVITE", b"CSeq: 1 BYE", 400, "bad CSeq"),
        (b"CSeq: 1 INVITE", b"CSeq: 4294967296 INVITE", 400, "bad CSeq"),
        (b"Content-Length:   222", b"Content-Length: 900", 400, "bad Content-Length"),
        (b"Content-Length:   222", b"Content-Length: -5", 400, "bad Content-Length"),
        (
            b"INVITE sip:95598@127.0.0.1:5060 SIP/2.0",
            b"INVITE sip:95598@127.0.0.1 SIP/3.0",
            505,
            "unsupported SIP version",
        ),
    ],
)
def test_broken_request_line_or_headers(uas, old, new, status, reason):
    invite = uas.load("sipp_invite.sip")
    assert old in invite
    (refused,) = uas.feed(invite.replace(old, new))
    assert refused.status == status
    assert malformed(uas) == [f"INVITE: {reason}"]
    assert uas.take(IncomingCall) == []
    uas.assert_clean()


def _with_body(uas, body: bytes, content_type: bytes = b"application/sdp") -> bytes:
    invite = uas.load("sipp_invite.sip")
    head = invite.split(b"\r\n\r\n", 1)[0]
    head = head.replace(b"Content-Length:   222", f"Content-Length: {len(body)}".encode())
    head = head.replace(b"Content-Type: application/sdp", b"Content-Type: " + content_type)
    return head + b"\r\n\r\n" + body


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"v=0\r\nm=audio notaport RTP/AVP 0\r\n", b"application/sdp", 400),
        (b"v=zero\r\n", b"application/sdp", 400),
        (b"complete garbage, not SDP at all", b"application/sdp", 488),
        (b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=video 5000 RTP/AVP 96\r\n", b"application/sdp", 488),
        (b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 0 RTP/AVP 0\r\n", b"application/sdp", 488),
        (b"v=0\r\nm=audio 5000 RTP/AVP 0\r\n", b"application/sdp", 488),  # no c= address
        (b"", b"application/sdp", 488),
        (b"hello", b"text/plain", 415),
    ],
)
def test_invite_with_unusable_sdp_is_refused_and_cleaned(uas, body, content_type, status):
    invite = _with_body(uas, body, content_type)
    (refused,) = uas.feed(invite)
    assert refused.status == status
    assert refused.to_tag
    assert uas.take(IncomingCall) == []
    assert uas.core.calls == 0
    # The refusal is a real INVITE transaction: resent until ACK, then absorbed, then gone.
    assert [s.data for s in uas.at(0.5)] == [refused.data]
    caller = uas.caller(invite)
    caller.learn([refused])
    assert uas.feed(caller.ack_failure()) == []
    uas.assert_clean()


def test_bad_session_expires_gets_400(uas):
    invite = uas.load("sipp_invite.sip").replace(
        b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nSession-Expires: soon\r\n"
    )
    (refused,) = uas.feed(invite)
    assert refused.status == 400
    uas.assert_clean()


def test_garbage_between_a_calls_messages_does_not_harm_it(uas):
    caller, _ = uas.answered()
    for junk in (b"\xff" * 100, b"BYE sip:x SIP/2.0\r\n\r\n", b"SIP/2.0 200 OK\r\n\r\n"):
        uas.feed(junk)
    (ok,) = uas.feed(caller.request("BYE"))
    assert ok.status == 200
    assert [e.reason for e in uas.take(CallEnded)] == ["bye"]
    uas.assert_clean()


# --------------------------------------------------------------------------- properties

SLOW = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SLOW
@given(data=st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise_and_leave_nothing(fresh_uas, data):
    uas = fresh_uas()
    uas.feed(data)
    uas.assert_clean()


@SLOW
@given(
    prefix=st.sampled_from([b"INVITE sip:a@b SIP/2.0\r\n", b"SIP/2.0 200 OK\r\n", b""]),
    headers=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "Via",
                    "v",
                    "From",
                    "To",
                    "Call-ID",
                    "CSeq",
                    "Content-Length",
                    "Content-Type",
                    "Contact",
                    "Session-Expires",
                    "Require",
                    "l",
                ]
            ),
            st.text(max_size=40).filter(lambda t: "\r" not in t and "\n" not in t),
        ),
        max_size=10,
    ),
    body=st.binary(max_size=200),
)
def test_header_soup_never_raises(fresh_uas, prefix, headers, body):
    uas = fresh_uas()
    lines = b"".join(f"{n}: {v}\r\n".encode() for n, v in headers)
    uas.feed(prefix + lines + b"\r\n" + body)
    uas.assert_clean()


def _mutate(data: bytes, draw) -> bytes:
    kind = draw(
        st.sampled_from(
            ["none", "flip", "truncate", "drop_line", "dup_line", "insert", "replace_value"]
        )
    )
    if kind == "none" or not data:
        return data
    if kind == "flip":
        i = draw(st.integers(0, len(data) - 1))
        return data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data)))]
    lines = data.split(b"\r\n")
    i = draw(st.integers(0, len(lines) - 1))
    if kind == "drop_line":
        return b"\r\n".join(lines[:i] + lines[i + 1 :])
    if kind == "dup_line":
        return b"\r\n".join(lines[: i + 1] + lines[i:])
    if kind == "insert":
        j = draw(st.integers(0, len(data)))
        return data[:j] + draw(st.binary(min_size=1, max_size=20)) + data[j:]
    name, sep, _ = lines[i].partition(b":")
    if not sep:
        return data
    value = draw(
        st.sampled_from(
            [
                b"",
                b" ",
                b"0",
                b"-1",
                b"99999999999",
                b";;;",
                b"<>",
                b"sip:",
                b"\xff\xfe",
                b"a,b,,c",
                b"tag=",
                b"SIP/2.0/UDP",
            ]
        )
    )
    lines[i] = name + b": " + value
    return b"\r\n".join(lines)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_call_flows_never_raise_and_always_clean_up(fresh_uas, data):
    """Random SIPp/baresip-like conversations, mutated, with a random application."""
    uas = fresh_uas(ring_timeout=10.0)
    callers = [
        uas.caller("sipp_invite.sip"),
        uas.caller("baresip_invite.sip", ("127.0.0.1", 36261)),
    ]
    keys: list[str] = []
    incoming = ended = 0
    for _ in range(data.draw(st.integers(1, 12))):
        caller = data.draw(st.sampled_from(callers))
        step = data.draw(
            st.sampled_from(
                [
                    "invite",
                    "ack",
                    "ack_failure",
                    "cancel",
                    "bye",
                    "reinvite",
                    "info",
                    "update",
                    "options",
                    "wait",
                    "ring",
                    "answer",
                    "reject",
                    "hangup",
                ]
            )
        )
        if step == "wait":
            uas.at(uas.now + data.draw(st.sampled_from([0.5, 4.0, 33.0])))
        elif step in ("ring", "answer", "reject", "hangup"):
            if not keys:
                continue
            key = data.draw(st.sampled_from(keys))
            action = {
                "ring": uas.core.ring,
                "answer": lambda k, now: uas.core.answer(k, uas.ANSWER_SDP, now),
                "reject": lambda k, now: uas.core.reject(k, 486, "Busy Here", now),
                "hangup": uas.core.hangup,
            }[step]
            # Deciding a call twice, or a gone one, is refused and changes nothing.
            with contextlib.suppress(SipError):
                caller.learn(uas.do(action, key))
        else:
            message = {
                "invite": lambda c: c.invite,
                "ack": lambda c: c.ack(),
                "ack_failure": lambda c: c.ack_failure(),
                "cancel": lambda c: c.cancel(),
                "bye": lambda c: c.request("BYE"),
                "reinvite": lambda c: c.reinvite(uas.sdp(version=7, direction="sendonly")),
                "info": lambda c: c.request(
                    "INFO", body=b"Signal=5\r\n", content_type="application/dtmf-relay"
                ),
                "update": lambda c: c.request("UPDATE"),
                "options": lambda c: c.request("OPTIONS", no_tag=True),
            }[step](caller)
            caller.learn(uas.feed(_mutate(message, data.draw), caller.addr))
        for event in uas.take(IncomingCall):
            keys.append(event.call_key)
            incoming += 1
        ended += len(uas.take(CallEnded))
    uas.assert_clean()
    ended += len(uas.take(CallEnded))
    assert ended == incoming  # exactly one CallEnded per IncomingCall
