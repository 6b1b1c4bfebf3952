"""Blind transfer by REFER (``sip_transfer_mode = "refer"``) against real SIPp peers.

SIPp plays the caller's PBX: it calls in, is handed to agent 1001, receives the hotline's REFER
and answers it the way a transferee would (RFC 5589 §6): 202 then NOTIFY 100 and NOTIFY 200, and
gets the hotline's BYE; or it refuses the REFER (603), or reports the agent busy (sipfrag 486).
Then the call falls back to the bridge: a second SIPp plays the agent's phone, which the hotline
calls itself; the agent hangs up after two seconds and the hotline ends the caller's call.

Routing is a stand-in that connects agent 1001 at once with the contact the agent SIPp listens on.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from ivr import metrics
from ivr.dialog import actions as act
from ivr.dialog import events as ev
from ivr.dialog.engine import CallContext
from ivr.flow.model import Flow, load_flow, parse_flow
from ivr.services import NotConnectedCrm, NotConnectedRouting
from ivr.settings import Settings, load_settings
from ivr.sip.refer import ReferOutcome
from ivr.sip.server import SipServer
from sounds.catalog import Catalog, PromptLibrary, shipped_dir

sys.path.insert(0, str(Path(__file__).parent))
from sipp import (
    CALLER_FROM,
    REPLY_200,
    _send,
    ack,
    answer_bye,
    branch,
    free_udp_port,
    hotline_sent,
    invite,
    key_pcaps,
    press,
    read_trace,
    recv,
    ringing,
    scenario,
    sipp,
    sipp_available,
    sipp_uas,
    trace_args,
    uas_scenario,
    wait_until,
)

pytestmark = [
    pytest.mark.slow,
    # CI installs SIPp (scripts/test); only a developer without it may skip these.
    pytest.mark.skipif(
        not sipp_available() and not os.environ.get("CI"), reason="needs Debian sip-tester"
    ),
]

AGENT = "1001"

QUEUE_ONLY = parse_flow(
    {
        "flow": {"name": "refer-test", "start": "queue", "escalate": "bye"},
        "nodes": {
            "queue": {"type": "enqueue", "skill": "general", "priority": 20, "on_exit": "bye"},
            "bye": {"type": "end", "outcome": "hangup", "prompts": ["goodbye"]},
        },
    }
)
"""A call that goes straight to the queue; when the agent leg ends, the IVR hangs up."""


class AgentAtOnce(NotConnectedRouting):
    """Stands in for routing: every call goes to agent 1001 at once, at ``contact``."""

    def __init__(self, contact: str) -> None:
        self.contact = contact
        self.left: list[act.LeaveQueue] = []

    async def enqueue(
        self, request: act.Enqueue, context: CallContext, feed: Callable[[ev.Event], None]
    ) -> None:
        feed(ev.AgentConnected(request.request_id, AGENT, self.contact))

    async def leave_queue(self, request: act.LeaveQueue, context: CallContext) -> None:
        self.left.append(request)


@asynccontextmanager
async def hotline(
    contact: str, flow: Flow | None = None, refer_timeout: float | None = None
) -> AsyncIterator[SipServer]:
    """The hotline in REFER mode, its routing connecting agent 1001 at ``contact``; a transfer
    undecided after ``refer_timeout`` seconds is given up (default: `REFER_TIMEOUT`)."""
    base = load_settings()
    settings = Settings(**{**base.model_dump(), "sip_port": 0, "sip_transfer_mode": "refer"})
    server = SipServer(
        settings,
        flow or load_flow(settings.resolved_flow_file()),
        PromptLibrary(Catalog.shipped(), [shipped_dir()]),
        crm=NotConnectedCrm(),
        routing=AgentAtOnce(contact),
    )
    if refer_timeout is not None:
        server.refers.timeout = refer_timeout
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)


def routing_of(server: SipServer) -> AgentAtOnce:
    assert isinstance(server.routing, AgentAtOnce)
    return server.routing


# ------------------------------------------------------------------------ the PBX's side

TAKE_REFER = recv(
    request="REFER",
    timeout_ms=30_000,
    header_has=[
        ("Refer-To", rf"sip:{AGENT}@127\.0\.0\.1:[0-9]+"),
        ("Referred-By", r"sip:95598@127\.0\.0\.1:[0-9]+"),
        ("Contact", r"sip:127\.0\.0\.1:[0-9]+"),
    ],
).replace(
    # Keep the hotline's dialog tag (From of its REFER) for the NOTIFYs' To.
    "<action>",
    '<action><ereg regexp="tag=([^;>]+)" search_in="hdr" header="From:" '
    'assign_to="dummy,hotline_tag"/>',
)


def answer_refer(status: str) -> str:
    """The transferee's final response to the REFER (202 Accepted takes it on)."""
    return REPLY_200.replace("200 OK", status)


def notify(cseq: int, frag: str, state: str) -> str:
    """A NOTIFY of the refer subscription in the caller's dialog, with a sipfrag status line."""
    return _send(
        [
            "NOTIFY sip:95598@[remote_ip]:[remote_port] SIP/2.0",
            f"Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch(f'notify{cseq}')}",
            f"From: {CALLER_FROM}",
            "To: <sip:95598@[remote_ip]:[remote_port]>;tag=[$hotline_tag]",
            "Call-ID: [call_id]",
            f"CSeq: {cseq} NOTIFY",
            "Max-Forwards: 70",
            "Contact: <sip:13800138000@[local_ip]:[local_port]>",
            "Event: refer",
            f"Subscription-State: {state}",
            "Content-Type: message/sipfrag;version=2.0",
        ],
        f"{frag}\n",
        retrans=True,
    ) + recv(200)


def caller_bye(cseq: int) -> str:
    """The caller hangs up in the middle of the transfer."""
    return _send(
        [
            "BYE sip:95598@[remote_ip]:[remote_port] SIP/2.0",
            f"Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch(f'bye{cseq}')}",
            f"From: {CALLER_FROM}",
            "To: <sip:95598@[remote_ip]:[remote_port]>;tag=[$hotline_tag]",
            "Call-ID: [call_id]",
            f"CSeq: {cseq} BYE",
            "Max-Forwards: 70",
        ],
        retrans=True,
    ) + recv(200)


def caller_walks_to_the_agent(pcaps: list[Path]) -> list[str]:
    """Call in and press 0 during the greeting (type-ahead: an agent, please)."""
    return [invite(), ringing(), recv(200), ack(), press(pcaps[0])]


def caller_goes_to_the_queue() -> list[str]:
    return [invite(), ringing(), recv(200), ack()]


def pbx_scenario(name: str, *parts: str) -> str:
    """A caller scenario; the hotline's tag is read once more at its end (SIPp refuses a
    scenario with a variable that is set but never used, as when no NOTIFY is sent)."""
    return scenario(name, *parts, '  <nop><action><log message="[$hotline_tag]"/></action></nop>\n')


async def run_caller(server: SipServer, xml: str, folder: Path) -> Any:
    return await sipp(xml, server.address, folder, timeout=90.0, extra=trace_args(folder))


def refers_counted(outcome: str) -> float:
    """The ``hotline_sip_refers_total`` sample of an outcome."""
    value = metrics.REGISTRY.get_sample_value("hotline_sip_refers_total", {"outcome": outcome})
    assert value is not None
    return value


def methods_from_hotline(folder: Path) -> list[str]:
    return [m.first_line.split()[0] for m in hotline_sent(read_trace(folder), lambda m: True)]


# ------------------------------------------------------------------------ the tests


async def test_refer_accepted_and_notified_200_hands_the_caller_over(tmp_path: Path) -> None:
    """202, NOTIFY 100, NOTIFY 200: the hotline BYEs its leg, the dialog ends as transferred,
    routing is told to let go (the call stays with the agent until the desktop completes it)."""
    agent_contact = f"sip:{AGENT}@127.0.0.1:{free_udp_port()}"
    xml = pbx_scenario(
        "refer accepted",
        *caller_walks_to_the_agent(key_pcaps("0", tmp_path)),
        TAKE_REFER,
        answer_refer("202 Accepted"),
        notify(2, "SIP/2.0 100 Trying", "active;expires=60"),
        notify(3, "SIP/2.0 200 OK", "terminated;reason=noresource"),
        answer_bye(timeout_ms=10_000),
    )
    transferred_before = refers_counted("transferred")
    async with hotline(agent_contact) as server:
        folder = tmp_path
        with capture_logs() as logs:
            run = await run_caller(server, xml, folder)
            assert run.returncode == 0, run.errors or run.stdout[-2000:]
            await wait_until(lambda: len(server.completed) == 1, 15.0)
        refer_logs = [e for e in logs if "refer" in e["event"]]
        assert [e["event"] for e in refer_logs] == [
            "transferring by refer",
            "refer accepted",
            "refer progress",
            "transferred by refer",
        ]
        assert refer_logs[0]["refer_to"] == agent_contact
        assert refer_logs[2]["status"] == 100
        trace = read_trace(folder)
        [refer] = hotline_sent(trace, lambda m: m.is_request("REFER"))
        assert refer.header("Refer-To") == f"<{agent_contact}>"
        assert refer.header("CSeq") == "1 REFER"
        # Both NOTIFYs answered 200, then the hotline's BYE ends its leg.
        assert len(hotline_sent(trace, lambda m: m.is_response(200, "NOTIFY"))) == 2
        assert methods_from_hotline(folder)[-1] == "BYE"
        assert not server.legs  # the hotline never called the agent itself
        [(call_id, outcome)] = server.refers.outcomes
        assert outcome == ReferOutcome("transferred", 200, "the target answered: 200")
        assert refers_counted("transferred") == transferred_before + 1
        assert server.refers.active == 0
        [summary] = server.completed
        assert summary.call_id == call_id
        assert [(o.kind, o.detail) for o in summary.outcomes] == [
            ("enqueue", "general/20"),
            ("transferred", AGENT),
        ]
        assert "survey" not in summary.path
        [left] = routing_of(server).left
        assert left.reason == "transferred"
        assert not server.calls


@pytest.mark.parametrize(
    ("pbx", "kind", "status"),
    [
        pytest.param([answer_refer("603 Declined")], "refused", 603, id="refer-refused-603"),
        pytest.param(
            [
                answer_refer("202 Accepted"),
                notify(2, "SIP/2.0 100 Trying", "active;expires=60"),
                notify(3, "SIP/2.0 486 Busy Here", "terminated;reason=noresource"),
            ],
            "failed",
            486,
            id="notify-486-busy",
        ),
        pytest.param(
            [answer_refer("202 Accepted"), notify(2, "SIP/2.0 180 Ringing", "active;expires=60")],
            "timeout",
            408,
            id="no-final-notify",
        ),
    ],
)
async def test_a_refused_or_failed_refer_falls_back_to_the_bridge(
    tmp_path: Path, pbx: list[str], kind: str, status: int
) -> None:
    """The PBX will not (603), cannot (sipfrag 486) or does not say (no final NOTIFY within the
    timeout, 3 s here): the hotline calls the agent's phone itself and bridges; the agent hangs
    up after two seconds and the caller gets the hotline's BYE. The caller was never left on a
    dead line."""
    counted_before = refers_counted(kind)
    agent_xml = uas_scenario("answer", hold=2.0)
    async with sipp_uas(agent_xml, tmp_path / "agent") as agent:
        contact = f"sip:{AGENT}@{agent.address[0]}:{agent.address[1]}"
        xml = pbx_scenario(
            "refer fails",
            *caller_goes_to_the_queue(),
            TAKE_REFER,
            *pbx,
            answer_bye(timeout_ms=60_000),
        )
        async with hotline(contact, QUEUE_ONLY, refer_timeout=3.0) as server:
            with capture_logs() as logs:
                run = await run_caller(server, xml, tmp_path)
                assert run.returncode == 0, run.errors or run.stdout[-2000:]
                agent_run = await agent.finished(30.0)
                assert agent_run.returncode == 0, agent_run.errors or agent_run.stdout[-2000:]
                await wait_until(lambda: len(server.completed) == 1, 15.0)
            [failed] = [e for e in logs if e["event"] == "refer failed, bridging instead"]
            assert (failed["log_level"], failed["status"]) == ("warning", status)

            [(_, outcome)] = server.refers.outcomes
            assert (outcome.kind, outcome.status) == (kind, status)
            assert refers_counted(kind) == counted_before + 1
            # The agent's phone was called by the hotline (B2BUA), showing the caller's number.
            [agent_invite] = [m for m in agent.trace() if m.received and m.is_request("INVITE")]
            assert "sip:13800138000@" in (agent_invite.header("From") or "")
            [summary] = server.completed
            assert [(o.kind, o.detail) for o in summary.outcomes] == [
                ("enqueue", "general/20"),
                ("hangup", "agent_finished"),
            ]
            assert [left.reason for left in routing_of(server).left] == ["agent_finished"]
            assert methods_from_hotline(tmp_path)[-1] == "BYE"
            assert not server.legs


async def test_the_caller_hanging_up_during_the_refer_ends_it_there(tmp_path: Path) -> None:
    """202, NOTIFY 100, then the caller's BYE: no outcome, no bridge; routing hears a hang-up
    (the agent goes to wrap-up, as for any caller who leaves while connected)."""
    left_before = refers_counted("caller_left")
    xml = pbx_scenario(
        "caller leaves",
        *caller_goes_to_the_queue(),
        TAKE_REFER,
        answer_refer("202 Accepted"),
        notify(2, "SIP/2.0 100 Trying", "active;expires=60"),
        caller_bye(3),
    )
    async with hotline(f"sip:{AGENT}@127.0.0.1:{free_udp_port()}", QUEUE_ONLY) as server:
        run = await run_caller(server, xml, tmp_path)
        assert run.returncode == 0, run.errors or run.stdout[-2000:]
        await wait_until(lambda: len(server.completed) == 1, 15.0)
        assert list(server.refers.outcomes) == []
        assert server.refers.active == 0
        assert refers_counted("caller_left") == left_before + 1
        assert [left.reason for left in routing_of(server).left] == ["hangup"]
        assert not server.legs
        assert "BYE" not in methods_from_hotline(tmp_path)
