"""The agents and queues API: agents log in, change state and take calls; queues are read and set.

Every change is one `RoutingStore` call (one atomic Lua step); the answer then reads the agent
back. Errors keep routing's ids: ``no-such-agent`` / ``no-such-reservation`` answer 404, state
conflicts (``invalid-transition``, ``agent-busy``) 409, and a Redis that cannot be reached (or no
routing on this node) 503 ``routing-unavailable``. Who may change state is `ivr.web_api`'s rule.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import structlog
from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ivr.web_api import (
    ApiError,
    Handler,
    bool_field,
    invalid,
    json_body,
    number,
    text_field,
)
from routing import archive, stats
from routing.errors import NoSuchAgentError, NoSuchReservationError, RoutingError
from routing.keys import MAX_LEVEL, check_name
from routing.model import Agent, AgentState, Offer, Position, QueueConfig, QueuedCall, Strategy
from routing.store import AgentReply, RoutingStore

log = structlog.get_logger(__name__)

MAX_REASON_LENGTH = 64
"""A not-ready reason is a short code (``lunch``, ``training``), shown on the wallboard."""

CONFIG_FIELDS = tuple(f.name for f in fields(QueueConfig) if f.name != "skill")
"""The queue settings `PUT /api/queues/{skill}` takes."""


@dataclass(frozen=True)
class RoutingApi:
    """What the handlers need: the store (None when this node has no routing) and the clock."""

    store: RoutingStore | None
    """Routing of the node's tenant."""
    clock: Callable[[], float]
    """Seconds since the epoch, routing's ``now``."""


ROUTING_KEY = web.AppKey("routing_api", RoutingApi)

RoutingHandler = Callable[[web.Request, RoutingStore, float], Awaitable[Any]]


def _routing(handler: RoutingHandler) -> Handler:
    """Give a handler the store and ``now``; turn routing's and Redis's failures into ApiErrors."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        api = request.app[ROUTING_KEY]
        if api.store is None:
            raise ApiError(
                "routing-unavailable", "routing is not connected on this node", status=503
            )
        try:
            body = await handler(request, api.store, api.clock())
        except RoutingError as exc:
            status = 404 if isinstance(exc, NoSuchAgentError | NoSuchReservationError) else 409
            raise ApiError(exc.error_id, exc.detail or exc.error_id, status=status) from None
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("routing redis unreachable", path=request.path, error=str(exc))
            raise ApiError(
                "routing-unavailable",
                "routing's Redis cannot be reached; try again shortly",
                status=503,
            ) from None
        return web.json_response(body, dumps=_dumps)

    return wrapped


def _dumps(value: Any) -> str:
    # Names and screen-pop context are Mandarin: keep them readable in the answer.
    return json.dumps(value, ensure_ascii=False)


# ---------------------------------------------------------------------- JSON forms


def agent_json(agent: Agent) -> dict[str, Any]:
    """An agent as the API shows it."""
    return {
        "agent_id": agent.agent_id,
        "name": agent.name,
        "contact": agent.contact,
        "state": agent.state.value,
        "reason": agent.reason,
        "since": agent.since,
        "skills": dict(agent.skills),
        "calls": agent.calls,
        "talk_seconds": agent.talk_seconds,
        "call_id": agent.call_id,
        "wrap_until": agent.wrap_until,
    }


def call_json(call: QueuedCall, position: Position | None, now: float) -> dict[str, Any]:
    """A call routing holds, with its screen-pop context and, while waiting, its place in line."""
    return {
        "call_id": call.call_id,
        "kind": call.kind.value,
        "skill": call.skill,
        "skills": dict(call.skills),
        "priority": call.priority,
        "enqueued_at": call.enqueued_at,
        "waited_seconds": max(0.0, round(now - call.enqueued_at, 3)),
        "state": call.state.value,
        "agent_id": call.agent_id,
        "node_id": call.node_id,
        "number": call.number,
        "context": dict(call.context),
        "position": position.position if position is not None else 0,
        "wait_seconds": position.wait_seconds if position is not None else None,
    }


def config_json(config: QueueConfig) -> dict[str, Any]:
    """A queue's settings (without the skill, which names the queue)."""
    values = {name: getattr(config, name) for name in CONFIG_FIELDS}
    values["strategy"] = config.strategy.value
    return values


def _offers(offers: list[Offer]) -> list[dict[str, str]]:
    return [{"call_id": o.call_id, "agent_id": o.agent_id} for o in offers]


# ---------------------------------------------------------------------- request parts


def _agent_id(request: web.Request) -> str:
    try:
        return check_name("agent", request.match_info["agent_id"])
    except ValueError as exc:
        raise invalid("agent_id", str(exc)) from None


def _skill(request: web.Request) -> str:
    try:
        return check_name("skill", request.match_info["skill"])
    except ValueError as exc:
        raise invalid("skill", str(exc)) from None


def _skills(body: Mapping[str, Any]) -> dict[str, int]:
    value = body.get("skills")
    example = 'e.g. {"fault_repair": 5}'
    if not isinstance(value, dict) or not value:
        raise invalid("skills", f"required: an object of skill -> level 1..{MAX_LEVEL}, {example}")
    skills: dict[str, int] = {}
    for skill, level in value.items():
        try:
            check_name("skill", skill)
        except ValueError as exc:
            raise invalid("skills", str(exc)) from None
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= MAX_LEVEL:
            raise invalid(f"skills.{skill}", f"the level must be a whole number 1..{MAX_LEVEL}")
        skills[skill] = level
    return skills


async def _agent_or_404(store: RoutingStore, agent_id: str) -> Agent:
    agent = await store.agent(agent_id)
    if agent is None:
        raise NoSuchAgentError(f"{agent_id} never logged in")
    return agent


async def _changed(
    request: web.Request,
    store: RoutingStore,
    agent_id: str,
    action: str,
    offers: list[Offer],
    *,
    reply: AgentReply | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Log a change and answer with the agent as it is now and the offers the change made.
    ``reply``: the agent as the change's own script left it (no second read)."""
    if reply is not None and reply.agent is not None:
        agent = reply.agent
    else:
        agent = await _agent_or_404(store, agent_id)
    log.info(
        "agent changed",
        agent_id=agent_id,
        action=action,
        state=agent.state.value,
        offers=[o.call_id for o in offers],
        peer=request.remote,
        **extra,
    )
    return {"agent": agent_json(agent), "offers": _offers(offers), **extra}


# ---------------------------------------------------------------------- agents


@_routing
async def list_agents(request: web.Request, store: RoutingStore, now: float) -> dict[str, Any]:
    """`GET /api/agents`: every agent that ever logged in, by id."""
    ids = sorted(await store.agent_ids())
    agents = await asyncio.gather(*(store.agent(agent_id) for agent_id in ids))
    return {"agents": [agent_json(a) for a in agents if a is not None]}


@_routing
async def get_agent(request: web.Request, store: RoutingStore, now: float) -> dict[str, Any]:
    """`GET /api/agents/{agent_id}`."""
    return agent_json(await _agent_or_404(store, _agent_id(request)))


@_routing
async def login(request: web.Request, store: RoutingStore, now: float) -> dict[str, Any]:
    """`POST /api/agents/{agent_id}/login` ``{"skills", "name", "contact", "ready"}``."""
    agent_id = _agent_id(request)
    body = await json_body(request, allowed=frozenset({"name", "contact", "skills", "ready"}))
    skills = _skills(body)
    name = text_field(body, "name", default="")
    contact = text_field(body, "contact", default="")
    ready = bool_field(body, "ready", default=False)
    reply = AgentReply()
    offers = await store.login(
        agent_id, skills=skills, now=now, name=name, contact=contact, ready=ready, reply=reply
    )
    return await _changed(request, store, agent_id, "login", offers, reply=reply)


@_routing
async def ready(request: web.Request, store: RoutingStore, now: float) -> dict[str, Any]:
    """`POST /api/agents/{agent_id}/ready` (also ends wrap-up early)."""
    agent_id = _agent_id(request)
    await json_body(request, allowed=frozenset())
    reply = AgentReply()
    offers = await store.ready(agent_id, now, reply=reply)
    return await _changed(request, store, agent_id, "ready", offers, reply=reply)


@_routing
async def not_ready(request: web.Request, store: RoutingStore, now: float) -> dict[str, Any]:
    """`POST /api/agents/{agent_id}/not-ready` ``{"reason"}``."""
    agent_id = _agent_id(request)
    body = await json_body(request, allowed=frozenset({"reason"}))
    reason = text_field(body, "reason", max_length=MAX_REASON_LENGTH).strip()
    if not reason:
        raise invalid("reason", "required, e.g. lunch, training, meeting")
    reply = AgentReply()
    offers = await store.not_ready(agent_id, reason, now, reply=reply)
    return await _changed(request, store, agent_id, "not_ready", offers, reply=reply, reason=reason)


@_routing
async def logout(request: web.Request, store: RoutingStore, now: float) -> dict[str, Any]:
    """`POST /api/agents/{agent_id}/logout` (refused with agent-busy while on a call)."""
    agent_id = _agent_id(request)
    await json_body(request, allowed=frozenset())
    reply = AgentReply()
    offers = await store.logout(agent_id, now, reply=reply)
    return await _changed(request, store, agent_id, "logout", offers, reply=reply)


async def _offer_answer(request: web.Request) -> tuple[str, str]:
    """The agent and the offered call of an accept or reject (``{"call_id"}``, nothing else)."""
    agent_id = _agent_id(request)
    body = await json_body(request, allowed=frozenset({"call_id"}))
    call_id = text_field(body, "call_id")
    if not call_id:
        raise invalid("call_id", "required")
    return agent_id, call_id


@_routing
async def accept(request: web.Request, store: RoutingStore, now: float) -> dict[str, Any]:
    """`POST /api/agents/{agent_id}/accept` ``{"call_id"}``: answers the contact to bridge."""
    agent_id, call_id = await _offer_answer(request)
    reply = AgentReply()
    contact = await store.accept(agent_id, call_id, now, reply=reply)
    return await _changed(
        request, store, agent_id, "accept", [], reply=reply, call_id=call_id, contact=contact
    )


@_routing
async def reject(request: web.Request, store: RoutingStore, now: float) -> dict[str, Any]:
    """`POST /api/agents/{agent_id}/reject` ``{"call_id"}``: the call goes back in its place."""
    agent_id, call_id = await _offer_answer(request)
    reply = AgentReply()
    offers = await store.reject(agent_id, call_id, now, reply=reply)
    return await _changed(request, store, agent_id, "reject", offers, reply=reply, call_id=call_id)


@_routing
async def complete(request: web.Request, store: RoutingStore, now: float) -> dict[str, Any]:
    """`POST /api/agents/{agent_id}/complete`: the agent's call ended; wrap-up starts."""
    agent_id = _agent_id(request)
    await json_body(request, allowed=frozenset())
    reply = AgentReply()
    offers = await store.complete(agent_id, now, reply=reply)
    return await _changed(request, store, agent_id, "complete", offers, reply=reply)


@_routing
async def set_skills(request: web.Request, store: RoutingStore, now: float) -> dict[str, Any]:
    """`PUT /api/agents/{agent_id}/skills` ``{"skills"}``: replaces the agent's skills."""
    agent_id = _agent_id(request)
    skills = _skills(await json_body(request, allowed=frozenset({"skills"})))
    offers = await store.set_skills(agent_id, skills, now)
    return await _changed(request, store, agent_id, "set_skills", offers)


# ---------------------------------------------------------------------- calls


@_routing
async def get_call(request: web.Request, store: RoutingStore, now: float) -> dict[str, Any]:
    """`GET /api/calls/{call_id}`: what routing holds for a call, screen-pop context included."""
    call_id = request.match_info["call_id"]
    call = await store.call(call_id)
    if call is None:
        raise ApiError("no-such-call", f"routing holds no call {call_id}", status=404)
    positions = await store.positions([call_id], now)
    return call_json(call, positions.get(call_id), now)


# ---------------------------------------------------------------------- queues


async def _known_skills(store: RoutingStore) -> tuple[set[str], dict[str, int]]:
    """Skills of the agents and of the calls routing holds, and how many logged-in agents have
    each. (A queue configured but with neither is not listed: the store has no read of its
    queue registry yet.)"""
    agents = await asyncio.gather(*(store.agent(a) for a in await store.agent_ids()))
    calls = await asyncio.gather(*(store.call(c) for c in await store.call_ids()))
    staffed: dict[str, int] = {}
    skills: set[str] = set()
    for agent in agents:
        if agent is None:
            continue
        skills.update(agent.skills)
        if agent.state is not AgentState.LOGGED_OUT:
            for skill in agent.skills:
                staffed[skill] = staffed.get(skill, 0) + 1
    skills.update(call.skill for call in calls if call is not None)
    return skills, staffed


@_routing
async def list_queues(request: web.Request, store: RoutingStore, now: float) -> dict[str, Any]:
    """`GET /api/queues`: each known skill's waiting count, available agents and settings."""
    skills, staffed = await _known_skills(store)
    queues = []
    for skill in sorted(skills):
        waiting, available, config = await asyncio.gather(
            store.waiting(skill), store.available(skill), store.queue_config(skill)
        )
        queues.append(
            {
                "skill": skill,
                "waiting": len(waiting),
                "available": sorted(available),
                "staffed": staffed.get(skill, 0),
                "config": config_json(config),
            }
        )
    return {"queues": queues}


@_routing
async def get_queue(request: web.Request, store: RoutingStore, now: float) -> dict[str, Any]:
    """`GET /api/queues/{skill}`: settings, available agents and the waiting calls in order."""
    skill = _skill(request)
    waiting, available, config = await asyncio.gather(
        store.waiting(skill), store.available(skill), store.queue_config(skill)
    )
    positions = await store.positions(waiting, now)
    calls = await asyncio.gather(*(store.call(call_id) for call_id in waiting))
    return {
        "skill": skill,
        "config": config_json(config),
        "available": sorted(available),
        "waiting": [
            call_json(call, positions.get(call.call_id), now) for call in calls if call is not None
        ],
    }


def _config_error(field: str, problem: str) -> ApiError:
    return ApiError("invalid-queue-config", f"{field}: {problem}")


def _updated_config(current: QueueConfig, body: Mapping[str, Any]) -> QueueConfig:
    """``current`` with the fields of ``body``; each field is checked on its own so the error
    names it."""
    changes: dict[str, Any] = {}
    for field, value in body.items():
        if field not in CONFIG_FIELDS:
            raise _config_error(field, f"not a queue setting; settings: {', '.join(CONFIG_FIELDS)}")
        converted: Any
        if field == "strategy":
            choices = [s.value for s in Strategy]
            if value not in choices:
                raise _config_error(field, f"must be one of {', '.join(choices)}")
            converted = Strategy(value)
        elif field in ("max_length", "callback_attempts"):
            if isinstance(value, bool) or not isinstance(value, int):
                hint = " (0: no limit)" if field == "max_length" else ""
                raise _config_error(field, f"must be a whole number{hint}")
            converted = value
        else:
            converted = number(value)
            if converted is None:
                raise _config_error(field, "must be a number of seconds")
        try:
            replace(current, **{field: converted})  # QueueConfig checks each value
        except ValueError as exc:
            raise _config_error(field, str(exc)) from None
        changes[field] = converted
    return replace(current, **changes)


@_routing
async def put_queue(request: web.Request, store: RoutingStore, now: float) -> dict[str, Any]:
    """`PUT /api/queues/{skill}`: set queue settings; fields left out keep their current value."""
    skill = _skill(request)
    body = await json_body(request)
    config = _updated_config(await store.queue_config(skill), body)
    await store.configure_queue(config, now)
    log.info("queue configured", skill=skill, action="configure", fields=sorted(body))
    return {"skill": skill, "config": config_json(await store.queue_config(skill))}


@_routing
async def live_stats(request: web.Request, store: RoutingStore, now: float) -> dict[str, Any]:
    """`GET /api/stats/live`: queues and agents right now (one consistent read of Redis)."""
    return (await stats.snapshot(store, now)).as_dict()


@_routing
async def interval_stats(request: web.Request, store: RoutingStore, now: float) -> dict[str, Any]:
    """`GET /api/stats/intervals?since=EPOCH&interval=900&sl=20,30&short_abandon=5`: figures per
    queue and interval (intervals that ended after ``since``, default the last 24 hours). With
    the settings the nodes archive with (`routing.archive`: 15 minutes, the default thresholds),
    closed intervals come from the archive, so history outlives the trimmed event stream
    (``source`` ``archive``); other settings are recounted from the stream (``stream``)."""
    query = request.query
    try:
        since = float(query.get("since", now - 86400))
        interval = float(query.get("interval", stats.INTERVAL_SECONDS))
        short = float(query.get("short_abandon", stats.SHORT_ABANDON_SECONDS))
        thresholds = tuple(
            float(t) for t in query.get("sl", ",".join(map(str, stats.SL_THRESHOLDS))).split(",")
        )
        fold = stats.IntervalFold(
            interval_seconds=interval, short_abandon_seconds=short, sl_thresholds=thresholds
        )
    except ValueError as exc:
        raise ApiError(
            "invalid-request", f"since, interval, sl and short_abandon are numbers: {exc}"
        ) from None
    archived = await archive.report(store, since, fold.params())
    if archived is not None:
        rows = [row.as_dict() for row in archived]
        return {
            "since": since,
            "interval_seconds": interval,
            "source": "archive",
            "intervals": rows,
        }
    # Stream ids start with Redis's clock in milliseconds; nodes' clocks are close to it, and the
    # fold leaves out calls whose entry it did not see, so starting a little early is harmless.
    after = f"{max(0, int((since - 60) * 1000))}-0"
    await stats.fold_events(store, fold, after=after)
    rows = [row.as_dict() for row in fold.intervals() if row.start + interval > since]
    return {"since": since, "interval_seconds": interval, "source": "stream", "intervals": rows}


def add_routing_routes(
    app: web.Application, store: RoutingStore | None, clock: Callable[[], float]
) -> None:
    """Add the agents, calls and queues endpoints to ``app``."""
    app[ROUTING_KEY] = RoutingApi(store, clock)
    agent = "/api/agents/{agent_id}"
    app.router.add_routes(
        [
            web.get("/api/agents", list_agents),
            web.get(agent, get_agent),
            web.post(f"{agent}/login", login),
            web.post(f"{agent}/ready", ready),
            web.post(f"{agent}/not-ready", not_ready),
            web.post(f"{agent}/logout", logout),
            web.post(f"{agent}/accept", accept),
            web.post(f"{agent}/reject", reject),
            web.post(f"{agent}/complete", complete),
            web.put(f"{agent}/skills", set_skills),
            web.get("/api/calls/{call_id}", get_call),
            web.get("/api/queues", list_queues),
            web.get("/api/queues/{skill}", get_queue),
            web.put("/api/queues/{skill}", put_queue),
            web.get("/api/stats/live", live_stats),
            web.get("/api/stats/intervals", interval_stats),
        ]
    )
