"""The web app on a real loopback server: health, metrics, status page, API error ids."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

import ivr
from ivr.metrics import CALLS_ACTIVE
from ivr.settings import Settings
from ivr.web import ApiError, create_app

Serving = Callable[..., AbstractAsyncContextManager[str]]
"""The ``serving`` fixture (tests/conftest.py): ``async with serving(app) as url``."""


@pytest.fixture
def settings() -> Settings:
    return Settings(node_id="node-test", web_port=0)


@pytest.fixture
async def base_url(settings: Settings, serving: Serving) -> AsyncIterator[str]:
    async with serving(create_app(settings)) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def test_healthz(base_url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{base_url}/healthz") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        body = await resp.json()
    assert body["status"] == "ok"
    assert body["node_id"] == "node-test"
    assert body["version"] == ivr.__version__
    assert body["speech"] == "dtmf-only"
    assert body["sip"] == "not started (the serve command starts it)"
    assert isinstance(body["uptime_seconds"], float | int)
    assert body["uptime_seconds"] >= 0


async def test_healthz_reports_vosk_and_status_entries(
    tmp_path: Path, http: aiohttp.ClientSession, serving: Serving
) -> None:
    status: dict[str, object] = {"calls_active": 0}
    app = create_app(Settings(vosk_model=tmp_path), status=status)
    async with serving(app) as url:
        status["calls_active"] = 3  # a live mapping: later changes show up
        async with http.get(f"{url}/healthz") as resp:
            body = await resp.json()
    assert body["speech"] == "vosk"
    assert body["calls_active"] == 3


async def test_metrics(base_url: str, http: aiohttp.ClientSession) -> None:
    CALLS_ACTIVE.set(2)
    try:
        async with http.get(f"{base_url}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=")
            text = await resp.text()
    finally:
        CALLS_ACTIVE.set(0)
    assert "hotline_calls_active 2.0" in text
    assert 'hotline_calls_started_total{channel="sim"}' in text
    assert 'hotline_dialog_failures_total{kind="no_input"}' in text
    assert "# TYPE hotline_service_requests_total counter" in text


async def test_metrics_openmetrics_on_request(base_url: str, http: aiohttp.ClientSession) -> None:
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
    async with http.get(f"{base_url}/metrics", headers=headers) as resp:
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await resp.text()).endswith("# EOF\n")


async def test_status_page(base_url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{base_url}/") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        assert resp.charset == "utf-8"
        page = await resp.text()
    assert "95598 供电服务热线" in page
    assert "node-test" in page
    assert 'href="/metrics"' in page
    assert "hotline call" in page
    assert "dtmf-only" in page


async def test_status_page_escapes_node_id(http: aiohttp.ClientSession, serving: Serving) -> None:
    async with (
        serving(create_app(Settings(node_id="<script>"))) as url,
        http.get(f"{url}/") as resp,
    ):
        page = await resp.text()
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


async def test_unknown_api_path_is_json_with_error_id(
    base_url: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{base_url}/api/no-such-thing") as resp:
        assert resp.status == 404
        body = await resp.json()
    assert body["error_id"] == "not-found"
    assert "/api/no-such-thing" in body["message"]


async def test_unknown_page_outside_api_is_plain_404(
    base_url: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{base_url}/nowhere") as resp:
        assert resp.status == 404
        assert resp.content_type != "application/json"


async def test_api_errors_from_handlers(
    settings: Settings, http: aiohttp.ClientSession, serving: Serving
) -> None:
    async def no_call(request: web.Request) -> web.Response:
        raise ApiError("no-such-call", "no call with id c-1", status=404)

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("bug")

    async def listed(request: web.Request) -> web.Response:
        return web.json_response([])

    app = create_app(settings)
    app.router.add_get("/api/calls/c-1", no_call)
    app.router.add_get("/api/broken", broken)
    app.router.add_get("/api/calls", listed)
    async with serving(app) as url:
        async with http.get(f"{url}/api/calls/c-1") as resp:
            assert resp.status == 404
            assert await resp.json() == {
                "error_id": "no-such-call",
                "message": "no call with id c-1",
            }
        async with http.get(f"{url}/api/broken") as resp:
            assert resp.status == 500
            assert (await resp.json())["error_id"] == "internal-error"
        async with http.post(f"{url}/api/calls") as resp:
            assert resp.status == 405
            assert (await resp.json())["error_id"] == "method-not-allowed"
        async with http.get(f"{url}/api/calls") as resp:
            assert await resp.json() == []
