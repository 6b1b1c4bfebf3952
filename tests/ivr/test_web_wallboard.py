"""The wallboard and the desk API over real Redis: figures from the event stream, one hub per
node fanned out to every stream, alerts, the desk's screen pop and offer deadline."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from ivr import web_wallboard
from ivr.accounts import Role, UserFile
from ivr.settings import Settings
from ivr.web import create_app
from ivr.web_auth import CSRF_HEADER
from ivr.web_desk import mask_number
from ivr.web_wallboard import HUB_KEY, day_start
from routing.model import NewCall, QueueConfig
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
def users_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    var = tmp_path_factory.mktemp("var")
    users = UserFile(var / "users.json")
    users.add("1001", Role.AGENT, PASSWORD, name="王芳", skills={"fault_repair": 5})
    users.add("boss", Role.SUPERVISOR, PASSWORD)
    return var


@pytest.fixture
def store(redis_client: Redis) -> RoutingStore:
    return RoutingStore(redis_client, tenant="t1")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def site(
    store: RoutingStore, clock: Clock, users_dir: Path, serving: Serving
) -> AsyncIterator[tuple[str, Any]]:
    settings = Settings(var_dir=users_dir, wallboard_longest_wait_alert=30)
    app = create_app(settings, routing=store, clock=clock)
    async with serving(app) as url:
        yield url, app


async def logged_in(url: str, username: str) -> tuple[aiohttp.ClientSession, str]:
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with http.post(
        f"{url}/api/session/login", json={"username": username, "password": PASSWORD}
    ) as resp:
        assert resp.status == 200
        csrf = (await resp.json())["csrf_token"]
    return http, csrf


async def next_event(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    """The next SSE data message (heartbeats skipped)."""
    async with asyncio.timeout(5):
        while True:
            line = (await resp.content.readline()).decode()
            if line.startswith("data: "):
                data: dict[str, Any] = json.loads(line[6:])
                return data


def test_day_start_is_midnight_in_china() -> None:
    # 2023-11-14 22:13:20 UTC is 2023-11-15 06:13:20 in UTC+8; that day began at 16:00 UTC.
    assert day_start(T0) == 1_699_977_600.0
    assert day_start(1_699_977_600.0) == 1_699_977_600.0
    assert mask_number("13800138000") == "138****8000"
    assert mask_number("110") == "***"


async def test_wallboard_follows_the_stream(
    site: tuple[str, Any], store: RoutingStore, clock: Clock
) -> None:
    url, app = site
    http, _ = await logged_in(url, "boss")
    async with http:
        await store.login("1001", skills={"fault_repair": 5}, now=T0, ready=True)
        async with http.get(f"{url}/api/wallboard/stream") as stream:
            first = await next_event(stream)
            assert first["overall"]["waiting"] == 0
            assert [a["state"] for a in first["agents"]] == ["available"]
            await store.enqueue(NewCall("c1", {"fault_repair": 3}), T0)  # offered to 1001
            await store.enqueue(NewCall("c2", {"fault_repair": 3}), T0)  # waits
            clock.now = T0 + 40
            board = await next_event(stream)
            while board["overall"]["waiting"] != 1:
                board = await next_event(stream)
            queue = board["queues"][0]
            assert (queue["skill"], queue["waiting"], queue["offered"]) == ("fault_repair", 1, 1)
            assert queue["longest_wait"] == 40
            assert queue["today"]["offered"] == 2
            assert {"skill": "fault_repair", "alert": "longest-wait", "value": 40.0,
                    "threshold": 30.0} in board["alerts"]  # fmt: skip
            await store.accept("1001", "c1", T0 + 40)
            await store.hangup("c2", T0 + 50)  # abandoned after 50 s
            clock.now = T0 + 60
            while board["overall"]["today"]["abandoned"] != 1:
                board = await next_event(stream)
            today = board["overall"]["today"]
            assert (today["answered"], today["service_level"], today["asa"]) == (1, 0.0, 40.0)
            assert any(a["alert"] == "service-level" for a in board["alerts"])
        # A second stream costs nothing more: the same hub, the same board.
        hub = app[HUB_KEY]
        version = hub.version
        async with http.get(f"{url}/api/wallboard") as resp:
            assert resp.status == 200
            assert (await resp.json())["overall"]["today"]["answered"] == 1
        assert hub.version >= version


async def test_desk_offer_and_screen_pop(
    site: tuple[str, Any], store: RoutingStore, clock: Clock
) -> None:
    url, _ = site
    http, csrf = await logged_in(url, "1001")
    headers = {CSRF_HEADER: csrf}
    async with http:
        async with http.get(f"{url}/api/desk") as resp:
            assert (await resp.json())["agent"] is None
        async with http.post(
            f"{url}/api/desk/signin", json={"contact": "sip:1001@10.0.0.5"}, headers=headers
        ) as resp:
            body = await resp.json()
            assert resp.status == 200, body
        assert body["agent"]["skills"] == {"fault_repair": 5}
        assert body["agent"]["contact"] == "sip:1001@10.0.0.5"
        async with http.post(f"{url}/api/agents/1001/ready", headers=headers) as resp:
            assert resp.status == 200
        await store.configure_queue(QueueConfig("fault_repair", reservation_timeout=20), T0)
        async with http.get(f"{url}/api/desk/stream") as stream:
            state = await next_event(stream)
            assert state["agent"]["state"] == "available"
            context = {"caller": "13800138000", "intent": "停电报修", "account": "1234567890"}
            with capture_logs() as logs:
                await store.enqueue(NewCall("c1", {"fault_repair": 3}, context=context), T0 + 1)
                state = await next_event(stream)
            assert state["agent"]["state"] == "reserved"
            assert state["offer"] == {
                "call_id": "c1",
                "expires_at": T0 + 21,
                "timeout_seconds": 20,
            }
            assert state["call"]["context"] == context
            pop = [e for e in logs if e["event"] == "screen pop"]
            assert pop[0]["caller"] == "138****8000"
            assert "13800138000" not in repr(logs)
        async with http.get(f"{url}/api/calls/c1") as resp:
            assert resp.status == 200


async def test_hub_stops_when_nobody_watches(
    store: RoutingStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_wallboard, "IDLE_SECONDS", 0.0)
    hub = web_wallboard.WallboardHub(store, clock, Settings())
    updates = hub.updates()
    await anext(updates)
    assert hub.board is not None
    task = hub._task
    assert task is not None
    await updates.aclose()
    await asyncio.wait_for(task, 5)  # it ends by itself
    assert (hub._task, hub.board) == (None, None)
    # The next browser starts it afresh.
    await store.login("1001", skills={"fault_repair": 5}, now=T0)
    updates = hub.updates()
    await anext(updates)
    assert [a.agent_id for a in hub.agents.values()] == ["1001"]
    await updates.aclose()
    await hub.close()


async def test_chart_and_surge_on_the_board(
    store: RoutingStore, clock: Clock, users_dir: Path, serving: Serving
) -> None:
    """The chart carries the interval report's figures, per queue and overall, live; a burst
    of calls after a quiet baseline raises the surge alert, per queue and for all queues."""
    settings = Settings(
        var_dir=users_dir,
        wallboard_chart_hours=2,
        wallboard_surge_window_seconds=300,
        wallboard_surge_min_calls=3,
        wallboard_surge_factor=2,
    )
    app = create_app(settings, routing=store, clock=clock)
    start = T0 - T0 % 900  # an interval's start
    clock.now = start + 600
    async with serving(app) as url:
        http, _ = await logged_in(url, "boss")
        async with http:
            # An hour ago: two calls, one answered; a quarter later, one abandoned.
            await store.login("1001", skills={"billing": 5}, now=start - 3600, ready=True)
            await store.enqueue(NewCall("a1", {"billing": 3}), start - 3600 + 10)
            await store.enqueue(NewCall("a2", {"billing": 3}), start - 3600 + 20)
            await store.accept("1001", "a1", start - 3600 + 30)
            await store.hangup("a2", start - 2700 - 60)  # abandoned, counted at its entry
            await store.enqueue(NewCall("b1", {"fault_repair": 3}), start - 1800)
            await store.hangup("b1", start - 1800 + 30)
            async with http.get(f"{url}/api/wallboard/stream") as stream:
                board = await next_event(stream)
                history = board["history"]
                assert history["interval_seconds"] == 900
                assert len(history["starts"]) == 8
                assert history["starts"][-1] == start
                index = history["starts"].index(start - 3600)
                assert history["overall"]["offered"][index] == 2
                assert history["queues"]["billing"]["answered"][index] == 1
                assert history["queues"]["billing"]["abandoned"][index] == 1
                assert not [a for a in board["alerts"] if a["alert"] == "surge"]
                # Four calls in the last minutes: a surge (baseline: 3 calls in 2 hours).
                for n in range(4):
                    await store.enqueue(NewCall(f"s{n}", {"fault_repair": 3}), clock.now - n)
                while board["history"]["overall"]["offered"][-1] != 4:
                    board = await next_event(stream)
                surges = [a for a in board["alerts"] if a["alert"] == "surge"]
                assert surges == [
                    {"skill": None, "alert": "surge", "value": 4, "threshold": 2.0,
                     "baseline": 0.12, "window_seconds": 300.0},
                    {"skill": "fault_repair", "alert": "surge", "value": 4, "threshold": 2.0,
                     "baseline": 0.04, "window_seconds": 300.0},
                ]  # fmt: skip
            # The chart's bars are the interval report's figures.
            async with http.get(
                f"{url}/api/stats/intervals", params={"since": str(start - 7200)}
            ) as resp:
                report = (await resp.json())["intervals"]
            for row in report:
                series = (
                    board["history"]["overall"]
                    if row["skill"] is None
                    else board["history"]["queues"][row["skill"]]
                )
                i = board["history"]["starts"].index(row["start"])
                for name in ("offered", "answered", "abandoned"):
                    assert series[name][i] == row[name], (row["start"], row["skill"], name)
            assert len(report) >= 6


async def test_hub_keeps_arrivals_only_for_the_surge_look_back(
    store: RoutingStore, clock: Clock
) -> None:
    """Entry times are kept per call only as far back as the surge alert looks (its window and
    the chart's hours before it), not since midnight: a busy day's calls are not all held."""
    settings = Settings(wallboard_chart_hours=4, wallboard_surge_window_seconds=300)
    look_back = 4 * 3600 + 300
    assert day_start(T0) < T0 - look_back - 3600  # the day began well before the look-back
    hub = web_wallboard.WallboardHub(store, clock, settings)
    for n in range(50):  # this morning, before the look-back
        await store.enqueue(NewCall(f"old{n}", {"fault_repair": 3}), T0 - look_back - 600 + n)
    await store.enqueue(NewCall("new", {"fault_repair": 3}), T0 - 60)
    await hub.refresh()
    assert hub._history is not None
    times = {skill: list(t) for skill, t in hub._history.arrivals.times.items()}
    assert times == {"fault_repair": [T0 - 60], None: [T0 - 60]}
    await hub.close()
