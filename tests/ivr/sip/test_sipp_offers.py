"""Codec offers against a real SIPp peer: an A-law-only trunk is answered in A-law; an offer
with no G.711 (G.729 only) is refused 488 and never answered."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sipp import (
    ack,
    bye,
    invite,
    pause,
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

T4 = 5.0
"""The default Timer I: how long the core keeps a refused INVITE after its ACK."""


async def test_pcma_only_offer_is_answered_in_pcma(tmp_path: Path) -> None:
    """An A-law trunk: the 200 offers PCMA (and the caller's telephone-event) and nothing else."""
    flow = scenario(
        "pcma only",
        invite(codecs=(8,)),
        ringing(),
        recv(
            200,
            body_has=["m=audio [0-9]+ RTP/AVP 8 101", "a=rtpmap:8 PCMA/8000"],
            body_lacks=["PCMU", "RTP/AVP [0-9 ]*\\b0\\b"],
        ),
        ack(),
        pause(1.0),
        bye(2),
        recv(200),
    )
    async with serving() as server:
        run = await sipp(flow, server.address, tmp_path, timeout=15)
        assert run.returncode == 0, run.stdout[-2000:] + run.errors
        assert [pt for _, pt in server.answered] == [8]
        await wait_until(lambda: len(server.completed) == 1, 2)
        assert server.completed[0].path == ["welcome"]
        await wait_until(lambda: server.core.calls == 0 and not server.calls, 1)


@pytest.mark.parametrize("telephone_event", [False, True], ids=["g729", "g729_and_events"])
async def test_g729_only_offer_is_refused_488(tmp_path: Path, telephone_event: bool) -> None:
    """G.729 only (with or without telephone-event): 488 Not Acceptable Here, no ringing, no call.

    The 488 is resent for a retransmitted INVITE and on Timer G until the ACK, and not after it
    (RFC 3261 §17.2.1); the call table is empty once Timer I (T4) has run.
    """
    flow = scenario(
        "g729 only",
        invite(codecs=(18,), telephone_event=telephone_event),
        recv(100, optional=True),
        recv(488),
        invite(codecs=(18,), telephone_event=telephone_event),  # the same INVITE again
        recv(488),
        recv(488),  # Timer G, T1 after the first
        ack(name="inv"),  # the ACK for a non-2xx is part of the INVITE transaction
        pause(1.5),  # Timer G would fire again at 2*T1 if the ACK were not taken
    )
    async with serving() as server:
        # -nr: SIPp would answer each identical 488 with its INVITE again instead of <recv>.
        extra = ["-nr", *trace_args(tmp_path)]
        run = await sipp(flow, server.address, tmp_path, timeout=15, extra=extra)
        assert run.returncode == 0, run.stdout[-2000:] + run.errors
        received = [m for m in read_trace(tmp_path) if m.received]
        assert [m.first_line for m in received] == [
            "SIP/2.0 100 Trying",
            *["SIP/2.0 488 Not Acceptable Here"] * 3,
        ]
        assert len({m.text for m in received[1:]}) == 1  # one response, resent byte for byte
        assert 0.45 < received[3].at - received[1].at < 0.9  # T1 = 0.5 s
        assert not server.answered
        assert server.calls == {}
        assert server.pending == set()
        assert not server.completed
        await wait_until(lambda: server.core.calls == 0, T4)
        await wait_until(lambda: server.core.transactions == 0, T4)
