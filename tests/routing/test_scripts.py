"""The routing program cut per command for EVALSHA: only what a command reaches, same behaviour."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from routing.errors import NoSuchAgentError
from routing.scripts import commands, cut
from routing.store import RoutingStore, script_source

PROGRAM = """\
-- a comment at the top
local P
local K = {}
K.a = function(x) return P .. x end
K.b = function(x) return P .. 'b' .. x end
local UNUSED = { 1, 2,
    3 }
local LIMIT = 20 -- used by two()
local function one()
    return K.a('1')
end
local function two()
    return one() .. LIMIT
end
local function three()
    return K.b('3') -- not one()
end
local function four()
    return 'two() and one()'
end
local COMMANDS = {
    two = two,
    three = three,
    four = four,
}
local function invoke(args)
    P = args[1]
    return COMMANDS[args[2]]()
end
return invoke(ARGV)
"""


def test_only_what_the_command_reaches() -> None:
    assert commands(PROGRAM) == {"two": "two", "three": "three", "four": "four"}
    assert cut(PROGRAM, "two") == (
        "local P\n"
        "local K = {}\n"
        "K.a = function(x) return P .. x end\n"
        "local LIMIT = 20 -- used by two()\n"
        "local function one()\n    return K.a('1')\nend\n"
        "local function two()\n    return one() .. LIMIT\nend\n"
        "local COMMANDS = { two = two }\n"
        "local function invoke(args)\n    P = args[1]\n    return COMMANDS[args[2]]()\nend\n"
        "return invoke(ARGV)\n"
    )
    three = cut(PROGRAM, "three")
    assert "K.b = " in three
    assert "local function one" not in three
    assert "K.a = " not in three


def test_names_in_strings_and_comments_are_not_reached() -> None:
    four = cut(PROGRAM, "four")
    assert "local function four" in four
    assert "local function two" not in four
    assert "local function one" not in four


def test_unknown_command() -> None:
    with pytest.raises(KeyError):
        cut(PROGRAM, "five")


def test_a_forward_declared_local_keeps_both_statements() -> None:
    program = PROGRAM.replace(
        "local function three()\n    return K.b('3') -- not one()\nend\n",
        "local helper\nlocal function three()\n    return helper()\nend\n"
        "helper = function() return K.b('3') end\n",
    )
    three = cut(program, "three")
    assert "local helper\n" in three
    assert "helper = function() return K.b('3') end\n" in three


def test_every_command_of_the_store_has_a_smaller_script() -> None:
    whole = script_source()
    names = commands(whole)
    assert "accept" in names
    assert "tick" in names
    for command in names:
        part = script_source(command)
        assert len(part) < len(whole)
        assert f"local COMMANDS = {{ {command} = {names[command]} }}" in part
        assert f"local function {names[command]}(" in part
    accept = script_source("accept")
    assert "cmd_enqueue" not in accept
    assert "estimated_wait" not in accept


async def test_each_script_compiles_and_runs(redis_client: Redis) -> None:
    """Every command's script loads; an unknown agent is refused the same way by each."""
    store = RoutingStore(redis_client, "t", functions=False)
    for command in commands(script_source()):
        sha = await redis_client.script_load(script_source(command))
        assert await redis_client.script_exists(sha) == [True]
    with pytest.raises(NoSuchAgentError):
        await store.ready("nobody", 1.0)
