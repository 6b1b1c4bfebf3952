"""A client of the running hotline's HTTP API (`/api/`), for the `hotline` command line.

The command line goes through the API rather than to Redis: the embedded Redis belongs to the
`hotline serve` process, and the API is where the access rule (`ivr.web_api`) is applied.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from typing import Any

import aiohttp

from ivr.settings import Settings

TIMEOUT_SECONDS = 10.0
"""How long one request may take before the hotline counts as not reachable."""

_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104 - mapped away
"""A server listening on every address is reached on this host's loopback."""


class ApiAnswerError(Exception):
    """The hotline answered with an error (``{"error_id", "message"}``)."""

    def __init__(self, error_id: str, message: str, status: int) -> None:
        super().__init__(f"{error_id}: {message}")
        self.error_id = error_id
        """The API's stable error id."""
        self.message = message
        """The API's explanation."""
        self.status = status
        """HTTP status code."""


class HotlineUnreachableError(Exception):
    """No answer from the hotline at the URL (not running, wrong address, no answer in time)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        """The base URL tried."""
        self.reason = reason
        """What went wrong, for the message."""


def base_url(settings: Settings) -> str:
    """The hotline's web address from ``web_host`` / ``web_port`` (raises ValueError when the
    port is 0: the server picked one at start-up, and only its log tells which)."""
    if settings.web_port == 0:
        raise ValueError(
            "web_port is 0 (the server picks a free port and logs it): pass --url http://HOST:PORT"
        )
    host = _ANY_ADDRESS.get(settings.web_host, settings.web_host)
    try:
        bracket = isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        bracket = False  # a host name
    return (
        f"http://[{host}]:{settings.web_port}" if bracket else f"http://{host}:{settings.web_port}"
    )


class ApiClient:
    """JSON requests to one hotline; use as ``async with ApiClient(url, token) as client``."""

    def __init__(
        self, url: str, token: str | None = None, *, timeout: float = TIMEOUT_SECONDS
    ) -> None:
        self.url = url.rstrip("/")
        """The hotline's base URL (``http://127.0.0.1:8080``)."""
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, body: object = None) -> Any:
        """Send one request: the JSON answer, else `ApiAnswerError` or `HotlineUnreachableError`."""
        assert self._session is not None, "use ApiClient in `async with`"
        headers: dict[str, str] = {}
        if self._token is not None and method.upper() != "GET":
            # Only requests that change state need it; reads do not carry it around.
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            async with self._session.request(
                method, self.url + path, json=body, headers=headers
            ) as resp:
                text = await resp.text()
                status = resp.status
                content_type = resp.content_type
        except aiohttp.InvalidURL as exc:
            raise HotlineUnreachableError(self.url, f"not a URL ({exc})") from None
        except aiohttp.ClientError as exc:
            raise HotlineUnreachableError(self.url, str(exc) or type(exc).__name__) from None
        except TimeoutError:
            raise HotlineUnreachableError(
                self.url, f"no answer within {self._timeout.total:g} s"
            ) from None
        answer: object = None
        if content_type == "application/json":
            with contextlib.suppress(ValueError):
                answer = json.loads(text)
        if not isinstance(answer, dict):
            raise ApiAnswerError(
                "unexpected-answer",
                f"HTTP {status} with {content_type} from {self.url}{path}: is it the hotline?",
                status,
            )
        if status >= 400:
            raise ApiAnswerError(
                str(answer.get("error_id", f"http-{status}")),
                str(answer.get("message", "")),
                status,
            )
        return answer
