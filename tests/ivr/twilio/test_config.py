"""The Twilio settings: on only when complete, contradictions refused, URLs from the public one."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ivr.settings import Settings, load_settings
from ivr.twilio.config import TwilioConfig, TwilioSettingsError, missing

from .conftest import ACCOUNT_SID, API_KEY, API_SECRET, AUTH_TOKEN


def on(**extra: object) -> Settings:
    values: dict[str, object] = {
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": AUTH_TOKEN,
        "twilio_public_url": "https://hotline.example.cn/95598/",
        **extra,
    }
    return Settings(**values)


def test_off_by_default_naming_what_is_missing() -> None:
    settings = Settings()
    assert TwilioConfig.from_settings(settings) is None
    assert missing(settings) == [
        "twilio_account_sid",
        "twilio_auth_token",
        "twilio_public_url",
    ]
    assert missing(on()) == []


def test_urls_come_from_the_public_url_behind_a_proxy_prefix() -> None:
    config = TwilioConfig.from_settings(on())
    assert config is not None
    assert config.public_url == "https://hotline.example.cn/95598"
    assert config.url("/twilio/voice") == "https://hotline.example.cn/95598/twilio/voice"
    assert config.stream_url == "wss://hotline.example.cn/95598/twilio/stream"
    assert config.api_base == "https://api.twilio.com"
    plain = TwilioConfig.from_settings(on(twilio_public_url="http://10.0.0.5:8080"))
    assert plain is not None
    assert plain.stream_url == "ws://10.0.0.5:8080/twilio/stream"


def test_rest_requests_use_the_api_key_when_there_is_one() -> None:
    config = TwilioConfig.from_settings(on())
    assert config is not None
    assert config.rest_credentials == (ACCOUNT_SID, AUTH_TOKEN)
    keyed = TwilioConfig.from_settings(on(twilio_api_key=API_KEY, twilio_api_secret=API_SECRET))
    assert keyed is not None
    assert keyed.rest_credentials == (API_KEY, API_SECRET)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"twilio_api_key": API_KEY}, "twilio_api_key is set but twilio_api_secret is not"),
        ({"twilio_api_secret": API_SECRET}, "twilio_api_secret is set but twilio_api_key is not"),
    ],
)
def test_a_key_without_its_secret_is_an_error(extra: dict[str, str], message: str) -> None:
    with pytest.raises(TwilioSettingsError, match=message):
        TwilioConfig.from_settings(on(**extra))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("twilio_account_sid", "AC123"),
        ("twilio_account_sid", "SK" + "0" * 32),
        ("twilio_api_key", "AC" + "0" * 32),
        ("twilio_public_url", "ivr.example.cn"),
        ("twilio_public_url", "https://ivr.example.cn/?x=1"),
        ("twilio_api_base", "ftp://api.example.cn"),
        ("twilio_dial_timeout", 1),
    ],
)
def test_malformed_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Settings(**{field: value})


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTLINE_TWILIO_ACCOUNT_SID", ACCOUNT_SID)
    monkeypatch.setenv("HOTLINE_TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    monkeypatch.setenv("HOTLINE_TWILIO_PUBLIC_URL", "https://ivr.example.cn")
    monkeypatch.setenv("HOTLINE_TWILIO_DIAL_TIMEOUT", "30")
    # The twilio library's own variables are not ours: they change nothing.
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "f" * 32)
    config = TwilioConfig.from_settings(load_settings())
    assert config is not None
    assert (config.account_sid, config.dial_timeout) == (ACCOUNT_SID, 30)
