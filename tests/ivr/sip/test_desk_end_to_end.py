"""The whole agent desktop path with real peers: a SIPp caller dials `hotline serve`, walks the
IVR to an agent, waits in the real queue; the agent accepts in the browser (Playwright, Debian
chromium); the hotline rings the agent's baresip, registered with its password, which answers;
the caller's 440 Hz reaches the agent and the agent's 1 kHz reaches the caller (tone analysis
of baresip's recording and of the caller's RTP captured on loopback); the agent ends the call
"to the survey" with a wrap-up code, the caller rates 5 by keypad, and the agent completes the
work order, which `hotline tickets show` then shows from the embedded CRM store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiortp.codecs.g711 import PcmaCodec, PcmuCodec
from playwright.async_api import Browser, expect
from redis.asyncio import Redis

from crm_bridge.embedded import EmbeddedCrm, store_path
from ivr.accounts import Role, UserFile
from ivr.sip.registrar import digest_ha1
from routing.events import EventType
from routing.store import RoutingStore
from tests.ivr.serve_process import ServeProcess, hotline_command, start_serve
from tests.ivr.sip.baresip import Baresip, free_ports, write_tone
from tests.ivr.sip.sipp import key_pcaps, run_sipp, sipp_available, uac_scenario, write_rtp_pcap
from tests.ivr.sip.test_baresip import dominant_share, samples_of
from tests.ivr.test_desk_browser import (  # noqa: F401 - browser, chromium: its fixtures
    PASSWORD,
    browser,
    chromium,
    log_in,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("baresip") and sipp_available() and shutil.which("tcpdump"))
        and not os.environ.get("CI"),
        reason="needs Debian baresip, sip-tester and tcpdump",
    ),
]

AGENT, SIP_PASSWORD = "1001", "agent-1001-pw"
TENANT = f"e2e{os.getpid()}"
START = 20.0
WELCOME = 6.5
"""Seconds SIPp waits before pressing 0 (an agent) at the main menu."""
TONE = 14.0
"""Seconds of 440 Hz the caller sends from just after pressing 0."""
END_AT = 15.5
"""Seconds after the caller's INVITE the agent ends the call at the latest (the survey prompt,
11.8 s with barge-in, then runs while the caller presses 5 at about 22 s)."""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    var = tmp_path / "var"
    var.mkdir()
    users = UserFile(var / "users.json")
    users.add(AGENT, Role.AGENT, PASSWORD, name="王芳", skills={"general": 5})
    (tmp_path / "agents.toml").write_text(
        f'[agents.{AGENT}]\nha1 = "{digest_ha1(AGENT, "hotline", SIP_PASSWORD)}"\n'
    )
    return tmp_path


@pytest.fixture
def serve(workdir: Path, redis_servers: Any) -> Iterator[ServeProcess]:
    redis = redis_servers.get("system")
    server = start_serve(
        workdir,
        node_id="desk-e2e",
        HOTLINE_REDIS_URL=redis.url,
        HOTLINE_ROUTING_TENANT=TENANT,
        HOTLINE_SIP_AGENTS_FILE=str(workdir / "agents.toml"),
        HOTLINE_SIP_AGENT_RING_SECONDS="10",
    )
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.proc.wait(timeout=8)
        server.finish()


def rtp_audio(pcap: Path, since: float, until: float) -> array[int]:
    """The G.711 audio of the RTP packets in a loopback capture between two wall-clock times,
    as 16-bit samples (telephone-events and other payload types left out)."""
    data = pcap.read_bytes()
    assert struct.unpack_from("<I", data)[0] == 0xA1B2C3D4
    link = struct.unpack_from("<I", data, 20)[0]
    l2 = {1: 14, 113: 16, 0: 4}[link]
    codecs = {0: PcmuCodec(), 8: PcmaCodec()}
    pcm = bytearray()
    off = 24
    while off + 16 <= len(data):
        sec, usec, incl = struct.unpack_from("<III", data, off)
        packet = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        if not since <= sec + usec / 1e6 <= until:
            continue
        ip = packet[l2:]
        rtp = ip[(ip[0] & 0x0F) * 4 + 8 :]
        if len(rtp) < 12 or rtp[0] >> 6 != 2:
            continue
        codec = codecs.get(rtp[1] & 0x7F)
        if codec is not None:
            pcm += codec.decode(rtp[12 + 4 * (rtp[0] & 0x0F) :])
    samples = array("h", bytes(pcm))
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


async def logged(serve: ServeProcess, event: str, within: float) -> dict[str, Any]:
    return await asyncio.to_thread(serve.wait_for, event, within)


async def test_caller_to_agent_desk_to_survey_and_ticket(
    serve: ServeProcess,
    workdir: Path,
    browser: Browser,  # noqa: F811 - the browser test's fixture
    tmp_path: Path,
    redis_servers: Any,
) -> None:
    web = (await logged(serve, "web listening", START))["port"]
    sip = (await logged(serve, "sip listening", START))["port"]
    site = f"http://127.0.0.1:{web}"

    # The agent's phone registers with its password and answers by itself, sending 1 kHz.
    phone = Baresip(
        tmp_path / "agent",
        f"<sip:{AGENT}@127.0.0.1:{sip}>;auth_pass={SIP_PASSWORD};regint=60;answermode=auto",
        audio_source=write_tone(tmp_path / "agent.wav", 1000.0, 60.0),
        record=True,
        lifetime=90,
    )
    await asyncio.to_thread(phone.start)
    tcpdump: asyncio.subprocess.Process | None = None
    try:
        await logged(serve, "agent registered", 10)

        # The agent signs in on the desk and is ready.
        page = await log_in(browser, site, AGENT)
        await expect(page).to_have_url(f"{site}/desk")
        await page.fill("#contact", f"sip:{AGENT}@127.0.0.1")
        await page.click("#signin-button")
        await page.click("#ready-button")
        await expect(page.locator("#state")).to_have_text("available")

        # The caller: the main menu, 0 for an agent, 440 Hz while talking, 5 in the survey.
        media_port = free_ports(1)[0]
        capture = tmp_path / "caller-rx.pcap"
        tcpdump = await asyncio.create_subprocess_exec(
            *("tcpdump", "-i", "lo", "-U", "-n", "-w", str(capture), f"udp dst port {media_port}"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        tone = tmp_path / "tone.pcap"
        write_rtp_pcap(tone, write_tone(tmp_path / "c.wav", 440.0, TONE).read_bytes()[44:])
        keys = key_pcaps("05", tmp_path)
        steps: list[str | float] = [WELCOME, "0", 0.6, "tone", TONE, "5"]
        scenario = uac_scenario(steps, codecs=(0,), pcaps=[keys[0], tone, keys[1]], hangup=False)
        await asyncio.sleep(1.0)  # tcpdump is listening
        started = time.time()
        caller = asyncio.create_task(
            asyncio.to_thread(
                run_sipp,
                scenario,
                ("127.0.0.1", sip),
                tmp_path,
                timeout=60,
                extra=["-mp", str(media_port)],
            )
        )

        # The offer pops up on the desk with what the IVR learned; the agent accepts.
        await expect(page.locator("#offer")).to_be_visible(timeout=20_000)
        await expect(page.locator("#pop-table")).to_contain_text("13800138000")
        await page.click("#accept-button")
        await expect(page.locator("#state")).to_have_text("on_call")
        await logged(serve, "agent leg answered, caller bridged", 10)
        bridged = time.time()
        await expect(page.locator("#t-caller")).to_have_value("13800138000")
        await page.fill("#t-description", "客户咨询停电恢复时间，已答复")
        await page.select_option("#wrap-code", "已解决")
        await asyncio.sleep(max(3.0, started + END_AT - time.time()))
        ended = time.time()
        await page.click("#complete-button")  # end the call: the caller to the survey
        await expect(page.locator("#state")).to_have_text("wrap_up")
        await page.click("#ticket-button")
        await expect(page.locator("#ticket-done")).to_contain_text("工单 Ticket ")
        ticket_id = (await page.locator("#ticket-done").inner_text()).split()[-1]

        run = await asyncio.wait_for(caller, 70)
        assert run.returncode == 0, run.stdout[-2000:] + run.errors[-2000:]
        await logged(serve, "survey queued", 10)
        await page.click("#done-button")
        await expect(page.locator("#state")).to_have_text("available")
        await page.close()
    finally:
        if tcpdump is not None:
            tcpdump.send_signal(signal.SIGINT)
            await asyncio.wait_for(tcpdump.wait(), 5)
        await asyncio.to_thread(phone.stop)

    # Audio both ways through the hotline's bridge.
    [agent_heard] = phone.recorded("dec")
    heard = samples_of(agent_heard)
    assert len(heard) > 2 * 8000, "the agent leg lasted less than two seconds"
    agent_share = dominant_share(heard[4000:-4000], 440.0)
    caller_heard = rtp_audio(capture, bridged + 0.5, ended - 0.5)
    caller_share = dominant_share(caller_heard, 1000.0)
    print(f"agent heard 440 Hz: {agent_share:.3f}, caller heard 1 kHz: {caller_share:.3f}")
    assert agent_share > 0.8
    assert dominant_share(heard[4000:-4000], 1000.0) < 0.2  # not its own tone
    assert len(caller_heard) >= 8000
    assert caller_share > 0.8
    assert dominant_share(caller_heard, 440.0) < 0.2
    # The agent's phone was hung up when the agent ended on the desk, before the survey.
    assert "session closed" in phone.log()

    # The work order through the outbox into the embedded store, as `hotline tickets show` says.
    shown = ""
    for _ in range(50):
        done = await asyncio.to_thread(
            subprocess.run,
            [*hotline_command(), "tickets", "show", ticket_id, "--url", site],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        shown = done.stdout
        if done.returncode == 0 and "delivery" not in shown.lower():
            break
        await asyncio.sleep(0.2)
    assert done.returncode == 0, done.stderr
    for part in (ticket_id, "咨询", "13800138000", "已解决", "客户咨询停电恢复时间"):
        assert part in shown, shown

    # Routing's COMPLETE carries the wrap-up code the agent chose.
    client = Redis.from_url(redis_servers.get("system").url, decode_responses=True)
    try:
        events = await RoutingStore(client, tenant=TENANT).events()
    finally:
        await client.aclose()
    [complete] = [e for e in events if e.type is EventType.COMPLETE]
    assert (complete.fields["by"], complete.fields["code"]) == ("agent", "已解决")

    # The rating, stored in the embedded store once the node is stopped.
    serve.proc.send_signal(signal.SIGTERM)
    assert serve.proc.wait(timeout=10) == 0
    store = await EmbeddedCrm.open(store_path(workdir / "var"))
    try:
        ticket = await store.get_ticket(ticket_id)
        assert ticket is not None
        assert ticket.fields["wrap_code"] == "已解决"
        survey = await store.get_survey(ticket.call_id)
        assert survey is not None
        assert (survey.score, survey.agent_id) == (5, AGENT)
    finally:
        await store.close()
