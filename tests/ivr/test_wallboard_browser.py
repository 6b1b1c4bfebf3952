"""The wallboard's chart and surge alert in a real browser: Playwright driving Debian's chromium,
the page served with its Content-Security-Policy (nothing inline, nothing from elsewhere).

Set ``HOTLINE_SCREENSHOTS=docs/screenshots`` to refresh the README's wallboard screenshot."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect
from redis.asyncio import Redis

from ivr.accounts import Role, UserFile
from ivr.settings import Settings
from ivr.web import create_app
from routing.model import NewCall
from routing.store import RoutingStore

pytestmark = pytest.mark.slow

Serving = Callable[..., AbstractAsyncContextManager[str]]
PASSWORD = "correct horse battery"  # noqa: S105 - a test account's password


@pytest.fixture
async def store(redis_servers: Any) -> AsyncIterator[RoutingStore]:
    client = Redis.from_url(redis_servers.get("system").url, decode_responses=True)
    await client.flushall()
    yield RoutingStore(client, tenant="t1")
    await client.aclose()


@pytest.fixture
async def site(store: RoutingStore, tmp_path: Path, serving: Serving) -> AsyncIterator[str]:
    users = UserFile(tmp_path / "users.json")
    users.add("boss", Role.SUPERVISOR, PASSWORD, name="班长")
    settings = Settings(var_dir=tmp_path, wallboard_surge_min_calls=5)
    app = create_app(settings, routing=store, clock=time.time)
    async with serving(app) as url:
        yield url


async def log_in(browser: Browser, url: str, username: str) -> tuple[Page, list[str]]:
    page = await browser.new_page(viewport={"width": 1280, "height": 860})
    problems: list[str] = []
    page.on(  # CSP refusals are console errors too
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and not m.location.get("url", "").endswith("/favicon.ico")
            else None
        ),
    )
    page.on(
        "response",
        lambda r: (
            problems.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on(
        "request",
        lambda r: None if r.url.startswith(url) else problems.append(f"request to {r.url}"),
    )
    await page.goto(f"{url}/login")
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.click("#login-button")
    return page, problems


async def screenshot(page: Page, tmp_path: Path, name: str) -> None:
    await page.screenshot(path=str(tmp_path / name), full_page=True)
    target = os.environ.get("HOTLINE_SCREENSHOTS")
    if target:
        await page.screenshot(path=str(Path(target) / name), full_page=True)


async def past_hours(store: RoutingStore, now: float) -> None:
    """Three hours of calls: a few per quarter hour, most answered, some abandoned."""
    await store.login("2001", skills={"fault_repair": 5, "billing": 5}, now=now - 4 * 3600)
    await store.login("2002", skills={"billing": 5}, now=now - 4 * 3600, name="李强")
    n = 0
    for quarter in range(12, 0, -1):
        t = now - quarter * 900
        for k in range(2 + quarter % 3):
            skill = "billing" if k % 2 else "fault_repair"
            call = f"h{n}"
            n += 1
            await store.ready("2001", t)
            await store.enqueue(NewCall(call, {skill: 3}), t + k * 30)
            if k == 2:  # the third of the quarter waits, and gives up
                await store.not_ready("2001", "break", t + k * 30)
                await store.hangup(call, t + k * 30 + 40)
                continue
            await store.accept("2001", call, t + k * 30 + 8)
            await store.complete("2001", t + k * 30 + 200)
    await store.not_ready("2001", "lunch", now - 60)
    await store.ready("2002", now - 60)


async def test_chart_draws_the_last_hours_and_a_surge_shows(
    browser: Browser, site: str, store: RoutingStore, tmp_path: Path
) -> None:
    now = time.time()
    await past_hours(store, now)
    page, problems = await log_in(browser, site, "boss")
    await expect(page).to_have_url(f"{site}/wallboard")
    chart = page.locator("#chart")
    # 4 hours of quarter hours, the current one last: 16 groups of 3 bars.
    await expect(chart.locator("rect[data-series=offered]")).to_have_count(16)
    board = await page.evaluate("fetch('/api/wallboard').then(r => r.json())")
    offered = board["history"]["overall"]["offered"]
    drawn = await chart.locator("rect[data-series=offered]").evaluate_all(
        "bars => bars.map(b => Number(b.dataset.value))"
    )
    assert drawn == offered
    assert sum(offered) == 12 * 2 + 4 * 2 + 4 * 1  # 2, 3 or 4 calls a quarter
    abandoned = await chart.locator("rect[data-series=abandoned]").evaluate_all(
        "bars => bars.map(b => Number(b.dataset.value))"
    )
    assert sum(abandoned) == sum(board["history"]["overall"]["abandoned"]) > 0
    # A taller bar for more calls.
    heights = await chart.locator("rect[data-series=offered]").evaluate_all(
        "bars => bars.map(b => b.getBBox().height)"
    )
    most = offered.index(max(offered))
    assert heights[most] == max(heights) > 0
    # One queue alone.
    await page.select_option("#chart-queue", "billing")
    billing = board["history"]["queues"]["billing"]["offered"]
    await expect(chart.locator("rect[data-series=offered]").nth(most)).to_have_attribute(
        "data-value", str(billing[most])
    )
    await page.select_option("#chart-queue", "")

    # A burst of calls: the current quarter's bar grows live, and the surge alert shows.
    for n in range(7):
        await store.enqueue(NewCall(f"s{n}", {"fault_repair": 3}), time.time())
    last = chart.locator("rect[data-series=offered]").last
    await expect(last).to_have_attribute("data-value", "7")
    alert = page.locator("#alerts .alert.surge").first
    await expect(alert).to_contain_text("7 calls in 5 min")
    await expect(page.locator("#alerts")).to_contain_text("all queues")
    await screenshot(page, tmp_path, "wallboard.png")
    assert problems == []
    await page.close()
