"""The SIP front end's table sizes and the event loop's task count on /metrics, against a real
SIPp call: they count the call while it is up and fall back to 0 after it (what bench/soak.py
reads to tell a leak)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from ivr.metrics import REGISTRY, SIP_TABLES
from ivr.session import RECENT_SUMMARIES

sys.path.insert(0, str(Path(__file__).parent))
from sipp import fast_timers, key_pcaps, make_server, run_sipp, sipp_available, uac_scenario

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not sipp_available() and not os.environ.get("CI"), reason="needs Debian sip-tester"
    ),
]


def table(name: str) -> float:
    value = REGISTRY.get_sample_value("hotline_sip_table_size", {"table": name})
    assert value is not None, name
    return value


async def test_tables_count_a_call_and_return_to_zero(tmp_path: Path) -> None:
    server = make_server()
    await server.start()
    # 64*T1 of the BYE's transaction and T4 of the ACK absorber, short enough for a test.
    fast_timers(server, t1=0.05, t4=0.5)
    try:
        scenario = uac_scenario([5.0, "2", 2.0], codecs=(0,), pcaps=key_pcaps("2", tmp_path))
        run = asyncio.create_task(
            asyncio.to_thread(run_sipp, scenario, server.address, tmp_path, timeout=30)
        )
        async with asyncio.timeout(10):
            # The gauges are a metric read, not an event we could await: polling is the point.
            while table("dialogs") != 1 or table("sessions") != 1:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        tasks = REGISTRY.get_sample_value("hotline_asyncio_tasks")
        assert tasks is not None
        assert tasks >= 2  # this test's own task and the server's watchdog at least
        done = await run
        assert done.returncode == 0, done.stdout[-2000:] + done.errors
        async with asyncio.timeout(10):
            while any(table(name) for name in SIP_TABLES):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert table("agent_legs") == 0
    finally:
        await server.stop(0)


def test_the_record_of_finished_calls_is_bounded() -> None:
    """A node runs for months: what it keeps of finished calls (for tests and the shutdown
    log) must not grow with every call (the soak saw it as a rising RSS)."""
    server = make_server()
    assert server.completed.maxlen == RECENT_SUMMARIES
    assert server.answered.maxlen == RECENT_SUMMARIES
