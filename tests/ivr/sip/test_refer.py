"""The REFER transfer machine without I/O: responses, NOTIFYs and time in, one outcome out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ivr.sip.refer import (
    ReferOutcome,
    ReferState,
    ReferTransfer,
    sipfrag_status,
    subscription_terminated,
)

ACTIVE = "active;expires=60"
TERMINATED = "terminated;reason=noresource"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"SIP/2.0 100 Trying\r\n", 100),
        (b"SIP/2.0 200 OK\r\n", 200),
        (b"SIP/2.0 486 Busy Here", 486),
        (b"\r\nSIP/2.0 180 Ringing\r\nContact: <sip:1001@127.0.0.1>\r\n\r\n", 180),
        (b"sip/2.0 603 Decline\r\n", 603),
        (b"SIP/2.0 200\r\n", 200),  # no reason phrase
        (b"", None),
        (b"INVITE sip:1001@127.0.0.1 SIP/2.0\r\n", None),  # a request line, not a status
        (b"SIP/2.0 2000 OK\r\n", None),
        (b"SIP/2.0 099 Low\r\n", None),
        (b"SIP/2.0 700 High\r\n", None),
        (b"SIP/3.0 200 OK\r\n", None),
        (b"\xff\xfe garbage", None),
    ],
)
def test_sipfrag_status(body: bytes, status: int | None) -> None:
    assert sipfrag_status(body) == status


@given(st.binary(max_size=200))
def test_sipfrag_parser_never_crashes(body: bytes) -> None:
    status = sipfrag_status(body)
    assert status is None or 100 <= status <= 699


def test_subscription_state() -> None:
    assert subscription_terminated(TERMINATED)
    assert subscription_terminated(" Terminated ")
    assert not subscription_terminated(ACTIVE)
    assert not subscription_terminated("")


def test_accepted_then_trying_then_ok_succeeds_once() -> None:
    refer = ReferTransfer(3, now=10.0, timeout=45.0)
    assert (refer.state, refer.deadline) == (ReferState.SENT, 55.0)
    assert refer.on_response(202, "Accepted") is None
    assert refer.state is ReferState.ACCEPTED
    assert refer.on_notify(ACTIVE, b"SIP/2.0 100 Trying\r\n") is None
    assert refer.on_notify(ACTIVE, b"SIP/2.0 180 Ringing\r\n") is None
    assert refer.progress == 180
    outcome = refer.on_notify(TERMINATED, b"SIP/2.0 200 OK\r\n")
    assert outcome == ReferOutcome("transferred", 200, "the target answered: 200")
    assert (refer.state, refer.deadline, refer.done) == (ReferState.SUCCEEDED, None, True)
    # Anything later is news of a decided transfer: no second outcome.
    assert refer.on_notify(TERMINATED, b"SIP/2.0 503 Service Unavailable\r\n") is None
    assert refer.on_response(500, "Oops") is None
    assert refer.handle_timer(1000.0) is None
    assert refer.outcome == outcome


def test_a_200_in_an_active_notify_already_decides() -> None:
    refer = ReferTransfer(1, now=0.0)
    refer.on_response(202, "Accepted")
    assert refer.on_notify(ACTIVE, b"SIP/2.0 200 OK\r\n") == ReferOutcome(
        "transferred", 200, "the target answered: 200"
    )


@pytest.mark.parametrize(("status", "reason"), [(603, "Declined"), (405, "Method Not Allowed")])
def test_a_refused_refer_fails_at_once(status: int, reason: str) -> None:
    refer = ReferTransfer(1, now=0.0)
    outcome = refer.on_response(status, reason)
    assert outcome == ReferOutcome("refused", status, f"REFER refused: {status} {reason}")
    assert refer.state is ReferState.FAILED
    assert refer.deadline is None


def test_no_answer_to_the_refer_is_the_cores_408() -> None:
    refer = ReferTransfer(1, now=0.0)
    assert refer.on_response(408, "Request Timeout") == ReferOutcome(
        "timeout", 408, "REFER refused: 408 Request Timeout"
    )


@pytest.mark.parametrize("status", [486, 480, 404, 603, 487])
def test_a_failure_sipfrag_fails(status: int) -> None:
    refer = ReferTransfer(1, now=0.0)
    refer.on_response(202, "Accepted")
    refer.on_notify(ACTIVE, b"SIP/2.0 100 Trying\r\n")
    outcome = refer.on_notify(TERMINATED, f"SIP/2.0 {status} Whatever\r\n".encode())
    assert outcome == ReferOutcome("failed", status, f"the target refused: {status}")


def test_a_notify_before_the_202_counts_as_accepted() -> None:
    refer = ReferTransfer(1, now=0.0)
    assert refer.on_notify(ACTIVE, b"SIP/2.0 100 Trying\r\n") is None
    assert refer.state is ReferState.ACCEPTED
    assert refer.on_response(202, "Accepted") is None
    assert refer.state is ReferState.ACCEPTED


def test_a_subscription_ended_without_a_final_status_fails() -> None:
    refer = ReferTransfer(1, now=0.0)
    refer.on_response(202, "Accepted")
    outcome = refer.on_notify("terminated;reason=timeout", b"SIP/2.0 180 Ringing\r\n")
    assert outcome == ReferOutcome("failed", 0, "subscription ended (terminated;reason=timeout)")


def test_an_unreadable_sipfrag_is_no_progress() -> None:
    refer = ReferTransfer(1, now=0.0)
    refer.on_response(202, "Accepted")
    assert refer.on_notify(ACTIVE, b"hello") is None
    assert (refer.state, refer.progress) == (ReferState.ACCEPTED, None)


def test_no_outcome_in_time_fails_at_the_deadline() -> None:
    refer = ReferTransfer(1, now=5.0, timeout=30.0)
    refer.on_response(202, "Accepted")
    refer.on_notify(ACTIVE, b"SIP/2.0 180 Ringing\r\n")
    assert refer.deadline == 35.0
    assert refer.handle_timer(34.9) is None  # early: nothing
    assert refer.handle_timer(35.0) == ReferOutcome("timeout", 408, "no final NOTIFY in time")
    assert refer.deadline is None


def test_a_refer_never_answered_fails_at_the_deadline() -> None:
    refer = ReferTransfer(1, now=0.0, timeout=30.0)
    assert refer.handle_timer(30.0) == ReferOutcome(
        "timeout", 408, "the REFER got no answer in time"
    )
