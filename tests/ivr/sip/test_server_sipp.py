"""The SIP front end against a real SIPp caller on loopback: the 95598 flow over SIP and RTP."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ivr.sip.server import SipServer

sys.path.insert(0, str(Path(__file__).parent))
from sipp import (
    OPTIONS_SCENARIO,
    cancel_scenario,
    key_pcaps,
    make_server,
    run_sipp,
    sipp_available,
    uac_scenario,
    wait_until,
)

pytestmark = [
    pytest.mark.slow,
    # CI installs SIPp (scripts/test); only a developer without it may skip these.
    pytest.mark.skipif(
        not sipp_available() and not os.environ.get("CI"), reason="needs Debian sip-tester"
    ),
]


@pytest.fixture
async def server() -> AsyncIterator[SipServer]:
    srv = make_server()
    await srv.start()
    yield srv
    await srv.stop(0)


async def sipp(scenario: str, target: tuple[str, int], folder: Path, **kw: Any) -> Any:
    return await asyncio.to_thread(run_sipp, scenario, target, folder, **kw)


async def wait_for_calls(server: SipServer, count: int, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        # The server appends summaries as sessions end; polling a list is the simplest wait.
        while len(server.completed) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(("codecs", "payload_type"), [((0, 8), 0), ((8,), 8)])
async def test_fault_report_by_rfc4733_keys(
    server: SipServer, tmp_path: Path, codecs: tuple[int, ...], payload_type: int
) -> None:
    """2 = fault repair, # = no account number; the flow walks on to its service steps."""
    pcaps = key_pcaps("2#", tmp_path)
    scenario = uac_scenario([6.0, "2", 1.5, "#", 2.0], codecs=codecs, pcaps=pcaps)
    run = await sipp(scenario, server.address, tmp_path, timeout=40)
    assert run.returncode == 0, run.stdout[-2000:] + run.errors
    await wait_for_calls(server, 1)
    [summary] = server.completed
    assert summary.path[:4] == ["welcome", "main_menu", "fault_account", "fault_address"]
    assert summary.slots["intent"] == "fault"
    assert summary.caller == "13800138000"
    assert summary.outcomes[-1].kind == "abandoned"  # the caller's BYE ended the call
    assert [pt for _, pt in server.answered] == [payload_type]
    assert server.core.calls == 0 or not server.calls


async def test_options_gets_200(server: SipServer, tmp_path: Path) -> None:
    run = await sipp(OPTIONS_SCENARIO, server.address, tmp_path, timeout=10)
    assert run.returncode == 0, run.stdout[-2000:] + run.errors


async def test_cancel_while_ringing_is_never_answered(tmp_path: Path) -> None:
    srv = make_server(sip_ring_seconds=2.0)
    await srv.start()
    try:
        run = await sipp(cancel_scenario(), srv.address, tmp_path, timeout=15)
        assert run.returncode == 0, run.stdout[-2000:] + run.errors
        await asyncio.sleep(2.5)  # past the ring time: the cancelled call must not be answered
        assert not srv.answered
        assert srv.calls == {}
    finally:
        await srv.stop(0)


async def test_garbage_does_not_disturb_a_call(server: SipServer, tmp_path: Path) -> None:
    pcaps = key_pcaps("2", tmp_path)
    scenario = uac_scenario([6.0, "2", 1.0], pcaps=pcaps)
    call = asyncio.create_task(sipp(scenario, server.address, tmp_path, timeout=30))
    await asyncio.sleep(1.0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for junk in (
            b"\x00\xff" * 40,
            b"INVITE nonsense\r\n\r\n",
            b"SIP/2.0 999\r\n\r\n",
            b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9\r\n\r\n",
            b"A" * 70000,
        ):
            sock.sendto(junk[:65000], server.address)
    run = await call
    assert run.returncode == 0, run.stdout[-2000:] + run.errors
    await wait_for_calls(server, 1)
    assert server.completed[0].path[:3] == ["welcome", "main_menu", "fault_account"]


async def test_a_draining_node_refuses_new_calls_with_503(tmp_path: Path) -> None:
    srv = make_server()
    await srv.start()
    srv.draining = True
    try:
        run = await sipp(uac_scenario([1.0]), srv.address, tmp_path, timeout=10)
        assert run.returncode != 0  # the scenario expected a 200
        assert "503" in run.stdout + run.errors
        assert not srv.answered
    finally:
        await srv.stop(0)


async def test_a_call_still_ringing_when_the_node_stops_gets_503_and_its_port_back(
    tmp_path: Path,
) -> None:
    """Stopping while a call rings (before the answer): the caller gets 503 with Retry-After
    (its PBX tries another node), the call is never answered, its RTP socket is closed."""
    srv = make_server(sip_ring_seconds=5.0)
    await srv.start()
    stopped = False
    try:
        caller = asyncio.get_running_loop().create_task(
            sipp(uac_scenario([1.0]), srv.address, tmp_path, timeout=15)
        )
        await wait_until(lambda: bool(srv.pending) and len(srv.clock) == 1, 5.0)  # ringing
        await srv.stop(0)
        stopped = True
        run = await caller
        assert run.returncode != 0  # the scenario expected a 200
        assert "503" in run.stdout + run.errors
        assert not srv.answered
        assert not srv.pending
        assert len(srv.clock) == 0  # the media stream left the clock: closed
    finally:
        if not stopped:
            await srv.stop(0)


async def test_a_caller_that_sends_no_rtp_is_hung_up(tmp_path: Path) -> None:
    """A dead peer (no RTP for rtp_timeout_seconds) is hung up: BYE from the hotline."""
    srv = make_server(rtp_timeout_seconds=2.0)
    await srv.start()
    try:
        # The caller sends no audio and waits for the hotline's BYE (and answers it).
        scenario = uac_scenario([], hangup=False)
        run = await sipp(scenario, srv.address, tmp_path, timeout=20)
        assert run.returncode == 0, run.stdout[-2000:] + run.errors
        await wait_for_calls(srv, 1)
        [summary] = srv.completed
        assert summary.duration < 8.0  # the 2 s timeout, checked a few times a second
        assert srv.calls == {}
    finally:
        await srv.stop(0)
