"""RFC 3261 transaction behaviour against a real SIPp peer: retransmitted INVITEs (early and
late), the IVR's BYE to a peer that never answers, and a 200 that never gets its ACK."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from ivr.sip.server import SipServer

sys.path.insert(0, str(Path(__file__).parent))
from sipp import (
    NOP,
    Traced,
    ack,
    answer_bye,
    bye,
    invite,
    key_pcaps,
    label,
    pause,
    press,
    read_trace,
    recv,
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
FAST_T1 = 0.1
"""T1 for the tests that wait out 64*T1 (6.4 s instead of 32 s): see sipp.fast_timers."""


def walk_2_pound(folder: Path, bye_cseq: int = 2) -> str:
    """After the ACK: welcome plays, 2 (fault repair), # (no account number), hang up."""
    two, pound = key_pcaps("2#", folder)
    return pause(6.0) + press(two, 1.5) + press(pound, 2.0) + bye(bye_cseq) + recv(200)


def to_tags(trace: list[Traced]) -> set[str]:
    """The hotline's To-tags in every response SIPp received."""
    tags = set()
    for m in trace:
        if m.received and m.first_line.startswith("SIP/2.0"):
            to = m.header("To") or ""
            if ";tag=" in to:
                tags.add(to.split(";tag=", 1)[1])
    return tags


def hold_first_invite(server: SipServer) -> list[bool]:
    """Delay the first INVITE datagram until the next one arrives, then feed both at once.

    Returns a list that gets one entry per INVITE copy fed: whether it equals the first.
    """
    original = server.datagram
    held: list[tuple[bytes, tuple[str, int]]] = []
    fed: list[bool] = []

    def datagram(data: bytes, addr: tuple[str, int]) -> None:
        if data.startswith(b"INVITE ") and not fed:
            held.append((data, addr))
            if len(held) < 2:
                return
            for copy, source in held:
                fed.append(copy == held[0][0])
                original(copy, source)
            return
        original(data, addr)

    server.datagram = datagram  # type: ignore[method-assign]
    return fed


def assert_backoff(times: list[float], t1: float = FAST_T1, t2: float = 4.0) -> None:
    """Retransmission times follow T1, 2*T1, 4*T1, … capped at T2.

    Checked on the schedule from the first send, not gap by gap: timers are due on an absolute
    schedule, so on a busy machine a late send shortens the next gap, and a first send that
    left late (by up to one T1) makes the first retransmission look early.
    """
    due = 0.0
    for n, at in enumerate(times[1:]):
        due += min(t1 * 2**n, t2)
        assert due - t1 - 0.01 <= at - times[0] <= due + 0.5, (n, at - times[0], due)


def fault_call_done(server: SipServer) -> None:
    [summary] = server.completed
    assert summary.path[:4] == FAULT_PATH
    assert summary.slots["intent"] == "fault"
    assert summary.outcomes[-1].kind == "abandoned"
    assert len(server.answered) == 1
    assert server.calls == {}


async def test_invite_sent_twice_before_any_response_is_one_call(tmp_path: Path) -> None:
    """The same INVITE (same branch, byte for byte) twice before any response: one call, one
    dialog.

    SIPp reads the socket between two sends, so on loopback the 100 Trying would beat the second
    copy; the server's first datagram is held until the copy is there (a busy server, or a slow
    network), so both reach the core before it has said anything.
    """
    async with serving() as server:
        arrived = hold_first_invite(server)
        flow = scenario(
            "invite twice",
            invite(retrans=False),
            invite(),
            ringing(),
            recv(200),
            ack(),
            walk_2_pound(tmp_path),
        )
        run = await sipp(flow, server.address, tmp_path, timeout=30, extra=trace_args(tmp_path))
        assert run.returncode == 0, run.stdout[-2000:] + run.errors
        await wait_until(lambda: len(server.completed) == 1, 5)
        fault_call_done(server)
        assert arrived == [True, True]  # both copies, identical
        trace = read_trace(tmp_path)
        first_response = min(m.at for m in trace if m.received)
        sent = [m for m in trace if not m.received and m.is_request("INVITE")]
        assert len(sent) == 2
        assert all(m.at < first_response for m in sent)
        assert len(to_tags(trace)) == 1  # 180 and 200 of one dialog, whichever INVITE they answer
        assert not [m for m in trace if m.received and m.first_line.startswith("SIP/2.0 4")]
        await wait_until(lambda: server.core.calls == 0, 2)


async def test_invite_retransmitted_while_ringing_is_one_call(tmp_path: Path) -> None:
    """The INVITE again after the 180 (the caller missed it): 180 resent, one call answered."""
    async with serving(sip_ring_seconds=1.0) as server:
        flow = scenario(
            "invite again while ringing",
            invite(),
            recv(100, optional=True),
            recv(180),
            invite(),
            recv(180),
            recv(200),
            ack(),
            walk_2_pound(tmp_path),
        )
        # -nr: without it SIPp answers the identical 180 with its INVITE again, forever.
        extra = ["-nr", *trace_args(tmp_path)]
        run = await sipp(flow, server.address, tmp_path, timeout=30, extra=extra)
        assert run.returncode == 0, run.stdout[-2000:] + run.errors
        await wait_until(lambda: len(server.completed) == 1, 5)
        fault_call_done(server)
        trace = read_trace(tmp_path)
        assert sum(m.received and m.is_response(180) for m in trace) == 2
        assert sum(m.received and m.is_response(200, "INVITE") for m in trace) == 1
        assert len(to_tags(trace)) == 1


async def test_invite_retransmitted_after_200_gets_the_200_again(tmp_path: Path) -> None:
    """The INVITE again (same branch and CSeq) after the 200, before the ACK: the same 200 again,
    not 481; the ACK then confirms the call and the flow runs."""
    async with serving() as server:
        flow = scenario(
            "invite again after 200",
            invite(),
            ringing(),
            recv(200),
            invite(),
            recv(200),
            ack(),
            walk_2_pound(tmp_path),
        )
        # -nr: without it SIPp takes the identical 200 for a retransmission and resends its INVITE.
        extra = ["-nr", *trace_args(tmp_path)]
        run = await sipp(flow, server.address, tmp_path, timeout=30, extra=extra)
        assert run.returncode == 0, run.stdout[-2000:] + run.errors
        await wait_until(lambda: len(server.completed) == 1, 5)
        fault_call_done(server)
        trace = read_trace(tmp_path)
        oks = [m for m in trace if m.received and m.is_response(200, "INVITE")]
        assert len(oks) == 2
        assert oks[0].text == oks[1].text  # the same response, SDP and tag included
        assert not [m for m in trace if m.received and m.is_response(481)]


async def test_ivr_bye_to_a_silent_peer_is_retransmitted_then_the_call_is_gone(
    tmp_path: Path,
) -> None:
    """4 (new connection) then 3 (that is all): the IVR says goodbye and sends BYE. The caller
    never answers: the BYE is resent with back-off (Timer E) until Timer F (64*T1), then the
    call leaves both the server and the core."""
    async with serving(t1=FAST_T1) as server:
        four, three = key_pcaps("43", tmp_path)
        flow = scenario(
            "never answer the BYE",
            invite(),
            ringing(),
            recv(200),
            ack(),
            pause(6.0),
            press(four, 1.5),
            press(three, 0.0),
            recv(request="BYE", timeout_ms=15_000),
            recv(request="BYE"),
            recv(request="BYE"),
            label("more"),
            # Keep listening until the BYEs stop (the longest gap is 3.2 s at this T1).
            recv(request="BYE", timeout_ms=4_500, on_timeout="quiet", next_label="more"),
            label("quiet"),
            NOP,
        )
        watch = asyncio.create_task(bye_to_clean(server))
        # -nr: each resent BYE (byte-identical) must reach the next <recv>, not SIPp's absorber.
        extra = ["-nr", *trace_args(tmp_path)]
        run = await sipp(flow, server.address, tmp_path, timeout=35, extra=extra)
        assert run.returncode == 0, run.stdout[-2000:] + run.errors
        cleaned_after = await watch

        byes = [m for m in read_trace(tmp_path) if m.received and m.is_request("BYE")]
        assert len(byes) >= 5  # 0, 0.1, 0.3, 0.7, 1.5, 3.1 (6.3) s
        assert len({m.text for m in byes}) == 1  # retransmissions are byte-identical
        assert_backoff([m.at for m in byes])  # Timer E: T1, 2T1, 4T1, … ≤ T2
        assert byes[-1].at - byes[0].at < 64 * FAST_T1

        # Timer F: the call stays until 64*T1 after the BYE, and not a moment longer.
        assert 64 * FAST_T1 - 0.3 <= cleaned_after <= 64 * FAST_T1 + 1.0
        assert server.calls == {}
        assert server.core.calls == 0
        [summary] = server.completed
        assert summary.path == [
            "welcome",
            "main_menu",
            "new_connection_info",
            "goodbye_new_connection",
        ]
        assert summary.outcomes[-1].kind == "self_service"
        await wait_until(lambda: server.core.transactions == 0, 64 * FAST_T1)


async def bye_to_clean(server: SipServer) -> float:
    """Seconds from the IVR's hang-up (the call leaves `server.calls`) until the core has no
    call left."""
    await wait_until(lambda: bool(server.calls), 20)
    await wait_until(lambda: not server.calls, 30)
    return await wait_until(lambda: server.core.calls == 0, 64 * FAST_T1 + 5)


async def test_missing_ack_200_resent_then_bye_after_64_t1(tmp_path: Path) -> None:
    """The caller takes the 200 and never ACKs: the 200 is resent (T1, 2T1, … ≤ T2); after 64*T1
    the IVR confirms and ends the dialog with BYE (RFC 3261 §13.3.1.4), and cleans up."""
    async with serving(t1=FAST_T1) as server:
        flow = scenario(
            "never ack",
            invite(),
            ringing(),
            recv(200),
            recv(200),
            recv(200),
            label("more"),
            recv(200, optional=True, next_label="more"),
            answer_bye(timeout_ms=15_000),
        )
        extra = ["-nr", *trace_args(tmp_path)]
        run = await sipp(flow, server.address, tmp_path, timeout=25, extra=extra)
        assert run.returncode == 0, run.stdout[-2000:] + run.errors

        trace = read_trace(tmp_path)
        oks = [m for m in trace if m.received and m.is_response(200, "INVITE")]
        [bye_in] = [m for m in trace if m.received and m.is_request("BYE")]
        assert len(oks) >= 5  # 0, 0.1, 0.3, 0.7, 1.5, 3.1 (6.3) s
        assert len({m.text for m in oks}) == 1
        assert_backoff([m.at for m in oks])  # T1, 2T1, 4T1, … ≤ T2 (§13.3.1.4)
        assert all(m.at < bye_in.at for m in oks)  # no 2xx resent once the BYE is out
        assert 64 * FAST_T1 - 0.1 <= bye_in.at - oks[0].at <= 64 * FAST_T1 + 1.0
        # The BYE is for the dialog the 200 created.
        assert bye_in.header("From") == oks[0].header("To")
        assert bye_in.header("To") == oks[0].header("From")
        assert bye_in.header("Call-ID") == oks[0].header("Call-ID")

        await wait_until(lambda: server.core.calls == 0 and not server.calls, 2)
        assert len(server.answered) == 1
        assert not server.completed  # the session never started: no ACK, no call
        assert server.clock.stats().streams == 0  # its media is closed
        await wait_until(lambda: server.core.transactions == 0, 64 * FAST_T1)
