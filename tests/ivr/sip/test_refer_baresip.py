"""A baresip caller handed by REFER to a baresip agent (``sip_transfer_mode = "refer"``).

baresip 1.0.0 takes an incoming REFER (menu module: "transferring call to ..."): it answers 202,
calls the Refer-To URI itself, and reports that call in NOTIFYs (message/sipfrag). The agent
registers to the hotline with its password; routing (a stand-in) connects agent 1001 at once, so
the Refer-To is the agent's registered contact. Once the agent answers, the hotline hangs up its
leg: the caller and the agent talk directly, and the audio is checked both ways on the phones'
own recordings.
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
    """Stands in for routing: every call goes to agent 1001 at once."""

    def __init__(self) -> None:
        self.left: list[act.LeaveQueue] = []

    async def enqueue(
        self, request: act.Enqueue, context: CallContext, feed: Callable[[ev.Event], None]
    ) -> None:
        feed(ev.AgentConnected(request.request_id, AGENT))

    async def leave_queue(self, request: act.LeaveQueue, context: CallContext) -> None:
        self.left.append(request)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[SipServer]:
    agents = tmp_path / "agents.toml"
    agents.write_text(f'[agents.{AGENT}]\nha1 = "{digest_ha1(AGENT, "hotline", PASSWORD)}"\n')
    base = load_settings()
    settings = Settings(
        **{
            **base.model_dump(),
            "sip_port": 0,
            "sip_agents_file": agents,
            "sip_transfer_mode": "refer",
        }
    )
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


async def until(predicate: Callable[[], bool], within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - the server changes state as datagrams arrive
            await asyncio.sleep(0.05)


async def test_caller_is_referred_to_the_agent_and_they_talk_directly(
    server: SipServer, tmp_path: Path
) -> None:
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
        [binding] = registrar.lookup(AGENT, loop.time())

        caller.command(f"/dial sip:95598@{host}:{port}")
        await asyncio.to_thread(caller.wait_for, r"Call established: sip:95598@", 10.0)
        caller.command("/sndcode 0")  # an agent, please (kept through the greeting)
        await until(lambda: bool(server.refers.outcomes), within=40.0)
        await until(lambda: len(server.completed) == 1)
        await asyncio.to_thread(agent.wait_for, r"Call established", 10.0)
        await asyncio.sleep(4.0)  # caller and agent talk, without the hotline
        caller.command("/hangup")
        await asyncio.to_thread(agent.wait_for, r"session closed", 10.0)
        for phone in phones:
            await asyncio.to_thread(phone.stop)
    finally:
        for phone in phones:
            await asyncio.to_thread(phone.stop)

    [(_, outcome)] = server.refers.outcomes
    assert outcome.succeeded, outcome
    # baresip took the REFER and called the Refer-To (the agent's registered contact) itself.
    assert f"transferring call {summary_call_id(server)} to '<{binding.contact}>'" in caller.log()
    assert f"Call established: {binding.contact}" in caller.log()
    assert "session closed" in caller.log()  # the hotline's BYE on its own leg
    [summary] = server.completed
    assert [o.kind for o in summary.outcomes] == ["enqueue", "transferred"]
    assert [left.reason for left in routing_left(server)] == ["transferred"]
    assert not server.legs  # the hotline never called the agent

    # Audio both ways, directly: the caller heard the agent's 1 kHz tone on the transferred
    # call, the agent heard the caller's 440 Hz tone.
    caller_heard = caller.recorded("dec")[-1]
    [agent_heard] = agent.recorded("dec")
    assert dominant_share(samples_of(caller_heard)[-24000:-8000], 1000.0) > 0.8
    assert dominant_share(samples_of(agent_heard)[-24000:-8000], 440.0) > 0.8


def routing_left(server: SipServer) -> list[act.LeaveQueue]:
    assert isinstance(server.routing, AgentAtOnce)
    return server.routing.left


def summary_call_id(server: SipServer) -> str:
    """The SIP Call-ID of the one call (the dialog's call id is ``sip-<Call-ID>``)."""
    [summary] = server.completed
    return summary.call_id.removeprefix("sip-")
