"""Hostile inputs against a running `hotline serve` (tests/hostile/live.py): SIP datagrams, RTP to
a live call, raw HTTP requests and Twilio Media Stream frames, all at once, while SIPp places an
ordinary call. The node must not crash, log no error or exception, rate-limit its complaints,
and carry the ordinary call (and the calls under fire) to the end.

2,500 inputs here (with the 8,000 of test_fuzz_parsers.py: 10,500 per CI run); bench/fuzz.py
runs the same barrages as long as asked.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.hostile.live import (
    Plan,
    Sent,
    http_barrage,
    rngs,
    rtp_barrage,
    sip_barrage,
    twilio_barrage,
)
from tests.ivr.serve_process import ServeProcess, start_serve
from tests.ivr.sip.sipp import free_udp_port, sipp_available
from tests.ivr.sip.udp_peer import Call, UdpPeer, place_call
from tests.ivr.twilio.conftest import ACCOUNT_SID, AUTH_TOKEN, TwilioSide, call_sid

PLAN = Plan(sip=1000, rtp=1000, http=200, twilio=300)
SEED = 95598
TWILIO_ON = {
    "HOTLINE_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
    "HOTLINE_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
    "HOTLINE_TWILIO_PUBLIC_URL": "https://ivr.example.cn",
}

pytestmark = pytest.mark.slow


def hostile_serve(workdir: Path) -> ServeProcess:
    """A node with Twilio on and room for a few dozen calls (mutated INVITEs open calls too)."""
    return start_serve(
        workdir,
        node_id="hostile",
        ignore=("HOTLINE_", "TWILIO_"),
        HOTLINE_SIP_MAX_CALLS="40",
        HOTLINE_SHUTDOWN_GRACE_SECONDS="3",
        **TWILIO_ON,
    )


def ordinary_call(sip_port: int, seconds: int) -> subprocess.Popen[bytes]:
    """SIPp's built-in caller: INVITE, ACK, ``seconds`` on the line, BYE (exit 0 if all went)."""
    return subprocess.Popen(
        [
            "sipp",
            "-sn",
            "uac",
            "-d",
            str(seconds * 1000),
            "-m",
            "1",
            "-s",
            "95598",
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            str(free_udp_port()),
            "-nostdin",
            "-timeout",
            f"{seconds + 60}s",
            f"127.0.0.1:{sip_port}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ServeProcess]:
    serve = hostile_serve(tmp_path)
    try:
        yield serve
    finally:
        serve.stop()


def metric_values(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {series: value}."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            values[series] = float(value)
    return values


def problems(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Log lines that mean something went wrong inside the node."""
    return [
        line
        for line in lines
        if line.get("level") in ("error", "critical") or "exception" in line or line.get("not_json")
    ]


async def run_barrages(sip_port: int, web_port: int, call: Call, plan: Plan, seed: int) -> Sent:
    sent = Sent()
    sip_rng, rtp_rng, http_rng, twilio_rng = rngs(seed)
    async with aiohttp.ClientSession() as http:
        twilio = TwilioSide(http, f"http://127.0.0.1:{web_port}")
        stream = await twilio.connect_call(call_sid(0xF022))

        async def send(frame: str | bytes) -> None:
            if isinstance(frame, bytes):
                await stream.ws.send_bytes(frame)
            else:
                await stream.ws.send_str(frame)

        await asyncio.gather(
            sip_barrage(("127.0.0.1", sip_port), plan.sip, sip_rng, sent, pace=plan.pace),
            rtp_barrage(call.rtp, call.remote_rtp, plan.rtp, rtp_rng, sent, pace=plan.pace),
            http_barrage(web_port, plan.http, http_rng, sent),
            twilio_barrage(send, plan.twilio, twilio_rng, sent),
        )
        await stream.stop()
        await stream.wait_closed()
        await twilio.close()
    return sent


async def test_a_running_node_survives_hostile_input_and_carries_an_ordinary_call(
    node: ServeProcess,
) -> None:
    if not sipp_available():
        pytest.fail("SIPp is not installed (scripts/test installs sip-tester)")
    web_port = int((await asyncio.to_thread(node.wait_for, "web listening", 60))["port"])
    sip_port = int(node.wait_for("sip listening", 0)["port"])
    sipp = ordinary_call(sip_port, seconds=12)
    await asyncio.sleep(1.0)  # its call is up before the barrage begins
    peer = UdpPeer(("127.0.0.1", sip_port))
    call = place_call(peer)
    assert isinstance(call, Call)
    started = time.monotonic()
    try:
        sent = await run_barrages(sip_port, web_port, call, PLAN, SEED)
        took = time.monotonic() - started
        assert sent.total == PLAN.total >= 2500
        assert node.proc.poll() is None, "the node died under hostile input"
        # The call whose RTP port took the barrage is still up: it hangs up normally.
        assert call.bye().status == 200
        assert await asyncio.to_thread(sipp.wait, 60) == 0, "the ordinary call did not complete"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{web_port}/healthz") as health:
                assert health.status == 200
            async with http.get(f"http://127.0.0.1:{web_port}/metrics") as scrape:
                exported = metric_values(await scrape.text())
        # What the barrages did shows on the dashboard's series: the hostile RTP's random
        # sequence numbers as loss of the call that ended, the garbage as malformed.
        assert exported["hotline_rtp_packets_received_total"] > 0
        assert exported["hotline_rtp_packets_lost_total"] > 0
        assert exported["hotline_sip_malformed_total"] > 0
        assert exported["hotline_http_malformed_total"] > 0
        assert exported['hotline_routing_agents{state="available"}'] == 0
        # Every hostile HTTP request got an answer (4xx mostly), none a 500.
        assert 500 not in sent.http_statuses, sent.http_statuses
    finally:
        call.close()
        peer.close()
        if sipp.poll() is None:
            sipp.kill()
            sipp.wait()
    node.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(node.proc.wait, 15) == 0
    node.drain(5)
    found = problems(node.lines)
    assert found == [], "\n".join(json.dumps(line)[:1500] for line in found[:3])
    # Complaints about garbage are rate-limited: one line per 10 s, not one per datagram.
    malformed = [line for line in node.lines if line.get("event") == "malformed sip dropped"]
    assert 1 <= len(malformed) <= took / 10 + 2
    assert sum(line["since_last"] for line in malformed) <= sent.sip
