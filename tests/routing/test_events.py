"""The event stream: bounded per tenant (approximately), newest entries kept."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from routing.events import EventType
from routing.store import EVENTS_MAX, RoutingStore

T0 = 1_800_000_000.0


async def churn(store: RoutingStore, steps: int) -> None:
    """Two events per step: an agent going not ready and ready again."""
    await store.login("A1", skills={"billing": 5}, now=T0)
    for i in range(steps):
        await store.ready("A1", T0 + i)
        await store.not_ready("A1", f"r{i}", T0 + i)


async def node_size(redis_client: Redis) -> int:
    """How many entries Redis packs in one stream node: what approximate trimming may keep over
    the bound."""
    config = await redis_client.config_get("stream-node-max-entries")
    return int(config["stream-node-max-entries"])


async def test_the_stream_stays_bounded(redis_client: Redis) -> None:
    store = RoutingStore(redis_client, "t1", events_max=10)
    await churn(store, 300)
    length = await store.event_count()
    assert 10 <= length <= 10 + await node_size(redis_client)
    last = (await store.events())[-1]
    assert (last.type, last.fields["reason"]) == (EventType.NOTREADY, "r299")  # newest kept


async def test_the_bound_is_per_tenant(redis_client: Redis) -> None:
    small = RoutingStore(redis_client, "small", events_max=10)
    large = RoutingStore(redis_client, "large")
    assert large.events_max == EVENTS_MAX
    await churn(small, 300)
    await churn(large, 300)
    assert await small.event_count() < 300
    assert await large.event_count() == 601


async def test_zero_is_unbounded(redis_client: Redis) -> None:
    store = RoutingStore(redis_client, "t1", events_max=0)
    await churn(store, 300)
    assert await store.event_count() == 601


async def test_the_setting_is_stored_for_the_tenant(redis_client: Redis) -> None:
    store = RoutingStore(redis_client, "t1", events_max=5000)
    await store.login("A1", skills={"billing": 5}, now=T0)
    assert await redis_client.hget(store.keys.settings, "events_max") == "5000"


def test_a_negative_bound_is_refused(redis_client: Redis) -> None:
    with pytest.raises(ValueError, match="events_max"):
        RoutingStore(redis_client, "t1", events_max=-1)
