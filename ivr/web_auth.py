"""Who may use the web API: browser sessions with roles, CSRF checks and login throttling, on top
of the bearer-token / loopback rule the CLI uses (`ivr.web_api.check_access`).

For each request under ``/api/``:

1. ``Authorization: Bearer <api_token>`` (when a token is configured): full access, as before.
2. A session cookie: the session must be live (else 401 ``session-expired``), a request that
   changes state must carry the session's CSRF token in ``X-CSRF-Token`` (403 ``csrf-missing`` /
   ``csrf-mismatch``), and the role decides (`authorize`): an agent reaches only their own agent
   and calls (403 ``not-your-agent``, ``not-your-call``, ``forbidden-role``).
3. Neither: without accounts (no ``users.json``), the old rule (`check_access`). With accounts,
   only a non-browser client on this host without an api_token is let through (the CLI; a
   browser always sends ``Sec-Fetch-Site`` or ``Origin``); everyone else gets 401
   ``login-required``.

The cookie is HttpOnly, SameSite=Strict and Secure when ``web_secure_cookies`` is set; with
SameSite=Strict a cross-site page cannot send it, and the CSRF header is the second line.
Sessions live in routing's Redis (`ivr.web_sessions`), so any node honours a session any node
opened, and a logout ends it everywhere; a node without routing keeps them in its memory.
A password changed (or a user removed, or their role changed) in a node's users file ends the
user's sessions on every node as soon as that node sees the change (its next ``/api/``
request); with one users file mounted on every node, at once everywhere. If Redis cannot be
reached, requests with a session answer 503 ``sessions-unavailable``.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from redis.exceptions import RedisError

from ivr.accounts import USERS_FILE, Role, User, UserFile, verify_password
from ivr.settings import Settings
from ivr.web_api import (
    API_PREFIX,
    READ_METHODS,
    ApiError,
    Handler,
    check_access,
    is_loopback,
    json_body,
    text_field,
)
from ivr.web_sessions import (
    LoginFailures,
    MemoryLoginFailures,
    MemorySessions,
    RedisLoginFailures,
    RedisSessions,
    SessionStore,
    cookie_digest,
    password_digest,
)

# Re-exported (mypy strict wants the alias): the desk takes Session from here.
from ivr.web_sessions import Session as Session  # noqa: PLC0414
from routing.store import RoutingStore

log = structlog.get_logger(__name__)

COOKIE = "hotline_session"
CSRF_HEADER = "X-CSRF-Token"
LOGIN_WINDOW_SECONDS = 300.0
"""Failed logins are counted over this window."""
MAX_FAILURES_PER_USER = 5
"""Failed logins for one user name within the window before it is throttled."""
MAX_FAILURES_PER_PEER = 20
"""Failed logins from one address within the window before it is throttled."""

T = TypeVar("T")

_OPEN = frozenset({"/api/session/login"})
"""Routes that need no session (the login itself)."""
_AGENT_ACTIONS = frozenset({"ready", "not-ready", "logout", "accept", "reject", "complete"})
"""What an agent may do to their own agent (login goes through the desk, with the account's
skills; skills are the supervisor's)."""
_AGENT_ROUTES = frozenset(
    {
        "/api/session",
        "/api/session/logout",
        "/api/desk",
        "/api/desk/signin",
        "/api/desk/stream",
        "/api/desk/end",
        "/api/desk/ticket",
        "/api/desk/transfer",
    }
)


@dataclass
class LoginThrottle:
    """Failed logins per user name and per address over a sliding window; time is an
    argument, the failures are kept in ``failures`` (routing's Redis: every node counts
    together, so spreading guesses over nodes gains nothing)."""

    window: float = LOGIN_WINDOW_SECONDS
    per_user: int = MAX_FAILURES_PER_USER
    per_peer: int = MAX_FAILURES_PER_PEER
    failures: LoginFailures = field(default_factory=MemoryLoginFailures)

    async def retry_after(self, username: str, peer: str, now: float) -> float:
        """Seconds until a login may be tried again; 0 when it may be tried now."""
        waits = [0.0]
        for key, limit in ((f"u:{username}", self.per_user), (f"p:{peer}", self.per_peer)):
            times = await self.failures.since(key, now - self.window)
            if len(times) >= limit:
                waits.append(times[-limit] + self.window - now)
        return max(waits)

    async def failed(self, username: str, peer: str, now: float) -> None:
        """Count a failed login."""
        await self.failures.add((f"u:{username}", f"p:{peer}"), now, self.window)

    async def succeeded(self, username: str) -> None:
        """A good password clears the user's count (not the address's)."""
        await self.failures.clear(f"u:{username}")


class Auth:
    """Accounts, sessions and the login throttle of one web app."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], float],
        sessions: SessionStore | None = None,
        failures: LoginFailures | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.users = UserFile(settings.var_dir / USERS_FILE)
        """The accounts file."""
        self.throttle = LoginThrottle(
            failures=failures if failures is not None else MemoryLoginFailures()
        )
        self.sessions: SessionStore = sessions if sessions is not None else MemorySessions()
        """Where sessions are kept (`ivr.web_sessions`)."""
        self._seen: dict[str, User] | None = None

    @property
    def enabled(self) -> bool:
        """Whether accounts exist (then the API needs a login or the token)."""
        return bool(self.users.users())

    async def notice_changes(self) -> None:
        """End, on every node, the sessions of users whose password or role changed, or who
        were removed, since this node last read its users file."""
        users = self.users.users()
        if users is self._seen:
            return  # the file did not change (UserFile keeps the same dict)
        for name, before in (self._seen or {}).items():
            now = users.get(name)
            if now is None or (now.password_hash, now.role) != (before.password_hash, before.role):
                ended = await self.sessions.revoke_user(name)
                log.info("sessions ended", user=name, sessions=ended, reason="account changed")
        # Only once every change is done: if Redis failed half-way, the next request retries.
        self._seen = users

    async def session(self, cookie: str | None) -> Session | None:
        """The live session of a cookie, or None (unknown, expired, user changed or removed)."""
        if not cookie:
            return None
        await self.notice_changes()
        digest = cookie_digest(cookie)
        session = await self.sessions.get(digest)
        if session is None:
            return None
        user = self.users.get(session.username)
        if session.expires <= self.clock():
            await self.sessions.delete(digest)
            return None
        if (
            user is None
            or password_digest(user.password_hash) != session.password_digest
            or user.role is not session.role
        ):
            # Another node may not have the new file yet: end them all, everywhere.
            await self.sessions.revoke_user(session.username)
            return None
        return session

    async def open(self, user: User) -> tuple[str, Session]:
        """A new session for ``user``: (cookie value, session)."""
        cookie = secrets.token_urlsafe(32)
        ttl = self.settings.web_session_hours * 3600
        session = Session(
            user.username,
            user.role,
            secrets.token_urlsafe(24),
            self.clock() + ttl,
            password_digest(user.password_hash),
        )
        await self.sessions.save(cookie_digest(cookie), session, ttl)
        return cookie, session

    async def close(self, cookie: str | None) -> None:
        """End a session (on every node)."""
        if cookie:
            await self.sessions.delete(cookie_digest(cookie))


AUTH_KEY = web.AppKey("auth", Auth)
SESSION_KEY = web.RequestKey("session", Session)
"""Where the middleware puts the request's `Session`."""


def request_session(request: web.Request) -> Session | None:
    """The session the access middleware found for this request."""
    return request.get(SESSION_KEY)


def _canonical(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    return resource.canonical if resource is not None else request.path


def authorize(session: Session, canonical: str, match: dict[str, str]) -> ApiError | None:
    """The role rule for one route (``canonical`` as registered, ``match`` its parameters);
    `/api/calls/{call_id}` is checked against routing by `access` (agents only)."""
    if session.role is Role.SUPERVISOR:
        if canonical.startswith("/api/desk"):
            return ApiError("agents-only", "the agent desktop is for agents", status=403)
        return None
    if canonical in _AGENT_ROUTES or canonical == "/api/calls/{call_id}":
        return None
    prefix = "/api/agents/{agent_id}"
    if canonical == prefix or (
        canonical.startswith(prefix + "/") and canonical[len(prefix) + 1 :] in _AGENT_ACTIONS
    ):
        if match.get("agent_id") != session.agent_id:
            return ApiError("not-your-agent", "an agent may act only as themself", status=403)
        return None
    return ApiError("forbidden-role", f"agents may not use {canonical}", status=403)


async def _check_call(request: web.Request, session: Session) -> None:
    """An agent may read a call only while it is offered to them or connected with them."""
    from ivr.web_routing import ROUTING_KEY  # noqa: PLC0415 - web_routing imports this module

    store = request.app[ROUTING_KEY].store
    if store is None:
        raise ApiError("routing-unavailable", "routing is not connected on this node", 503)
    try:
        call = await store.call(request.match_info["call_id"])
    except (RedisError, OSError):
        raise ApiError("routing-unavailable", "routing's Redis cannot be reached", 503) from None
    if call is None or session.agent_id not in (call.agent_id, *call.offered_to):
        raise ApiError("not-your-call", "this call is not offered to you or yours", status=403)


def _browser(request: web.Request) -> bool:
    headers = request.headers
    return "Origin" in headers or "Sec-Fetch-Site" in headers or "Sec-Fetch-Mode" in headers


def _cross_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return request.headers.get("Sec-Fetch-Site", "same-origin") not in (
            "same-origin",
            "none",
        )
    return origin.split("://", 1)[-1] != request.host


def _refuse(request: web.Request, error: ApiError, **extra: object) -> ApiError:
    log.warning(
        "api request refused",
        method=request.method,
        path=request.path,
        peer=request.remote,
        error_id=error.error_id,
        **extra,
    )
    return error


async def _sessions_step(request: web.Request, step: Awaitable[T]) -> T:
    """Await a step of the session store; an unreachable store answers 503
    ``sessions-unavailable`` (nobody is let in unchecked)."""
    try:
        return await step
    except (RedisError, OSError) as exc:
        log.warning("sessions unreachable", path=request.path, error=str(exc))
        raise ApiError(
            "sessions-unavailable",
            "the session store (routing's Redis) cannot be reached; try again shortly",
            status=503,
        ) from None


def access_middleware(settings: Settings) -> Middleware:
    """The access rule above for every request under /api/."""
    token = settings.api_token

    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX):
            return await handler(request)
        auth = request.app[AUTH_KEY]
        # A password changed in this node's users file ends the user's sessions on every node
        # (a Redis write only when the file changed).
        await _sessions_step(request, auth.notice_changes())
        authorization = request.headers.get("Authorization")
        if token is not None and authorization:
            error = check_access(request.method, request.remote, authorization, token)
            if error is not None:
                raise _refuse(request, error)
            return await handler(request)
        if request.path in _OPEN:
            if _cross_origin(request):
                raise _refuse(request, ApiError("cross-origin", "log in from this site", 403))
            return await handler(request)
        cookie = request.cookies.get(COOKIE)
        if cookie:
            session = await _sessions_step(request, auth.session(cookie))
            if session is None:
                error = ApiError("session-expired", "the session has ended; log in again", 401)
                raise _refuse(request, error)
            if request.method.upper() not in READ_METHODS:
                given = request.headers.get(CSRF_HEADER)
                if not given:
                    error = ApiError("csrf-missing", f"send the {CSRF_HEADER} header", 403)
                    raise _refuse(request, error, user=session.username)
                if not hmac.compare_digest(given.encode(), session.csrf.encode()):
                    error = ApiError("csrf-mismatch", f"{CSRF_HEADER} does not match", 403)
                    raise _refuse(request, error, user=session.username)
            canonical = _canonical(request)
            error = authorize(session, canonical, dict(request.match_info))
            if error is not None:
                raise _refuse(request, error, user=session.username)
            if session.role is Role.AGENT and canonical == "/api/calls/{call_id}":
                await _check_call(request, session)
            request[SESSION_KEY] = session
            return await handler(request)
        if not auth.enabled:
            error = check_access(request.method, request.remote, authorization, token)
            if error is not None:
                raise _refuse(request, error)
            return await handler(request)
        if token is None and is_loopback(request.remote) and not _browser(request):
            return await handler(request)  # the CLI on this host
        raise _refuse(request, ApiError("login-required", "log in first", 401))

    return access


# ---------------------------------------------------------------------- session endpoints


def user_json(user: User | Session) -> dict[str, object]:
    """A user as the API shows it (never the hash)."""
    out: dict[str, object] = {
        "username": user.username,
        "role": user.role.value,
        "agent_id": user.agent_id,
    }
    if isinstance(user, User):
        out["name"] = user.name
    return out


async def login(request: web.Request) -> web.Response:
    """`POST /api/session/login` ``{"username", "password"}``: sets the session cookie and
    answers the user and the CSRF token."""
    auth = request.app[AUTH_KEY]
    body = await json_body(request, allowed=frozenset({"username", "password"}))
    username = text_field(body, "username", max_length=64)
    password = text_field(body, "password", max_length=256)
    peer = request.remote or "?"
    now = auth.clock()
    wait = await _sessions_step(request, auth.throttle.retry_after(username, peer, now))
    if wait > 0:
        log.warning("login throttled", user=username, peer=peer, retry_after=round(wait))
        raise ApiError(
            "login-throttled",
            f"too many failed logins; try again in {int(wait) + 1} s",
            status=429,
        )
    user = auth.users.get(username)
    # argon2 takes tens of milliseconds of CPU: off the event loop.
    if not await asyncio.to_thread(verify_password, user, password):
        await _sessions_step(request, auth.throttle.failed(username, peer, now))
        log.warning("login failed", user=username, peer=peer)
        raise ApiError("bad-credentials", "wrong user name or password", status=401)
    assert user is not None
    await _sessions_step(request, auth.throttle.succeeded(username))
    cookie, session = await _sessions_step(request, auth.open(user))
    log.info("login", user=username, role=user.role.value, peer=peer)
    response = web.json_response({"user": user_json(user), "csrf_token": session.csrf})
    response.set_cookie(
        COOKIE,
        cookie,
        httponly=True,
        samesite="Strict",
        secure=auth.settings.web_secure_cookies,
        path="/",
        max_age=int(auth.settings.web_session_hours * 3600),
    )
    return response


async def whoami(request: web.Request) -> web.Response:
    """`GET /api/session`: the logged-in user and the CSRF token (the cookie is HttpOnly)."""
    session = request_session(request)
    if session is None:
        raise ApiError("login-required", "log in first", status=401)
    user = request.app[AUTH_KEY].users.get(session.username)
    body = user_json(user if user is not None else session)
    return web.json_response({"user": body, "csrf_token": session.csrf})


async def logout(request: web.Request) -> web.Response:
    """`POST /api/session/logout`: ends the session."""
    session = request_session(request)
    await _sessions_step(request, request.app[AUTH_KEY].close(request.cookies.get(COOKIE)))
    if session is not None:
        log.info("logout", user=session.username, peer=request.remote)
    response = web.json_response({"logged_out": True})
    response.del_cookie(COOKIE, path="/")
    return response


def add_auth_routes(
    app: web.Application,
    settings: Settings,
    clock: Callable[[], float],
    routing: RoutingStore | None = None,
) -> None:
    """Accounts for ``app`` and the session endpoints; sessions in ``routing``'s Redis (its
    tenant), or in memory without it."""
    if routing is None:
        app[AUTH_KEY] = Auth(settings, clock)
    else:
        tenant = routing.keys.tenant
        app[AUTH_KEY] = Auth(
            settings,
            clock,
            RedisSessions(routing.redis, tenant),
            RedisLoginFailures(routing.redis, tenant),
        )
    app.router.add_routes(
        [
            web.post("/api/session/login", login),
            web.get("/api/session", whoami),
            web.post("/api/session/logout", logout),
        ]
    )
