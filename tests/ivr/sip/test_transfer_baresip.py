"""A caller asks for an agent and is bridged to the agent's softphone (two real baresips).

A stand-in routing gives the call to agent 1001 at once; everything SIP is real: the agent
registers with its password, the hotline places the agent leg to the registered contact, bridges
the audio both ways (the IVR stays in the path), and tears the agent leg down when the caller
hangs up.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

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
    async with agent_server(tmp_path, AgentAtOnce(announce_position=True)) as srv:
        yield srv


async def test_caller_is_bridged_to_the_registered_agent(server: SipServer, tmp_path: Path) -> None:
    host, port = server.address
    async with agent_and_caller(server, tmp_path) as (agent, caller):
        caller.command(f"/dial sip:95598@{host}:{port}")
        await asyncio.sleep(6.0)  # the welcome prompt is not interruptible
        caller.command("/sndcode 0")  # an agent, please
        await until(lambda: any(c.bridge is not None for c in server.calls.values()))
        await asyncio.sleep(4.0)  # talk
        caller.command("/hangup")
        await until(lambda: len(server.completed) == 1)
        await until(lambda: not server.legs)

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
