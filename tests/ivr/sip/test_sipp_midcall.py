"""Mid-call SIP against a real SIPp peer: re-INVITEs (session refresh, hold, unhold), keys as
SIP INFO, and the caller hanging up while a prompt plays."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from ivr.sip.server import SipServer

sys.path.insert(0, str(Path(__file__).parent))
from sipp import (
    ack,
    bye,
    info,
    invite,
    key_pcaps,
    pause,
    press,
    read_trace,
    recv,
    reinvite,
    ringing,
    scenario,
    serving,
    sipp,
    sipp_available,
    trace_args,
    wait_until,
)

pytestmark = [
    pytest.mark.slow,
    # CI installs SIPp (scripts/test); only a developer without it may skip these.
    pytest.mark.skipif(
        not sipp_available() and not os.environ.get("CI"), reason="needs Debian sip-tester"
    ),
]

FAULT_PATH = ["welcome", "main_menu", "fault_account", "fault_address"]
AUDIO_ANSWER = "m=audio [0-9]+ RTP/AVP 0 101"
"""Our answer to SIPp's PCMU/PCMA offer: PCMU and telephone-events."""


async def test_reinvite_refresh_hold_unhold_keep_the_call(tmp_path: Path) -> None:
    """A session refresh (same SDP), hold (sendonly) and unhold (sendrecv), each answered 200 with
    SDP (hold with recvonly); the keys pressed afterwards still walk the flow."""
    two, pound = key_pcaps("2#", tmp_path)
    flow = scenario(
        "refresh, hold, unhold",
        invite(),
        ringing(),
        recv(200, body_has=[AUDIO_ANSWER, "a=sendrecv"]),
        ack(),
        pause(1.0),
        # Session refresh: the same offer again (same o= version), with RFC 4028 headers.
        reinvite(2, "sendrecv", version=1),
        recv(100, optional=True),
        recv(
            200,
            body_has=[AUDIO_ANSWER, "a=sendrecv"],
            header_has=[("Session-Expires", "1800;refresher=uac")],
        ),
        ack(2),
        pause(0.5),
        reinvite(3, "sendonly", version=2),
        recv(100, optional=True),
        recv(200, body_has=[AUDIO_ANSWER, "a=recvonly"], body_lacks=["a=sendrecv"]),
        ack(3),
        pause(1.0),
        reinvite(4, "sendrecv", version=3),
        recv(100, optional=True),
        recv(200, body_has=[AUDIO_ANSWER, "a=sendrecv"], body_lacks=["a=recvonly"]),
        ack(4),
        # The welcome prompt (4.6 s, no barge-in) waited while we held the call: 1 s more.
        pause(4.5),
        press(two, 1.5),
        press(pound, 2.0),
        bye(5),
        recv(200),
    )
    async with serving() as server:
        stop = asyncio.Event()
        media = asyncio.create_task(watch_media(server, stop))
        run = await sipp(flow, server.address, tmp_path, timeout=30, extra=trace_args(tmp_path))
        stop.set()
        samples = await media
        assert run.returncode == 0, run.stdout[-2000:] + run.errors
        await wait_until(lambda: len(server.completed) == 1, 5)
        [summary] = server.completed
        assert summary.path[:4] == FAULT_PATH
        assert summary.slots["intent"] == "fault"
        assert summary.outcomes[-1].kind == "abandoned"
        assert [pt for _, pt in server.answered] == [0]  # one call, not one per re-INVITE

        # RFC 3264 §8: one session id; the version moves only when our SDP changes (the refresh
        # repeats it, hold and unhold change the direction). RFC 4028 §9: the refresh's 2xx
        # names the caller as refresher and requires the extension.
        oks = [m for m in read_trace(tmp_path) if m.received and m.is_response(200, "INVITE")]
        origins = [line.split()[1:3] for m in oks for line in m.text.splitlines() if "o=" in line]
        assert len({session for session, _ in origins}) == 1
        first = int(origins[0][1])
        assert [int(version) - first for _, version in origins] == [0, 0, 1, 2]
        assert [m.header("Require") for m in oks[1:]] == ["timer"] * 3

        # The media followed: sending, silent while held (caller sendonly), sending again.
        phases = [d for i, (d, _) in enumerate(samples) if i == 0 or samples[i - 1][0] != d]
        assert phases == ["sendrecv", "sendonly", "sendrecv"]
        held = [sent for d, sent in samples if d == "sendonly"]
        assert len(held) > 20  # about 1 s of samples
        assert held[-1] - held[0] <= 1  # at most the packet of the tick in flight
        before = [sent for d, sent in samples[: samples.index(("sendonly", held[0]))]]
        assert before[-1] - before[0] > 30  # ~1.5 s of 50 packets/s before the hold
        after = [sent for d, sent in samples[samples.index(("sendonly", held[-1])) + 1 :]]
        assert after[-1] - after[0] > 100  # and again after it
        await wait_until(lambda: server.core.calls == 0 and not server.calls, 2)


async def watch_media(server: SipServer, stop: asyncio.Event) -> list[tuple[str, int]]:
    """Sample the (one) call's RTP state every 20 ms until `stop`: (caller's SDP direction,
    packets sent)."""
    samples: list[tuple[str, int]] = []
    while not stop.is_set():
        for call in list(server.calls.values()):
            rtp = call.media.rtp
            samples.append((rtp.direction, rtp.counters.sent))
        await asyncio.sleep(0.02)
    return samples


@pytest.mark.parametrize("telephone_event", [True, False], ids=["with_4733", "without_4733"])
async def test_sip_info_keys_walk_the_flow(tmp_path: Path, telephone_event: bool) -> None:
    """2 as application/dtmf-relay (Signal=2, Duration=160), # as application/dtmf: each INFO
    answered 200, both keys reach the dialog (whether or not the caller offered RFC 4733)."""
    flow = scenario(
        "keys by INFO",
        invite(telephone_event=telephone_event),
        ringing(),
        recv(200),
        ack(),
        pause(6.0),
        info(2, "application/dtmf-relay", "Signal=2\nDuration=160"),
        recv(200),
        pause(1.5),
        info(3, "application/dtmf", "#"),
        recv(200),
        pause(2.0),
        bye(4),
        recv(200),
    )
    async with serving() as server:
        run = await sipp(flow, server.address, tmp_path, timeout=30)
        assert run.returncode == 0, run.stdout[-2000:] + run.errors
        await wait_until(lambda: len(server.completed) == 1, 5)
        [summary] = server.completed
        assert summary.path[:4] == FAULT_PATH
        assert summary.slots["intent"] == "fault"
        assert "account" not in summary.slots  # '#' skipped the account number
        assert summary.outcomes[-1].kind == "abandoned"


@pytest.mark.parametrize(
    ("keys", "wait", "path"),
    [
        ("", 2.0, ["welcome"]),  # during the welcome (no barge-in)
        ("2", 2.0, ["welcome", "main_menu", "fault_account"]),  # during the account prompt
    ],
    ids=["welcome", "fault_account"],
)
async def test_caller_bye_during_a_prompt_abandons_and_cleans_up(
    tmp_path: Path, keys: str, wait: float, path: list[str]
) -> None:
    """The caller hangs up while a prompt plays: 200 to the BYE, the session ends "abandoned" at
    that node, playback stops and the call leaves the server and the core at once."""
    steps = pause(6.0) + "".join(press(p, 0.0) for p in key_pcaps(keys, tmp_path)) if keys else ""
    flow = scenario(
        "hang up mid-prompt",
        invite(),
        ringing(),
        recv(200),
        ack(),
        steps,
        pause(wait),
        bye(2),
        recv(200),
    )
    async with serving() as server:
        run = await sipp(flow, server.address, tmp_path, timeout=30)
        assert run.returncode == 0, run.stdout[-2000:] + run.errors
        await wait_until(lambda: len(server.completed) == 1, 2)
        [summary] = server.completed
        assert summary.path == path
        assert summary.outcomes[-1].kind == "abandoned"
        assert summary.outcomes[-1].detail == path[-1]
        hung_up_at = (6.0 if keys else 0.0) + wait
        assert hung_up_at - 0.5 < summary.duration < hung_up_at + 1.0
        await wait_until(lambda: server.core.calls == 0 and not server.calls, 1)
        assert server.clock.stats().streams == 0  # no prompt is sent any more
