"""What every `/api/` endpoint shares: `ApiError`, the access rule for changes, JSON bodies.

Access: a request that changes state (POST, PUT, PATCH, DELETE) needs ``Authorization: Bearer
<api_token>`` when a token is configured; without one, only clients on this host (loopback) may
change state. Reads are open to whoever reaches the web server (it listens on 127.0.0.1 unless
``web_host`` says otherwise). With accounts, `ivr.web_auth` applies this rule to requests
without a session, and sessions with roles to the others.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiohttp import web

API_PREFIX = "/api/"

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that never change state; every other method under /api/ goes through the access rule."""

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An API failure a handler raises; the middleware turns it into a JSON error response."""

    def __init__(self, error_id: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.error_id = error_id
        """Stable, kebab-case id clients can branch on, e.g. "no-such-call"."""
        self.message = message
        """Human-readable explanation; may change between versions."""
        self.status = status
        """HTTP status code of the response."""


def is_loopback(peer: str | None) -> bool:
    """Whether a peer address is this host's loopback (127.0.0.0/8, ::1, ::ffff:127.x.x.x)."""
    if not peer:
        return False  # unknown peer (e.g. a Unix socket): treat as remote, the safe side
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def check_access(
    method: str, peer: str | None, authorization: str | None, token: str | None
) -> ApiError | None:
    """The access rule for one /api/ request: None when it may proceed, else the error to answer.

    ``authorization`` is the request's Authorization header, ``token`` the configured api_token.
    """
    if method.upper() in READ_METHODS:
        return None
    if token is not None:
        scheme, _, given = (authorization or "").partition(" ")
        # compare_digest: the time taken must not tell how much of a guessed token was right.
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            return None
        return ApiError(
            "unauthorized",
            "this request changes state: send 'Authorization: Bearer <api_token>'",
            status=401,
        )
    if is_loopback(peer):
        return None
    return ApiError(
        "forbidden",
        "without an api_token only clients on the hotline's host may change state; set "
        "HOTLINE_API_TOKEN (16+ characters) on the server and send it as "
        "'Authorization: Bearer <token>'",
        status=403,
    )


def _no_constants(name: str) -> Any:
    # json.loads accepts NaN and Infinity by default; no field of ours can hold them.
    raise ValueError(f"{name} is not a JSON number")


async def json_body(
    request: web.Request, *, allowed: frozenset[str] | None = None
) -> dict[str, Any]:
    """The request body as a JSON object (an empty body is ``{}``).

    Bad JSON raises ``bad-json``; another JSON value than an object, or a field not in
    ``allowed`` (a typo would otherwise be ignored silently), raises ``invalid-request``.
    ``allowed`` None: the caller checks the fields itself.
    """
    text = await request.text()
    if not text.strip():
        return {}
    try:
        body = json.loads(text, parse_constant=_no_constants)
    except ValueError as exc:
        raise ApiError("bad-json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError("invalid-request", "the body must be a JSON object")
    unknown = sorted(set(body) - allowed) if allowed is not None else []
    if unknown:
        raise ApiError(
            "invalid-request",
            f"unknown field {unknown[0]!r}; this request takes "
            f"{', '.join(sorted(allowed or ())) or 'no fields'}",
        )
    return body


def invalid(field: str, problem: str) -> ApiError:
    """An ``invalid-request`` error naming the field."""
    return ApiError("invalid-request", f"{field}: {problem}")


def text_field(
    body: Mapping[str, Any], field: str, *, default: str | None = None, max_length: int = 200
) -> str:
    """A one-line string field; required when ``default`` is None."""
    value = body.get(field, default)
    if value is None:
        raise invalid(field, "required")
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    if len(value) > max_length or "\n" in value or "\r" in value:
        raise invalid(field, f"must be one line of at most {max_length} characters")
    return value


def bool_field(body: Mapping[str, Any], field: str, *, default: bool) -> bool:
    """A true/false field."""
    value = body.get(field, default)
    if not isinstance(value, bool):
        raise invalid(field, "must be true or false")
    return value


def number(value: object) -> float | None:
    """A JSON number as a float (None for anything else, booleans included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value)
    return result if math.isfinite(result) else None
