"""Key names: one definition for Python and Lua, one hash tag (one Cluster slot) per tenant."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot
from redis.exceptions import ResponseError

from routing.keys import TEMPLATES, Keys, check_name, lua_prelude


def all_keys(k: Keys) -> list[str]:
    return [
        k.seq,
        k.agents,
        k.calls,
        k.queues,
        k.timers,
        k.events,
        k.nodes,
        k.settings,
        k.last_agent,
        k.last_agent_until,
        k.agent("A1"),
        k.agent_skills("A1"),
        k.available("billing", 3),
        k.staffed("billing"),
        k.handle_times("billing"),
        k.handle_total("billing"),
        k.queue("billing", 3),
        k.queue_config("billing"),
        k.ring("c1"),
        k.ringing("billing"),
        k.call("sip-call-id@host{weird}:x|y"),
        k.parked("c1"),
        k.held("A1"),
        k.inbox("node-1"),
        k.stats_fold,
        k.stats_interval("1800000000", "billing"),
        k.stats_index,
        k.queue_levels("billing"),
    ]


def test_every_template_has_a_python_accessor() -> None:
    k = Keys("t")
    names = {key.removeprefix(k.prefix).split(":")[0] for key in all_keys(k)}
    assert names == {t.split(":")[0] for t in TEMPLATES.values()}


def test_one_tenant_is_one_cluster_slot() -> None:
    k = Keys("北京")
    slots = {key_slot(key.encode()) for key in all_keys(k)}
    assert slots == {key_slot(b"{\xe5\x8c\x97\xe4\xba\xac}")}
    assert key_slot(Keys("other").seq.encode()) != key_slot(k.seq.encode())


async def test_lua_builds_the_same_names(redis_client: Redis) -> None:
    k = Keys("t")
    script = lua_prelude() + (
        "P = ARGV[1]\n"
        "return {K.seq(), K.agents(), K.calls(), K.queues(), K.timers(), K.events(),"
        " K.nodes(), K.settings(), K.last_agent(), K.last_agent_until(),"
        " K.agent('A1'), K.agent_skills('A1'), K.available('billing', 3),"
        " K.staffed('billing'), K.handle_times('billing'), K.handle_total('billing'),"
        " K.queue('billing', 3), K.queue_config('billing'), K.ring('c1'), K.ringing('billing'),"
        " K.call(ARGV[2]), K.parked('c1'), K.held('A1'), K.inbox('node-1'),"
        " K.stats_fold(), K.stats_interval('1800000000', 'billing'), K.stats_index(),"
        " K.queue_levels('billing')}"
    )
    names = await redis_client.eval(script, 0, k.prefix, "sip-call-id@host{weird}:x|y")
    assert names == all_keys(k)


async def test_lua_levels_as_numbers_or_strings(redis_client: Redis) -> None:
    k = Keys("t")
    script = lua_prelude() + (
        "P = ARGV[1]\n"
        "return {K.queue('billing', 3), K.queue('billing', '3'), K.available('billing', 10),"
        " K.available('billing', 12), K.agent('7')}"
    )
    names = await redis_client.eval(script, 0, k.prefix)
    assert names == [
        k.queue("billing", 3),
        k.queue("billing", 3),
        k.available("billing", 10),
        k.available("billing", 12),
        k.agent("7"),
    ]
    with pytest.raises(ResponseError, match="concatenate"):  # never a key named "...:nil"
        await redis_client.eval(lua_prelude() + "P = ARGV[1]\nreturn K.agent(nil)", 0, k.prefix)


@pytest.mark.parametrize("bad", ["", "a:b", "a|b", "{a}", "a b", "x" * 65])
def test_names_inside_keys_are_checked(bad: str) -> None:
    with pytest.raises(ValueError, match="bad"):
        check_name("agent", bad)
    with pytest.raises(ValueError, match="bad"):
        Keys(bad)


def test_names_may_be_chinese() -> None:
    assert check_name("skill", "故障报修") == "故障报修"
