"""A caller asks for an agent and is bridged to the agent's softphone (two real baresips).

Routing is not built yet, so the test plugs in a routing that gives the call to agent 1001 at
once; everything SIP is real: the agent registers with its password, the hotline places the
agent leg to the registered contact, bridges the audio both ways (the IVR stays in the path),
and tears the agent leg down when the caller hangs up.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from ivr.dialog import actions as act
from ivr.dialog import events as ev
from ivr.dialog.engine import CallContext
from ivr.flow.model import load_flow
from ivr.services import NotConnectedCrm, NotConnectedRouting
from ivr.settings import Settings, load_settings
from ivr.sip.registrar import digest_ha1
from ivr.sip.server import SipServer
from sounds.catalog import Catalog, PromptLibrary, shipped_dir

sys.path.insert(0, str(Path(__file__).parent))
from baresip import Baresip, write_tone
from test_baresip import dominant_share, samples_of

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not shutil.which("baresip") and not os.environ.get("CI"), reason="needs Debian baresip"
    ),
]

AGENT, PASSWORD = "1001", "agent-1001-pw"


class AgentAtOnce(NotConnectedRouting):
    """Stands in for routing (not built yet): every call goes to agent 1001 at once."""

    def __init__(self) -> None:
        self.left: list[act.LeaveQueue] = []

    async def enqueue(
        self, request: act.Enqueue, context: CallContext, feed: Callable[[ev.Event], None]
    ) -> None:
        feed(ev.QueuePosition(request.request_id, 1, 0))
        feed(ev.AgentConnected(request.request_id, AGENT))

    async def leave_queue(self, request: act.LeaveQueue, context: CallContext) -> None:
        self.left.append(request)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[SipServer]:
    agents = tmp_path / "agents.toml"
    agents.write_text(f'[agents.{AGENT}]\nha1 = "{digest_ha1(AGENT, "hotline", PASSWORD)}"\n')
    base = load_settings()
    settings = Settings(**{**base.model_dump(), "sip_port": 0, "sip_agents_file": agents})
    srv = SipServer(
        settings,
        load_flow(settings.resolved_flow_file()),
        PromptLibrary(Catalog.shipped(), [shipped_dir()]),
        crm=NotConnectedCrm(),
        routing=AgentAtOnce(),
    )
    await srv.start()
    yield srv
    await srv.stop(0)


async def until(predicate: Callable[[], bool], within: float = 15.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - the server changes state as datagrams arrive
            await asyncio.sleep(0.05)


async def test_caller_is_bridged_to_the_registered_agent(server: SipServer, tmp_path: Path) -> None:
    host, port = server.address
    agent = Baresip(
        tmp_path / "agent",
        f"<sip:{AGENT}@{host}:{port}>;auth_pass={PASSWORD};regint=60;answermode=auto",
        audio_source=write_tone(tmp_path / "agent.wav", 1000.0, 40.0),
        record=True,
    )
    caller = Baresip(
        tmp_path / "caller",
        "<sip:13800138000@127.0.0.1>;regint=0",
        audio_source=write_tone(tmp_path / "caller.wav", 440.0, 40.0),
        record=True,
    )
    phones: list[Any] = [agent, caller]
    try:
        for phone in phones:
            await asyncio.to_thread(phone.start)
        registrar = server.registrar
        assert registrar is not None
        loop = asyncio.get_running_loop()
        await until(lambda: bool(registrar.lookup(AGENT, loop.time())))

        caller.command(f"/dial sip:95598@{host}:{port}")
        await asyncio.sleep(6.0)  # the welcome prompt is not interruptible
        caller.command("/sndcode 0")  # an agent, please
        await until(lambda: any(c.bridge is not None for c in server.calls.values()))
        await asyncio.sleep(4.0)  # talk
        caller.command("/hangup")
        await until(lambda: len(server.completed) == 1)
        await until(lambda: not server.legs)
        for phone in phones:
            await asyncio.to_thread(phone.stop)
    finally:
        for phone in phones:
            await asyncio.to_thread(phone.stop)

    [summary] = server.completed
    assert "agent_general" in summary.path
    assert summary.slots["agent_id"] == AGENT
    assert [o.kind for o in summary.outcomes] == ["enqueue"]  # talked to an agent: no abandon
    assert "session closed" in agent.log()  # the agent leg was hung up (BYE) with the caller

    # Audio both ways through the IVR: the caller heard the agent's 1 kHz tone, the agent heard
    # the caller's 440 Hz tone (the last two seconds of each recording are the bridged talk).
    [caller_heard] = caller.recorded("dec")
    [agent_heard] = agent.recorded("dec")
    tail_caller = samples_of(caller_heard)[-24000:-8000]
    tail_agent = samples_of(agent_heard)[-24000:-8000]
    assert dominant_share(tail_caller, 1000.0) > 0.8
    assert dominant_share(tail_agent, 440.0) > 0.8
