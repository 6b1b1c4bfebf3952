"""The UAS core as a transferor: our REFER in the caller's dialog, its final response, and the
NOTIFYs of its implicit subscription (RFC 3515, RFC 5589 §6, RFC 6665 for the 481/489 rules)."""

from __future__ import annotations

import pytest
from aiosipua import SipRequest

from ivr.sip.errors import CallStateError, NoSuchCallError
from ivr.sip.events import ReferAnswered, ReferNotify

AGENT = "sip:1001@127.0.0.1:5070"
REFER_OFFSETS = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
"""Timer E from t=0: T1 doubling to T2, until Timer F (64*T1 = 32 s)."""


def response_to(sent, status: int = 202, reason: str = "Accepted") -> bytes:
    """What the caller's side answers our request with: Via, From, To, Call-ID, CSeq copied."""
    request = sent.message
    assert isinstance(request, SipRequest)
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {v}" for v in request.headers.get("via")]
    lines += [f"{n}: {request.headers.get_first(n)}" for n in ("From", "To", "Call-ID", "CSeq")]
    return ("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode()


def notify(caller, frag: str, state: str = "active;expires=60", event: str = "refer") -> bytes:
    """A NOTIFY from the transferee with a message/sipfrag status line."""
    headers = [f"Event: {event}"] if event else []
    if state:
        headers.append(f"Subscription-State: {state}")
    return caller.request(
        "NOTIFY",
        body=f"{frag}\r\n".encode(),
        content_type="message/sipfrag;version=2.0",
        headers=headers,
    )


def test_refer_goes_in_the_dialog_with_refer_to_referred_by_and_contact(uas):
    caller, call = uas.answered()
    (refer,) = uas.do(uas.core.refer, call.call_key, AGENT)
    request = refer.message
    assert isinstance(request, SipRequest)
    # §12.2.1.1: to the caller's Contact, our tag in From, the caller's in To, next CSeq.
    assert (request.method, request.uri) == ("REFER", "sip:13800138000@127.0.0.1:5061")
    assert refer.addr == uas.SIPP
    assert refer.header("from").endswith(f";tag={caller.to_tag}")
    assert refer.header("to") == caller.from_
    assert refer.header("call-id") == caller.call_id
    assert refer.header("cseq") == "1 REFER"
    assert refer.header("refer-to") == f"<{AGENT}>"
    assert refer.header("referred-by") == "<sip:95598@127.0.0.1:5060>"
    assert refer.header("contact") == "<sip:127.0.0.1:5060>"

    assert uas.feed(response_to(refer)) == []  # a response is never answered
    assert uas.take(ReferAnswered) == [ReferAnswered(call.call_key, 1, 202, "Accepted")]

    # The transferee reports progress, then success: each NOTIFY gets 200, each is an event.
    (ok,) = uas.feed(notify(caller, "SIP/2.0 100 Trying"))
    assert (ok.status, ok.header("cseq")) == (200, "2 NOTIFY")
    assert ok.to_tag == caller.to_tag
    (ok,) = uas.feed(notify(caller, "SIP/2.0 200 OK", "terminated;reason=noresource"))
    assert ok.status == 200
    assert uas.take(ReferNotify) == [
        ReferNotify(call.call_key, 1, "active;expires=60", b"SIP/2.0 100 Trying\r\n"),
        ReferNotify(call.call_key, 1, "terminated;reason=noresource", b"SIP/2.0 200 OK\r\n"),
    ]
    # The subscription has terminated: a later NOTIFY names nothing (RFC 6665 §4.1.3).
    (gone,) = uas.feed(notify(caller, "SIP/2.0 200 OK", "terminated"))
    assert gone.status == 481
    assert uas.take(ReferNotify) == []

    # RFC 5589 §6: the transferor ends its own leg.
    (bye,) = uas.do(uas.core.hangup, call.call_key)
    assert (bye.method, bye.header("cseq")) == ("BYE", "2 BYE")
    uas.feed(response_to(bye, 200, "OK"))
    assert uas.ended() == ["local_bye"]
    uas.assert_clean()


def test_a_resent_notify_gets_the_same_200_and_no_second_event(uas):
    caller, call = uas.answered()
    (refer,) = uas.do(uas.core.refer, call.call_key, AGENT)
    uas.feed(response_to(refer))
    message = notify(caller, "SIP/2.0 180 Ringing")
    (first,) = uas.feed(message)
    (again,) = uas.feed(message)
    assert again.data == first.data
    assert len(uas.take(ReferNotify)) == 1
    uas.feed(caller.request("BYE"))
    uas.assert_clean()


def test_a_notify_may_come_before_the_202(uas):
    # RFC 3515 §2.4.4 / UDP reordering: the NOTIFY implies the REFER was accepted.
    caller, call = uas.answered()
    (refer,) = uas.do(uas.core.refer, call.call_key, AGENT)
    (ok,) = uas.feed(notify(caller, "SIP/2.0 100 Trying"))
    assert ok.status == 200
    uas.feed(response_to(refer))
    assert [type(e).__name__ for e in uas.events] == ["ReferNotify", "ReferAnswered"]
    uas.events.clear()
    uas.feed(caller.request("BYE"))
    uas.assert_clean()


def test_a_refused_refer_is_reported_and_opens_no_subscription(uas):
    caller, call = uas.answered()
    (refer,) = uas.do(uas.core.refer, call.call_key, AGENT)
    uas.feed(response_to(refer, 603, "Declined"))
    assert uas.take(ReferAnswered) == [ReferAnswered(call.call_key, 1, 603, "Declined")]
    (gone,) = uas.feed(notify(caller, "SIP/2.0 100 Trying"))
    assert gone.status == 481
    uas.feed(caller.request("BYE"))
    assert uas.ended() == ["bye"]
    uas.assert_clean()


def test_an_unanswered_refer_is_resent_on_timer_e_and_reported_408_at_timer_f(uas):
    caller, call = uas.answered()
    (refer,) = uas.do(uas.core.refer, call.call_key, AGENT)
    resent = uas.at(40.0)
    resent_refers = [s for s in resent if s.data == refer.data]
    assert [s.at for s in resent_refers] == REFER_OFFSETS
    assert uas.take(ReferAnswered) == [ReferAnswered(call.call_key, 1, 408, "Request Timeout")]
    uas.feed(caller.request("BYE"))
    uas.assert_clean()


def test_notify_without_our_refer_gets_481_and_other_events_489(uas):
    caller, _ = uas.answered()
    (gone,) = uas.feed(notify(caller, "SIP/2.0 100 Trying"))
    assert gone.status == 481
    (bad,) = uas.feed(notify(caller, "SIP/2.0 100 Trying", event="dialog"))
    assert (bad.status, bad.header("allow-events")) == (489, "refer")
    (bad,) = uas.feed(notify(caller, "SIP/2.0 100 Trying", event=""))
    assert bad.status == 489
    assert uas.take(ReferNotify) == []
    uas.feed(caller.request("BYE"))
    uas.assert_clean()


def test_the_event_id_names_the_refer_and_a_missing_state_is_tolerated(uas):
    caller, call = uas.answered()
    (first,) = uas.do(uas.core.refer, call.call_key, AGENT)
    uas.feed(response_to(first))
    (second,) = uas.do(uas.core.refer, call.call_key, "sip:1002@127.0.0.1:5070")
    uas.feed(response_to(second))
    assert [e.refer_id for e in uas.take(ReferAnswered)] == [1, 2]
    (ok,) = uas.feed(notify(caller, "SIP/2.0 100 Trying", event="refer;id=1"))
    assert ok.status == 200
    (ok,) = uas.feed(notify(caller, "SIP/2.0 100 Trying", state="", event="refer"))
    assert ok.status == 200  # no id: the latest REFER; no Subscription-State: still active
    (gone,) = uas.feed(notify(caller, "SIP/2.0 100 Trying", event="refer;id=7"))
    assert gone.status == 481
    assert [(e.refer_id, e.subscription_state) for e in uas.take(ReferNotify)] == [
        (1, "active;expires=60"),
        (2, ""),
    ]
    uas.feed(caller.request("BYE"))
    uas.assert_clean()


def test_refer_needs_a_call_that_is_up(uas):
    caller = uas.caller()
    uas.feed(caller.invite)
    call = uas.incoming()
    with pytest.raises(CallStateError):
        uas.do(uas.core.refer, call.call_key, AGENT)  # ringing
    caller.learn(uas.do(uas.core.answer, call.call_key, uas.ANSWER_SDP))
    with pytest.raises(CallStateError):
        uas.do(uas.core.refer, call.call_key, AGENT)  # answered, not ACKed
    uas.feed(caller.ack())
    uas.feed(caller.request("BYE"))
    with pytest.raises(NoSuchCallError):
        uas.do(uas.core.refer, call.call_key, AGENT)
    with pytest.raises(NoSuchCallError):
        uas.do(uas.core.refer, "nosuchcall", AGENT)
    uas.events.clear()
    uas.assert_clean()
