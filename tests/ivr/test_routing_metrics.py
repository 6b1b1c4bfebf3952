"""Routing's figures on /metrics (ivr/routing_metrics.py), against a real Redis: callers waiting
and the longest wait per queue, agents by state, assignments and reservation timeouts."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from structlog.testing import capture_logs

from ivr.metrics import REGISTRY
from ivr.routing_metrics import RoutingMetrics
from routing.model import NewCall
from routing.store import RoutingStore


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_routing_metrics_follow_the_event_stream(redis_client: Redis) -> None:
    store = RoutingStore(redis_client, tenant="metrics")
    exporter = RoutingMetrics()
    assert await exporter.refresh(store, 0.0)
    offers = sample("hotline_routing_assignments_total", queue="fault_repair")
    ronas = sample("hotline_routing_reservation_timeouts_total", queue="fault_repair")

    await store.login("A1", skills={"fault_repair": 5}, now=1.0, ready=True)
    await store.enqueue(NewCall("c1", {"fault_repair": 1}), 10.0)  # offered to A1 at once
    await store.tick(30.0)  # A1 never answered: reservation timeout, c1 back in line
    await store.enqueue(NewCall("c2", {"fault_repair": 1}), 40.0)
    assert await exporter.refresh(store, 50.0)

    assert sample("hotline_routing_assignments_total", queue="fault_repair") == offers + 1
    assert sample("hotline_routing_reservation_timeouts_total", queue="fault_repair") == ronas + 1
    assert sample("hotline_routing_waiting", queue="fault_repair") == 2
    assert sample("hotline_routing_longest_wait_seconds", queue="fault_repair") == 40.0
    assert sample("hotline_routing_agents", state="not_ready") == 1  # missed the offer
    assert sample("hotline_routing_agents", state="available") == 0

    # A second agent takes the first caller: only the new events are read.
    await store.login("A2", skills={"fault_repair": 5}, now=60.0, ready=True)
    assert await exporter.refresh(store, 61.0)
    assert sample("hotline_routing_assignments_total", queue="fault_repair") == offers + 2
    assert sample("hotline_routing_waiting", queue="fault_repair") == 1
    assert sample("hotline_routing_longest_wait_seconds", queue="fault_repair") == 51.0
    assert sample("hotline_routing_agents", state="reserved") == 1


async def test_a_redis_outage_keeps_the_last_values_and_says_so_once() -> None:
    # Nothing listens on port 1; no retries, so the test does not wait out the client's backoff.
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    try:
        exporter = RoutingMetrics()
        with capture_logs() as logs:
            assert not await exporter.refresh(RoutingStore(dead, tenant="gone"), 1.0)
            assert not await exporter.refresh(RoutingStore(dead, tenant="gone"), 2.0)
        assert [e["event"] for e in logs] == ["routing metrics not refreshed"]
    finally:
        await dead.aclose()
