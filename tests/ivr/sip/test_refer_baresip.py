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
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ivr.dialog import actions as act
from ivr.sip.server import SipServer

sys.path.insert(0, str(Path(__file__).parent))
from agent_phones import AGENT, AgentAtOnce, agent_and_caller, agent_server, until
from test_baresip import dominant_share, samples_of

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not shutil.which("baresip") and not os.environ.get("CI"), reason="needs Debian baresip"
    ),
]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[SipServer]:
    routing = AgentAtOnce(announce_position=False)
    async with agent_server(tmp_path, routing, sip_transfer_mode="refer") as srv:
        yield srv


async def test_caller_is_referred_to_the_agent_and_they_talk_directly(
    server: SipServer, tmp_path: Path
) -> None:
    host, port = server.address
    async with agent_and_caller(server, tmp_path) as (agent, caller):
        registrar = server.registrar
        assert registrar is not None
        [binding] = registrar.lookup(AGENT, asyncio.get_running_loop().time())

        caller.command(f"/dial sip:95598@{host}:{port}")
        await asyncio.to_thread(caller.wait_for, r"Call established: sip:95598@", 10.0)
        caller.command("/sndcode 0")  # an agent, please (kept through the greeting)
        await until(lambda: bool(server.refers.outcomes), within=40.0)
        await until(lambda: len(server.completed) == 1, within=20.0)
        await asyncio.to_thread(agent.wait_for, r"Call established", 10.0)
        await asyncio.sleep(4.0)  # caller and agent talk, without the hotline
        caller.command("/hangup")
        await asyncio.to_thread(agent.wait_for, r"session closed", 10.0)

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
