"""Accounts and access on a real loopback server over real Redis: every API route without a
login, an agent against another agent's resources, stale sessions, CSRF, login throttling."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis
from yarl import URL

from ivr.accounts import Role, UserFile
from ivr.cli import main
from ivr.settings import Settings
from ivr.web import create_app
from ivr.web_auth import COOKIE, CSRF_HEADER, LoginThrottle
from ivr.web_sessions import (
    LoginFailures,
    MemoryLoginFailures,
    RedisLoginFailures,
    SessionKeys,
)
from routing.model import NewCall
from routing.store import RoutingStore

Serving = Callable[..., AbstractAsyncContextManager[str]]
TOKEN = "s3cret-token-0123456789"  # noqa: S105 - a test's token, not a credential
PASSWORD = "correct horse battery"  # noqa: S105 - a test account's password
T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def users_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One accounts file for the module (argon2 hashing is slow on purpose)."""
    var = tmp_path_factory.mktemp("var")
    users = UserFile(var / "users.json")
    users.add("1001", Role.AGENT, PASSWORD, name="王芳", skills={"fault_repair": 5})
    users.add("1002", Role.AGENT, PASSWORD, name="李强", skills={"fault_repair": 5})
    users.add("boss", Role.SUPERVISOR, PASSWORD, name="班长")
    return var


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(redis_client: Redis) -> RoutingStore:
    return RoutingStore(redis_client, tenant="t1")


class Browser:
    """A client with its own cookie jar, sending the headers a browser sends."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),  # unsafe: cookies for an IP address
            timeout=aiohttp.ClientTimeout(total=10),
        )
        self.csrf = ""

    async def call(
        self, method: str, path: str, body: Any = None, *, csrf: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Sec-Fetch-Site": "same-origin"}
        token = self.csrf if csrf is None else csrf
        if token:
            headers[CSRF_HEADER] = token
        async with self.http.request(method, self.url + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json()

    async def login(self, username: str, password: str = PASSWORD) -> tuple[int, Any]:
        status, body = await self.call(
            "POST", "/api/session/login", {"username": username, "password": password}
        )
        if status == 200:
            self.csrf = body["csrf_token"]
        return status, body


@pytest.fixture
async def site(
    store: RoutingStore, clock: Clock, users_dir: Path, serving: Serving
) -> AsyncIterator[str]:
    app = create_app(Settings(var_dir=users_dir, api_token=TOKEN), routing=store, clock=clock)
    async with serving(app) as url:
        yield url


@pytest.fixture
async def browsers(site: str) -> AsyncIterator[Callable[[], Browser]]:
    made: list[Browser] = []

    def make() -> Browser:
        made.append(Browser(site))
        return made[-1]

    yield make
    for browser in made:
        await browser.http.close()


def api_routes(app: web.Application) -> list[tuple[str, str]]:
    """Every /api/ route of the app, with sample parameters."""
    routes = []
    for route in app.router.routes():
        info = route.resource.canonical if route.resource else ""
        if not info.startswith("/api/") or route.method == "HEAD":
            continue
        path = info.replace("{agent_id}", "1002").replace("{call_id}", "c1")
        path = path.replace("{skill}", "fault_repair").replace("{ticket_id}", "T1")
        path = path.replace("{outage_id}", "1").replace("{", "").replace("}", "")
        routes.append((route.method, path))
    return routes


async def test_every_api_route_needs_a_login(
    browsers: Callable[[], Browser], users_dir: Path
) -> None:
    routes = api_routes(create_app(Settings(var_dir=users_dir)))
    assert len(routes) > 20
    anonymous = browsers()
    for method, path in routes:
        status, body = await anonymous.call(method, path)
        if path == "/api/session/login":
            assert (status, body["error_id"]) == (400, "invalid-request")
            continue
        assert (status, body["error_id"]) == (401, "login-required"), (method, path)


async def test_agent_reaches_only_their_own(
    browsers: Callable[[], Browser], store: RoutingStore, users_dir: Path
) -> None:
    agent = browsers()
    assert (await agent.login("1001"))[0] == 200
    await store.login("1002", skills={"fault_repair": 5}, now=T0, ready=True)
    await store.enqueue(NewCall("c1", {"fault_repair": 3}, context={"intent": "停电"}), T0)
    # c1 is offered to 1002: 1001 may not read it, nor act as 1002.
    forbidden = [
        ("GET", "/api/agents/1002", "not-your-agent"),
        ("POST", "/api/agents/1002/ready", "not-your-agent"),
        ("POST", "/api/agents/1002/not-ready", "not-your-agent"),
        ("POST", "/api/agents/1002/logout", "not-your-agent"),
        ("POST", "/api/agents/1002/accept", "not-your-agent"),
        ("GET", "/api/calls/c1", "not-your-call"),
        ("GET", "/api/calls/nope", "not-your-call"),
        ("GET", "/api/agents", "forbidden-role"),
        ("POST", "/api/agents/1001/login", "forbidden-role"),
        ("PUT", "/api/agents/1001/skills", "forbidden-role"),
        ("GET", "/api/stats/live", "forbidden-role"),
        ("GET", "/api/queues", "forbidden-role"),
        ("PUT", "/api/queues/fault_repair", "forbidden-role"),
        ("GET", "/api/tickets", "forbidden-role"),
    ]
    for method, path, error_id in forbidden:
        status, body = await agent.call(method, path, {})
        assert (status, body["error_id"]) == (403, error_id), (method, path)
    assert (await store.agent("1002")).state.value == "reserved"  # type: ignore[union-attr]
    # Their own: allowed.
    await store.login("1001", skills={"fault_repair": 5}, now=T0)
    status, body = await agent.call("GET", "/api/agents/1001")
    assert (status, body["state"]) == (200, "not_ready")
    status, body = await agent.call("POST", "/api/agents/1001/ready")
    assert (status, body["agent"]["state"]) == (200, "available")
    # The supervisor sees everything and may force an agent not ready.
    boss = browsers()
    assert (await boss.login("boss"))[0] == 200
    assert (await boss.call("GET", "/api/calls/c1"))[0] == 200
    assert (await boss.call("GET", "/api/agents"))[0] == 200
    status, body = await boss.call("POST", "/api/agents/1001/not-ready", {"reason": "supervisor"})
    assert (status, body["agent"]["reason"]) == (200, "supervisor")
    status, body = await boss.call("POST", "/api/agents/1001/logout")
    assert (status, body["agent"]["state"]) == (200, "logged_out")
    status, body = await boss.call("GET", "/api/desk")
    assert (status, body["error_id"]) == (403, "agents-only")


async def test_csrf_token_required_for_changes(
    browsers: Callable[[], Browser], store: RoutingStore
) -> None:
    agent = browsers()
    await agent.login("1001")
    await store.login("1001", skills={"fault_repair": 5}, now=T0)
    status, body = await agent.call("POST", "/api/agents/1001/ready", csrf="")
    assert (status, body["error_id"]) == (403, "csrf-missing")
    status, body = await agent.call("POST", "/api/agents/1001/ready", csrf="forged")
    assert (status, body["error_id"]) == (403, "csrf-mismatch")
    assert (await store.agent("1001")).state.value == "not_ready"  # type: ignore[union-attr]
    # Reads need no CSRF token.
    assert (await agent.call("GET", "/api/session", csrf=""))[0] == 200


async def test_stale_sessions_are_refused(
    browsers: Callable[[], Browser], clock: Clock, users_dir: Path
) -> None:
    agent = browsers()
    _, body = await agent.login("1001")
    assert body["user"] == {"username": "1001", "role": "agent", "agent_id": "1001", "name": "王芳"}
    assert (await agent.call("GET", "/api/session"))[0] == 200
    clock.now += 12 * 3600 + 1
    status, body = await agent.call("GET", "/api/session")
    assert (status, body["error_id"]) == (401, "session-expired")
    # Logged out: the old cookie is refused even when sent again.
    other = browsers()
    await other.login("1002")
    cookie = other.http.cookie_jar.filter_cookies(URL(other.url))[COOKIE].value
    assert (await other.call("POST", "/api/session/logout"))[0] == 200
    other.http.cookie_jar.update_cookies({COOKIE: cookie})
    status, body = await other.call("GET", "/api/session")
    assert (status, body["error_id"]) == (401, "session-expired")


async def test_password_change_ends_sessions(
    browsers: Callable[[], Browser], users_dir: Path
) -> None:
    agent = browsers()
    await agent.login("1002")
    UserFile(users_dir / "users.json").set_password("1002", PASSWORD)  # a new salt: a new hash
    status, body = await agent.call("GET", "/api/session")
    assert (status, body["error_id"]) == (401, "session-expired")


async def test_login_brute_force_is_throttled(browsers: Callable[[], Browser]) -> None:
    attacker = browsers()
    for _ in range(5):
        status, body = await attacker.login("1001", "wrong-password")
        assert (status, body["error_id"]) == (401, "bad-credentials")
    status, body = await attacker.login("1001", "wrong-password")
    assert (status, body["error_id"]) == (429, "login-throttled")
    # Even the right password waits now; another user from the same address does not.
    status, body = await attacker.login("1001")
    assert (status, body["error_id"]) == (429, "login-throttled")
    assert (await attacker.login("1002"))[0] == 200
    status, body = await attacker.login("nobody", "whatever-it-is")
    assert (status, body["error_id"]) == (401, "bad-credentials")


async def test_throttle_per_user_and_per_address() -> None:
    await throttle_rules(MemoryLoginFailures())


async def test_throttle_counts_in_redis_for_every_node(redis_client: Redis) -> None:
    await throttle_rules(RedisLoginFailures(redis_client, tenant="t1"))


async def throttle_rules(failures: LoginFailures) -> None:
    throttle = LoginThrottle(window=300, per_user=5, per_peer=20, failures=failures)
    for i in range(5):
        assert await throttle.retry_after("1001", "10.0.0.1", T0 + i) == 0
        await throttle.failed("1001", "10.0.0.1", T0 + i)
    assert await throttle.retry_after("1001", "10.0.0.9", T0 + 10) == pytest.approx(290)
    assert await throttle.retry_after("1001", "10.0.0.9", T0 + 299) == pytest.approx(1)
    assert await throttle.retry_after("1001", "10.0.0.9", T0 + 300) == 0  # the first aged out
    for i in range(20):
        await throttle.failed(f"user{i}", "10.0.0.2", T0)  # one instant: each still counts
    assert await throttle.retry_after("someone", "10.0.0.2", T0 + 1) > 0
    assert await throttle.retry_after("someone", "10.0.0.3", T0 + 1) == 0
    for _ in range(5):
        await throttle.failed("1002", "10.0.0.4", T0)
    await throttle.succeeded("1002")
    assert await throttle.retry_after("1002", "10.0.0.5", T0) == 0


async def test_redis_failures_expire_with_their_window(redis_client: Redis) -> None:
    failures = RedisLoginFailures(redis_client, tenant="t1")
    await failures.add(("u:1001", "p:10.0.0.1"), T0, 300)
    await failures.add(("u:1001", "p:10.0.0.1"), T0 + 400, 300)  # the first is out of the window
    key = SessionKeys("t1").login_failures("u:1001")
    assert key == "hotline:{t1}:web:login:u:1001"
    assert await redis_client.zcard(key) == 1
    assert 290 < await redis_client.ttl(key) <= 300


async def test_cookie_flags(site: str, serving: Serving, users_dir: Path) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{site}/api/session/login", json={"username": "boss", "password": PASSWORD}
        ) as resp:
            header = resp.headers["Set-Cookie"]
        assert "HttpOnly" in header
        assert "SameSite=Strict" in header
        assert "Secure" not in header
        app = create_app(Settings(var_dir=users_dir, web_secure_cookies=True))
        async with (
            serving(app) as url,
            http.post(
                f"{url}/api/session/login", json={"username": "boss", "password": PASSWORD}
            ) as resp,
        ):
            assert "Secure" in resp.headers["Set-Cookie"]
        # A login posted from another site is refused.
        async with http.post(
            f"{site}/api/session/login",
            json={"username": "boss", "password": PASSWORD},
            headers={"Origin": "http://evil.example"},
        ) as resp:
            assert (resp.status, (await resp.json())["error_id"]) == (403, "cross-origin")


async def test_cli_keeps_its_access(site: str, store: RoutingStore) -> None:
    """The bearer token still works with accounts on; without it, a non-browser is refused."""
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{site}/api/agents", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as resp:
            assert resp.status == 200
        async with http.get(f"{site}/api/agents") as resp:
            assert (resp.status, (await resp.json())["error_id"]) == (401, "login-required")


async def test_loopback_cli_without_token(
    store: RoutingStore, users_dir: Path, serving: Serving
) -> None:
    """Without an api_token, a non-browser client on this host keeps working; a browser must
    log in."""
    app = create_app(Settings(var_dir=users_dir), routing=store)
    async with serving(app) as url, aiohttp.ClientSession() as http:
        async with http.get(f"{url}/api/agents") as resp:
            assert resp.status == 200
        async with http.get(f"{url}/api/agents", headers={"Sec-Fetch-Site": "none"}) as resp:
            assert (resp.status, (await resp.json())["error_id"]) == (401, "login-required")


def test_users_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    import io

    monkeypatch.setenv("HOTLINE_VAR_DIR", str(tmp_path))
    monkeypatch.setattr("sys.stdin", io.StringIO("password-one\n"))
    args = ["users", "add", "1003", "--skill", "fault_repair=4", "--password-stdin"]
    assert main(args) == 0
    user = UserFile(tmp_path / "users.json").get("1003")
    assert user is not None
    assert (user.role, user.skills) == (Role.AGENT, {"fault_repair": 4})
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in (tmp_path / "users.json").read_text()
    monkeypatch.setattr("sys.stdin", io.StringIO("password-two\n"))
    assert main([*args[:3], "--password-stdin"]) == 1
    assert "exists" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["users", "passwd", "1003", "--password-stdin"]) == 1
    monkeypatch.setattr("sys.stdin", io.StringIO("password-two\n"))
    assert main(["users", "passwd", "1003", "--password-stdin"]) == 0
    assert (tmp_path / "users.json").stat().st_mode & 0o777 == 0o600
