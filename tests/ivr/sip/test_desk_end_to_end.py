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
import uuid
from array import array
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiortp.codecs.g711 import PcmaCodec, PcmuCodec
from playwright.async_api import Browser, Page, expect
from redis.asyncio import Redis

from crm_bridge.embedded import EmbeddedCrm, store_path
from ivr.accounts import Role, UserFile
from ivr.sip.registrar import digest_ha1
from routing.events import EventType, RoutingEvent
from routing.store import RoutingStore
from tests.ivr.serve_process import ServeProcess, hotline_command, start_serve
from tests.ivr.sip.baresip import Baresip, free_ports, write_tone
from tests.ivr.sip.sipp import (
    SippRun,
    key_pcaps,
    run_sipp,
    sipp_available,
    uac_scenario,
    write_rtp_pcap,
)
from tests.ivr.sip.test_baresip import dominant_share, samples_of
from tests.ivr.test_desk_browser import PASSWORD, log_in

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("baresip") and sipp_available() and shutil.which("tcpdump"))
        and not os.environ.get("CI"),
        reason="needs Debian baresip, sip-tester and tcpdump",
    ),
]

AGENT, SIP_PASSWORD = "1001", "agent-1001-pw"
SECOND = "1002"
"""The complaints agent a caller is transferred to."""
START = 20.0
WELCOME = 6.5
"""Seconds SIPp waits before pressing 0 (an agent) at the main menu."""
TONE = 18.0
"""Seconds of 440 Hz the caller sends from just after pressing 0; then it presses 5, at about
26 s."""
UI_WAIT = 20_000
"""Milliseconds the desk may take to show a change (a loaded test machine is slow)."""
END_AT = 15.5
"""Seconds after the caller's INVITE the agent ends the call, or 3 s after the bridge if that is
later: the survey (11.8 s of prompt with barge-in, then 8 s for a key) must have begun, and
not be over, when the caller presses 5 at about 26 s."""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    var = tmp_path / "var"
    var.mkdir()
    users = UserFile(var / "users.json")
    users.add(AGENT, Role.AGENT, PASSWORD, name="王芳", skills={"general": 5})
    users.add(SECOND, Role.AGENT, PASSWORD, name="李强", skills={"complaint": 5})
    (tmp_path / "agents.toml").write_text(
        "".join(
            f'[agents.{a}]\nha1 = "{digest_ha1(a, "hotline", SIP_PASSWORD)}"\n'
            for a in (AGENT, SECOND)
        )
    )
    return tmp_path


@pytest.fixture
def tenant() -> str:
    return f"e2e{uuid.uuid4().hex[:10]}"


@dataclass
class Node:
    """The running `hotline serve` of a test, and where to reach it."""

    serve: ServeProcess
    workdir: Path
    tenant: str
    redis_url: str
    site: str = ""
    sip: int = 0

    async def events(self) -> list[RoutingEvent]:
        """Routing's event stream of the node's tenant."""
        client = Redis.from_url(self.redis_url, decode_responses=True)
        try:
            return await RoutingStore(client, tenant=self.tenant).events()
        finally:
            await client.aclose()


@pytest.fixture
async def node(workdir: Path, redis_servers: Any, tenant: str) -> AsyncIterator[Node]:
    redis = redis_servers.get("system")
    server = start_serve(
        workdir,
        node_id="desk-e2e",
        HOTLINE_REDIS_URL=redis.url,
        HOTLINE_ROUTING_TENANT=tenant,
        HOTLINE_SIP_AGENTS_FILE=str(workdir / "agents.toml"),
        HOTLINE_SIP_AGENT_RING_SECONDS="10",
    )
    try:
        running = Node(server, workdir, tenant, redis.url)
        running.site = f"http://127.0.0.1:{(await logged(server, 'web listening', START))['port']}"
        running.sip = (await logged(server, "sip listening", START))["port"]
        yield running
    finally:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(server.proc.wait, 8)
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


async def logged(serve: ServeProcess, event: str, within: float, nth: int = 1) -> dict[str, Any]:
    return await asyncio.to_thread(serve.wait_for, event, within, nth)


async def agent_phone(node: Node, folder: Path, agent: str, tone: float) -> Baresip:
    """A baresip agent phone registered to the hotline with its password, answering by itself
    and sending a tone."""
    phone = Baresip(
        folder / agent,
        f"<sip:{agent}@127.0.0.1:{node.sip}>;auth_pass={SIP_PASSWORD};regint=60;answermode=auto",
        audio_source=write_tone(folder / f"{agent}.wav", tone, 80.0),
        record=True,
        lifetime=120,
    )
    await asyncio.to_thread(phone.start)
    await asyncio.to_thread(phone.wait_for, "200 OK", 10)  # registered
    return phone


async def ready_desk(browser: Browser, node: Node, agent: str) -> Page:
    """The agent logged in on the desk, signed in to the queues and ready."""
    page = await log_in(browser, node.site, agent)
    await expect(page).to_have_url(f"{node.site}/desk", timeout=UI_WAIT)
    await page.fill("#contact", f"sip:{agent}@127.0.0.1")
    await page.click("#signin-button")
    await page.click("#ready-button")
    await expect(page.locator("#state")).to_have_text("available", timeout=UI_WAIT)
    return page


@asynccontextmanager
async def capturing(port: int, path: Path) -> AsyncIterator[None]:
    """tcpdump of the RTP that reaches a loopback UDP port."""
    tcpdump = await asyncio.create_subprocess_exec(
        *("tcpdump", "-i", "lo", "-U", "-n", "-w", str(path), f"udp dst port {port}"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await asyncio.sleep(1.0)  # listening
        yield
    finally:
        tcpdump.send_signal(signal.SIGINT)
        await asyncio.wait_for(tcpdump.wait(), 5)


def start_caller(
    node: Node, folder: Path, media_port: int, tone_seconds: float, *, rate: bool
) -> asyncio.Task[SippRun]:
    """The SIPp caller: the main menu, 0 for an agent, then 440 Hz; with ``rate`` it presses 5
    (the survey) when the tone is over. It waits for the hotline's BYE."""
    tone = folder / "tone.pcap"
    pcm = write_tone(folder / "caller.wav", 440.0, tone_seconds).read_bytes()[44:]
    write_rtp_pcap(tone, pcm)
    keys = key_pcaps("05", folder)
    steps: list[str | float] = [WELCOME, "0", 0.6, "tone"]
    pcaps = [keys[0], tone]
    if rate:
        steps += [tone_seconds, "5"]
        pcaps.append(keys[1])
    scenario = uac_scenario(steps, codecs=(0,), pcaps=pcaps, hangup=False)
    return asyncio.create_task(
        asyncio.to_thread(
            run_sipp,
            scenario,
            ("127.0.0.1", node.sip),
            folder,
            timeout=90,
            extra=["-mp", str(media_port)],
        )
    )


async def accept(page: Page, node: Node, answered: int) -> float:
    """The agent accepts the offered call; when the hotline bridged the caller to their phone
    (the ``answered``-th agent leg answered)."""
    await expect(page.locator("#offer")).to_be_visible(timeout=25_000)
    await expect(page.locator("#pop-table")).to_contain_text("13800138000", timeout=UI_WAIT)
    await page.click("#accept-button")
    await expect(page.locator("#state")).to_have_text("on_call", timeout=UI_WAIT)
    await logged(node.serve, "agent leg answered, caller bridged", 15, answered)
    return time.time()


TONE_WINDOW = 2000
"""Samples per measured window: a quarter second holds a whole number of cycles of each test
tone (440, 1000 and 1500 Hz), so a clean window gives a share of ~1."""


def tone_share(samples: array[int], frequency: float) -> float:
    """The median share of a tone over quarter-second windows of audio.

    One transform of the whole would be spoiled by a single jump in the tone's phase (a packet
    the jitter buffer lost, stretched or concealed); so is the window holding it. A second-long
    window put such a jump into up to a third of a short leg's windows and the median near the
    bound (0.7998 once on a loaded CI machine); quarter seconds leave a glitch two windows out of
    a dozen or more, and the median reads the clean ones.
    """
    shares = sorted(
        dominant_share(samples[i : i + TONE_WINDOW], frequency)
        for i in range(0, len(samples) - TONE_WINDOW + 1, TONE_WINDOW)
    )
    return shares[len(shares) // 2] if shares else 0.0


def heard(phone: Baresip, frequency: float, other: float) -> None:
    """The phone heard the caller's tone (and not its own) while it was bridged."""
    [wav] = phone.recorded("dec")
    samples = samples_of(wav)
    assert len(samples) > 2 * 8000, "the agent leg lasted less than two seconds"
    assert tone_share(samples[4000:-4000], frequency) > 0.8
    assert tone_share(samples[4000:-4000], other) < 0.2


async def test_caller_to_agent_desk_to_survey_and_ticket(
    node: Node,
    browser: Browser,
    tmp_path: Path,
) -> None:
    phone = await agent_phone(node, tmp_path, AGENT, 1000.0)
    capture = tmp_path / "caller-rx.pcap"
    media_port = free_ports(1)[0]
    try:
        page = await ready_desk(browser, node, AGENT)
        async with capturing(media_port, capture):
            started = time.time()
            caller = start_caller(node, tmp_path, media_port, TONE, rate=True)
            # The offer pops up with what the IVR learned; the agent accepts, the phone rings.
            bridged = await accept(page, node, 1)
            await expect(page.locator("#t-caller")).to_have_value("13800138000", timeout=UI_WAIT)
            await page.fill("#t-description", "客户咨询停电恢复时间，已答复")
            await page.select_option("#wrap-code", "已解决")
            await asyncio.sleep(max(3.0, started + END_AT - time.time()))
            ended = time.time()
            await page.click("#complete-button")  # end the call: the caller to the survey
            await expect(page.locator("#state")).to_have_text("wrap_up", timeout=UI_WAIT)
            await page.click("#ticket-button")
            await expect(page.locator("#ticket-done")).to_contain_text(
                "工单 Ticket ", timeout=UI_WAIT
            )
            ticket_id = (await page.locator("#ticket-done").inner_text()).split()[-1]
            run = await asyncio.wait_for(caller, 100)
        assert run.returncode == 0, run.stdout[-2000:] + run.errors[-2000:]
        await logged(node.serve, "survey queued", 10)
        await page.click("#done-button")
        await expect(page.locator("#state")).to_have_text("available", timeout=UI_WAIT)
        await page.close()
    finally:
        await asyncio.to_thread(phone.stop)

    # Audio both ways through the hotline's bridge.
    heard(phone, 440.0, 1000.0)
    caller_heard = rtp_audio(capture, bridged + 0.5, ended - 0.5)
    assert len(caller_heard) >= 8000
    assert tone_share(caller_heard, 1000.0) > 0.8
    assert tone_share(caller_heard, 440.0) < 0.2
    # The agent's phone was hung up when the agent ended on the desk, before the survey.
    assert "session closed" in phone.log()

    # The work order through the outbox into the embedded store, as `hotline tickets show` says.
    shown = ""
    for _ in range(50):
        done = await asyncio.to_thread(
            subprocess.run,
            [*hotline_command(), "tickets", "show", ticket_id, "--url", node.site],
            cwd=node.workdir,
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
    [complete] = [e for e in await node.events() if e.type is EventType.COMPLETE]
    assert (complete.fields["by"], complete.fields["code"]) == ("agent", "已解决")

    # The rating, stored in the embedded store once the node is stopped.
    node.serve.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(node.serve.proc.wait, 10) == 0
    store = await EmbeddedCrm.open(store_path(node.workdir / "var"))
    try:
        ticket = await store.get_ticket(ticket_id)
        assert ticket is not None
        assert ticket.fields["wrap_code"] == "已解决"
        survey = await store.get_survey(ticket.call_id)
        assert survey is not None
        assert (survey.score, survey.agent_id) == (5, AGENT)
    finally:
        await store.close()


async def test_agent_transfers_the_caller_to_another_queue_on_the_line(
    node: Node,
    browser: Browser,
    tmp_path: Path,
) -> None:
    first = await agent_phone(node, tmp_path, AGENT, 1000.0)
    second = await agent_phone(node, tmp_path, SECOND, 1500.0)
    capture = tmp_path / "caller-rx.pcap"
    media_port = free_ports(1)[0]
    try:
        desk = await ready_desk(browser, node, AGENT)
        complaints = await ready_desk(browser, node, SECOND)
        async with capturing(media_port, capture):
            caller = start_caller(node, tmp_path, media_port, 45.0, rate=False)
            await accept(desk, node, 1)
            await asyncio.sleep(3.0)  # talk
            await desk.select_option("#transfer-queue", "complaint")
            await desk.click("#transfer-button")
            await expect(desk.locator("#state")).to_have_text("wrap_up", timeout=UI_WAIT)
            # The caller, still on the line, waits for complaints: the next agent's pop is the
            # same, their phone rings and answers.
            await expect(complaints.locator("#pop-table")).to_contain_text(
                "general", timeout=UI_WAIT
            )
            second_bridged = await accept(complaints, node, 2)
            await expect(complaints.locator("#t-caller")).to_have_value(
                "13800138000", timeout=UI_WAIT
            )
            await asyncio.sleep(3.0)
            second_ended = time.time()
            await complaints.select_option("#wrap-code", "转其他部门")
            await complaints.click("#end-button")  # for both sides: the caller is hung up
            await expect(complaints.locator("#state")).to_have_text("wrap_up", timeout=UI_WAIT)
            run = await asyncio.wait_for(caller, 100)
        assert run.returncode == 0, run.stdout[-2000:] + run.errors[-2000:]
    finally:
        for phone in (first, second):
            await asyncio.to_thread(phone.stop)

    heard(first, 440.0, 1000.0)
    heard(second, 440.0, 1500.0)
    assert "session closed" in first.log()  # the first agent's leg ended at the transfer
    caller_heard = rtp_audio(capture, second_bridged + 0.5, second_ended - 0.5)
    assert len(caller_heard) >= 8000
    assert tone_share(caller_heard, 1500.0) > 0.8  # the second agent, not the first
    assert tone_share(caller_heard, 1000.0) < 0.2
    events = [e for e in await node.events() if e.call_id and e.call_id != ""]
    kinds = [
        e.type
        for e in events
        if e.type in (EventType.CONNECT, EventType.TRANSFER, EventType.COMPLETE)
    ]
    assert kinds == [EventType.CONNECT, EventType.TRANSFER, EventType.CONNECT, EventType.COMPLETE]
    transfer = next(e for e in events if e.type is EventType.TRANSFER)
    assert (transfer.agent_id, transfer.fields["from"], transfer.fields["skill"]) == (
        AGENT,
        "general",
        "complaint",
    )
    complete = next(e for e in events if e.type is EventType.COMPLETE)
    assert (complete.agent_id, complete.fields["code"]) == (SECOND, "转其他部门")
