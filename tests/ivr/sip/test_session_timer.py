"""RFC 4028 negotiation on the UAS side (§9) and the deadlines it implies (§10)."""

from __future__ import annotations

import pytest
from aiosipua import SipMessage, SipRequest

from ivr.sip.session_timer import (
    IntervalTooSmall,
    SessionTimer,
    TimerRequest,
    negotiate,
    peer_allows_update,
    read_request,
)


def request(*headers: str) -> SipRequest:
    lines = ["INVITE sip:95598@h SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", *headers]
    parsed = SipMessage.parse(("\r\n".join([*lines, "", ""])).encode())
    assert isinstance(parsed, SipRequest)
    return parsed


def test_read_request():
    assert read_request(request()) == TimerRequest(None, None, 90, False)
    assert read_request(
        request("Session-Expires: 1800;Refresher=UAS", "Min-SE: 120", "Supported: timer, path")
    ) == TimerRequest(1800, "uas", 120, True)
    assert read_request(request("x: 600", "Require: timer")) == TimerRequest(600, None, 90, True)
    with pytest.raises(ValueError, match="invalid literal"):
        read_request(request("Session-Expires: soon"))
    with pytest.raises(ValueError, match="negative"):
        read_request(request("Session-Expires: -1"))


@pytest.mark.parametrize(
    ("offer", "local", "allows_update", "result"),
    [
        # Nobody asks: no timer.
        (TimerRequest(None, None, 90, True), None, True, None),
        # The UAC supports timers: it refreshes unless it asked us to.
        (TimerRequest(1800, None, 90, True), None, True, SessionTimer(1800, "uac", True)),
        (TimerRequest(1800, "uas", 90, True), None, True, SessionTimer(1800, "uas", True)),
        # We may shorten the interval, never below either Min-SE.
        (TimerRequest(3600, None, 90, True), 1800, True, SessionTimer(1800, "uac", True)),
        (TimerRequest(3600, None, 2000, True), 1800, True, SessionTimer(2000, "uac", True)),
        (TimerRequest(None, None, 90, True), 1800, True, SessionTimer(1800, "uac", True)),
        # Too small and the UAC can retry: 422 with our Min-SE.
        (TimerRequest(60, None, 60, True), None, True, IntervalTooSmall(90)),
        # Too small and the UAC knows nothing of timers: raise it ourselves.
        (TimerRequest(60, None, 90, False), None, True, SessionTimer(90, "uas", False)),
        # No timer support at the UAC: we refresh (with UPDATE), no Require.
        (TimerRequest(None, None, 90, False), 1800, True, SessionTimer(1800, "uas", False)),
        (TimerRequest(None, None, 90, False), 1800, False, None),
    ],
)
def test_negotiate(offer, local, allows_update, result):
    assert negotiate(offer, local_expires=local, peer_allows_update=allows_update) == result


def test_deadlines():
    timer = SessionTimer(1800, "uac", True)
    assert timer.header == "1800;refresher=uac"
    assert timer.expiry_delay == 1800 - 32  # min(32, SE/3)
    assert SessionTimer(90, "uac", True).expiry_delay == 60
    assert timer.refresh_delay == 900


def test_peer_allows_update():
    assert peer_allows_update(request())  # §20.5: an absent Allow says nothing
    assert peer_allows_update(request("Allow: INVITE, ACK, update"))
    assert not peer_allows_update(request("Allow: INVITE, ACK, BYE"))
