"""Load and abuse against a real SIPp peer: garbage, forged and oversized datagrams while two
calls are up, and twenty calls at once."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from pathlib import Path

import pytest

from ivr.sip import events as sip
from ivr.sip.server import SipServer

sys.path.insert(0, str(Path(__file__).parent))
from sipp import key_pcaps, serving, sipp, sipp_available, uac_scenario, wait_until

pytestmark = [
    pytest.mark.slow,
    # CI installs SIPp (scripts/test); only a developer without it may skip these.
    pytest.mark.skipif(
        not sipp_available() and not os.environ.get("CI"), reason="needs Debian sip-tester"
    ),
]

FAULT_PATH = ["welcome", "main_menu", "fault_account", "fault_address"]
ANSWERED_JUNK = {"bye", "oversized", "cancel", "info", "reinvite", "truncated", "sip3"}
UDP_MAX = 65507
"""The largest UDP payload IPv4 carries: anything bigger never reaches the server at all."""


def record_events(server: SipServer) -> list[sip.SipEvent]:
    """Every event the core hands the server, recorded (the server still handles each)."""
    seen: list[sip.SipEvent] = []
    handle = server._handle

    def recording(event: sip.SipEvent) -> None:
        seen.append(event)
        handle(event)

    server._handle = recording  # type: ignore[method-assign]
    return seen


def forged(method: str, call_id: str, name: str, port: int, body: str = "", **extra: str) -> bytes:
    """A request naming a live call's Call-ID, with tags and a branch the call never had."""
    headers = [
        f"{method} sip:95598@127.0.0.1 SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-forged-{name}",
        "From: <sip:13800138000@127.0.0.1>;tag=not-the-caller",
        "To: <sip:95598@127.0.0.1>;tag=not-the-hotline",
        f"Call-ID: {call_id}",
        f"CSeq: 99 {method}",
        "Max-Forwards: 70",
        *(f"{k.replace('_', '-')}: {v}" for k, v in extra.items()),
        f"Content-Length: {len(body)}",
        "",
        body,
    ]
    return "\r\n".join(headers).encode()


def junk(call_ids: list[str], port: int) -> dict[str, bytes]:
    """Garbage by name; every forged request has its own branch `z9hG4bK-forged-<name>`."""
    first = call_ids[0]
    sdp = "v=0\r\no=x 1 1 IN IP4 10.9.9.9\r\ns=-\r\nc=IN IP4 10.9.9.9\r\nt=0 0\r\n"
    sdp += "m=audio 4000 RTP/AVP 0\r\n"
    return {
        "binary": bytes(range(256)) * 5,
        "nul_max": b"\x00" * UDP_MAX,
        "letters_max": b"A" * UDP_MAX,
        "oversized_bye": forged("BYE", first, "oversized", port, X_Padding="x" * 64_000),
        "bye": forged("BYE", first, "bye", port),
        "cancel": forged("CANCEL", call_ids[1], "cancel", port),
        "info_key": forged(
            "INFO", first, "info", port, "Signal=1\r\n", Content_Type="application/dtmf-relay"
        ),
        "reinvite_hold": forged(
            "INVITE", call_ids[1], "reinvite", port, sdp, Content_Type="application/sdp"
        ),
        "truncated": forged("OPTIONS", first, "truncated", port)[:-2].replace(
            b"Content-Length: 0", b"Content-Length: 500"
        ),
        "stray_response": (
            f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-nothing\r\n"
            f"Call-ID: {first}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
        ).encode(),
        "binary_request_line": b"INV\xffITE sip:\xfe\xfd SIP/2.0\r\nVia: \x00\x01\r\n\r\n",
        "no_colons": b"OPTIONS sip:95598@127.0.0.1 SIP/2.0\r\nthis is not a header\r\n\r\n",
        "many_vias": forged("OPTIONS", "many-vias", "vias", port).replace(
            b"Max-Forwards",
            b"".join(b"Via: SIP/2.0/UDP 10.0.0.%d:5060\r\n" % (i % 250) for i in range(1500))
            + b"Max-Forwards",
        ),
        "sip3": forged("OPTIONS", "sip3", "sip3", port).replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1),
        "keepalive": b"\r\n\r\n",
        "empty": b"",
    }


async def blast(
    server: SipServer, messages: dict[str, bytes], sock: socket.socket
) -> dict[str, list[int]]:
    """Send every message; the statuses of the responses, by the forged branch name."""
    for data in messages.values():
        sock.sendto(data, server.address)
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    statuses: dict[str, list[int]] = {}
    while True:
        try:
            data = sock.recv(70_000)
        except BlockingIOError:
            return statuses
        head = data.split(b"\r\n", 1)[0].split()
        marker = data.split(b"branch=z9hG4bK-forged-", 1)
        name = re.split(rb"[;\r]", marker[1], maxsplit=1)[0].decode() if len(marker) == 2 else "?"
        statuses.setdefault(name, []).append(int(head[1]))


async def test_garbage_and_forgeries_leave_two_calls_alone(tmp_path: Path) -> None:
    """While two calls walk 2 then #, garbage, maximum-size and forged datagrams (a BYE, CANCEL,
    INFO key and hold re-INVITE naming the live calls' Call-IDs with wrong tags) arrive twice:
    forgeries get 481, nothing breaks, both calls finish their walk."""
    pcaps = key_pcaps("2#", tmp_path)
    flow = uac_scenario([6.0, "2", 1.5, "#", 2.0], pcaps=pcaps)
    call_ids = ["call1-garbage-test", "call2-garbage-test"]
    async with serving() as server:
        seen = record_events(server)
        extra = ["-cid_str", "call%u-garbage-test"]
        calls = asyncio.create_task(
            sipp(flow, server.address, tmp_path, calls=2, rate=10, timeout=30, extra=extra)
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            port = sock.getsockname()[1]
            await wait_until(lambda: len(server.calls) == 2, 5)
            await asyncio.sleep(1.0)  # during the welcome
            early = await blast(server, junk(call_ids, port), sock)
            await asyncio.sleep(6.5 - 1.0 - 0.6)  # after the 2: the account prompt plays
            late = await blast(server, junk(call_ids, port), sock)
            assert len(server.calls) == 2
        run = await calls
        assert run.returncode == 0, run.stdout[-2000:] + run.errors

        for statuses in (early, late):
            assert statuses["bye"] == [481]
            assert statuses["oversized"] == [481]  # 64 kB, parsed, refused like the small one
            assert statuses["cancel"] == [481]
            assert statuses["info"] == [481]
            # The 481 is resent until an ACK that never comes (the second copy is a retransmission).
            assert set(statuses["reinvite"]) == {481}
            assert statuses["truncated"] == [400]  # Content-Length beyond the datagram
            assert statuses["sip3"] == [505]
            assert "vias" not in statuses  # over the parser's 256 headers: dropped, reported
            assert set(statuses) <= ANSWERED_JUNK  # the rest is dropped without a word
        await wait_until(lambda: len(server.completed) == 2, 5)
        assert len(server.answered) == 2
        for summary in server.completed:
            assert summary.path[:4] == FAULT_PATH  # the forged INFO "1" (hazard) never landed
            assert summary.slots["intent"] == "fault"
            assert summary.outcomes[-1].kind == "abandoned"  # the caller's own BYE, not ours
        internal = [e for e in seen if isinstance(e, sip.Malformed) and "internal" in e.reason]
        assert internal == []
        assert not [e for e in seen if isinstance(e, sip.MediaChanged)]  # no forged hold
        assert not [e for e in seen if isinstance(e, sip.DtmfInfo)]  # no forged key
        assert not [e for e in seen if isinstance(e, sip.CallCancelled)]
        assert sum(isinstance(e, sip.IncomingCall) for e in seen) == 2


async def test_twenty_calls_at_once_each_walk_2_pound(tmp_path: Path) -> None:
    """`-m 20 -l 20 -r 10`: twenty callers, all up together, each pressing 2 then #."""
    pcaps = key_pcaps("2#", tmp_path)
    flow = uac_scenario([6.0, "2", 1.5, "#", 2.0], pcaps=pcaps)
    async with serving() as server:
        peak = 0

        async def count_peak() -> None:
            nonlocal peak
            while True:
                peak = max(peak, len(server.calls))
                await asyncio.sleep(0.05)

        counter = asyncio.create_task(count_peak())
        run = await sipp(flow, server.address, tmp_path, calls=20, rate=10, timeout=35)
        counter.cancel()
        assert run.returncode == 0, run.stdout[-2000:] + run.errors
        await wait_until(lambda: len(server.completed) == 20, 5)
        assert peak == 20  # 2 s to start them all, ~10 s each: all up at once
        assert len(server.answered) == 20
        assert len({call_id for call_id, _ in server.answered}) == 20
        for summary in server.completed:
            assert summary.path[:4] == FAULT_PATH, summary.call_id
            assert summary.slots["intent"] == "fault"
            assert summary.outcomes[-1].kind == "abandoned"
        await wait_until(lambda: server.core.calls == 0 and not server.calls, 2)
        assert server.clock.stats().streams == 0
