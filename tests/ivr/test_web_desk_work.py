"""The desk's work on a call over a real loopback server, real Redis and the real CRM bridge
(outbox, embedded store, delivery worker): the draft work order, ending the call with a wrap-up
code (survey or not), completing the ticket; and who may do it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from redis.asyncio import Redis
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from ivr.accounts import Role, UserFile
from ivr.crm_runtime import CrmRuntime
from ivr.desk_ticket import DeskTicket, DraftError, draft
from ivr.settings import Settings
from ivr.web import create_app
from routing.events import EventType
from routing.model import NewCall
from routing.store import RoutingStore
from tests.ivr.test_web_auth import PASSWORD, Browser, Clock

Serving = Callable[..., AbstractAsyncContextManager[str]]
T0 = 1_700_000_000.0
CONTEXT = {
    "caller": "13800138000",
    "intent": "fault",
    "pending_ticket": "故障报修",
    "account": "1234567890",
    "address": "江苏省南京市鼓楼区中山路100号",
    "address_confidence": "0.92",
    "path": "main>fault>address>agent",
}
TICKET = {
    "ticket_type": "故障报修",
    "caller": "13800138000",
    "account": "1234567890",
    "address": "江苏省南京市鼓楼区中山路100号",
    "address_confidence": "0.92",
    "intent": "fault",
    "description": "整栋楼停电，已派抢修",
    "urgent": False,
}


@pytest.fixture(scope="module")
def users_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    var = tmp_path_factory.mktemp("var")
    users = UserFile(var / "users.json")
    users.add("1001", Role.AGENT, PASSWORD, name="王芳", skills={"fault_repair": 5})
    users.add("1002", Role.AGENT, PASSWORD, name="李强", skills={"fault_repair": 5})
    return var


@pytest.fixture
async def crm(tmp_path: Path) -> AsyncIterator[CrmRuntime]:
    runtime = CrmRuntime(Settings(var_dir=tmp_path))
    await runtime.start()
    yield runtime
    await runtime.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def store(redis_client: Redis) -> RoutingStore:
    return RoutingStore(redis_client, tenant="t1")


@pytest.fixture
async def browsers(
    store: RoutingStore, clock: Clock, users_dir: Path, crm: CrmRuntime, serving: Serving
) -> AsyncIterator[Callable[[], Browser]]:
    app = create_app(
        Settings(var_dir=users_dir),
        routing=store,
        clock=clock,
        crm=crm.backend,
        outbox=crm.outbox,
        tickets=crm.service,
    )
    made: list[Browser] = []
    async with serving(app) as url:

        def make() -> Browser:
            made.append(Browser(url))
            return made[-1]

        yield make
        for browser in made:
            await browser.http.close()


async def on_call(store: RoutingStore, agent: str = "1001", call: str = "c1") -> None:
    await store.login(agent, skills={"fault_repair": 5}, now=T0, ready=True)
    await store.enqueue(NewCall(call, {"fault_repair": 3}, node_id="n1", context=CONTEXT), T0)
    await store.accept(agent, call, T0 + 1)


def test_the_draft_carries_what_the_ivr_learned() -> None:
    pre = draft(CONTEXT, "fault_repair")
    assert pre.ticket_type == "故障报修"
    assert (pre.caller, pre.account, pre.address_confidence) == (
        "13800138000",
        "1234567890",
        "0.92",
    )
    assert "main>fault>address>agent" in pre.description
    assert draft({"intent": "complaint"}, "general").ticket_type == "投诉"
    assert draft({}, "new_connection").ticket_type == "业扩报装"
    assert draft({}, "general").ticket_type == "咨询"
    assert draft({"caller": "anonymous", "hazard": "yes"}, "hazard").caller == ""
    assert draft({"hazard": "yes"}, "hazard").urgent
    types = ("故障报修", "咨询")
    assert DeskTicket.parse(TICKET, types).description == "整栋楼停电，已派抢修"
    for bad, field in (
        ({**TICKET, "ticket_type": "闲聊"}, "ticket_type"),
        ({**TICKET, "account": "12ab"}, "account"),
        ({**TICKET, "caller": "138-0013"}, "caller"),
        ({**TICKET, "urgent": "yes"}, "urgent"),
        ({**TICKET, "colour": "red"}, "colour"),
    ):
        with pytest.raises(DraftError) as info:
            DeskTicket.parse(bad, types)
        assert info.value.field == field


async def test_agent_ends_with_a_code_and_completes_the_ticket(
    browsers: Callable[[], Browser], store: RoutingStore, crm: CrmRuntime, clock: Clock
) -> None:
    agent = browsers()
    await agent.login("1001")
    await on_call(store)
    status, desk = await agent.call("GET", "/api/desk")
    assert status == 200
    assert desk["wrap_codes"][:5] == ["已解决", "已派工", "需回访", "转其他部门", "误拨"]
    assert "故障报修" in desk["ticket_types"]
    work = desk["work"]
    assert work["call_id"] == "c1"
    assert work["draft"]["ticket_type"] == "故障报修"
    assert work["draft"]["address"] == "江苏省南京市鼓楼区中山路100号"
    assert work["draft"]["address_confidence"] == "0.92"

    status, body = await agent.call("POST", "/api/desk/end", {"call_id": "c1", "code": "无此码"})
    assert (status, body["error_id"]) == (400, "invalid-request")
    assert "code" in body["message"]
    clock.now = T0 + 60
    status, body = await agent.call(
        "POST", "/api/desk/end", {"call_id": "c1", "code": "已派工", "survey": True}
    )
    assert (status, body) == (200, {"call_id": "c1", "code": "已派工", "survey": True})
    message = (await store.drain_inbox("n1"))[-1]
    assert (message.kind, message.reason) == ("disconnected", "")  # the caller: to the survey
    complete = (await store.events())[-1]
    assert complete.type is EventType.COMPLETE
    assert (complete.fields["code"], complete.fields["by"]) == ("已派工", "agent")

    # Wrap-up: routing no longer holds the call, the desk still has its work.
    status, desk = await agent.call("GET", "/api/desk")
    assert desk["agent"]["state"] == "wrap_up"
    assert (desk["work"]["call_id"], desk["work"]["code"]) == ("c1", "已派工")
    bad = {**TICKET, "account": "12ab"}
    status, body = await agent.call(
        "POST", "/api/desk/ticket", {"call_id": "c1", "code": "已派工", "ticket": bad}
    )
    assert (status, body["error_id"]) == (400, "invalid-request")
    assert "ticket.account" in body["message"]
    with capture_logs(processors=[merge_contextvars]) as logs:
        status, body = await agent.call(
            "POST", "/api/desk/ticket", {"call_id": "c1", "code": "已派工", "ticket": TICKET}
        )
    assert status == 200, body
    ticket_id = body["ticket_id"]
    assert body["ticket"]["fields"]["wrap_code"] == "已派工"
    assert body["ticket"]["source"] == "ivr_agent"
    line = next(log for log in logs if log["event"] == "desk ticket completed")
    assert (line["caller"], line["call_id"]) == ("138****8000", "c1")
    # Once more: the same work order, not a second one.
    again = await agent.call(
        "POST", "/api/desk/ticket", {"call_id": "c1", "code": "已派工", "ticket": TICKET}
    )
    assert again[1]["ticket_id"] == ticket_id
    # The outbox delivers it to the embedded store.
    assert crm.embedded is not None
    for _ in range(100):
        stored = await crm.embedded.get_ticket(ticket_id)
        if stored is not None:
            break
        await asyncio.sleep(0.05)
    assert stored is not None
    assert (stored.ticket_type, stored.account, stored.address.district) == (
        "故障报修",
        "1234567890",
        "鼓楼区",
    )
    assert stored.fields["wrap_code"] == "已派工"
    assert stored.description == "整栋楼停电，已派抢修"
    _, desk = await agent.call("GET", "/api/desk")
    assert desk["work"]["ticket_id"] == ticket_id


async def test_ending_without_the_survey_hangs_the_caller_up(
    browsers: Callable[[], Browser], store: RoutingStore
) -> None:
    agent = browsers()
    await agent.login("1001")
    await on_call(store)
    status, _ = await agent.call(
        "POST", "/api/desk/end", {"call_id": "c1", "code": "误拨", "survey": False}
    )
    assert status == 200
    message = (await store.drain_inbox("n1"))[-1]
    assert (message.kind, message.reason) == ("disconnected", "end")


async def test_agent_transfers_the_caller_to_another_queue(
    browsers: Callable[[], Browser], store: RoutingStore, clock: Clock
) -> None:
    agent = browsers()
    await agent.login("1001")
    await on_call(store)
    _, desk = await agent.call("GET", "/api/desk")
    assert "complaint" in desk["transfer_queues"]
    for bad in ("nowhere", "fault_repair"):  # not a transfer queue; the caller's own queue
        status, body = await agent.call(
            "POST", "/api/desk/transfer", {"call_id": "c1", "skill": bad}
        )
        assert (status, body["error_id"]) == (400, "invalid-request"), bad
    clock.now = T0 + 30
    with capture_logs(processors=[merge_contextvars]) as logs:
        status, body = await agent.call(
            "POST", "/api/desk/transfer", {"call_id": "c1", "skill": "complaint"}
        )
    assert (status, body) == (200, {"call_id": "c1", "skill": "complaint", "state": "waiting"})
    line = next(log for log in logs if log["event"] == "agent transferred call")
    assert (line["from_skill"], line["skill"], line["call_id"]) == (
        "fault_repair",
        "complaint",
        "c1",
    )
    message = (await store.drain_inbox("n1"))[-1]
    assert (message.kind, message.reason) == ("transferred", "complaint")
    call = await store.call("c1")
    assert call is not None
    assert (call.skill, call.state.value, call.context) == ("complaint", "waiting", CONTEXT)
    assert (await store.events())[-1].type is EventType.TRANSFER
    _, desk = await agent.call("GET", "/api/desk")
    assert desk["agent"]["state"] == "wrap_up"
    assert (desk["work"]["call_id"], desk["work"]["transferred_to"]) == ("c1", "complaint")
    # Not on the call any more: no second transfer.
    status, body = await agent.call(
        "POST", "/api/desk/transfer", {"call_id": "c1", "skill": "billing"}
    )
    assert (status, body["error_id"]) == (403, "not-your-call")


async def test_only_the_agent_on_the_call_may_work_it(
    browsers: Callable[[], Browser], store: RoutingStore, clock: Clock
) -> None:
    await on_call(store, "1002", "c2")
    end = {"call_id": "c2", "code": "已解决"}
    ticket = {"call_id": "c2", "code": "已解决", "ticket": TICKET}
    move = {"call_id": "c2", "skill": "complaint"}
    routes = (("/api/desk/end", end), ("/api/desk/ticket", ticket), ("/api/desk/transfer", move))
    # Without a login.
    anonymous = browsers()
    for path, body in routes:
        status, answer = await anonymous.call("POST", path, body)
        assert (status, answer["error_id"]) == (401, "login-required")
    # Another agent's session.
    other = browsers()
    await other.login("1001")
    await store.login("1001", skills={"fault_repair": 5}, now=T0)
    for path, body in routes:
        status, answer = await other.call("POST", path, body)
        assert (status, answer["error_id"]) == (403, "not-your-call"), path
    # The right agent without the CSRF header.
    owner = browsers()
    await owner.login("1002")
    for path, body in routes:
        status, answer = await owner.call("POST", path, body, csrf="")
        assert (status, answer["error_id"]) == (403, "csrf-missing")
    agent = await store.agent("1002")
    assert agent is not None
    assert agent.state.value == "on_call"  # nothing of the above changed anything
    # A stale session.
    clock.now += 12 * 3600 + 1
    for path, body in routes:
        status, answer = await owner.call("POST", path, body)
        assert (status, answer["error_id"]) == (401, "session-expired")
    clock.now = T0 + 5
    await owner.login("1002")
    # The owner's: a call they are not on is not theirs either.
    status, answer = await owner.call("POST", "/api/desk/end", {**end, "call_id": "c9"})
    assert (status, answer["error_id"]) == (403, "not-your-call")
    status, _ = await owner.call("POST", "/api/desk/end", end)
    assert status == 200
    # In wrap-up the ended call is still theirs (the ticket), but not another agent's.
    status, answer = await other.call("POST", "/api/desk/ticket", ticket)
    assert (status, answer["error_id"]) == (403, "not-your-call")
    status, answer = await owner.call("POST", "/api/desk/ticket", ticket)
    assert status == 200, answer


async def test_a_call_only_offered_is_not_the_agents_to_file(
    browsers: Callable[[], Browser], store: RoutingStore
) -> None:
    agent = browsers()
    await agent.login("1001")
    await store.login("1001", skills={"fault_repair": 5}, now=T0, ready=True)
    await store.enqueue(NewCall("c3", {"fault_repair": 3}, node_id="n1", context=CONTEXT), T0)
    _, desk = await agent.call("GET", "/api/desk")
    assert desk["offer"]["call_id"] == "c3"
    assert desk["work"]["draft"]["account"] == "1234567890"  # the draft shows with the offer
    await store.reject("1001", "c3", T0 + 2)
    status, body = await agent.call(
        "POST", "/api/desk/ticket", {"call_id": "c3", "code": "已解决", "ticket": TICKET}
    )
    assert (status, body["error_id"]) == (403, "not-your-call")


async def test_a_call_the_caller_ended_gets_its_code_in_wrap_up(
    browsers: Callable[[], Browser], store: RoutingStore
) -> None:
    agent = browsers()
    await agent.login("1001")
    await on_call(store)
    await agent.call("GET", "/api/desk")  # the desk shows the call: this node knows it is theirs
    assert await store.hangup("c1", T0 + 30) == "completed"  # the caller hung up first
    status, body = await agent.call(
        "POST", "/api/desk/ticket", {"call_id": "c1", "code": "需回访", "ticket": TICKET}
    )
    assert status == 200, body
    wrapup = (await store.events())[-1]
    assert (wrapup.type, wrapup.call_id, wrapup.fields["code"]) == (
        EventType.WRAPUP,
        "c1",
        "需回访",
    )
    _, desk = await agent.call("GET", "/api/desk")
    assert desk["work"]["code"] == "需回访"
    # Completing again records nothing more.
    count = await store.event_count()
    await agent.call(
        "POST", "/api/desk/ticket", {"call_id": "c1", "code": "需回访", "ticket": TICKET}
    )
    assert await store.event_count() == count
