"""In-band DTMF over SIP: a caller with no RFC 4733 events plays key tones in its audio."""

from __future__ import annotations

import asyncio
import math
import os
import struct
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ivr.flow.model import load_flow
from ivr.services import NotConnectedCrm, NotConnectedRouting
from ivr.settings import Settings, load_settings
from ivr.sip.server import SipServer
from sounds.catalog import Catalog, PromptLibrary, shipped_dir

sys.path.insert(0, str(Path(__file__).parent))
from sipp import run_sipp, sipp_available, uac_scenario, write_rtp_pcap

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not sipp_available() and not os.environ.get("CI"), reason="needs Debian sip-tester"
    ),
]

ROWS = {
    "1": 697,
    "2": 697,
    "3": 697,
    "4": 770,
    "5": 770,
    "6": 770,
    "7": 852,
    "8": 852,
    "9": 852,
    "*": 941,
    "0": 941,
    "#": 941,
}
COLS = {
    "1": 1209,
    "2": 1336,
    "3": 1477,
    "4": 1209,
    "5": 1336,
    "6": 1477,
    "7": 1209,
    "8": 1336,
    "9": 1477,
    "*": 1209,
    "0": 1336,
    "#": 1477,
}


def tone_pcm(key: str, seconds: float, level: float = 0.25) -> bytes:
    n = int(8000 * seconds)
    lo, hi = ROWS[key], COLS[key]
    samples = (
        int(
            32767
            * level
            * (math.sin(2 * math.pi * lo * i / 8000) + math.sin(2 * math.pi * hi * i / 8000))
        )
        for i in range(n)
    )
    return struct.pack(f"<{n}h", *samples)


def keys_audio(keys: Sequence[str]) -> bytes:
    silence = b"\x00\x00" * 800  # 100 ms
    pcm = silence
    for key in keys:
        pcm += tone_pcm(key, 0.12) + silence * 3
    return pcm


@pytest.fixture
async def server() -> AsyncIterator[SipServer]:
    base = load_settings()
    settings = Settings(**{**base.model_dump(), "sip_port": 0})
    srv = SipServer(
        settings,
        load_flow(settings.resolved_flow_file()),
        PromptLibrary(Catalog.shipped(), [shipped_dir()]),
        crm=NotConnectedCrm(),
        routing=NotConnectedRouting(),
    )
    await srv.start()
    yield srv
    await srv.stop(0)


async def test_inband_tones_walk_the_menu(server: SipServer, tmp_path: Path) -> None:
    """A PCMU-only caller without telephone-events: keys 2 and # are heard in its audio."""
    two, pound = tmp_path / "two.pcap", tmp_path / "pound.pcap"
    write_rtp_pcap(two, keys_audio("2"))
    write_rtp_pcap(pound, keys_audio("#"))
    scenario = uac_scenario([6.0, "2", 1.5, "#", 2.0], codecs=(0,), pcaps=[two, pound])
    # No RFC 4733 in the offer: the IVR must fall back to listening for tones.
    scenario = scenario.replace("RTP/AVP 0 101", "RTP/AVP 0")
    scenario = scenario.replace("      a=rtpmap:101 telephone-event/8000\n", "")
    scenario = scenario.replace("      a=fmtp:101 0-15\n", "")
    run: Any = await asyncio.to_thread(run_sipp, scenario, server.address, tmp_path, timeout=40)
    assert run.returncode == 0, run.stdout[-2000:] + run.errors
    async with asyncio.timeout(10):
        while not server.completed:  # noqa: ASYNC110 - the server appends as sessions end
            await asyncio.sleep(0.05)
    [summary] = server.completed
    assert summary.path[:4] == ["welcome", "main_menu", "fault_account", "fault_address"]
