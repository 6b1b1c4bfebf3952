"""A CI-sized storm (bench/storm.py): 12 SIPp calls through Kamailio, with the cfg from
docker/kamailio, into two real `hotline serve` nodes sharing one Redis, agents accepting through
the API. No call lost: each answered, summarised by a node, with a work order, and closed in
routing. About 30 s; the full-size figures are in docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ops.storm_bench import load_storm


@pytest.mark.slow
def test_a_small_storm_loses_no_call(tmp_path: Path) -> None:
    storm = load_storm()
    calls = 12  # hashed over two nodes: all on one has odds 2 in 4096
    args = storm.parser().parse_args(
        [
            *("--calls", str(calls), "--seconds", "4", "--agents", "3", "--hold", "16"),
            *("--no-audio", "--probe-wait", "3"),
        ]
    )
    report = storm.run(args, tmp_path)
    assert report["sipp_created"] == calls
    assert report["sipp_ok"] == calls
    assert report["summaries"] == calls
    assert report["summaries_with_ticket"] == calls
    assert report["tickets_in_stores"] == calls
    assert report["routing_entered"] == calls
    assert report["routing_open"] == 0
    assert sum(report["routing_final"].values()) == calls
    assert report["agent_accepts"] >= 3
    # Kamailio spread the calls over both nodes.
    assert all(count > 0 for count in report["summaries_per_node"].values())
    assert report["errors_logged"] == 0
