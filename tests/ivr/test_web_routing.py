"""The agents and queues API on a real loopback server over real Redis (both servers)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from structlog.testing import capture_logs

from ivr.settings import Settings
from ivr.web import create_app
from ivr.web_api import check_access, is_loopback
from routing.archive import IntervalArchive
from routing.model import NewCall, QueueConfig, Strategy
from routing.store import RoutingStore

Serving = Callable[..., AbstractAsyncContextManager[str]]
"""The ``serving`` fixture (tests/conftest.py): ``async with serving(app) as url``."""

TOKEN = "s3cret-token-0123456789"  # noqa: S105 - a test's token, not a credential
T0 = 1_700_000_000.0


class Clock:
    """A manual clock: routing's ``now`` moves only when a test moves it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(redis_client: Redis) -> RoutingStore:
    return RoutingStore(redis_client, tenant="t1")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


class Api:
    """A client of one test server: `call` returns (status, JSON body)."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str | None = None) -> None:
        self.http = http
        self.url = url
        self.token = token

    async def call(
        self, method: str, path: str, body: Any = None, *, raw: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        kwargs: dict[str, Any] = {"headers": headers}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        async with self.http.request(method, self.url + path, **kwargs) as resp:
            assert resp.content_type == "application/json"
            return resp.status, await resp.json()

    async def login(self, agent_id: str, **body: Any) -> dict[str, Any]:
        body.setdefault("skills", {"fault_repair": 5})
        status, answer = await self.call("POST", f"/api/agents/{agent_id}/login", body)
        assert status == 200, answer
        result: dict[str, Any] = answer
        return result


@pytest.fixture
async def api(
    store: RoutingStore, clock: Clock, http: aiohttp.ClientSession, serving: Serving
) -> AsyncIterator[Api]:
    app = create_app(Settings(node_id="node-test", web_port=0), routing=store, clock=clock)
    async with serving(app) as url:
        yield Api(http, url)


def fault_call(call_id: str, priority: int = 0, **context: str) -> NewCall:
    return NewCall(
        call_id, {"fault_repair": 3}, priority=priority, node_id="node-a", context=context
    )


# ---------------------------------------------------------------------- agents


async def test_login_shows_the_agent_not_ready(api: Api) -> None:
    answer = await api.login(
        "1001", name="王芳", contact="sip:1001@10.0.0.5:5062", skills={"fault_repair": 5}
    )
    agent = answer["agent"]
    assert agent["agent_id"] == "1001"
    assert agent["name"] == "王芳"
    assert agent["contact"] == "sip:1001@10.0.0.5:5062"
    assert agent["state"] == "not_ready"
    assert agent["reason"] == "login"
    assert agent["since"] == T0
    assert agent["skills"] == {"fault_repair": 5}
    assert agent["calls"] == 0
    assert agent["call_id"] == ""
    assert answer["offers"] == []

    status, shown = await api.call("GET", "/api/agents/1001")
    assert status == 200
    assert shown == agent
    status, listed = await api.call("GET", "/api/agents")
    assert status == 200
    assert listed == {"agents": [agent]}


async def test_login_ready_and_twice(api: Api) -> None:
    answer = await api.login("1001", ready=True)
    assert answer["agent"]["state"] == "available"
    status, body = await api.call("POST", "/api/agents/1001/login", {"skills": {"fault_repair": 5}})
    assert status == 409
    assert body["error_id"] == "invalid-transition"
    assert "already logged in" in body["message"]


async def test_agents_listed_by_id(api: Api) -> None:
    for agent_id in ("1003", "1001", "1002"):
        await api.login(agent_id)
    _, listed = await api.call("GET", "/api/agents")
    assert [a["agent_id"] for a in listed["agents"]] == ["1001", "1002", "1003"]


async def test_unknown_agent_is_404(api: Api) -> None:
    for method, path in [
        ("GET", "/api/agents/9999"),
        ("POST", "/api/agents/9999/ready"),
        ("POST", "/api/agents/9999/logout"),
        ("POST", "/api/agents/9999/complete"),
    ]:
        status, body = await api.call(method, path)
        assert (status, body["error_id"]) == (404, "no-such-agent"), path
    status, body = await api.call("POST", "/api/agents/9999/not-ready", {"reason": "lunch"})
    assert (status, body["error_id"]) == (404, "no-such-agent")


async def test_bad_requests_name_the_field(api: Api) -> None:
    cases: list[tuple[str, Any, str]] = [
        ("/api/agents/a:b/login", {"skills": {"x": 1}}, "agent_id"),
        ("/api/agents/1001/login", {}, "skills"),
        ("/api/agents/1001/login", {"skills": {}}, "skills"),
        ("/api/agents/1001/login", {"skills": {"fault_repair": 11}}, "skills.fault_repair"),
        ("/api/agents/1001/login", {"skills": {"fault_repair": True}}, "skills.fault_repair"),
        ("/api/agents/1001/login", {"skills": {"bad|skill": 1}}, "skills"),
        ("/api/agents/1001/login", {"skills": {"a": 1}, "ready": "yes"}, "ready"),
        ("/api/agents/1001/login", {"skills": {"a": 1}, "name": 7}, "name"),
        ("/api/agents/1001/login", {"skills": {"a": 1}, "skils": {}}, "skils"),
        ("/api/agents/1001/not-ready", {}, "reason"),
        ("/api/agents/1001/not-ready", {"reason": "  "}, "reason"),
        ("/api/agents/1001/not-ready", {"reason": "x" * 65}, "reason"),
        ("/api/agents/1001/accept", {}, "call_id"),
        ("/api/agents/1001/reject", {"call_id": ""}, "call_id"),
        ("/api/agents/1001/ready", {"now": 5}, "now"),
    ]
    for path, body, field in cases:
        status, answer = await api.call("POST", path, body)
        assert (status, answer["error_id"]) == (400, "invalid-request"), (path, body)
        assert field in answer["message"], (path, body, answer)
    status, answer = await api.call("PUT", "/api/agents/1001/skills", {"skills": []})
    assert (status, answer["error_id"]) == (400, "invalid-request")
    assert "skills" in answer["message"]
    status, answer = await api.call("POST", "/api/agents/1001/login", raw="[1, 2]")
    assert (status, answer["error_id"]) == (400, "invalid-request")
    assert "JSON object" in answer["message"]


async def test_bad_json(api: Api) -> None:
    for raw in ('{"skills": ', "NaN", '{"skills": {"a": Infinity}}'):
        status, body = await api.call("POST", "/api/agents/1001/login", raw=raw)
        assert (status, body["error_id"]) == (400, "bad-json"), raw
    status, body = await api.call("PUT", "/api/queues/billing", raw="{oops")
    assert (status, body["error_id"]) == (400, "bad-json")


async def test_ready_not_ready_logout(api: Api, clock: Clock) -> None:
    await api.login("1001")
    clock.now = T0 + 5
    status, body = await api.call("POST", "/api/agents/1001/ready")
    assert status == 200
    assert body["agent"]["state"] == "available"
    assert body["agent"]["since"] == T0 + 5

    status, body = await api.call("POST", "/api/agents/1001/not-ready", {"reason": "lunch"})
    assert status == 200
    assert (body["agent"]["state"], body["agent"]["reason"]) == ("not_ready", "lunch")
    assert body["reason"] == "lunch"

    status, body = await api.call("POST", "/api/agents/1001/logout")
    assert status == 200
    assert body["agent"]["state"] == "logged_out"
    status, body = await api.call("POST", "/api/agents/1001/logout")
    assert (status, body["error_id"]) == (409, "invalid-transition")
    status, body = await api.call("POST", "/api/agents/1001/not-ready", {"reason": "lunch"})
    assert (status, body["error_id"]) == (409, "invalid-transition")


async def test_complete_without_a_call_is_a_conflict(api: Api) -> None:
    await api.login("1001", ready=True)
    status, body = await api.call("POST", "/api/agents/1001/complete")
    assert (status, body["error_id"]) == (409, "invalid-transition")


async def test_set_skills(api: Api, store: RoutingStore) -> None:
    await api.login("1001", ready=True)
    status, body = await api.call(
        "PUT", "/api/agents/1001/skills", {"skills": {"billing": 4, "fault_repair": 2}}
    )
    assert status == 200
    assert body["agent"]["skills"] == {"billing": 4, "fault_repair": 2}
    assert await store.available("billing") == {"1001"}
    status, body = await api.call("PUT", "/api/agents/9999/skills", {"skills": {"billing": 4}})
    assert (status, body["error_id"]) == (404, "no-such-agent")


async def test_end_to_end_offer_accept_complete(
    api: Api, store: RoutingStore, clock: Clock
) -> None:
    await api.login("1001", contact="sip:1001@10.0.0.5:5062", ready=True)
    clock.now = T0 + 10
    result = await store.enqueue(fault_call("c1", account="1234567890", intent="outage"), T0 + 10)
    assert [o.agent_id for o in result.offers] == ["1001"]

    status, agent = await api.call("GET", "/api/agents/1001")
    assert status == 200
    assert (agent["state"], agent["call_id"]) == ("reserved", "c1")
    status, call = await api.call("GET", "/api/calls/c1")
    assert status == 200
    assert call["state"] == "offered"
    assert call["agent_id"] == "1001"
    assert call["context"] == {"account": "1234567890", "intent": "outage"}
    assert call["skills"] == {"fault_repair": 3}
    assert call["node_id"] == "node-a"

    clock.now = T0 + 14
    status, body = await api.call("POST", "/api/agents/1001/accept", {"call_id": "c1"})
    assert status == 200, body
    assert body["contact"] == "sip:1001@10.0.0.5:5062"
    assert body["call_id"] == "c1"
    assert body["agent"]["state"] == "on_call"
    status, call = await api.call("GET", "/api/calls/c1")
    assert (call["state"], call["agent_id"], call["position"]) == ("connected", "1001", 0)
    queued = await store.call("c1")
    assert queued is not None
    assert queued.state == "connected"

    status, body = await api.call("POST", "/api/agents/1001/logout")
    assert (status, body["error_id"]) == (409, "agent-busy")
    status, body = await api.call("POST", "/api/agents/1001/not-ready", {"reason": "lunch"})
    assert (status, body["error_id"]) == (409, "agent-busy")

    clock.now = T0 + 74
    status, body = await api.call("POST", "/api/agents/1001/complete")
    assert status == 200
    assert body["agent"]["state"] == "wrap_up"
    assert body["agent"]["calls"] == 1
    assert body["agent"]["talk_seconds"] == 60
    status, body = await api.call("GET", "/api/calls/c1")
    assert (status, body["error_id"]) == (404, "no-such-call")
    status, body = await api.call("POST", "/api/agents/1001/ready")
    assert body["agent"]["state"] == "available"


async def test_ready_answers_the_offer_it_made(api: Api, store: RoutingStore) -> None:
    await api.login("1001")
    await store.enqueue(fault_call("c1"), T0)
    status, body = await api.call("POST", "/api/agents/1001/ready")
    assert status == 200
    assert body["offers"] == [{"call_id": "c1", "agent_id": "1001"}]
    assert (body["agent"]["state"], body["agent"]["call_id"]) == ("reserved", "c1")


async def test_reject_puts_the_call_back(api: Api, store: RoutingStore) -> None:
    await api.login("1001", ready=True)
    await store.enqueue(fault_call("c1"), T0)
    status, body = await api.call("POST", "/api/agents/1001/accept", {"call_id": "c2"})
    assert (status, body["error_id"]) == (404, "no-such-reservation")
    status, body = await api.call("POST", "/api/agents/1001/reject", {"call_id": "c2"})
    assert (status, body["error_id"]) == (404, "no-such-reservation")

    status, body = await api.call("POST", "/api/agents/1001/reject", {"call_id": "c1"})
    assert status == 200
    assert (body["agent"]["state"], body["agent"]["reason"]) == ("not_ready", "rejected")
    status, call = await api.call("GET", "/api/calls/c1")
    assert (call["state"], call["position"]) == ("waiting", 1)
    status, body = await api.call("POST", "/api/agents/1001/accept", {"call_id": "c1"})
    assert (status, body["error_id"]) == (404, "no-such-reservation")


async def test_unknown_call_is_404(api: Api) -> None:
    status, body = await api.call("GET", "/api/calls/nope")
    assert (status, body["error_id"]) == (404, "no-such-call")


async def test_state_changes_are_logged_without_the_token(
    store: RoutingStore, clock: Clock, http: aiohttp.ClientSession, serving: Serving
) -> None:
    app = create_app(Settings(api_token=TOKEN), routing=store, clock=clock)
    async with serving(app) as url:
        api = Api(http, url, token=TOKEN)
        with capture_logs() as logs:
            await api.login("1001")
            await api.call("POST", "/api/agents/1001/not-ready", {"reason": "lunch"})
    changes = [e for e in logs if e["event"] == "agent changed"]
    assert [(e["agent_id"], e["action"]) for e in changes] == [
        ("1001", "login"),
        ("1001", "not_ready"),
    ]
    assert changes[1]["reason"] == "lunch"
    assert TOKEN not in repr(logs)


# ---------------------------------------------------------------------- queues


async def test_queues_list_and_show(api: Api, store: RoutingStore) -> None:
    await api.login("1001", skills={"fault_repair": 5, "billing": 2}, ready=True)
    await api.login("1002", skills={"billing": 5})
    await store.enqueue(NewCall("b1", {"billing": 3}, node_id="node-a"), T0)  # no one eligible
    await store.enqueue(NewCall("b2", {"billing": 3}, priority=5, node_id="node-a"), T0 + 1)

    status, body = await api.call("GET", "/api/queues")
    assert status == 200
    queues = {q["skill"]: q for q in body["queues"]}
    assert sorted(queues) == ["billing", "fault_repair"]
    assert queues["billing"]["waiting"] == 2
    assert queues["billing"]["available"] == ["1001"]
    assert queues["billing"]["staffed"] == 2
    assert queues["fault_repair"] == {
        "skill": "fault_repair",
        "waiting": 0,
        "available": ["1001"],
        "staffed": 1,
        "config": queues["fault_repair"]["config"],
    }
    assert queues["fault_repair"]["config"]["strategy"] == "longest_idle"
    assert queues["fault_repair"]["config"]["reservation_timeout"] == 15.0

    status, body = await api.call("GET", "/api/queues/billing")
    assert status == 200
    assert body["skill"] == "billing"
    assert body["available"] == ["1001"]
    # The higher priority is served first.
    assert [(c["call_id"], c["position"]) for c in body["waiting"]] == [("b2", 1), ("b1", 2)]
    assert body["waiting"][0]["priority"] == 5
    assert body["waiting"][1]["waited_seconds"] == 0

    status, body = await api.call("GET", "/api/queues/new_connection")
    assert status == 200
    assert body["waiting"] == []
    assert body["config"]["wrap_up_seconds"] == 30.0
    status, body = await api.call("GET", "/api/queues/bad:skill")
    assert (status, body["error_id"]) == (400, "invalid-request")
    assert "skill" in body["message"]


async def test_put_queue_config(api: Api, store: RoutingStore) -> None:
    status, body = await api.call(
        "PUT",
        "/api/queues/billing",
        {"strategy": "fewest_calls", "reservation_timeout": 20, "max_length": 50},
    )
    assert status == 200, body
    assert body["config"]["strategy"] == "fewest_calls"
    assert body["config"]["reservation_timeout"] == 20.0
    assert body["config"]["max_length"] == 50
    config = await store.queue_config("billing")
    assert config == QueueConfig(
        "billing", strategy=Strategy.FEWEST_CALLS, reservation_timeout=20.0, max_length=50
    )
    # Fields left out keep their value.
    status, body = await api.call("PUT", "/api/queues/billing", {"wrap_up_seconds": 0})
    assert status == 200
    assert (body["config"]["strategy"], body["config"]["wrap_up_seconds"]) == ("fewest_calls", 0)
    status, body = await api.call("GET", "/api/queues/billing")
    assert body["config"]["max_length"] == 50
    status, body = await api.call("PUT", "/api/queues/billing", {"callback_attempts": 5})
    assert (status, body["config"]["callback_attempts"]) == (200, 5)
    assert (await store.queue_config("billing")).callback_attempts == 5


async def test_put_queue_config_errors_name_the_field(api: Api, store: RoutingStore) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"reservation_timeout": 0}, "reservation_timeout"),
        ({"wrap_up_seconds": -1}, "wrap_up_seconds"),
        ({"aging_seconds_per_priority": 0}, "aging_seconds_per_priority"),
        ({"max_length": 1.5}, "max_length"),
        ({"max_length": -1}, "max_length"),
        ({"callback_attempts": 0}, "callback_attempts"),
        ({"callback_attempts": 2.5}, "callback_attempts"),
        ({"max_wait": "10"}, "max_wait"),
        ({"max_wait": True}, "max_wait"),
        ({"strategy": "random"}, "strategy"),
        ({"colour": "blue"}, "colour"),
        ({"skill": "other"}, "skill"),
    ]
    for body, field in cases:
        status, answer = await api.call("PUT", "/api/queues/billing", body)
        assert (status, answer["error_id"]) == (400, "invalid-queue-config"), body
        assert answer["message"].startswith(f"{field}:"), answer
    assert await store.queue_config("billing") == QueueConfig("billing")


async def test_interval_report_outlives_a_trimmed_stream(
    api: Api, store: RoutingStore, clock: Clock
) -> None:
    """Recounted from the stream until the archive keeps the intervals; then from the archive,
    the same figures, also once the stream is trimmed. Other settings are recounted."""
    await api.login("1001", ready=True)
    await store.enqueue(fault_call("c1"), T0)
    clock.now = T0 + 5
    await api.call("POST", "/api/agents/1001/accept", {"call_id": "c1"})  # waited 5 s
    clock.now = T0 + 65
    await api.call("POST", "/api/agents/1001/complete")
    await store.enqueue(fault_call("c2"), T0 + 70)
    await store.hangup("c2", T0 + 100)  # abandoned after 30 s
    await store.tick(T0 + 120)  # the wrap-up ends
    query = f"/api/stats/intervals?since={T0 - 1}"
    status, before = await api.call("GET", query)
    assert (status, before["source"]) == (200, "stream")
    rows = [
        (r["skill"], r["offered"], r["answered"], r["abandoned"], r["handled"])
        for r in before["intervals"]
    ]
    assert rows == [(None, 2, 1, 1, 1), ("fault_repair", 2, 1, 1, 1)]

    assert await IntervalArchive(store).run_once(T0 + 2000) == 2
    await store.redis.xtrim(store.keys.events, maxlen=0, approximate=False)
    status, after = await api.call("GET", query)
    assert (status, after["source"]) == (200, "archive")
    assert after["intervals"] == before["intervals"]
    status, other = await api.call("GET", f"{query}&sl=20,30")
    assert (status, other["source"], other["intervals"]) == (200, "stream", [])


# ---------------------------------------------------------------------- unavailable routing


async def test_no_routing_is_503(http: aiohttp.ClientSession, serving: Serving) -> None:
    async with serving(create_app(Settings())) as url:
        api = Api(http, url)
        for method, path in [("GET", "/api/agents"), ("GET", "/api/queues")]:
            status, body = await api.call(method, path)
            assert (status, body["error_id"]) == (503, "routing-unavailable")
        status, body = await api.call("POST", "/api/agents/1001/ready")
        assert (status, body["error_id"]) == (503, "routing-unavailable")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_redis_down_is_503(http: aiohttp.ClientSession, serving: Serving) -> None:
    # No retries: redis-py's default backoff would only make the test slower.
    down = Redis(port=_closed_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    try:
        app = create_app(Settings(), routing=RoutingStore(down, tenant="t1"))
        async with serving(app) as url:
            api = Api(http, url)
            status, body = await api.call("GET", "/api/agents/1001")
            assert (status, body["error_id"]) == (503, "routing-unavailable")
            status, body = await api.call(
                "POST", "/api/agents/1001/login", {"skills": {"fault_repair": 5}}
            )
            assert (status, body["error_id"]) == (503, "routing-unavailable")
    finally:
        await down.aclose()


# ---------------------------------------------------------------------- access


async def test_token_required_for_changes(
    store: RoutingStore, clock: Clock, http: aiohttp.ClientSession, serving: Serving
) -> None:
    app = create_app(Settings(api_token=TOKEN), routing=store, clock=clock)
    async with serving(app) as url:
        for token in (None, "wrong-token-0123456789", TOKEN[:-1]):
            status, body = await Api(http, url, token).call(
                "POST", "/api/agents/1001/login", {"skills": {"fault_repair": 5}}
            )
            assert (status, body["error_id"]) == (401, "unauthorized"), token
            assert TOKEN not in body["message"]
        assert await store.agent_ids() == set()
        # Reads need no token.
        status, body = await Api(http, url).call("GET", "/api/agents")
        assert (status, body) == (200, {"agents": []})
        answer = await Api(http, url, TOKEN).login("1001")
        assert answer["agent"]["state"] == "not_ready"
        # The scheme is case-insensitive (RFC 7235 section 2.1).
        async with http.post(
            f"{url}/api/agents/1001/ready", headers={"Authorization": f"bearer {TOKEN}"}
        ) as resp:
            assert resp.status == 200


def test_access_rule() -> None:
    remote, local = "192.0.2.7", "127.0.0.1"
    assert check_access("GET", remote, None, None) is None
    assert check_access("HEAD", remote, None, TOKEN) is None
    assert check_access("POST", local, None, None) is None
    assert check_access("put", "::1", None, None) is None
    assert check_access("DELETE", "::ffff:127.0.0.1", None, None) is None
    for peer in (remote, "2001:db8::1", "::ffff:192.0.2.7", None, "", "not-an-address"):
        error = check_access("POST", peer, None, None)
        assert error is not None, peer
        assert (error.status, error.error_id) == (403, "forbidden")
        assert "HOTLINE_API_TOKEN" in error.message
    # With a token, being local is not enough, and the right token is enough from anywhere.
    error = check_access("POST", local, None, TOKEN)
    assert error is not None
    assert (error.status, error.error_id) == (401, "unauthorized")
    assert check_access("POST", remote, f"Bearer {TOKEN}", TOKEN) is None
    for header in (f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x", "Bearer "):
        assert check_access("PUT", remote, header, TOKEN) is not None, header


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("127.1.2.3")
    assert is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("10.0.0.1")
    assert not is_loopback("::ffff:10.0.0.1")
    assert not is_loopback(None)


def _non_loopback_address() -> str | None:
    """An IPv4 address of this host other than loopback (the source of a route outwards)."""
    for probe in ("192.0.2.1", "198.51.100.1", "10.255.255.1"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect((probe, 9))  # UDP connect sends nothing; it only picks a route
            except OSError:
                continue
            address = str(s.getsockname()[0])
            if not is_loopback(address):
                return address
    return None


async def test_non_loopback_peer_may_not_change_state_without_token(
    store: RoutingStore, clock: Clock, http: aiohttp.ClientSession, serving: Serving
) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this host has no address but loopback (test_access_rule covers the rule)")
    app = create_app(Settings(), routing=store, clock=clock)
    async with serving(app, host=address) as url:
        api = Api(http, url)
        status, body = await api.call(
            "POST", "/api/agents/1001/login", {"skills": {"fault_repair": 5}}
        )
        assert (status, body["error_id"]) == (403, "forbidden")
        assert "HOTLINE_API_TOKEN" in body["message"]
        status, body = await api.call("GET", "/api/agents")
        assert (status, body) == (200, {"agents": []})
    assert await store.agent_ids() == set()
