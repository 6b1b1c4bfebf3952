"""The UAS core on an incoming call's INVITE transaction: 100/180/200, retransmissions both ways,
ACK, ACK timeout, rejection (Timers G/H/I), CANCEL, ring timeout. Every path ends with an empty
call table (RFC 3261 §13, §17.2.1, §9.2; RFC 6026)."""

from __future__ import annotations

import pytest
from aiosipua import SipResponse

from ivr.sip.errors import CallCancelledError, CallStateError, NoSuchCallError
from ivr.sip.events import CallAcked, CallCancelled, IncomingCall

RETRANSMIT_OFFSETS = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
"""T1 doubling, capped at T2 = 4 s, within 64*T1 = 32 s (T1 = 0.5 s)."""


# --------------------------------------------------------------------------- a new INVITE


def test_invite_gets_100_trying_at_once_and_one_incoming_call(uas):
    caller = uas.caller()
    sent = uas.feed(caller.invite)
    assert [(s.status, s.addr) for s in sent] == [(100, uas.SIPP)]
    trying = sent[0]
    assert trying.to_tag is None  # §8.2.6.1: no tag needed on 100
    assert trying.header("via") == "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-1-0"
    assert trying.header("call-id") == "1-4242@127.0.0.1"
    assert trying.header("cseq") == "1 INVITE"
    assert trying.header("server") == "hotline95598"
    call = uas.incoming()
    assert call.caller == "13800138000"
    assert call.caller_display == "Caller"
    assert call.dialed == "95598"
    assert call.call_id == "1-4242@127.0.0.1"
    assert call.addr == uas.SIPP
    assert call.call_key.startswith("1-4242@127.0.0.1;")
    audio = call.remote_sdp.audio
    assert audio is not None
    assert [c.encoding_name for c in audio.codecs] == ["PCMU", "PCMA", "telephone-event"]
    assert call.remote_sdp.rtp_address == ("127.0.0.1", 6000)
    assert uas.core.calls == 1


def test_baresip_invite_with_empty_supported_and_rport(uas):
    baresip = ("127.0.0.1", 36261)
    caller = uas.caller("baresip_invite.sip", baresip)
    (trying,) = uas.feed(caller.invite, baresip)
    assert trying.status == 100
    # RFC 3581 §4: rport asked for → filled in, received added, answer to the source port.
    assert trying.header("via") == (
        "SIP/2.0/UDP 127.0.0.1:36261;branch=z9hG4bK8a3b0f1c2d4e5f60;rport=36261;received=127.0.0.1"
    )
    call = uas.incoming()
    assert (call.caller, call.caller_display, call.dialed) == ("alice", "Alice", "95598")
    (ok,) = uas.do(uas.core.answer, call.call_key, uas.ANSWER_SDP)
    assert ok.addr == baresip
    # No `timer` in Supported, UPDATE allowed: we refresh (RFC 4028 §9), and no Require.
    assert ok.header("session-expires") == "1800;refresher=uas"
    assert ok.header("require") is None
    caller.learn([ok])
    uas.feed(caller.ack(), baresip)
    assert uas.take(CallAcked) == [CallAcked(call.call_key)]


def test_compact_headers_are_understood(uas):
    caller = uas.caller("compact_invite.sip", ("127.0.0.1", 5062))
    (trying,) = uas.feed(caller.invite, ("127.0.0.1", 5062))
    assert trying.status == 100
    assert trying.addr == ("127.0.0.1", 5062)
    call = uas.incoming()
    assert (call.caller, call.dialed) == ("10086", "95598")


def test_pbx_invite_through_a_record_routing_proxy(uas):
    proxy = ("10.8.0.1", 5060)
    caller = uas.caller("pbx_invite_pcma_timer.sip", proxy)
    (trying,) = uas.feed(caller.invite, proxy)
    assert trying.addr == proxy
    # Both Vias come back in order; the top one was sent from its sent-by, so it is unchanged.
    assert trying.message.headers.get("via") == [
        "SIP/2.0/UDP 10.8.0.1;branch=z9hG4bK7b2e.c8f1a6d2000000000000000000000000.0",
        "SIP/2.0/UDP 10.8.0.2:5080;received=10.8.0.2;rport=5080;branch=z9hG4bKe3p5NKvH0D6mF",
    ]
    call = uas.incoming()
    assert (call.caller, call.caller_display) == ("057188888888", "0571-88888888")
    (ringing,) = uas.do(uas.core.ring, call.call_key)
    (ok,) = uas.do(uas.core.answer, call.call_key, uas.ANSWER_SDP)
    for response in (ringing, ok):
        # §12.1.1: dialog-creating responses copy Record-Route and carry our Contact.
        assert response.header("record-route") == "<sip:10.8.0.1;lr;ftag=t9Z3a>"
        assert response.header("contact") == "<sip:127.0.0.1:5060>"
    # RFC 4028: the PBX supports timers and refreshes; we shorten nothing below its Min-SE.
    assert ok.header("session-expires") == "1800;refresher=uac"
    assert ok.header("require") == "timer"


def test_invite_from_a_hostname_sent_by_gets_received(uas):
    invite = uas.load("sipp_invite.sip").replace(
        b"Via: SIP/2.0/UDP 127.0.0.1:5061;", b"Via: SIP/2.0/UDP caller.example:5070;"
    )
    (trying,) = uas.feed(invite, ("192.0.2.7", 40000))
    # §18.2.1: received added; §18.2.2: sent to the received IP at the sent-by port.
    assert trying.header("via").endswith(";received=192.0.2.7")
    assert trying.addr == ("192.0.2.7", 5070)


# --------------------------------------------------------------------------- retransmitted INVITE


def test_retransmitted_invite_while_ringing_gets_latest_provisional_no_second_call(uas):
    caller = uas.caller()
    (trying,) = uas.feed(caller.invite)
    call = uas.incoming()
    assert [s.data for s in uas.feed(caller.invite)] == [trying.data]
    (ringing,) = uas.do(uas.core.ring, call.call_key)
    assert ringing.status == 180
    assert ringing.to_tag
    assert ringing.header("contact") == "<sip:127.0.0.1:5060>"
    for _ in range(3):
        assert [s.data for s in uas.feed(caller.invite)] == [ringing.data]
    assert uas.take(IncomingCall) == []
    assert uas.core.calls == 1


def test_retransmitted_invite_after_200_gets_the_200_again_not_481(uas):
    caller = uas.caller()
    uas.feed(caller.invite)
    call = uas.incoming()
    (ringing,) = uas.do(uas.core.ring, call.call_key)
    (ok,) = uas.do(uas.core.answer, call.call_key, uas.ANSWER_SDP)
    assert ok.to_tag == ringing.to_tag
    assert [s.data for s in uas.feed(caller.invite)] == [ok.data]
    assert uas.take(IncomingCall) == []
    caller.learn([ok])
    assert uas.feed(caller.ack()) == []
    assert uas.take(CallAcked) == [CallAcked(call.call_key)]
    # Acked: a late copy is absorbed (RFC 6026 §7.1), never a new call.
    assert uas.feed(caller.invite) == []
    assert uas.take(IncomingCall) == []


def test_same_invite_by_another_branch_is_a_merged_request(uas):
    caller = uas.caller()
    uas.feed(caller.invite)
    uas.incoming()
    copy = caller.invite.replace(b"z9hG4bK-4242-1-0", b"z9hG4bK-other-path")
    (loop,) = uas.feed(copy)
    assert loop.status == 482  # §8.2.2.2
    assert uas.take(IncomingCall) == []


# --------------------------------------------------------------------------- 2xx until ACK


def test_200_has_sdp_and_exact_length_and_stable_tag(uas):
    caller = uas.caller()
    uas.feed(caller.invite)
    call = uas.incoming()
    (ok,) = uas.do(uas.core.answer, call.call_key, uas.ANSWER_SDP)
    message = ok.message
    assert isinstance(message, SipResponse)
    assert (message.status_code, message.reason_phrase) == (200, "OK")
    assert message.body == uas.ANSWER_SDP  # the application's answer, byte for byte
    assert ok.header("content-type") == "application/sdp"
    assert ok.header("content-length") == str(len(uas.ANSWER_SDP))
    assert ok.data.endswith(b"\r\n\r\n" + uas.ANSWER_SDP)
    assert ok.header("contact") == "<sip:127.0.0.1:5060>"
    assert "UPDATE" in ok.message.headers.get("allow")
    assert call.call_key == f"1-4242@127.0.0.1;{ok.to_tag}"


def test_200_is_resent_t1_doubling_to_t2_until_ack(uas):
    caller = uas.caller()
    uas.feed(caller.invite)
    call = uas.incoming()
    uas.at(1.0)
    (ok,) = uas.do(uas.core.answer, call.call_key, uas.ANSWER_SDP)
    caller.learn([ok])
    resent = uas.at(13.0)
    assert [s.at for s in resent] == [1.5, 2.5, 4.5, 8.5, 12.5]
    assert all(s.data == ok.data for s in resent)
    assert uas.feed(caller.ack()) == []
    assert uas.take(CallAcked) == [CallAcked(call.call_key)]
    assert uas.at(100.0) == []  # nothing more, ever, for an answered call
    assert uas.feed(caller.ack()) == []  # a duplicate ACK is absorbed
    assert uas.take(CallAcked) == []


def test_no_ack_within_64_t1_sends_bye_and_ends_with_ack_timeout(uas):
    caller = uas.caller()
    uas.feed(caller.invite)
    call = uas.incoming()
    (ok,) = uas.do(uas.core.answer, call.call_key, uas.ANSWER_SDP)
    sent = uas.at(40.0)
    assert [s.at for s in sent if s.data == ok.data] == RETRANSMIT_OFFSETS
    byes = [s for s in sent if s.data != ok.data]
    assert byes[0].at == 32.0
    assert byes[0].method == "BYE"
    assert uas.ended() == ["ack_timeout"]
    bye = byes[0].message
    # §12.2.1.1: to the remote target (the INVITE's Contact), in the dialog the 200 made.
    assert bye.uri == "sip:13800138000@127.0.0.1:5061"
    assert byes[0].addr == uas.SIPP
    assert bye.headers.get_first("call-id") == "1-4242@127.0.0.1"
    assert bye.headers.get_first("from") == f"<sip:95598@127.0.0.1:5060>;tag={ok.to_tag}"
    assert (
        bye.headers.get_first("to")
        == '"Caller" <sip:13800138000@127.0.0.1:5061>;tag=4242SIPpTag001'
    )
    assert bye.headers.get_first("cseq") == "1 BYE"
    assert bye.headers.get_first("user-agent") == "hotline95598"
    assert "rport" in (bye.headers.get_first("via") or "")
    uas.assert_clean()
    assert uas.ended() == []  # exactly one CallEnded


def test_ack_timeout_bye_answered_then_call_is_gone(uas):
    caller = uas.caller()
    uas.feed(caller.invite)
    call = uas.incoming()
    uas.do(uas.core.answer, call.call_key, uas.ANSWER_SDP)
    sent = uas.at(32.0)
    bye = next(s for s in sent if isinstance(s.message, type(caller.parsed)))
    response = bye.data.replace(b"BYE sip:13800138000@127.0.0.1:5061 SIP/2.0", b"SIP/2.0 200 OK")
    uas.feed(response)
    assert uas.core.calls == 0  # the INVITE absorber lingers until Timer L only
    uas.assert_clean()


# --------------------------------------------------------------------------- rejecting


@pytest.mark.parametrize(("status", "reason"), [(486, "Busy Here"), (488, "Not Acceptable Here")])
def test_reject_is_resent_on_timer_g_until_ack_then_absorbed_then_gone(uas, status, reason):
    caller = uas.caller()
    uas.feed(caller.invite)
    call = uas.incoming()
    (final,) = uas.do(uas.core.reject, call.call_key, status, reason)
    assert (final.status, final.message.reason_phrase) == (status, reason)
    assert final.to_tag
    assert uas.ended() == ["rejected"]
    resent = uas.at(4.0)
    assert [s.at for s in resent] == [0.5, 1.5, 3.5]
    assert all(s.data == final.data for s in resent)
    caller.learn([final])
    assert uas.feed(caller.ack_failure()) == []
    assert uas.at(4.9) == []  # ACKed: no more retransmissions
    assert uas.feed(caller.ack_failure()) == []  # Timer I absorbs a resent ACK
    assert uas.core.calls == 1  # until Timer I (T4 = 5 s after the ACK)
    uas.at(9.0)
    assert uas.core.calls == 0
    uas.assert_clean()


def test_reject_503_with_retry_after(uas):
    caller = uas.caller()
    uas.feed(caller.invite)
    call = uas.incoming()
    (final,) = uas.do(
        lambda key, now: uas.core.reject(key, 503, "Service Unavailable", now, retry_after=30),
        call.call_key,
    )
    assert final.status == 503
    assert final.header("retry-after") == "30"


def test_reject_without_ack_gives_up_at_timer_h(uas):
    caller = uas.caller()
    uas.feed(caller.invite)
    call = uas.incoming()
    uas.do(uas.core.reject, call.call_key, 486, "Busy Here")
    sent = uas.at(40.0)
    assert [s.at for s in sent] == RETRANSMIT_OFFSETS
    assert uas.core.calls == 0  # Timer H at 32 s
    uas.assert_clean()
    assert uas.ended() == ["rejected"]


def test_reject_refuses_a_2xx_status(uas):
    uas.feed(uas.caller().invite)
    call = uas.incoming()
    with pytest.raises(ValueError, match="final non-2xx"):
        uas.core.reject(call.call_key, 200, "OK", 0.0)


# --------------------------------------------------------------------------- CANCEL


def test_cancel_while_ringing_200_and_487_and_never_answered(uas):
    caller = uas.caller()
    uas.feed(caller.invite)
    call = uas.incoming()
    (ringing,) = uas.do(uas.core.ring, call.call_key)
    sent = uas.feed(caller.cancel())
    assert [(s.status, s.header("cseq")) for s in sent] == [
        (200, "1 CANCEL"),
        (487, "1 INVITE"),
    ]
    # §9.2: the CANCEL's 200 and the 487 carry the INVITE responses' To-tag.
    assert {s.to_tag for s in sent} == {ringing.to_tag}
    assert uas.take(CallCancelled) == [CallCancelled(call.call_key)]
    assert uas.ended() == ["cancelled"]
    with pytest.raises(CallCancelledError, match="cancelled"):
        uas.core.answer(call.call_key, uas.ANSWER_SDP, 0.1)
    with pytest.raises(CallCancelledError):
        uas.core.ring(call.call_key, 0.1)
    # A resent CANCEL gets the same 200; the 487 is resent until the ACK.
    assert [s.data for s in uas.feed(caller.cancel())] == [sent[0].data]
    assert [s.data for s in uas.at(0.5)] == [sent[1].data]
    caller.learn(sent)
    assert uas.feed(caller.ack_failure()) == []
    uas.assert_clean()
    assert uas.ended() == []
    with pytest.raises(NoSuchCallError):
        uas.core.answer(call.call_key, uas.ANSWER_SDP, 100.0)


def test_cancel_before_any_provisional_but_100(uas):
    caller = uas.caller()
    uas.feed(caller.invite)
    call = uas.incoming()
    sent = uas.feed(caller.cancel())
    assert [s.status for s in sent] == [200, 487]
    assert sent[0].to_tag == sent[1].to_tag
    assert call.call_key.endswith(f";{sent[1].to_tag}")
    uas.assert_clean()


def test_cancel_for_unknown_transaction_gets_481(uas):
    caller = uas.caller()
    (response,) = uas.feed(caller.cancel())
    assert response.status == 481
    assert response.header("cseq") == "1 CANCEL"
    uas.assert_clean()


def test_cancel_after_200_changes_nothing(uas):
    caller = uas.caller()
    uas.feed(caller.invite)
    call = uas.incoming()
    (ok,) = uas.do(uas.core.answer, call.call_key, uas.ANSWER_SDP)
    (response,) = uas.feed(caller.cancel())
    assert response.status == 200
    assert uas.take(CallCancelled) == []
    caller.learn([ok])
    uas.feed(caller.ack())
    assert uas.take(CallAcked) == [CallAcked(call.call_key)]


def test_bye_on_the_early_dialog_ends_the_invite_with_487(uas):
    caller = uas.caller()
    uas.feed(caller.invite)
    call = uas.incoming()
    caller.learn(uas.do(uas.core.ring, call.call_key))
    sent = uas.feed(caller.request("BYE"))
    assert sorted((s.status, s.header("cseq")) for s in sent) == [(200, "2 BYE"), (487, "1 INVITE")]
    assert uas.take(CallCancelled) == [CallCancelled(call.call_key)]
    assert uas.ended() == ["bye"]
    uas.feed(caller.ack_failure())
    uas.assert_clean()


# --------------------------------------------------------------------------- application errors


def test_answer_twice_or_after_reject_is_a_state_error(uas):
    uas.feed(uas.caller().invite)
    call = uas.incoming()
    uas.do(uas.core.answer, call.call_key, uas.ANSWER_SDP)
    with pytest.raises(CallStateError, match="answered"):
        uas.core.answer(call.call_key, uas.ANSWER_SDP, 0.0)
    with pytest.raises(CallStateError):
        uas.core.reject(call.call_key, 486, "Busy Here", 0.0)
    with pytest.raises(NoSuchCallError):
        uas.core.answer("nope;nope", uas.ANSWER_SDP, 0.0)
    assert CallCancelledError.error_id == "call-cancelled"
    assert NoSuchCallError.error_id == "no-such-call"


def test_answer_with_garbage_sdp_raises_and_the_call_stays_ringing(uas):
    uas.feed(uas.caller().invite)
    call = uas.incoming()
    with pytest.raises(ValueError, match="audio"):
        uas.core.answer(call.call_key, b"hello", 0.0)
    uas.do(uas.core.reject, call.call_key, 488, "Not Acceptable Here")
    assert uas.ended() == ["rejected"]


# ------------------------------------------------------------------------- the application hangs up


def test_hangup_while_ringing_refuses_with_480(uas):
    caller = uas.caller()
    uas.feed(caller.invite)
    call = uas.incoming()
    (final,) = uas.do(uas.core.hangup, call.call_key)
    assert final.status == 480
    assert uas.ended() == ["rejected"]
    uas.do(uas.core.hangup, call.call_key)  # idempotent
    uas.assert_clean()
    uas.do(uas.core.hangup, call.call_key)  # and harmless once gone


def test_hangup_before_ack_waits_for_the_ack_to_send_bye(uas):
    caller = uas.caller()
    uas.feed(caller.invite)
    call = uas.incoming()
    (ok,) = uas.do(uas.core.answer, call.call_key, uas.ANSWER_SDP)
    caller.learn([ok])
    assert uas.do(uas.core.hangup, call.call_key) == []  # §15: no BYE before the ACK
    assert uas.ended() == ["local_bye"]
    assert [s.data for s in uas.at(0.5)] == [ok.data]  # the 2xx is still resent
    (bye,) = uas.feed(caller.ack())
    assert bye.method == "BYE"
    assert uas.take(CallAcked) == []
    assert uas.ended() == []


def test_hangup_before_ack_and_no_ack_ever(uas):
    caller = uas.caller()
    uas.feed(caller.invite)
    call = uas.incoming()
    uas.do(uas.core.answer, call.call_key, uas.ANSWER_SDP)
    uas.do(uas.core.hangup, call.call_key)
    sent = uas.at(33.0)
    assert [s.at for s in sent if isinstance(s.message, type(caller.parsed))] == [32.0, 32.5]
    uas.assert_clean()
    assert uas.ended() == ["local_bye"]


# --------------------------------------------------------------------------- undecided calls


def test_ring_timeout_refuses_an_undecided_call(make_uas):
    uas = make_uas(ring_timeout=20.0)
    caller = uas.caller()
    uas.feed(caller.invite)
    call = uas.incoming()
    sent = uas.at(20.0)
    assert [(s.at, s.status) for s in sent] == [(20.0, 480)]
    assert uas.ended() == ["ring_timeout"]
    with pytest.raises(CallStateError):
        uas.core.answer(call.call_key, uas.ANSWER_SDP, 20.0)
    uas.assert_clean()


# --------------------------------------------------------------------------- many calls


def _nth_invite(uas, n: int) -> bytes:
    return (
        uas.load("sipp_invite.sip")
        .replace(b"1-4242@127.0.0.1", f"{n}-4242@127.0.0.1".encode())
        .replace(b"z9hG4bK-4242-1-0", f"z9hG4bK-4242-{n}-0".encode())
        .replace(b"4242SIPpTag001", f"4242SIPpTag00{n}".encode())
    )


def test_many_interleaved_calls_stay_apart(uas):
    callers = [uas.caller(_nth_invite(uas, n)) for n in range(1, 51)]
    for caller in callers:
        caller.learn(uas.feed(caller.invite))
    keys = [e.call_key for e in uas.take(IncomingCall)]
    assert len(set(keys)) == 50
    for caller, key in zip(callers, keys, strict=True):
        caller.learn(uas.do(uas.core.answer, key, uas.ANSWER_SDP))
    for caller in reversed(callers):
        uas.feed(caller.ack())
    assert {e.call_key for e in uas.take(CallAcked)} == set(keys)
    for caller in callers[::2]:
        (ok,) = uas.feed(caller.request("BYE"))
        assert ok.status == 200
    assert uas.core.calls == 25
    for key in keys[1::2]:
        uas.do(uas.core.hangup, key)
    assert sorted(uas.ended()) == ["bye"] * 25 + ["local_bye"] * 25


def test_a_branch_reused_by_another_call_is_still_a_new_call(uas):
    first = uas.load("sipp_invite.sip")
    second = first.replace(b"1-4242@127.0.0.1", b"2-4242@127.0.0.1")  # same branch, new Call-ID
    uas.feed(first)
    (trying,) = uas.feed(second)
    assert trying.header("call-id") == "2-4242@127.0.0.1"
    assert len(uas.take(IncomingCall)) == 2
