"""The Twilio front end's configuration, read once from the settings: on or off, and its URLs.

The front end is on when the account SID, its Auth Token and the public URL are all set: the
token checks every signature, the public URL is what Twilio signs and where TwiML sends it. An
API key and secret, when given, authenticate the REST requests instead of the Auth Token (they
can be revoked on their own). A key without its secret, or the reverse, is an error at start-up
rather than a handoff failing on every call.
"""

from __future__ import annotations

from dataclasses import dataclass

from ivr.settings import Settings

VOICE_PATH = "/twilio/voice"
"""The voice webhook: Twilio posts each new call here."""
STREAM_PATH = "/twilio/stream"
"""The Media Streams WebSocket."""
STATUS_PATH = "/twilio/status"
"""Status callbacks: the caller's call and the agent legs."""
DIAL_PATH = "/twilio/dial"
"""The ``<Dial>`` action: the agent leg ended, the caller comes back (or has gone)."""

REQUIRED = ("twilio_account_sid", "twilio_auth_token", "twilio_public_url")
"""Settings that switch the front end on, all three."""


class TwilioSettingsError(Exception):
    """The Twilio settings contradict each other; the message names them."""


@dataclass(frozen=True)
class TwilioConfig:
    """Everything the front end needs from the settings."""

    account_sid: str
    """``AC…``: calls from other accounts are refused."""
    auth_token: str
    """Checks X-Twilio-Signature; authenticates REST requests when there is no API key."""
    public_url: str
    """Where Twilio reaches this node, without a trailing slash (a reverse proxy's address)."""
    api_base: str
    """Where REST requests go (Twilio's API; a local server in tests)."""
    api_key: str | None = None
    """``SK…``: authenticates REST requests together with ``api_secret``."""
    api_secret: str | None = None
    """The API key's secret."""
    dial_timeout: int = 20
    """Seconds an agent's phone rings."""

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioConfig | None:
        """The configuration, or None when the front end is off (see :func:`missing`)."""
        key, secret = settings.twilio_api_key, settings.twilio_api_secret
        if (key is None) != (secret is None):
            given, lacking = (
                ("twilio_api_key", "twilio_api_secret")
                if key
                else ("twilio_api_secret", "twilio_api_key")
            )
            raise TwilioSettingsError(f"{given} is set but {lacking} is not: set both or neither")
        if missing(settings):
            return None
        assert settings.twilio_account_sid
        assert settings.twilio_auth_token
        assert settings.twilio_public_url
        return cls(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token,
            public_url=settings.twilio_public_url.rstrip("/"),
            api_base=settings.twilio_api_base.rstrip("/"),
            api_key=key,
            api_secret=secret,
            dial_timeout=settings.twilio_dial_timeout,
        )

    # -- URLs Twilio is given, and signs --

    def url(self, path: str) -> str:
        """The public URL of one of our paths (``/twilio/voice``...), as Twilio requests it."""
        return f"{self.public_url}{path}"

    @property
    def websocket_base(self) -> str:
        """The public URL with a WebSocket scheme: ``wss://`` (``ws://`` for ``http://``)."""
        scheme, rest = self.public_url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}"

    @property
    def stream_url(self) -> str:
        """The public address of the Media Stream WebSocket, as the TwiML gives it."""
        return f"{self.websocket_base}{STREAM_PATH}"

    @property
    def rest_credentials(self) -> tuple[str, str]:
        """(user, password) of REST requests: the API key if there is one, else the account."""
        if self.api_key and self.api_secret:
            return self.api_key, self.api_secret
        return self.account_sid, self.auth_token


def missing(settings: Settings) -> list[str]:
    """The settings still needed to switch the front end on (empty: it is on)."""
    return [name for name in REQUIRED if not getattr(settings, name)]
