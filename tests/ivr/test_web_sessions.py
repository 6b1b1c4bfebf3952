"""Sessions shared by all nodes: two web apps (two nodes, each with its own copy of the users
file) on one real Redis. A session opened on one is honoured by the other; a logout or a
password change on one ends it on both; Redis expires what ends; an unreachable Redis lets
nobody in; failed logins count together on every node."""

from __future__ import annotations

import shutil
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from ivr.accounts import Role, UserFile
from ivr.settings import Settings
from ivr.web import create_app
from ivr.web_auth import COOKIE, CSRF_HEADER
from ivr.web_sessions import RedisSessions, Session, SessionKeys, cookie_digest
from routing.store import RoutingStore

Serving = Callable[..., AbstractAsyncContextManager[str]]
PASSWORD = "correct horse battery"  # noqa: S105 - a test account's password
T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("users") / "users.json"
    users = UserFile(path)
    users.add("1001", Role.AGENT, PASSWORD, name="王芳", skills={"fault_repair": 5})
    users.add("boss", Role.SUPERVISOR, PASSWORD, name="班长")
    return path


class Node:
    """One web app serving at ``url``, with its own var_dir and its own Redis client."""

    def __init__(self, url: str, var_dir: Path, store: RoutingStore) -> None:
        self.url = url
        self.var_dir = var_dir
        self.store = store


@pytest.fixture
async def nodes(
    redis_server: Any, users_file: Path, tmp_path: Path, serving: Serving
) -> AsyncIterator[tuple[Node, Node]]:
    clock = Clock()
    made: list[Node] = []
    async with AsyncExitStack() as stack:
        for name in ("node-a", "node-b"):
            var = tmp_path / name
            var.mkdir()
            shutil.copy(users_file, var / "users.json")  # each node its own copy
            client = Redis.from_url(redis_server.url, decode_responses=True)
            stack.push_async_callback(client.aclose)
            if not made:
                await client.flushall()
            store = RoutingStore(client, tenant="t1")
            app = create_app(Settings(var_dir=var, node_id=name), routing=store, clock=clock)
            url = await stack.enter_async_context(serving(app))
            made.append(Node(url, var, store))
        yield made[0], made[1]


class Browser:
    """A browser's cookie and CSRF token, sent to whichever node."""

    def __init__(self) -> None:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self.cookie = ""
        self.csrf = ""

    async def call(self, node: Node, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Sec-Fetch-Site": "same-origin", CSRF_HEADER: self.csrf}
        cookies = {COOKIE: self.cookie} if self.cookie else {}
        async with self.http.request(
            method, node.url + path, json=body, headers=headers, cookies=cookies
        ) as resp:
            if COOKIE in resp.cookies and resp.cookies[COOKIE].value:
                self.cookie = resp.cookies[COOKIE].value
            return resp.status, await resp.json()

    async def login(self, node: Node, username: str) -> tuple[int, Any]:
        status, body = await self.call(
            node, "POST", "/api/session/login", {"username": username, "password": PASSWORD}
        )
        if status == 200:
            self.csrf = body["csrf_token"]
        return status, body


@pytest.fixture
async def browsers() -> AsyncIterator[Callable[[], Browser]]:
    made: list[Browser] = []

    def make() -> Browser:
        made.append(Browser())
        return made[-1]

    yield make
    for browser in made:
        await browser.http.close()


async def test_a_session_from_one_node_works_on_the_other(
    nodes: tuple[Node, Node], browsers: Callable[[], Browser], redis_client: Redis
) -> None:
    a, b = nodes
    agent = browsers()
    assert (await agent.login(a, "1001"))[0] == 200
    status, body = await agent.call(b, "GET", "/api/session")
    assert (status, body["user"]["username"], body["csrf_token"]) == (200, "1001", agent.csrf)
    # A change on node B with the CSRF token node A handed out.
    await b.store.login("1001", skills={"fault_repair": 5}, now=T0)
    status, body = await agent.call(b, "POST", "/api/agents/1001/ready")
    assert (status, body["agent"]["state"]) == (200, "available")
    # In Redis under the tenant's hash tag, by digest (no cookie), ending with the session.
    keys = SessionKeys("t1")
    key = keys.session(cookie_digest(agent.cookie))
    assert key.startswith("hotline:{t1}:web:session:")
    assert agent.cookie not in key
    stored = await redis_client.hgetall(key)
    assert stored["username"] == "1001"
    assert "argon2" not in repr(stored)  # no password hash copied into Redis
    ttl = await redis_client.ttl(key)
    assert 12 * 3600 - 60 < ttl <= 12 * 3600
    assert await redis_client.smembers(keys.user_sessions("1001")) == {cookie_digest(agent.cookie)}


async def test_logout_on_one_node_ends_the_session_on_both(
    nodes: tuple[Node, Node], browsers: Callable[[], Browser], redis_client: Redis
) -> None:
    a, b = nodes
    boss = browsers()
    await boss.login(a, "boss")
    assert (await boss.call(a, "GET", "/api/session"))[0] == 200
    assert (await boss.call(b, "POST", "/api/session/logout"))[0] == 200
    for node in (a, b):
        status, body = await boss.call(node, "GET", "/api/session")
        assert (status, body["error_id"]) == (401, "session-expired"), node.url
    assert await redis_client.keys("*web:*") == []


async def test_password_change_on_one_node_ends_sessions_everywhere(
    nodes: tuple[Node, Node], browsers: Callable[[], Browser]
) -> None:
    a, b = nodes
    agent, other = browsers(), browsers()
    await agent.login(a, "1001")
    second = browsers()
    await second.login(b, "1001")  # a second session of the same user, from node B
    await other.login(b, "boss")
    assert (await agent.call(b, "GET", "/api/session"))[0] == 200
    # `hotline users passwd` on node A: only A's copy of the file changes.
    UserFile(a.var_dir / "users.json").set_password("1001", PASSWORD)
    # Node A sees it at its next request, whoever makes it...
    with capture_logs() as logs:
        assert (await other.call(a, "GET", "/api/session"))[0] == 200
    ended = [e for e in logs if e["event"] == "sessions ended"]
    assert [(e["user"], e["sessions"]) for e in ended] == [("1001", 2)]
    # ...and node B, whose file still has the old password, refuses both sessions.
    for browser in (agent, second):
        status, body = await browser.call(b, "GET", "/api/session")
        assert (status, body["error_id"]) == (401, "session-expired")
    assert (await other.call(b, "GET", "/api/session"))[0] == 200  # others keep theirs


async def test_guesses_spread_over_nodes_are_throttled_together(
    nodes: tuple[Node, Node], browsers: Callable[[], Browser]
) -> None:
    a, b = nodes
    attacker = browsers()

    async def guess(node: Node) -> tuple[int, Any]:
        return await attacker.call(
            node, "POST", "/api/session/login", {"username": "1001", "password": "guess"}
        )

    for node in (a, b, a, b, a):  # five wrong passwords, alternating nodes
        status, body = await guess(node)
        assert (status, body["error_id"]) == (401, "bad-credentials")
    for node in (a, b):  # the sixth is refused on either node, even with the right password
        status, body = await guess(node)
        assert (status, body["error_id"]) == (429, "login-throttled")
        status, body = await attacker.login(node, "1001")
        assert (status, body["error_id"]) == (429, "login-throttled")
    assert (await browsers().login(b, "boss"))[0] == 200  # another user is not held up


async def test_store_ends_one_or_all_of_a_users_sessions(redis_client: Redis) -> None:
    sessions = RedisSessions(redis_client, "t1")
    keys = sessions.keys

    def session(username: str) -> Session:
        return Session(username, Role.AGENT, "csrf", T0 + 60, "pw")

    for digest, user in (("d1", "1001"), ("d2", "1001"), ("d3", "1002")):
        await sessions.save(digest, session(user), 60)
    assert await sessions.get("d1") == session("1001")
    await sessions.delete("d1")
    assert await sessions.get("d1") is None
    assert await redis_client.smembers(keys.user_sessions("1001")) == {"d2"}
    assert await sessions.revoke_user("1001") == 1
    assert await sessions.get("d2") is None
    assert await sessions.get("d3") == session("1002")
    assert await sessions.revoke_user("nobody") == 0
    await sessions.delete("unknown")  # harmless
    # Something else under a session key is no session.
    await redis_client.hset(keys.session("d4"), mapping={"username": "x"})
    assert await sessions.get("d4") is None


async def test_unreachable_redis_lets_nobody_in(
    users_file: Path, tmp_path: Path, serving: Serving, browsers: Callable[[], Browser]
) -> None:
    shutil.copy(users_file, tmp_path / "users.json")
    port = _closed_port()
    client = Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1)
    app = create_app(Settings(var_dir=tmp_path), routing=RoutingStore(client, tenant="t1"))
    try:
        async with serving(app) as url:
            node = Node(url, tmp_path, RoutingStore(client, tenant="t1"))
            browser = browsers()
            status, body = await browser.login(node, "boss")
            assert (status, body["error_id"]) == (503, "sessions-unavailable")
            browser.cookie = "made-up"
            status, body = await browser.call(node, "GET", "/api/session")
            assert (status, body["error_id"]) == (503, "sessions-unavailable")
    finally:
        await client.aclose()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


def test_cookie_digest_is_not_the_cookie() -> None:
    assert cookie_digest("abc") != "abc"
    assert len(cookie_digest("abc")) == 64
