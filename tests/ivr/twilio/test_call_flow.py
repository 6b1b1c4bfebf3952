"""Whole 95598 calls through Twilio, with real routing (Redis) and the embedded CRM: a menu by
keypad, a real skill queue, an agent who accepts on the desktop, the REST update that hands the
caller to the agent's phone (checked by a stand-in for Twilio's API), the Dial's action that
brings the caller back for the survey, and status callbacks that keep routing right whenever the
caller hangs up."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from crm_bridge.embedded import EmbeddedCrm
from crm_bridge.numbers import TicketNumbers
from crm_bridge.outbox import DeliveryWorker, Outbox
from ivr import metrics
from ivr.crm_service import CrmService
from ivr.routing_redis import RedisRouting
from ivr.twilio.call import CallPhase
from ivr.twilio.front import HANDOFFS
from routing.events import EventType
from routing.stats import interval_stats
from routing.store import RoutingStore

from .conftest import (
    ACCOUNT_SID,
    API_KEY,
    API_SECRET,
    Hotline,
    MakeHotline,
    MediaStreamClient,
    call_sid,
    parse_stream_twiml,
)

AGENT_SIP = "sip:a1001@agents.example.cn"


@pytest.fixture
def store(redis_client: Redis) -> RoutingStore:
    return RoutingStore(redis_client, tenant="tw")


@pytest.fixture
async def node(store: RoutingStore) -> AsyncIterator[RedisRouting]:
    """This node's routing, pumped as `hotline serve` pumps it."""
    routing = RedisRouting(store, "twilio-node")
    pump = asyncio.get_running_loop().create_task(routing.serve(poll_interval=0.05))
    yield routing
    pump.cancel()
    await asyncio.wait({pump}, timeout=2.0)


@dataclass
class Bridge:
    """The CRM bridge of the node: the calls' service, its outbox and the embedded store."""

    service: CrmService
    outbox: Outbox
    embedded: EmbeddedCrm


@pytest.fixture
async def crm(tmp_path: Path) -> AsyncIterator[Bridge]:
    embedded = await EmbeddedCrm.open(tmp_path / "crm.sqlite3")
    outbox = await Outbox.open(tmp_path / "outbox.sqlite3")
    numbers = await TicketNumbers.attach(outbox.connection, 7, lock=outbox.lock)
    yield Bridge(CrmService(embedded, outbox, numbers), outbox, embedded)
    await outbox.close()
    await embedded.close()


async def eventually(check: Callable[[], object], what: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.02)


async def until_offered(store: RoutingStore, agent_id: str, call_id: str) -> None:
    deadline = time.monotonic() + 5.0
    while True:
        agent = await store.agent(agent_id)
        if agent is not None and agent.call_id == call_id:
            return
        assert time.monotonic() < deadline, f"{call_id} never offered to {agent_id}"
        await asyncio.sleep(0.02)


async def queued_for_billing(hotline: Hotline, sid: str) -> MediaStreamClient:
    """Call in, choose billing (3) then a consultation (2): the caller joins the billing queue."""
    hotline.api.live[sid] = {}
    stream = await hotline.twilio.connect_call(sid)
    stream.caller_speaks()
    assert await stream.wait_mark(2) == "play-2"  # welcome, main menu
    await stream.press("3")
    assert await stream.wait_mark(3) == "play-3"  # billing menu
    await stream.press("2")
    return stream


async def login(store: RoutingStore, contact: str = AGENT_SIP) -> None:
    """Agent A1001, billing skill, ready."""
    await store.login("A1001", skills={"billing": 5}, now=time.time(), contact=contact, ready=True)


async def billing_figures(store: RoutingStore) -> tuple[int, int, int]:
    """(offered, answered, abandoned) of the billing queue, as the supervisor's report has them."""
    rows = interval_stats(await store.events(), short_abandon_seconds=0)
    billing = [row for row in rows if row.skill == "billing"]
    return (
        sum(r.offered for r in billing),
        sum(r.answered for r in billing),
        sum(r.abandoned for r in billing),
    )


def started(channel: str) -> float:
    return metrics.CALLS_STARTED.labels(channel=channel)._value.get()


async def test_a_whole_call_menu_queue_agent_and_survey(
    make_hotline: MakeHotline,
    store: RoutingStore,
    node: RedisRouting,
    crm: Bridge,
) -> None:
    await store.login(
        "A1001", skills={"billing": 5}, now=time.time(), name="王芳", contact=AGENT_SIP, ready=True
    )
    hotline = await make_hotline(routing=node, crm=crm.service)
    twilio = hotline.twilio
    sid = call_sid(0x95598)
    call_id = f"twilio-{sid}"
    before = started("twilio")
    handoffs = HANDOFFS.labels(result="ok")._value.get()

    stream = await queued_for_billing(hotline, sid)
    # Routing offers the caller to the ready agent, who accepts on the desktop.
    await until_offered(store, "A1001", call_id)
    assert await store.accept("A1001", call_id, time.time()) == AGENT_SIP  # its contact

    # The hotline hands the caller over with a REST update of the live call.
    await asyncio.wait_for(hotline.api.updated.wait(), 5.0)
    [update] = hotline.api.updates
    assert (update.account_sid, update.call_sid, update.user) == (ACCOUNT_SID, sid, ACCOUNT_SID)
    assert set(update.form) == {"Twiml"}
    dial = update.twiml.find("Dial")
    assert dial is not None
    assert dial.attrib == {
        "action": "https://ivr.example.cn/twilio/dial",
        "method": "POST",
        "timeout": "20",
    }
    sip = dial.find("Sip")
    assert sip is not None
    assert sip.text == AGENT_SIP
    assert sip.attrib["statusCallback"] == "https://ivr.example.cn/twilio/status"
    assert sip.attrib["statusCallbackEvent"] == "initiated ringing answered completed"
    assert HANDOFFS.labels(result="ok")._value.get() == handoffs + 1

    # Twilio runs the new TwiML: the stream ends (not a hang-up), the agent's phone rings.
    await stream.stop()
    await stream.wait_closed()
    call = hotline.front.calls[sid]
    await eventually(lambda: call.phase is CallPhase.WITH_AGENT, "with the agent")
    leg = call_sid(0xA6E47)
    for status in ("initiated", "ringing", "in-progress"):
        assert await twilio.agent_leg_status(sid, leg, status) == 204
    await asyncio.sleep(0.3)  # they talk
    assert await twilio.agent_leg_status(sid, leg, "completed") == 204

    # The agent hangs up: the Dial's action brings the caller back, on a new stream.
    code, text = await twilio.dial_action(sid, "completed", duration="3")
    assert code == 200
    back = parse_stream_twiml(text)
    assert back.url == "wss://ivr.example.cn/twilio/stream"
    assert back.parameters["call_id"] == call_id
    survey = await twilio.open_stream()
    await survey.begin(sid, back.parameters)
    survey.caller_speaks()
    await survey.wait_mark(1)  # "please rate our service"
    await survey.press("5")
    await survey.wait_closed()  # thanks; the IVR hangs up
    assert survey.ws.close_code == 1000
    assert await twilio.status(sid, "completed", CallDuration="31") == 204
    await hotline.wait_idle()

    [summary] = hotline.front.completed
    assert summary.channel == "twilio"
    assert [(o.kind, o.detail) for o in summary.outcomes] == [
        ("enqueue", "billing/20"),
        ("survey", "5"),
        ("hangup", "survey_done"),
    ]
    assert summary.path[-3:] == ["billing_queue", "survey", "goodbye_thanks"]
    assert summary.errors == []
    assert started("twilio") == before + 1
    # Routing and statistics: offered, answered, completed; the agent is in wrap-up.
    types = [e.type for e in await store.events() if e.call_id == call_id]
    assert types == [EventType.ENTERQUEUE, EventType.OFFER, EventType.CONNECT, EventType.COMPLETE]
    assert await billing_figures(store) == (1, 1, 0)
    assert await store.call(call_id) is None
    agent = await store.agent("A1001")
    assert agent is not None
    assert (agent.state, agent.calls) == ("wrap_up", 1)
    assert agent.talk_seconds > 0
    # The rating goes through the outbox to the CRM, for this agent.
    assert await DeliveryWorker(crm.outbox, crm.embedded).run_once(time.time()) == 1
    rating = await crm.embedded.get_survey(call_id)
    assert rating is not None
    assert (rating.score, rating.agent_id, rating.caller) == (5, "A1001", "+8613812345678")
    assert hotline.front.calls == {}


AGENT_LEG = call_sid(0xA6E47)
"""The ``<Dial>``'s agent leg, as Twilio's status callbacks name it."""


async def _with_agent(
    hotline: Hotline, store: RoutingStore, sid: str, *, answered: bool = True
) -> MediaStreamClient:
    """The caller is handed to A1001's ``<Dial>``; the agent's phone rings, and answers unless
    told otherwise (the leg's status callbacks, as Twilio sends them)."""
    stream = await queued_for_billing(hotline, sid)
    await until_offered(store, "A1001", f"twilio-{sid}")
    await store.accept("A1001", f"twilio-{sid}", time.time())
    await asyncio.wait_for(hotline.api.updated.wait(), 5.0)
    await stream.stop()
    await stream.wait_closed()
    call = hotline.front.calls[sid]
    await eventually(lambda: call.phase is CallPhase.WITH_AGENT, "with the agent")
    assert await hotline.twilio.agent_leg_status(sid, AGENT_LEG, "ringing") == 204
    if answered:
        assert await hotline.twilio.agent_leg_status(sid, AGENT_LEG, "in-progress") == 204
    return stream


async def test_the_caller_hanging_up_on_the_agent_completes_the_call_in_routing(
    make_hotline: MakeHotline, store: RoutingStore, node: RedisRouting
) -> None:
    await login(store)
    hotline = await make_hotline(routing=node)
    sid = call_sid(0xB1)
    await _with_agent(hotline, store, sid)
    await asyncio.sleep(0.3)
    # No stream to tell us: the status callback does.
    with capture_logs() as logs:
        assert await hotline.twilio.status(sid, "completed", CallDuration="12") == 204
        await hotline.wait_idle()
    [ended] = [e for e in logs if e["event"] == "twilio call ended"]
    assert ended["phase"] == "with_agent"
    types = [e.type for e in await store.events() if e.call_id == f"twilio-{sid}"]
    assert types[-1] is EventType.COMPLETE
    assert await billing_figures(store) == (1, 1, 0)
    agent = await store.agent("A1001")
    assert agent is not None
    assert agent.state == "wrap_up"
    assert agent.talk_seconds >= 0.3
    [summary] = hotline.front.completed
    assert "abandoned" not in [o.kind for o in summary.outcomes]  # served, not abandoned
    # Twilio still requests the Dial's action (the caller is gone): nothing to do.
    code, text = await hotline.twilio.dial_action(sid, "completed", call_status="completed")
    assert code == 200
    assert "<Connect" not in text


async def test_the_caller_hanging_up_while_the_agents_phone_rings_is_an_abandon(
    make_hotline: MakeHotline, store: RoutingStore, node: RedisRouting
) -> None:
    """Nobody answered the caller yet: routing takes the call back from the answered, and the
    agent is free again (as on SIP)."""
    await login(store)
    hotline = await make_hotline(routing=node)
    sid = call_sid(0xB4)
    await _with_agent(hotline, store, sid, answered=False)
    assert await hotline.twilio.status(sid, "completed", CallDuration="20") == 204
    await hotline.wait_idle()
    types = [e.type for e in await store.events() if e.call_id == f"twilio-{sid}"]
    assert types[-1] is EventType.ABANDON
    assert await billing_figures(store) == (1, 0, 1)
    agent = await store.agent("A1001")
    assert agent is not None
    assert agent.state != "wrap_up"
    assert agent.calls == 0
    [summary] = hotline.front.completed
    assert summary.outcomes[-1].kind == "abandoned"


async def test_the_caller_hanging_up_in_the_queue_is_an_abandon(
    make_hotline: MakeHotline, store: RoutingStore, node: RedisRouting
) -> None:
    hotline = await make_hotline(routing=node)  # nobody logged in: the caller waits
    sid = call_sid(0xB2)
    stream = await queued_for_billing(hotline, sid)
    call_id = f"twilio-{sid}"

    async def waiting() -> bool:
        return call_id in await store.waiting("billing")

    deadline = time.monotonic() + 5
    while not await waiting():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    # Twilio's status callback may come before the stream's stop.
    assert await hotline.twilio.status(sid, "completed") == 204
    await stream.wait_closed()
    await hotline.wait_idle()
    types = [e.type for e in await store.events() if e.call_id == call_id]
    assert types == [EventType.ENTERQUEUE, EventType.ABANDON]
    assert await billing_figures(store) == (1, 0, 1)
    assert await store.call(call_id) is None
    [summary] = hotline.front.completed
    assert summary.final_outcome == "enqueue"
    assert summary.outcomes[-1].kind == "abandoned"


async def test_a_client_identity_agent_with_api_key_credentials(
    make_hotline: MakeHotline, store: RoutingStore, node: RedisRouting
) -> None:
    await store.login(
        "A1001", skills={"billing": 5}, now=time.time(), contact="client:wangfang", ready=True
    )
    hotline = await make_hotline(routing=node, twilio_api_key=API_KEY, twilio_api_secret=API_SECRET)
    sid = call_sid(0xB3)
    await _with_agent(hotline, store, sid)
    [update] = hotline.api.updates
    assert update.user == API_KEY  # the key, not the account, authenticates
    client = update.twiml.find("Dial/Client")
    assert client is not None
    assert client.text == "wangfang"
    await hotline.twilio.status(sid, "completed")
    await hotline.wait_idle()


async def test_a_refused_handoff_puts_the_caller_back_in_line_on_the_stream(
    make_hotline: MakeHotline, store: RoutingStore, node: RedisRouting
) -> None:
    await login(store)
    # A revoked (or mistyped) API key: Twilio answers 401.
    hotline = await make_hotline(routing=node, twilio_api_key=API_KEY, twilio_api_secret="x" * 32)
    sid = call_sid(0xB4)
    call_id = f"twilio-{sid}"
    before = HANDOFFS.labels(result="rejected")._value.get()
    with capture_logs() as logs:
        stream = await queued_for_billing(hotline, sid)
        await until_offered(store, "A1001", call_id)
        await store.accept("A1001", call_id, time.time())
        await until_back_in_line(store, call_id)
    [failed] = [e for e in logs if e["event"] == "agent handoff failed"]
    assert failed["reason"] == "rejected"
    assert "401" in failed["detail"]
    assert "20003" in failed["detail"]
    assert HANDOFFS.labels(result="rejected")._value.get() == before + 1
    assert hotline.api.updates == []
    assert hotline.front.calls[sid].phase is CallPhase.IVR
    assert not stream.ws.closed  # the caller is still on the IVR's stream, on hold
    agent = await store.agent("A1001")
    assert agent is not None
    assert (agent.state, agent.reason) == ("not_ready", "missed")
    await stream.stop()
    await hotline.wait_idle()
    types = [e.type for e in await store.events() if e.call_id == call_id]
    assert types[-2:] == [EventType.UNREACHABLE, EventType.ABANDON]


async def until_back_in_line(store: RoutingStore, call_id: str) -> None:
    deadline = time.monotonic() + 5.0
    while call_id not in await store.waiting("billing"):
        assert time.monotonic() < deadline, f"{call_id} never back in line"
        await asyncio.sleep(0.02)


async def test_an_agent_who_does_not_answer_puts_the_caller_back_for_the_next_agent(
    make_hotline: MakeHotline, store: RoutingStore, node: RedisRouting
) -> None:
    await login(store)
    hotline = await make_hotline(routing=node)
    sid = call_sid(0xB5)
    call_id = f"twilio-{sid}"
    await _with_agent(hotline, store, sid)
    with capture_logs() as logs:
        code, text = await hotline.twilio.dial_action(sid, "no-answer")
    assert code == 200
    back = parse_stream_twiml(text)
    assert back.parameters["call_id"] == call_id
    [ended] = [e for e in logs if e["event"] == "agent leg ended"]
    assert ended["dial_status"] == "no-answer"
    # The caller is back on a stream, in line again, hearing the hold prompt.
    stream = await hotline.twilio.open_stream()
    await stream.begin(sid, back.parameters)
    await until_back_in_line(store, call_id)
    await stream.wait_for(lambda: stream.events("media"), what="hold audio")
    agent = await store.agent("A1001")
    assert agent is not None
    assert (agent.state, agent.reason) == ("not_ready", "missed")
    [unreachable] = [e for e in await store.events() if e.type is EventType.UNREACHABLE]
    assert unreachable.fields.get("cause") == "no-answer"
    # Another agent takes the call: a second handoff.
    await store.login(
        "A2002", skills={"billing": 5}, now=time.time(), contact="client:li", ready=True
    )
    await until_offered(store, "A2002", call_id)
    hotline.api.updated.clear()
    await store.accept("A2002", call_id, time.time())
    await asyncio.wait_for(hotline.api.updated.wait(), 5.0)
    client = hotline.api.updates[-1].twiml.find("Dial/Client")
    assert client is not None
    assert client.text == "li"
    await stream.stop()
    await hotline.twilio.status(sid, "completed")
    await hotline.wait_idle()


def test_dial_twiml_for_each_kind_of_contact() -> None:
    from ivr.twilio import twiml
    from ivr.twilio.config import TwilioConfig

    config = TwilioConfig(ACCOUNT_SID, "t", "https://ivr.example.cn", "https://api.twilio.com")

    def noun(contact: str) -> ET.Element:
        root = ET.fromstring(twiml.dial_agent(config, "A7", contact))  # noqa: S314 - ours
        [dial] = list(root)
        [child] = list(dial)
        return child

    assert (noun("sips:a7@pbx.example.cn").tag, noun("sips:a7@pbx.example.cn").text) == (
        "Sip",
        "sips:a7@pbx.example.cn",
    )
    assert (noun("client:li").tag, noun("client:li").text) == ("Client", "li")
    assert (noun("").tag, noun("").text) == ("Client", "A7")
    assert (noun("tel:+8613800000000").tag, noun("+8613800000000").text) == (
        "Number",
        "+8613800000000",
    )
    for bad in ("h323:a7", "tel:call-me"):
        with pytest.raises(twiml.UnreachableContactError):
            twiml.dial_agent(config, "A7", bad)
