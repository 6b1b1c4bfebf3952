"""Every Redis key routing uses, in one place, for Python and for the Lua scripts alike.

All keys of a tenant share one hash tag, ``{tenant}``, so they live in one Redis Cluster slot and
one Lua script may touch any of them. The templates below are the single definition: `Keys`
formats them in Python, and `lua_prelude()` turns the same templates into Lua functions
(``K.agent(id)``) that the store's script is prefixed with, so a key name is never spelled twice.

The script declares one key (`Keys.seq`) for slot routing and builds the others from the prefix;
Redis Cluster runs such a script because every key it touches hashes to that declared key's slot.
"""

from __future__ import annotations

import re
import string

NAMESPACE = "hotline"
"""First part of every key; lets a Redis shared with other software list ours with one pattern."""

MAX_LEVEL = 10
"""Skill levels run 1..MAX_LEVEL; queues and available-agent sets are bucketed by level."""

TEMPLATES: dict[str, str] = {
    # counters and registries
    "seq": "seq",  # INCR: the tenant's order of arrival (places in line, idle order, offers)
    "agents": "agents",  # set of every agent id ever logged in
    "calls": "calls",  # set of call ids routing holds (waiting, offered or connected)
    "queues": "queues",  # set of skills that have had a queue or config
    "timers": "timers",  # zset "<kind>|<id>" -> due time (reservation, wrap-up, max wait...)
    "events": "events",  # stream: the append-only event log (queue_log)
    "nodes": "nodes",  # zset: IVR node id -> time its last heartbeat vouches for it until
    "settings": "settings",  # hash: tenant settings (events_max, read when a command lacks it)
    "last_agent": "last_agent",  # hash: caller number -> the agent the caller talked to last
    "last_agent_until": "last_agent_until",  # zset: caller number -> until when remembered
    # agents
    "agent": "agent:{0}",  # hash: name, contact, state, reason, since, calls, talk, ...
    "agent_skills": "agent:{0}:skills",  # hash: skill -> level
    "available": "avail:{0}:{1}",  # zset per (skill, level): available agents, strategy score
    "staffed": "staffed:{0}",  # set: logged-in agents having the skill
    "handle_times": "aht:{0}",  # list: recent handle times (talk + wrap-up) of the skill
    "handle_total": "aht_sum:{0}",  # string: the sum of that list, kept with it by the script
    # queues and calls
    "queue": "q:{0}:{1}",  # zset per (skill, min level): "<seq><mark><call id>" -> place
    "queue_levels": "qlevels:{0}",  # string per skill: byte <level> '1': bucket may hold calls
    "queue_config": "queue:{0}",  # hash: QueueConfig overrides for the skill
    "ring": "ring:{0}",  # set per ring-all call being offered: the agents it rings
    "ringing": "ringing:{0}",  # zset per skill: its ring-all calls being offered -> place
    "call": "call:{0}",  # hash: one queued call or callback
    "parked": "parked:{0}",  # hash: the place a caller left for a callback, until claimed
    "held": "held:{0}",  # set per agent: calls held for the agent (last-agent routing)
    "inbox": "inbox:{0}",  # list per IVR node: JSON messages for calls that node holds
    # statistics kept beyond the event stream (routing.archive)
    "stats_fold": "stats:fold",  # hash: last (stream id folded up to), state (the fold, JSON)
    "stats_interval": "stats:{0}:{1}",  # hash per (interval start, skill or ""): its figures
    "stats_index": "stats:index",  # zset "<start>|<skill>" -> start: the intervals kept
}

_ID = re.compile(r"[^\s:|{}]{1,64}")


def check_name(kind: str, value: str) -> str:
    """Validate an agent id, skill or node id used inside a key (no ``:``, ``|``, braces)."""
    if not _ID.fullmatch(value):
        raise ValueError(f"bad {kind} {value!r}: 1-64 characters, none of ':', '|', '{{', '}}'")
    return value


def check_tenant(tenant: str) -> str:
    """A tenant name becomes the hash tag, so it must not contain braces."""
    return check_name("tenant", tenant)


class Keys:
    """The keys of one tenant."""

    def __init__(self, tenant: str = "default", namespace: str = NAMESPACE) -> None:
        self.tenant = check_tenant(tenant)
        self.prefix = f"{namespace}:{{{tenant}}}:"
        """Every key of the tenant starts with this; passed to the Lua script as ARGV[1]."""

    def _key(self, name: str, *parts: object) -> str:
        return self.prefix + TEMPLATES[name].format(*parts)

    @property
    def seq(self) -> str:
        return self._key("seq")

    @property
    def agents(self) -> str:
        return self._key("agents")

    @property
    def calls(self) -> str:
        return self._key("calls")

    @property
    def queues(self) -> str:
        return self._key("queues")

    @property
    def timers(self) -> str:
        return self._key("timers")

    @property
    def events(self) -> str:
        return self._key("events")

    @property
    def nodes(self) -> str:
        return self._key("nodes")

    @property
    def settings(self) -> str:
        return self._key("settings")

    @property
    def last_agent(self) -> str:
        return self._key("last_agent")

    @property
    def last_agent_until(self) -> str:
        return self._key("last_agent_until")

    def agent(self, agent_id: str) -> str:
        return self._key("agent", agent_id)

    def agent_skills(self, agent_id: str) -> str:
        return self._key("agent_skills", agent_id)

    def available(self, skill: str, level: int) -> str:
        return self._key("available", skill, level)

    def staffed(self, skill: str) -> str:
        return self._key("staffed", skill)

    def handle_times(self, skill: str) -> str:
        return self._key("handle_times", skill)

    def handle_total(self, skill: str) -> str:
        return self._key("handle_total", skill)

    def queue(self, skill: str, min_level: int) -> str:
        return self._key("queue", skill, min_level)

    def queue_levels(self, skill: str) -> str:
        return self._key("queue_levels", skill)

    def queue_config(self, skill: str) -> str:
        return self._key("queue_config", skill)

    def ring(self, call_id: str) -> str:
        return self._key("ring", call_id)

    def ringing(self, skill: str) -> str:
        return self._key("ringing", skill)

    def call(self, call_id: str) -> str:
        return self._key("call", call_id)

    def parked(self, call_id: str) -> str:
        return self._key("parked", call_id)

    def held(self, agent_id: str) -> str:
        return self._key("held", agent_id)

    def inbox(self, node_id: str) -> str:
        return self._key("inbox", node_id)

    @property
    def stats_fold(self) -> str:
        return self._key("stats_fold")

    def stats_interval(self, start: str, skill: str) -> str:
        """``start``: the interval's start as its index member spells it; ``skill`` empty for
        all queues."""
        return self._key("stats_interval", start, skill)

    @property
    def stats_index(self) -> str:
        return self._key("stats_index")


def lua_prelude() -> str:
    """Lua source declaring ``P`` (the prefix, to be set per call) and defining ``K.<name>(...)``
    for each template."""
    lines = ["local P -- the tenant prefix, set per call", "local K = {}"]
    lines.append(f"local MAX_LEVEL = {MAX_LEVEL}")
    # Levels are numbers in the scripts; Lua turns a number into a string with sprintf, which
    # costs more than the rest of building a key, so the level names are written out once.
    names = ", ".join(f"'{level}'" for level in range(1, MAX_LEVEL + 1))
    lines.append(f"local LEVEL_NAMES = {{ {names} }}")
    for name, template in TEMPLATES.items():
        pieces: list[str] = []
        args: list[str] = []
        for literal, field, _spec, _conv in string.Formatter().parse(template):
            if literal:
                pieces.append(repr(literal))  # templates are plain ASCII: a valid Lua literal
            if field is not None:
                arg = f"a{field}"
                if arg not in args:
                    args.append(arg)
                # a string as it is, a level by its name, any other number converted by `..`;
                # nil fails loudly instead of naming a key "...:nil"
                pieces.append(f"(LEVEL_NAMES[{arg}] or {arg})")
        body = " .. ".join(["P", *pieces])
        lines.append(f"K.{name} = function({', '.join(args)}) return {body} end")
    return "\n".join(lines) + "\n"
