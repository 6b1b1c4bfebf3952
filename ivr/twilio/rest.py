"""Handing a live Twilio call to an agent: a REST update of the call with new TwiML.

The twilio library builds and sends the request (``calls(sid).update_async(twiml=…)`` posts
``Twiml`` to ``/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json``) and parses Twilio's
answer and errors; this module gives it an asyncio HTTP client of our own that

- sends to the configured API base (``twilio_api_base``: Twilio's API, or a local server in the
  tests; the library only knows Twilio's host names),
- has a real timeout (the library's async client passes none unless each call asks), and
- reads nothing from the environment: the library falls back to ``TWILIO_*`` variables for
  whatever it is not given, and settings come from one place only (CONVENTIONS 6).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import structlog
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from ivr.twilio.config import TwilioConfig

log = structlog.get_logger(__name__)

TWILIO_API = "https://api.twilio.com"
"""The host the library addresses the Voice API at; replaced by ``twilio_api_base``."""

REST_TIMEOUT = 10.0
"""Seconds one REST request may take."""

# The library logs every request line and header at INFO through this logger; one line per
# handoff of our own (below) says what matters, so theirs only reach the log as warnings.
_library_log = logging.getLogger("ivr.twilio.rest.http")
_library_log.setLevel(logging.WARNING)


class HandoffError(Exception):
    """Twilio refused or did not answer the call update; ``reason`` is short and stable."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _NoEnvironment(dict[str, str]):
    """An empty environment the library cannot mistake for "none given".

    ``Client(environment={})`` falls back to ``os.environ`` (an empty dict is falsy there).
    """

    def __bool__(self) -> bool:
        return True


class _HttpClient(AsyncHttpClient):  # type: ignore[misc]  # twilio is untyped
    """aiohttp for the twilio library, aimed at the configured API base."""

    def __init__(self, api_base: str, timeout: float) -> None:
        super().__init__(_library_log, True, timeout)
        self.api_base = api_base
        self._session: aiohttp.ClientSession | None = None

    async def request(  # noqa: PLR0917 - the library's HttpClient.request, positional and all
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the library passes it
        allow_redirects: bool = False,
    ) -> Response:
        """Send one request of the library to the API base; Twilio's answer as its Response."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        if url.startswith(TWILIO_API):
            url = self.api_base + url[len(TWILIO_API) :]
        headers = dict(headers or {})
        if auth:
            headers["Authorization"] = aiohttp.encode_basic_auth(*auth)
        async with self._session.request(
            method.upper(),
            url,
            params={k: str(v) for k, v in (params or {}).items()},
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
            allow_redirects=allow_redirects,
        ) as response:
            return Response(response.status, await response.text(), response.headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class CallUpdater:
    """Updates live calls through Twilio's REST API (one per front end)."""

    def __init__(self, config: TwilioConfig, *, timeout: float = REST_TIMEOUT) -> None:
        user, password = config.rest_credentials
        self._http = _HttpClient(config.api_base, timeout)
        self._client = Client(
            username=user,
            password=password,
            account_sid=config.account_sid,
            http_client=self._http,
            environment=_NoEnvironment(),
        )

    async def redirect(self, call_sid: str, twiml: str) -> dict[str, Any]:
        """Replace the TwiML the call runs; answers the updated call resource's main fields.

        Raises HandoffError: ``rejected`` (Twilio answered an error, e.g. the call has ended),
        ``unreachable`` (no answer, a timeout, a network error).
        """
        try:
            call = await self._client.calls(call_sid).update_async(twiml=twiml)
        except TwilioRestException as exc:
            raise HandoffError(
                "rejected", f"Twilio answered {exc.status} (code {exc.code}): {exc.msg}"
            ) from exc
        except (aiohttp.ClientError, TimeoutError, TwilioException) as exc:
            raise HandoffError("unreachable", f"{type(exc).__name__}: {exc}") from exc
        return {"sid": call.sid, "status": str(call.status), "account_sid": call.account_sid}

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._http.close()
        await asyncio.sleep(0)  # let aiohttp's connector finish closing its transports
