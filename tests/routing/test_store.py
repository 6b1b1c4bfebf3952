"""The store's Lua program: one behaviour whether it runs as a script (6.2) or a function (7+)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from routing.errors import NoSuchAgentError
from routing.model import AgentState, NewCall
from routing.store import AgentReply, RoutingStore, library_source

T0 = 1_800_000_000.0


async def scenario(store: RoutingStore) -> list[tuple[str, dict[str, str]]]:
    await store.login("A1", skills={"billing": 5}, contact="sip:a1@pbx", now=T0)
    await store.enqueue(NewCall("c1", {"billing": 1}, node_id="n1", request_id=1), T0)
    await store.enqueue(NewCall("c2", {"billing": 2}, priority=3, node_id="n1"), T0 + 1)
    await store.ready("A1", T0 + 2)
    await store.tick(T0 + 17)
    await store.ready("A1", T0 + 18)
    await store.accept("A1", "c2", T0 + 19)
    await store.complete("A1", T0 + 50)
    await store.tick(T0 + 80)
    with pytest.raises(NoSuchAgentError):
        await store.ready("nobody", T0 + 81)
    return [(e.type.value, dict(e.fields)) for e in await store.events()]


@pytest.fixture
async def redis7(redis_servers: Any) -> AsyncIterator[Redis]:
    """A client of the system server (Redis 7: FUNCTION), flushed, functions included."""
    client = Redis.from_url(redis_servers.get("system").url, decode_responses=True)
    await client.flushall()
    await client.function_flush()
    yield client
    await client.aclose()


async def test_script_and_function_agree(redis7: Redis) -> None:
    redis_client = redis7
    as_function = await scenario(RoutingStore(redis_client, "f"))
    as_script = await scenario(RoutingStore(redis_client, "s", functions=False))
    assert as_function == as_script
    name, _ = library_source()
    libraries = await redis_client.function_list()
    names = [lib["library_name"] if isinstance(lib, dict) else lib[1] for lib in libraries]
    assert names == [name]


async def test_function_reloaded_after_a_flush(redis7: Redis) -> None:
    redis_client = redis7
    store = RoutingStore(redis_client, "f")
    await store.login("A1", skills={"billing": 5}, now=T0)
    await redis_client.function_flush()
    await store.ready("A1", T0 + 1)  # loads the library again
    agent = await store.agent("A1")
    assert agent is not None
    assert agent.state == "available"


async def test_an_agent_command_can_answer_with_the_agent(store: RoutingStore) -> None:
    """``reply``: the agent as the command's own script left it, equal to a read after it."""
    reply = AgentReply()
    await store.login("A1", skills={"billing": 5}, contact="sip:a1@pbx", now=T0, reply=reply)
    assert reply.agent == await store.agent("A1")
    await store.enqueue(NewCall("c1", {"billing": 1}, node_id="n1"), T0 + 1)
    for step in (
        store.ready("A1", T0 + 2, reply=reply),  # offered c1 at once
        store.accept("A1", "c1", T0 + 3, reply=reply),
        store.complete("A1", T0 + 60, reply=reply),
        store.not_ready("A1", "lunch", T0 + 61, reply=reply),
        store.logout("A1", T0 + 62, reply=reply),
    ):
        reply.agent = None
        await step
        assert reply.agent is not None
        assert reply.agent == await store.agent("A1")
    assert reply.agent.state is AgentState.LOGGED_OUT


async def test_calls_in_buckets_written_before_the_level_index_are_found(
    store: RoutingStore,
) -> None:
    """Data from before ``qlevels`` existed: the first match or position looks at every bucket
    of the skill once and rebuilds its part of the index."""
    await store.login("A1", skills={"billing": 5}, now=T0)
    await store.enqueue(NewCall("c1", {"billing": 3}, node_id="n1"), T0)
    await store.enqueue(NewCall("c2", {"billing": 1}, node_id="n1"), T0 + 1)
    await store.redis.delete(store.keys.queue_levels("billing"))
    assert (await store.positions(["c2"], T0 + 2))["c2"].position == 2
    assert await store.redis.get(store.keys.queue_levels("billing")) == "01010000000"
    offers = await store.ready("A1", T0 + 3)
    assert [o.call_id for o in offers] == ["c1"]
