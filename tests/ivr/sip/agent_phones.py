"""An in-process hotline whose routing gives every call to agent 1001, and the two baresips
(the agent's softphone, registered with its password, and a caller) that the bridge and REFER
tests put on it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from baresip import Baresip, write_tone

from ivr.dialog import actions as act
from ivr.dialog import events as ev
from ivr.dialog.engine import CallContext
from ivr.flow.model import load_flow
from ivr.services import NotConnectedCrm, NotConnectedRouting
from ivr.settings import Settings, load_settings
from ivr.sip.registrar import digest_ha1
from ivr.sip.server import SipServer
from sounds.catalog import Catalog, PromptLibrary, shipped_dir

AGENT, PASSWORD = "1001", "agent-1001-pw"


class AgentAtOnce(NotConnectedRouting):
    """Stands in for routing: every call goes to agent 1001 at once."""

    def __init__(self, *, announce_position: bool) -> None:
        self.announce_position = announce_position
        self.left: list[act.LeaveQueue] = []

    async def enqueue(
        self, request: act.Enqueue, context: CallContext, feed: Callable[[ev.Event], None]
    ) -> None:
        if self.announce_position:
            feed(ev.QueuePosition(request.request_id, 1, 0))
        feed(ev.AgentConnected(request.request_id, AGENT))

    async def leave_queue(self, request: act.LeaveQueue, context: CallContext) -> None:
        self.left.append(request)


@contextlib.asynccontextmanager
async def agent_server(
    tmp_path: Path, routing: AgentAtOnce, **overrides: Any
) -> AsyncIterator[SipServer]:
    """A started SipServer on a free port whose registrar knows agent 1001's password."""
    agents = tmp_path / "agents.toml"
    agents.write_text(f'[agents.{AGENT}]\nha1 = "{digest_ha1(AGENT, "hotline", PASSWORD)}"\n')
    base = load_settings()
    settings = Settings(
        **{**base.model_dump(), "sip_port": 0, "sip_agents_file": agents, **overrides}
    )
    srv = SipServer(
        settings,
        load_flow(settings.resolved_flow_file()),
        PromptLibrary(Catalog.shipped(), [shipped_dir()]),
        crm=NotConnectedCrm(),
        routing=routing,
    )
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(0)


async def until(predicate: Callable[[], bool], within: float = 15.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - the server changes state as datagrams arrive
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def agent_and_caller(
    server: SipServer, tmp_path: Path
) -> AsyncIterator[tuple[Baresip, Baresip]]:
    """Agent 1001's phone (auto-answer, sends a 1 kHz tone) registered to the server, and a
    caller phone (sends 440 Hz); both record what they hear and are stopped on the way out."""
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
    phones = [agent, caller]
    try:
        for phone in phones:
            await asyncio.to_thread(phone.start)
        registrar = server.registrar
        assert registrar is not None
        loop = asyncio.get_running_loop()
        await until(lambda: bool(registrar.lookup(AGENT, loop.time())))
        yield agent, caller
    finally:
        for phone in phones:
            await asyncio.to_thread(phone.stop)
