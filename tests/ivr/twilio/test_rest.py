"""The REST handoff against the stand-in for Twilio's API: the library's request, our API base and
timeout, Twilio's errors as stable reasons, and nothing taken from the environment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from ivr.twilio.config import TwilioConfig
from ivr.twilio.rest import CallUpdater, HandoffError

from .conftest import ACCOUNT_SID, API_KEY, API_SECRET, AUTH_TOKEN, FakeTwilioApi, call_sid

TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Hangup /></Response>'


def config(api_base: str, **extra: str) -> TwilioConfig:
    return TwilioConfig(ACCOUNT_SID, AUTH_TOKEN, "https://ivr.example.cn", api_base, **extra)


async def test_the_update_reaches_the_configured_api(fake_api: FakeTwilioApi) -> None:
    sid = call_sid(1)
    fake_api.live[sid] = {}
    updater = CallUpdater(config(fake_api.url))
    try:
        answer = await updater.redirect(sid, TWIML)
    finally:
        await updater.close()
    assert answer == {"sid": sid, "status": "in-progress", "account_sid": ACCOUNT_SID}
    [update] = fake_api.updates
    assert (update.user, update.form) == (ACCOUNT_SID, {"Twiml": TWIML})


async def test_with_an_api_key(fake_api: FakeTwilioApi) -> None:
    sid = call_sid(2)
    fake_api.live[sid] = {}
    updater = CallUpdater(config(fake_api.url, api_key=API_KEY, api_secret=API_SECRET))
    try:
        await updater.redirect(sid, TWIML)
    finally:
        await updater.close()
    assert fake_api.updates[0].user == API_KEY
    assert fake_api.updates[0].account_sid == ACCOUNT_SID  # the path names the account


@pytest.mark.parametrize(
    ("setup", "status", "code"),
    [("unknown", 404, 20404), ("completed", 400, 21220), ("bad_secret", 401, 20003)],
)
async def test_twilios_refusals_are_rejected(
    fake_api: FakeTwilioApi, setup: str, status: int, code: int
) -> None:
    sid = call_sid(3)
    extra = {}
    if setup == "completed":
        fake_api.live[sid] = {"status": "completed"}
    elif setup == "bad_secret":
        fake_api.live[sid] = {}
        extra = {"api_key": API_KEY, "api_secret": "wrong"}
    updater = CallUpdater(config(fake_api.url, **extra))
    try:
        with pytest.raises(HandoffError) as refused:
            await updater.redirect(sid, TWIML)
    finally:
        await updater.close()
    assert refused.value.reason == "rejected"
    assert f"Twilio answered {status} (code {code})" in str(refused.value)


@pytest.fixture
async def slow_api() -> AsyncIterator[str]:
    async def never(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{account}/Calls/{call}.json", never)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_no_answer_in_time_is_unreachable(slow_api: str) -> None:
    updater = CallUpdater(config(slow_api), timeout=0.2)
    try:
        with pytest.raises(HandoffError) as slow:
            await updater.redirect(call_sid(4), TWIML)
    finally:
        await updater.close()
    assert slow.value.reason == "unreachable"


async def test_nobody_listening_is_unreachable() -> None:
    updater = CallUpdater(config("http://127.0.0.1:9"), timeout=1.0)
    try:
        with pytest.raises(HandoffError) as down:
            await updater.redirect(call_sid(5), TWIML)
    finally:
        await updater.close()
    assert down.value.reason == "unreachable"


async def test_the_librarys_environment_variables_are_ignored(
    fake_api: FakeTwilioApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    # TWILIO_EDGE/REGION would send the request to another host; the credentials to another
    # account. Settings come from one place (CONVENTIONS 6).
    monkeypatch.setenv("TWILIO_EDGE", "singapore")
    monkeypatch.setenv("TWILIO_REGION", "au1")
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "f" * 32)
    sid = call_sid(6)
    fake_api.live[sid] = {}
    updater = CallUpdater(config(fake_api.url))
    try:
        await updater.redirect(sid, TWIML)
    finally:
        await updater.close()
    assert fake_api.updates[0].user == ACCOUNT_SID
