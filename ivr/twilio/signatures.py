"""X-Twilio-Signature: the hotline accepts nothing Twilio did not sign.

Twilio signs every webhook, and the WebSocket handshake of every Media Stream, with the account's
Auth Token: HMAC-SHA1 over the full URL it requested followed by the sorted POST parameters
(twilio.com/docs/usage/security). The twilio library's ``RequestValidator`` does the arithmetic;
this module decides *which URL* it is given. Behind a reverse proxy the URL Twilio requested
(``https://ivr.example.cn/twilio/voice``) is not the one aiohttp sees
(``http://127.0.0.1:8080/twilio/voice``), so the configured public URL replaces scheme, host and
any path prefix the proxy strips; the path and query are the request's own.

A webhook signed with a Webhooks SharedKey (``X-Twilio-Webhooks-Signature-Settings``) is refused
with its own reason: the hotline has no setting for such a key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
)

from ivr.twilio.config import TwilioConfig


class SignatureChecker:
    """Checks the signature of requests from Twilio against the configured public URL."""

    def __init__(self, config: TwilioConfig) -> None:
        self.config = config
        self._validator = RequestValidator(config.auth_token)

    def public_url(self, request: web.BaseRequest) -> str:
        """The URL Twilio requested: the public base URL, then the request's path and query."""
        return f"{self.config.public_url}{request.rel_url.path_qs}"

    def refusal(self, request: web.BaseRequest, params: Mapping[str, Any]) -> str | None:
        """Why a webhook is refused (``unsigned``, ``bad_signature``, ``shared_key``), or None
        when Twilio signed exactly this URL and these parameters."""
        return self._check(request, [self.public_url(request)], params)

    def stream_refusal(self, request: web.BaseRequest) -> str | None:
        """The same for a Media Stream's WebSocket handshake (a GET without parameters).

        Twilio requested the ``wss://`` URL given in the TwiML; the ``https://`` spelling of the
        same address is accepted too (both name the same resource, and the library itself
        tries both the URL with and without its port).
        """
        wss = f"{self.config.websocket_base}{request.rel_url.path_qs}"
        return self._check(request, [wss, self.public_url(request)], {})

    def _check(
        self, request: web.BaseRequest, urls: list[str], params: Mapping[str, Any]
    ) -> str | None:
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not signature:
            return "unsigned"
        if request.headers.get(SIGNATURE_SETTINGS_HEADER):
            return "shared_key"
        for url in urls:
            if self._validator.validate(url, params, signature):
                return None
        return "bad_signature"
