"""The agent desktop and the wallboard in a real browser: Playwright driving Debian's chromium
(``apt-get install chromium``; Playwright's own browser download cannot run here).

Set ``HOTLINE_SCREENSHOTS=docs/screenshots`` to refresh the README's screenshots."""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect
from redis.asyncio import Redis

from crm_bridge.model import Ticket
from ivr.accounts import Role, UserFile
from ivr.crm_runtime import CrmRuntime
from ivr.settings import Settings
from ivr.web import create_app
from routing.events import EventType
from routing.model import NewCall, QueueConfig
from routing.store import RoutingStore

pytestmark = pytest.mark.slow

Serving = Callable[..., AbstractAsyncContextManager[str]]
PASSWORD = "correct horse battery"  # noqa: S105 - a test account's password
CONTEXT = {
    "caller": "13800138000",
    "intent": "停电报修",
    "account": "1234567890",
    "customer": "张伟",
    "address": "江苏省南京市鼓楼区中山路100号",
    "address_confidence": "0.92",
    "outage": "鼓楼区 故障停电 预计 18:00 恢复",
    "path": "main>fault>address>agent",
}


@pytest.fixture
async def store(redis_servers: Any) -> AsyncIterator[RoutingStore]:
    # One Redis kind is enough here: routing itself is tested on both.
    client = Redis.from_url(redis_servers.get("system").url, decode_responses=True)
    await client.flushall()
    yield RoutingStore(client, tenant="t1")
    await client.aclose()


@pytest.fixture
async def crm(tmp_path: Path) -> AsyncIterator[CrmRuntime]:
    runtime = CrmRuntime(Settings(var_dir=tmp_path))
    await runtime.start()
    yield runtime
    await runtime.stop()


@pytest.fixture
async def site(
    store: RoutingStore, tmp_path: Path, serving: Serving, crm: CrmRuntime
) -> AsyncIterator[str]:
    users = UserFile(tmp_path / "users.json")
    users.add("1001", Role.AGENT, PASSWORD, name="王芳", skills={"fault_repair": 5})
    users.add("boss", Role.SUPERVISOR, PASSWORD, name="班长")
    app = create_app(
        Settings(var_dir=tmp_path),
        routing=store,
        clock=time.time,
        crm=crm.backend,
        outbox=crm.outbox,
        tickets=crm.service,
    )
    async with serving(app) as url:
        yield url


async def log_in(browser: Browser, url: str, username: str) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 860})
    await page.goto(f"{url}/login")
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.click("#login-button")
    return page


async def screenshot(page: Page, tmp_path: Path, name: str) -> None:
    await page.screenshot(path=str(tmp_path / name), full_page=True)
    target = os.environ.get("HOTLINE_SCREENSHOTS")
    if target:  # playwright creates the folder
        await page.screenshot(path=str(Path(target) / name), full_page=True)


async def test_agent_takes_a_call(
    browser: Browser, site: str, store: RoutingStore, tmp_path: Path, crm: CrmRuntime
) -> None:
    page = await log_in(browser, site, "1001")
    await expect(page).to_have_url(f"{site}/desk")
    await page.fill("#contact", "sip:1001@10.0.0.5")
    await page.click("#signin-button")
    await expect(page.locator("#state")).to_have_text("not_ready")
    await page.click("#ready-button")
    await expect(page.locator("#state")).to_have_text("available")

    await store.configure_queue(QueueConfig("fault_repair", reservation_timeout=60), time.time())
    await store.enqueue(
        NewCall("c1", {"fault_repair": 3}, node_id="node-a", context=CONTEXT), time.time()
    )
    await expect(page.locator("#offer")).to_be_visible()
    await expect(page.locator("#state")).to_have_text("reserved")
    countdown = int(await page.locator("#countdown").inner_text())
    assert 50 <= countdown <= 60
    pop = page.locator("#pop-table")
    for value in ("13800138000", "停电报修", "1234567890", "江苏省南京市鼓楼区中山路100号"):
        await expect(pop).to_contain_text(value)
    await screenshot(page, tmp_path, "agent-desktop-offer.png")

    # Rejected: the call goes back to its place, the agent is not ready; ready again, re-offered.
    await page.click("#reject-button")
    await expect(page.locator("#state")).to_have_text("not_ready")
    await expect(page.locator("#offer")).to_be_hidden()
    await page.click("#ready-button")
    await expect(page.locator("#offer")).to_be_visible()
    await expect(pop).to_contain_text("停电报修")

    await page.click("#accept-button")
    await expect(page.locator("#state")).to_have_text("on_call")
    await expect(page.locator("#offer")).to_be_hidden()
    await expect(pop).to_contain_text("张伟")
    # The draft work order, pre-filled from the IVR, editable.
    await expect(page.locator("#work")).to_be_visible()
    await expect(page.locator("#t-type")).to_have_value("故障报修")
    await expect(page.locator("#t-account")).to_have_value("1234567890")
    await expect(page.locator("#t-address")).to_have_value("江苏省南京市鼓楼区中山路100号")
    await expect(page.locator("#t-confidence")).to_have_text("0.92")
    await expect(page.locator("#t-description")).to_have_value(re.compile("main>fault>address"))
    await page.fill("#t-description", "中山路100号整栋停电，已派抢修班")
    await page.select_option("#wrap-code", "已派工")
    await screenshot(page, tmp_path, "agent-desktop.png")
    call = await store.call("c1")
    assert call is not None
    assert call.agent_id == "1001"

    await page.click("#complete-button")  # end the call, the caller to the survey
    await expect(page.locator("#state")).to_have_text("wrap_up")
    await expect(page.locator("#wrap")).to_be_visible()
    # The agent's edits survive the state change; the ticket is completed in wrap-up.
    await expect(page.locator("#t-description")).to_have_value("中山路100号整栋停电，已派抢修班")
    await page.click("#ticket-button")
    await expect(page.locator("#ticket-done")).to_contain_text("工单 Ticket ")
    ticket_id = (await page.locator("#ticket-done").inner_text()).split()[-1]
    assert crm.outbox is not None
    queued = await crm.outbox.get(ticket_id)
    assert queued is not None
    assert isinstance(queued.item, Ticket)
    assert queued.item.description == "中山路100号整栋停电，已派抢修班"
    assert queued.item.fields["wrap_code"] == "已派工"
    await screenshot(page, tmp_path, "agent-desktop-wrap-up.png")
    complete = [e for e in await store.events() if e.type is EventType.COMPLETE][-1]
    assert complete.fields["code"] == "已派工"
    await page.click("#done-button")
    await expect(page.locator("#state")).to_have_text("available")
    agent = await store.agent("1001")
    assert agent is not None
    assert agent.calls == 1
    await page.close()


async def test_supervisor_sees_calls_arrive(
    browser: Browser, site: str, store: RoutingStore, tmp_path: Path
) -> None:
    now = time.time()
    await store.login("1001", skills={"fault_repair": 5}, now=now, name="王芳")
    await store.login("1002", skills={"billing": 5}, now=now, ready=True)
    await store.not_ready("1001", "lunch", now)
    page = await log_in(browser, site, "boss")
    await expect(page).to_have_url(f"{site}/wallboard")
    waiting = page.locator("#overall-waiting")
    await expect(waiting).to_have_text("0")
    for n in range(3):
        await store.enqueue(NewCall(f"c{n}", {"fault_repair": 3}), time.time())
        await expect(waiting).to_have_text(str(n + 1))
    await expect(page.locator("#overall-offered")).to_have_text("3")
    row = page.locator("#queues tr[data-skill=fault_repair]")
    await expect(row).to_contain_text("fault_repair")
    await expect(page.locator("#agents")).to_contain_text("lunch")
    await store.hangup("c0", time.time())
    await expect(waiting).to_have_text("2")
    await store.ready("1001", time.time())  # c1 is offered to 1001, who takes it
    await store.accept("1001", "c1", time.time())
    await expect(page.locator("#overall-answered")).to_have_text("1")
    await expect(page.locator("#overall-sl")).to_have_text("100%")
    await expect(waiting).to_have_text("1")
    # The wallboard's screenshot is taken by tests/ivr/test_wallboard_browser.py (with its chart).
    # The supervisor forces 1002 not ready, then out of the queues.
    row = page.locator("#agents tr[data-agent='1002']")
    await row.locator("button.force-not-ready").click()
    await expect(row).to_contain_text("supervisor")
    await expect(row.locator(".state")).to_have_text("not_ready")
    await row.locator("button.force-logout").click()
    await expect(row).to_be_hidden()
    agent = await store.agent("1002")
    assert agent is not None
    assert agent.state.value == "logged_out"
    # An agent who opens the wallboard is sent to their desk (the API refuses them anyway).
    await page.click("#logout-button")
    await expect(page).to_have_url(f"{site}/login")
    desk = await log_in(browser, site, "1001")
    await expect(desk).to_have_url(f"{site}/desk")
    await desk.goto(f"{site}/wallboard")
    await expect(desk).to_have_url(f"{site}/desk")


async def test_agent_transfers_a_call_to_another_queue(
    browser: Browser, site: str, store: RoutingStore
) -> None:
    page = await log_in(browser, site, "1001")
    await page.fill("#contact", "sip:1001@10.0.0.5")
    await page.click("#signin-button")
    await page.click("#ready-button")
    await expect(page.locator("#state")).to_have_text("available")
    await store.enqueue(
        NewCall("c7", {"fault_repair": 3}, node_id="node-a", context=CONTEXT), time.time()
    )
    await page.click("#accept-button")
    await expect(page.locator("#state")).to_have_text("on_call")
    # The caller's own queue is not offered as a target.
    targets = await page.locator("#transfer-queue option").all_inner_texts()
    assert "complaint" in targets
    assert "fault_repair" not in targets
    await page.select_option("#transfer-queue", "complaint")
    await page.click("#transfer-button")
    await expect(page.locator("#state")).to_have_text("wrap_up")
    await expect(page.locator("#transferred")).to_have_text("已转接 Transferred to complaint")
    call = await store.call("c7")
    assert call is not None
    assert (call.skill, call.state.value, call.context["intent"]) == (
        "complaint",
        "waiting",
        "停电报修",
    )
    # The work order stays to complete in wrap-up.
    await expect(page.locator("#ticket-button")).to_be_visible()
    await page.close()
