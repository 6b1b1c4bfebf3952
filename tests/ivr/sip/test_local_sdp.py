"""Answers from the current local SDP: codecs limited to the offer, direction mirrored, m-lines
mirrored, o= version bumped only on change (RFC 3264 §6, §8)."""

from __future__ import annotations

import pytest
from aiosipua import parse_sdp

from ivr.sip.local_sdp import LocalSdp, SdpError, SdpSyntaxError, is_hold, parse_body

LOCAL = (
    b"v=0\r\no=hotline 1000 1000 IN IP4 127.0.0.1\r\ns=hotline95598\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 20000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n"
)


def offer(formats: str = "0 8 96", direction: str = "sendrecv", extra: str = "") -> bytes:
    text = (
        "v=0\r\no=c 1 2 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n"
        f"m=audio 4000 RTP/AVP {formats}\r\na=rtpmap:96 telephone-event/8000\r\n"
        f"a=fmtp:96 0-15\r\na={direction}\r\n{extra}"
    )
    return text.encode()


def test_answer_keeps_our_codecs_that_were_offered_with_the_offers_dynamic_numbers():
    local = LocalSdp(LOCAL)
    answer = parse_sdp(local.render(parse_body(offer())).decode())
    audio = answer.audio
    assert audio is not None
    assert audio.formats == ["8", "96"]
    assert audio.attributes["rtpmap"] == ["8 PCMA/8000", "96 telephone-event/8000"]
    assert audio.attributes["fmtp"] == ["96 0-16"]
    assert audio.attributes["ptime"] == ["20"]
    assert audio.direction == "sendrecv"
    # telephone-event moved from 101 to the offer's 96: a changed description (§8).
    assert answer.origin.session_version == "1001"
    again = parse_sdp(
        local.render(parse_body(offer(formats="8 101").replace(b"96", b"101"))).decode()
    )
    assert again.origin.session_version == "1002"  # and back to 101


@pytest.mark.parametrize(
    ("offered", "answered"),
    [("sendonly", "recvonly"), ("recvonly", "sendonly"), ("inactive", "inactive")],
)
def test_direction_is_mirrored_and_the_version_moves_once(offered, answered):
    local = LocalSdp(LOCAL)
    first = parse_sdp(local.render(parse_body(offer(direction=offered))).decode())
    again = parse_sdp(local.render(parse_body(offer(direction=offered))).decode())
    back = parse_sdp(local.render(parse_body(offer())).decode())
    assert first.audio is not None
    assert first.audio.direction == answered
    assert [s.origin.session_version for s in (first, again, back)] == ["1001", "1001", "1002"]


def test_our_own_direction_limits_the_answer():
    local = LocalSdp(LOCAL.replace(b"a=ptime:20\r\n", b"a=ptime:20\r\na=recvonly\r\n"))
    answer = parse_sdp(local.render(parse_body(offer())).decode())
    assert answer.audio is not None
    assert answer.audio.direction == "recvonly"


def test_no_common_codec_or_no_audio_is_refused():
    local = LocalSdp(LOCAL)
    with pytest.raises(SdpError, match="no common codec"):
        local.render(parse_body(offer(formats="0 96")))
    video_only = parse_sdp("v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 5000 RTP/AVP 96\r\n")
    with pytest.raises(SdpError, match="no audio"):
        local.render(video_only)


def test_offerless_reinvite_gets_our_description_as_the_offer():
    assert parse_sdp(LocalSdp(LOCAL).render(None).decode()).origin.session_version == "1000"


def test_other_m_lines_are_answered_with_port_zero():
    local = LocalSdp(LOCAL)
    answer = parse_sdp(
        local.render(parse_body(offer(extra="m=video 4002 RTP/AVP 97\r\n"))).decode()
    )
    assert [(m.media, m.port, m.formats) for m in answer.media] == [
        ("audio", 20000, ["8", "96"]),
        ("video", 0, ["97"]),
    ]


def test_replace_keeps_the_session_id_and_bumps_the_version():
    local = LocalSdp(LOCAL)
    local.replace(LOCAL.replace(b"o=hotline 1000 1000", b"o=other 7 7").replace(b"20000", b"20002"))
    answer = parse_sdp(local.render(parse_body(offer())).decode())
    assert (answer.origin.username, answer.origin.session_id) == ("hotline", "1000")
    assert answer.origin.session_version == "1001"
    assert answer.audio is not None
    assert answer.audio.port == 20002


def test_parse_body_and_hold():
    with pytest.raises(SdpSyntaxError):
        parse_body(b"v=0\r\nm=audio x RTP/AVP 0\r\n")
    with pytest.raises(SdpError):
        parse_body(b"not sdp")
    assert is_hold(parse_body(offer(direction="sendonly")))
    assert is_hold(parse_body(offer(direction="inactive")))
    assert is_hold(parse_body(offer().replace(b"c=IN IP4 10.0.0.9", b"c=IN IP4 0.0.0.0")))
    assert not is_hold(parse_body(offer(direction="recvonly")))
