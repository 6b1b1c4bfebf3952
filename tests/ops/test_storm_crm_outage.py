"""A CI-sized storm with the CRM down (bench/storm.py --crm-down-at): 8 SIPp calls through
Kamailio into two real `hotline serve` nodes that file their work orders with the HTTP CRM
adapter into a real HTTP CRM (tests/crm_bridge/fake_crm.py), which stops listening for 6 s while
the calls reach their work order. No caller notices (every call walks the flow, is told a number
and completes), and once the CRM is back the outboxes drain into it exactly once: every number
told is one ticket, no number or idempotency key twice, nothing else. About 40 s; the full-size
run is in docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ops.storm_bench import load_storm


@pytest.mark.slow
def test_tickets_filed_while_the_crm_is_down_reach_it_exactly_once(tmp_path: Path) -> None:
    storm = load_storm()
    calls = 8
    args = storm.parser().parse_args(
        [
            *("--calls", str(calls), "--seconds", "3", "--agents", "2", "--hold", "16"),
            *("--no-audio", "--probe-wait", "3"),
            # The calls reach their work order 9-13 s into the storm.
            # It stops listening (refused connections); --crm-fault 500 is the bench's other mode.
            *("--crm-down-at", "8", "--crm-down-for", "6", "--crm-fault", "stop"),
            *("--crm-drain-wait", "20"),
        ]
    )
    report = storm.run(args, tmp_path)
    # No caller noticed.
    assert report["sipp_ok"] == calls
    assert report["summaries"] == calls
    assert report["summaries_with_ticket"] == calls
    assert report["summaries_walked_the_flow"] == calls
    # The outage was real: numbers were told while the CRM was down, and the nodes' lookups
    # (the outage notices) failed meanwhile and took the flow's error path unnoticed.
    assert report["tickets_told_while_crm_down"] >= 2
    assert any(report["service_failures"].values())
    # Exactly once: every number told is in the CRM, once, and nothing else is.
    assert report["tickets_told"] == calls
    assert report["crm_tickets"] == calls
    assert report["crm_missing"] == []
    assert report["crm_unknown"] == []
    assert report["crm"]["keys"] == calls
    assert report["crm"]["duplicates"] == 0
    assert report["crm"]["keys_with_two_bodies"] == 0
    assert report["calls_with_two_tickets"] == 0
    for stats in report["crm_outbox"].values():
        assert stats["backlog"] == 0
        assert stats["dead_letters"] == 0
    assert report["errors_logged"] == 0
