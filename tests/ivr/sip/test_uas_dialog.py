"""The UAS core inside a confirmed dialog: BYE both ways, re-INVITE and UPDATE answers (hold),
INFO DTMF, PRACK, session timers (RFC 3261 §12, §14, §15; RFC 3264; RFC 3311; RFC 4028)."""

from __future__ import annotations

import pytest
from aiosipua import SipRequest, parse_sdp

from ivr.sip.errors import CallStateError, NoSuchCallError
from ivr.sip.events import DtmfInfo, MediaChanged

BYE_OFFSETS = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
"""Timer E from t=0: T1 doubling to T2, until Timer F (64*T1 = 32 s)."""


def response_to(sent, status: int = 200, reason: str = "OK", headers: str = "") -> bytes:
    """What a UAC answers our request with: Via, From, To, Call-ID, CSeq copied."""
    request = sent.message
    assert isinstance(request, SipRequest)
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {v}" for v in request.headers.get("via")]
    lines += [f"{n}: {request.headers.get_first(n)}" for n in ("From", "To", "Call-ID", "CSeq")]
    if headers:
        lines.append(headers)
    return ("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode()


# --------------------------------------------------------------------------- BYE from the caller


def test_bye_gets_200_and_ends_the_call_and_a_resent_bye_the_same_200(uas):
    caller, _ = uas.answered()
    bye = caller.request("BYE")
    (ok,) = uas.feed(bye)
    assert (ok.status, ok.header("cseq")) == (200, "2 BYE")
    assert ok.to_tag == caller.to_tag
    assert uas.ended() == ["bye"]
    assert uas.core.calls == 0
    assert [s.data for s in uas.feed(bye)] == [ok.data]  # §17.2.2: same response
    assert uas.ended() == []
    (gone,) = uas.feed(caller.request("BYE"))  # a new BYE: the dialog is gone
    assert gone.status == 481
    uas.assert_clean()


def test_bye_for_unknown_dialog_gets_481(uas):
    caller = uas.caller()
    (response,) = uas.feed(caller.request("BYE", to_tag="nosuchtag"))
    assert response.status == 481
    (response,) = uas.feed(caller.request("BYE", no_tag=True))
    assert response.status == 481
    uas.assert_clean()


def test_bye_before_ack_stops_the_200_retransmissions(uas):
    caller = uas.caller()
    uas.feed(caller.invite)
    call = uas.incoming()
    caller.learn(uas.do(uas.core.answer, call.call_key, uas.ANSWER_SDP))
    (ok,) = uas.feed(caller.request("BYE"))
    assert ok.status == 200
    assert uas.ended() == ["bye"]
    assert uas.at(40.0) == []
    uas.assert_clean()


def test_bye_with_wrong_from_tag_is_not_our_dialog(uas):
    caller, _ = uas.answered()
    bye = caller.request("BYE").replace(b"tag=4242SIPpTag001", b"tag=someoneelse")
    (response,) = uas.feed(bye)
    assert response.status == 481
    assert uas.core.calls == 1


# --------------------------------------------------------------------------- BYE from us


def test_hangup_bye_retransmitted_on_timer_e_until_200(uas):
    _, call = uas.answered()
    (bye,) = uas.do(uas.core.hangup, call.call_key)
    assert bye.method == "BYE"
    assert bye.header("cseq") == "1 BYE"
    assert uas.ended() == ["local_bye"]
    resent = uas.at(4.0)
    assert [s.at for s in resent] == [0.5, 1.5, 3.5]
    assert all(s.data == bye.data for s in resent)
    assert uas.core.calls == 1  # until the BYE completes
    assert uas.feed(response_to(bye)) == []
    assert uas.core.calls == 0
    assert uas.feed(response_to(bye)) == []  # a resent 200: unknown transaction, ignored
    uas.assert_clean()
    assert uas.ended() == []


def test_hangup_bye_gives_up_at_timer_f(uas):
    _, call = uas.answered()
    uas.do(uas.core.hangup, call.call_key)
    sent = uas.at(40.0)
    assert [s.at for s in sent] == BYE_OFFSETS
    assert uas.core.calls == 0  # removed at 32 s
    uas.assert_clean()


def test_provisional_to_our_bye_slows_retransmission_to_t2(uas):
    _, call = uas.answered()
    (bye,) = uas.do(uas.core.hangup, call.call_key)
    uas.at(0.5)
    uas.feed(response_to(bye, 100, "Trying"))
    # §17.1.2.2: the pending Timer E still fires, then every T2.
    assert [s.at for s in uas.at(13.0)] == [1.5, 5.5, 9.5]


def test_both_sides_bye_at_once(uas):
    caller, call = uas.answered()
    (bye,) = uas.do(uas.core.hangup, call.call_key)
    (ok,) = uas.feed(caller.request("BYE"))
    assert ok.status == 200
    uas.feed(response_to(bye, 481, "Call/Transaction Does Not Exist"))
    assert uas.ended() == ["local_bye"]
    uas.assert_clean()


def test_requests_in_a_dialog_we_are_leaving_get_481(uas):
    caller, call = uas.answered()
    uas.do(uas.core.hangup, call.call_key)
    (response,) = uas.feed(caller.reinvite(uas.sdp(version=2)))
    assert response.status == 481
    uas.feed(caller.ack(cseq=2))
    uas.assert_clean()


def test_bye_routes_through_the_record_route_set(uas):
    proxy = ("10.8.0.1", 5060)
    _, call = uas.answered("pbx_invite_pcma_timer.sip", proxy)
    (bye,) = uas.do(uas.core.hangup, call.call_key)
    request = bye.message
    assert bye.addr == proxy  # the first (loose) route
    assert request.uri == "sip:mod_sofia@10.8.0.2:5080"  # the remote target
    assert request.headers.get("route") == ["<sip:10.8.0.1;lr;ftag=t9Z3a>"]


# --------------------------------------------------------------------------- re-INVITE


def test_reinvite_answered_with_current_sdp_and_resent_until_ack(uas):
    caller, call = uas.answered()
    offer = uas.sdp(port=6002, version=2)
    (ok,) = uas.feed(caller.reinvite(offer))
    assert (ok.status, ok.header("cseq")) == (200, "2 INVITE")
    assert ok.to_tag == caller.to_tag
    assert ok.header("content-type") == "application/sdp"
    answer = parse_sdp(ok.message.text)
    assert answer.media[0].port == 20000
    assert answer.media[0].formats == ["0", "101"]
    assert answer.origin.session_version == "1000"  # unchanged description, same version
    (changed,) = uas.take(MediaChanged)
    assert changed.call_key == call.call_key
    assert changed.remote_sdp.rtp_address == ("127.0.0.1", 6002)
    assert changed.hold is False
    assert [s.data for s in uas.at(1.6)] == [ok.data, ok.data]
    assert uas.feed(caller.ack(cseq=2)) == []
    assert uas.at(10.0) == []
    assert uas.core.calls == 1


@pytest.mark.parametrize(
    ("offered", "answered", "hold"),
    [
        ("sendonly", "recvonly", True),
        ("inactive", "inactive", True),
        ("recvonly", "sendonly", False),
        ("sendrecv", "sendrecv", False),
    ],
)
def test_reinvite_hold_is_mirrored(uas, offered, answered, hold):
    caller, _ = uas.answered()
    (ok,) = uas.feed(caller.reinvite(uas.sdp(version=2, direction=offered)))
    answer = parse_sdp(ok.message.text)
    assert answer.media[0].direction == answered
    # RFC 3264 §8: our description changed → version + 1; unchanged → same version.
    assert answer.origin.session_version == ("1000" if offered == "sendrecv" else "1001")
    assert [c.hold for c in uas.take(MediaChanged)] == [hold]


def test_session_refresh_with_the_same_offer_changes_nothing(uas):
    caller, _ = uas.answered()
    (ok,) = uas.feed(caller.reinvite(caller.parsed.body))
    assert parse_sdp(ok.message.text).origin.session_version == "1000"
    assert uas.take(MediaChanged) == []


def test_hold_then_unhold_versions_and_events(uas):
    caller, _ = uas.answered()
    versions, holds = [], []
    for n, (direction, address) in enumerate(
        [("sendonly", "127.0.0.1"), ("sendrecv", "127.0.0.1"), ("sendrecv", "0.0.0.0")], start=2
    ):
        (ok,) = uas.feed(caller.reinvite(uas.sdp(version=n, direction=direction, address=address)))
        uas.feed(caller.ack(cseq=n))
        versions.append(parse_sdp(ok.message.text).origin.session_version)
        holds += [c.hold for c in uas.take(MediaChanged)]
    assert versions == ["1001", "1002", "1002"]
    assert holds == [True, False, True]  # c=0.0.0.0 is RFC 2543 hold


def test_reinvite_without_ack_ends_with_bye(uas):
    caller, _ = uas.answered()
    uas.feed(caller.reinvite(uas.sdp(version=2)))
    sent = uas.at(32.0)
    assert sent[-1].method == "BYE"
    assert uas.ended() == ["ack_timeout"]


def test_retransmitted_reinvite_gets_the_same_200(uas):
    caller, _ = uas.answered()
    reinvite = caller.reinvite(uas.sdp(version=2), branch="z9hG4bK-reinvite-1")
    (ok,) = uas.feed(reinvite)
    assert [s.data for s in uas.feed(reinvite)] == [ok.data]
    assert len(uas.take(MediaChanged)) == 1


def test_offerless_reinvite_offers_our_sdp_and_the_ack_brings_the_answer(uas):
    caller, _ = uas.answered()
    (ok,) = uas.feed(caller.reinvite(None))
    assert ok.status == 200
    assert parse_sdp(ok.message.text).media[0].port == 20000
    uas.feed(caller.ack(cseq=2, body=uas.sdp(port=7000, version=2, direction="sendonly")))
    (changed,) = uas.take(MediaChanged)
    assert changed.remote_sdp.rtp_address == ("127.0.0.1", 7000)
    assert changed.hold is True


def test_reinvite_with_no_common_codec_gets_488_and_the_call_stays(uas):
    caller, _ = uas.answered()
    (refused,) = uas.feed(caller.reinvite(uas.sdp(version=2, formats="8")))
    assert refused.status == 488
    assert refused.header("warning") == '399 127.0.0.1:5060 "no common codec in the offer"'
    uas.feed(caller.ack_failure().replace(caller.invite_branch.encode(), b"x"))  # stray ACK
    assert uas.take(MediaChanged) == []
    assert uas.core.calls == 1


def test_reinvite_with_garbage_sdp_gets_400_and_is_cleaned(uas):
    caller, call = uas.answered()
    reinvite = caller.reinvite(b"v=0\r\nm=audio notaport RTP/AVP 0\r\n", branch="z9hG4bK-bad-sdp")
    (refused,) = uas.feed(reinvite)
    assert refused.status == 400
    assert [s.at for s in uas.at(1.0)] == [0.5]  # Timer G: a final non-2xx is resent too
    uas.do(uas.core.hangup, call.call_key)
    uas.assert_clean()


def test_reinvite_answer_adds_a_rejected_line_for_video(uas):
    caller, _ = uas.answered()
    offer = uas.sdp(version=2) + b"m=video 6004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    (ok,) = uas.feed(caller.reinvite(offer))
    answer = parse_sdp(ok.message.text)
    assert [(m.media, m.port) for m in answer.media] == [("audio", 20000), ("video", 0)]


def test_update_local_sdp_is_used_for_later_answers(uas):
    caller, call = uas.answered()
    uas.core.update_local_sdp(call.call_key, uas.ANSWER_SDP.replace(b"20000", b"20002"))
    (ok,) = uas.feed(caller.reinvite(uas.sdp(version=2)))
    answer = parse_sdp(ok.message.text)
    assert answer.media[0].port == 20002
    assert answer.origin.session_version == "1001"
    assert answer.origin.session_id == "1000"
    with pytest.raises(NoSuchCallError):
        uas.core.update_local_sdp("gone", uas.ANSWER_SDP)


def test_update_local_sdp_before_answer_is_a_state_error(uas):
    uas.feed(uas.caller().invite)
    call = uas.incoming()
    with pytest.raises(CallStateError):
        uas.core.update_local_sdp(call.call_key, uas.ANSWER_SDP)


def test_reinvite_with_lower_cseq_gets_500(uas):
    caller, _ = uas.answered()
    uas.feed(caller.request("INFO", cseq=10))
    (response,) = uas.feed(caller.reinvite(uas.sdp(version=2), cseq=5))
    assert response.status == 500  # §12.2.2


def test_reinvite_while_the_first_invite_is_pending_gets_500_retry_after(uas):
    caller = uas.caller()
    uas.feed(caller.invite)
    call = uas.incoming()
    caller.learn(uas.do(uas.core.ring, call.call_key))
    (response,) = uas.feed(caller.reinvite(uas.sdp(version=2)))
    assert response.status == 500  # §14.2
    assert 0 <= int(response.header("retry-after") or "-1") <= 10


# --------------------------------------------------------------------------- UPDATE, INFO, PRACK


def test_update_with_sdp_answered_and_reported(uas):
    caller, _ = uas.answered()
    body = uas.sdp(version=2, direction="inactive")
    (ok,) = uas.feed(caller.request("UPDATE", body=body, content_type="application/sdp"))
    assert ok.status == 200
    assert ok.header("contact") == "<sip:127.0.0.1:5060>"  # RFC 3311 §5.2
    assert parse_sdp(ok.message.text).media[0].direction == "inactive"
    assert [c.hold for c in uas.take(MediaChanged)] == [True]


def test_update_without_sdp_is_a_plain_200(uas):
    caller, _ = uas.answered()
    (ok,) = uas.feed(caller.request("UPDATE"))
    assert ok.status == 200
    assert ok.message.body == b""
    assert uas.take(MediaChanged) == []


@pytest.mark.parametrize(
    ("content_type", "body", "digit"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", "5"),
        ("application/dtmf-relay", b"Signal= #\r\nDuration= 250\r\n", "#"),
        ("Application/DTMF-Relay; charset=utf-8", b"signal=11\r\n", "#"),
        ("application/dtmf", b"9", "9"),
        ("application/dtmf", b"*\r\n", "*"),
    ],
)
def test_info_dtmf(uas, content_type, body, digit):
    caller, call = uas.answered()
    (ok,) = uas.feed(caller.request("INFO", body=body, content_type=content_type))
    assert ok.status == 200
    assert uas.take(DtmfInfo) == [DtmfInfo(call.call_key, digit)]


def test_info_flash_or_empty_is_200_without_a_key(uas):
    caller, _ = uas.answered()
    relay = "application/dtmf-relay"
    (ok,) = uas.feed(caller.request("INFO", body=b"Signal=16\r\n", content_type=relay))
    assert ok.status == 200
    (ok,) = uas.feed(caller.request("INFO"))
    assert ok.status == 200
    assert uas.take(DtmfInfo) == []


def test_info_with_another_body_gets_415(uas):
    caller, _ = uas.answered()
    xml = "application/media_control+xml"
    (refused,) = uas.feed(caller.request("INFO", body=b"<media_control/>", content_type=xml))
    assert refused.status == 415
    assert refused.message.headers.get("accept") == ["application/dtmf-relay", "application/dtmf"]


def test_resent_info_is_one_key(uas):
    caller, _ = uas.answered()
    info = caller.request("INFO", body=b"Signal=1\r\n", content_type="application/dtmf-relay")
    uas.feed(info)
    uas.feed(info)
    assert len(uas.take(DtmfInfo)) == 1


def test_prack_and_in_dialog_options_and_unknown_method(uas):
    caller, _ = uas.answered()
    assert [s.status for s in uas.feed(caller.request("PRACK"))] == [200]
    (options,) = uas.feed(caller.request("OPTIONS"))
    assert options.status == 200
    assert options.to_tag == caller.to_tag
    (refer,) = uas.feed(caller.request("REFER"))
    assert refer.status == 405
    assert "INVITE" in refer.message.headers.get("allow")


# --------------------------------------------------------------------------- session timers


def test_no_refresh_from_the_refreshing_caller_ends_with_bye(make_uas):
    uas = make_uas(session_expires=None)
    invite = uas.load("sipp_invite.sip").replace(
        b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nSupported: timer\r\nSession-Expires: 90\r\n"
    )
    caller = uas.caller(invite)
    uas.feed(invite)
    call = uas.incoming()
    (ok,) = uas.do(uas.core.answer, call.call_key, uas.ANSWER_SDP)
    assert ok.header("session-expires") == "90;refresher=uac"
    assert ok.header("require") == "timer"
    caller.learn([ok])
    uas.feed(caller.ack())
    sent = uas.at(100.0)
    # RFC 4028 §10: BYE min(32, 90/3) = 30 s before expiry.
    assert (sent[0].at, sent[0].method) == (60.0, "BYE")
    assert uas.ended() == ["session_expired"]


def test_a_refresh_re_invite_or_update_pushes_expiry(make_uas):
    uas = make_uas(session_expires=None)
    invite = uas.load("sipp_invite.sip").replace(
        b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nSupported: timer\r\nSession-Expires: 90\r\n"
    )
    caller, _ = uas.answered(invite)
    uas.at(40.0)
    (ok,) = uas.feed(
        caller.reinvite(
            uas.sdp(), headers=["Session-Expires: 90;refresher=uac", "Supported: timer"]
        )
    )
    assert ok.header("session-expires") == "90;refresher=uac"
    uas.feed(caller.ack(cseq=2))
    uas.at(80.0)
    (ok,) = uas.feed(caller.request("UPDATE", headers=["Session-Expires: 90", "Supported: timer"]))
    assert ok.header("session-expires") == "90;refresher=uac"
    assert uas.at(139.0) == []
    assert [s.method for s in uas.at(140.0)] == ["BYE"]
    assert uas.ended() == ["session_expired"]


def test_interval_below_min_se_gets_422(uas):
    invite = uas.load("sipp_invite.sip").replace(
        b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nSupported: timer\r\nSession-Expires: 30\r\n"
    )
    (refused,) = uas.feed(invite)
    assert refused.status == 422
    assert refused.header("min-se") == "90"
    uas.assert_clean()


def test_we_refresh_with_update_when_the_caller_cannot(uas):
    baresip = ("127.0.0.1", 36261)
    uas.answered("baresip_invite.sip", baresip)
    (update,) = uas.at(900.0)
    assert update.method == "UPDATE"
    assert update.addr == baresip
    assert update.message.uri == "sip:alice-0x55d1c3a2b960@127.0.0.1:36261;transport=udp"
    assert update.header("session-expires") == "1800;refresher=uas"
    uas.feed(response_to(update, headers="Session-Expires: 1800;refresher=uas"), baresip)
    (update2,) = uas.at(1800.0)
    assert update2.method == "UPDATE"
    assert update2.header("cseq") == "2 UPDATE"
    # The caller is gone: no answer to the refresh → Timer F → BYE (RFC 4028 §10).
    sent = uas.at(1800.0 + 32.0)
    assert sent[-1].method == "BYE"
    assert uas.ended() == ["session_expired"]
    uas.assert_clean()


def test_refresh_update_refused_with_405_keeps_the_call_untimed(uas):
    baresip = ("127.0.0.1", 36261)
    _, call = uas.answered("baresip_invite.sip", baresip)
    (update,) = uas.at(900.0)
    uas.feed(response_to(update, 405, "Method Not Allowed"), baresip)
    assert uas.core.get_timer() is None
    assert uas.core.calls == 1
    (bye,) = uas.do(uas.core.hangup, call.call_key)  # only the application ends it now
    uas.feed(response_to(bye), baresip)
    assert uas.core.calls == 0


def test_refresh_update_answered_481_ends_the_call(uas):
    baresip = ("127.0.0.1", 36261)
    uas.answered("baresip_invite.sip", baresip)
    (update,) = uas.at(900.0)
    (bye,) = uas.feed(response_to(update, 481, "Call/Transaction Does Not Exist"), baresip)
    assert bye.method == "BYE"
    assert uas.ended() == ["session_expired"]


def test_no_session_timer_when_neither_side_wants_one(make_uas):
    uas = make_uas(session_expires=None)
    caller = uas.caller()
    uas.feed(caller.invite)
    call = uas.incoming()
    (ok,) = uas.do(uas.core.answer, call.call_key, uas.ANSWER_SDP)
    assert ok.header("session-expires") is None
    caller.learn([ok])
    uas.feed(caller.ack())
    assert uas.core.get_timer() is not None  # only the INVITE absorber (Timer L)
    uas.at(100.0)
    assert uas.core.get_timer() is None
    assert uas.core.calls == 1
    (bye,) = uas.do(uas.core.hangup, call.call_key)
    uas.feed(response_to(bye))
    assert uas.core.calls == 0
