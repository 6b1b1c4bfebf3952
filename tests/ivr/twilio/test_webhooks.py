"""Signed webhooks pass; unsigned, wrongly signed and replayed-with-changed-params requests get 403
and create nothing; the TwiML answers are what Twilio expects."""

from __future__ import annotations

import aiohttp
import pytest
from structlog.testing import capture_logs

from ivr.twilio.front import REQUESTS_REFUSED

from .conftest import (
    ACCOUNT_SID,
    PUBLIC_URL,
    MakeHotline,
    TwilioSide,
    call_sid,
    parse_stream_twiml,
)


def refused(endpoint: str, reason: str) -> float:
    return REQUESTS_REFUSED.labels(endpoint=endpoint, reason=reason)._value.get()


async def test_a_signed_voice_webhook_is_answered_with_a_bidirectional_stream(
    make_hotline: MakeHotline,
) -> None:
    hotline = await make_hotline()
    sid = call_sid(1)
    status, text = await hotline.twilio.post("/twilio/voice", hotline.twilio.voice_params(sid))
    assert status == 200
    twiml = parse_stream_twiml(text)
    assert twiml.url == "wss://ivr.example.cn/twilio/stream"  # the public address, no query
    assert twiml.parameters == {
        "call_id": f"twilio-{sid}",
        "caller": "+8613812345678",
        "dialed": "+8695598",
    }
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?><Response><Connect>')
    assert list(hotline.front.calls) == [sid]
    # Twilio asking again for the same call gets the same answer, not a second call.
    again = await hotline.twilio.post("/twilio/voice", hotline.twilio.voice_params(sid))
    assert again == (200, text)
    assert list(hotline.front.calls) == [sid]


async def _refused_everywhere(
    twilio: TwilioSide, headers: dict[str, str] | None, signature: str | None, sid: str
) -> list[int]:
    """Post voice, status and dial for `sid` with the given signature; their status codes."""
    codes = []
    for path, params in (
        ("/twilio/voice", twilio.voice_params(sid)),
        ("/twilio/status", twilio.common(sid, "completed")),
        ("/twilio/dial", {**twilio.common(sid, "in-progress"), "DialCallStatus": "completed"}),
    ):
        code, _ = await twilio.post(path, params, signature=signature, extra_headers=headers)
        codes.append(code)
    return codes


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("unsigned", "unsigned"),
        ("garbage", "bad_signature"),
        ("other_token", "bad_signature"),
        ("local_url", "bad_signature"),
        ("shared_key", "shared_key"),
    ],
)
async def test_requests_twilio_did_not_sign_get_403_and_create_nothing(
    make_hotline: MakeHotline, how: str, reason: str
) -> None:
    hotline = await make_hotline()
    twilio = hotline.twilio
    sid = call_sid(2)
    headers = None
    if how == "unsigned":
        signature = None
    elif how == "garbage":
        signature = "bm90IGEgc2lnbmF0dXJl"
    elif how == "other_token":
        signature = TwilioSide(twilio.http, twilio.local, token="f" * 32).sign(
            "/twilio/voice", twilio.voice_params(sid)
        )
    elif how == "local_url":
        # Signed for the address the request really reached, not the public one Twilio uses.
        signature = twilio.validator.compute_signature(
            f"{hotline.url}/twilio/voice", twilio.voice_params(sid)
        )
    else:
        signature = "sign"
        headers = {"X-Twilio-Webhooks-Signature-Settings": "key=wk_1,algorithm=HMAC_SHA256"}
    before = refused("voice", reason)
    with capture_logs() as logs:
        codes = await _refused_everywhere(twilio, headers, signature, sid)
    assert codes == [403, 403, 403]
    assert refused("voice", reason) == before + 1
    assert hotline.front.calls == {}
    assert [e["reason"] for e in logs if e["event"] == "twilio request refused"] == [reason] * 3


async def test_a_replay_with_changed_params_gets_403(make_hotline: MakeHotline) -> None:
    hotline = await make_hotline()
    twilio = hotline.twilio
    sid = call_sid(3)
    params = twilio.voice_params(sid)
    signature = twilio.sign("/twilio/voice", params)
    # Someone replays Twilio's signed request with another caller, or another call.
    for change in ({"From": "+8613900000000"}, {"CallSid": call_sid(4)}, {"Extra": "1"}):
        code, _ = await twilio.post("/twilio/voice", {**params, **change}, signature=signature)
        assert code == 403
    # A status callback replayed against the call that is now registered changes nothing.
    assert (await twilio.post("/twilio/voice", params, signature=signature))[0] == 200
    status = twilio.common(sid, "ringing")
    status_signature = twilio.sign("/twilio/status", status)
    code, _ = await twilio.post(
        "/twilio/status", {**status, "CallStatus": "completed"}, signature=status_signature
    )
    assert code == 403
    assert list(hotline.front.calls) == [sid]


async def test_another_account_is_refused_even_when_signed(make_hotline: MakeHotline) -> None:
    hotline = await make_hotline()
    params = hotline.twilio.voice_params(call_sid(5))
    params["AccountSid"] = "AC" + "e" * 32
    assert (await hotline.twilio.post("/twilio/voice", params))[0] == 403
    assert hotline.front.calls == {}


async def test_a_query_string_is_part_of_what_twilio_signs(make_hotline: MakeHotline) -> None:
    hotline = await make_hotline()
    twilio = hotline.twilio
    params = twilio.voice_params(call_sid(6))
    signature = twilio.validator.compute_signature(f"{PUBLIC_URL}/twilio/voice?tenant=js", params)
    async with twilio.http.post(
        f"{hotline.url}/twilio/voice?tenant=js",
        data=params,
        headers={"X-Twilio-Signature": signature},
    ) as response:
        assert response.status == 200
    async with twilio.http.post(
        f"{hotline.url}/twilio/voice?tenant=ah",
        data=params,
        headers={"X-Twilio-Signature": signature},
    ) as response:
        assert response.status == 403


async def test_the_stream_handshake_must_be_signed(make_hotline: MakeHotline) -> None:
    hotline = await make_hotline()
    for signature in (None, "bm90IGEgc2lnbmF0dXJl"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused_handshake:
            await hotline.twilio.open_stream(signature=signature)
        assert refused_handshake.value.status == 403
    stream = await hotline.twilio.open_stream()  # signed over the wss:// public URL
    assert not stream.ws.closed


async def test_a_voice_webhook_for_an_ended_call_is_rejected(make_hotline: MakeHotline) -> None:
    hotline = await make_hotline()
    sid = call_sid(7)
    await hotline.twilio.incoming_call(sid)
    assert await hotline.twilio.status(sid, "completed") == 204  # hung up before the stream
    assert hotline.front.calls == {}
    code, text = await hotline.twilio.post("/twilio/voice", hotline.twilio.voice_params(sid))
    assert code == 200
    assert "<Reject" in text
    assert hotline.front.calls == {}


async def test_status_and_dial_for_unknown_calls(make_hotline: MakeHotline) -> None:
    hotline = await make_hotline()
    assert await hotline.twilio.status(call_sid(8), "completed") == 204
    code, text = await hotline.twilio.dial_action(call_sid(8), "completed")
    assert code == 200
    assert "<Hangup" in text  # nothing to bring the caller back to


async def test_off_until_configured(make_hotline: MakeHotline) -> None:
    with capture_logs() as logs:
        hotline = await make_hotline(twilio_account_sid=None, twilio_public_url=None)
    assert not hotline.front.enabled
    assert hotline.status["twilio"] == "off: set twilio_account_sid, twilio_public_url"
    [line] = [e for e in logs if e["event"] == "twilio front end off"]
    assert line["missing"] == ["twilio_account_sid", "twilio_public_url"]
    for path in ("/twilio/voice", "/twilio/status", "/twilio/dial"):
        code, _ = await hotline.twilio.post(path, hotline.twilio.voice_params(call_sid(9)))
        assert code == 503
    with pytest.raises(aiohttp.WSServerHandshakeError) as off:
        await hotline.twilio.open_stream()
    assert off.value.status == 503
    assert hotline.front.calls == {}
    async with hotline.twilio.http.get(f"{hotline.url}/healthz") as response:
        health = await response.json()
    assert health["twilio"] == "off: set twilio_account_sid, twilio_public_url"


async def test_on_says_where_twilio_should_send_calls(make_hotline: MakeHotline) -> None:
    with capture_logs() as logs:
        hotline = await make_hotline()
    [line] = [e for e in logs if e["event"] == "twilio front end on"]
    assert line["voice_url"] == "https://ivr.example.cn/twilio/voice"
    assert line["status_url"] == "https://ivr.example.cn/twilio/status"
    assert line["rest_auth"] == "auth_token"
    async with hotline.twilio.http.get(f"{hotline.url}/healthz") as response:
        health = await response.json()
    assert health["twilio"] == "on: voice webhook https://ivr.example.cn/twilio/voice"
    assert ACCOUNT_SID not in str(health)


async def test_draining_rejects_new_calls(make_hotline: MakeHotline) -> None:
    hotline = await make_hotline()
    await hotline.front.stop(0)
    code, text = await hotline.twilio.post(
        "/twilio/voice", hotline.twilio.voice_params(call_sid(10))
    )
    assert code == 200
    assert '<Reject reason="busy" />' in text
    assert hotline.front.calls == {}
