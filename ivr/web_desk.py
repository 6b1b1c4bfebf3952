"""The agent desktop's API and the pages: an agent signs in to the queues with the skills of
their account, sees the offered call with its countdown and the screen pop, and works it through
the agents API (`ivr.web_routing`: ready, not-ready, accept, reject, complete); the work on the
call (draft work order, wrap-up code, survey, ticket) is `ivr.web_desk_work`'s.

``GET /api/desk`` answers the agent, the call offered to or connected with them (what routing
holds, with the IVR's context) and the offer's deadline; ``GET /api/desk/stream`` sends the same
as server-sent events each time the agent's state changes, woken by the wallboard hub (one
stream follower per node, not one Redis poll per browser). The pages (``/login``, ``/desk``,
``/wallboard``) are static HTML with small scripts from ``ivr/static/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from typing import Any

import structlog
from aiohttp import web

from ivr.web_api import ApiError, json_body, text_field
from ivr.web_auth import AUTH_KEY, Session, request_session
from ivr.web_desk_work import (
    WORK_KEY,
    DeskWork,
    WorkedCall,
    complete_ticket,
    end_call,
    transfer,
)

# _routing: the store, now, and routing's errors as ApiErrors, as for the agents API.
from ivr.web_routing import ROUTING_KEY, _routing, agent_json, call_json
from ivr.web_wallboard import HUB_KEY, event, open_stream
from routing.model import AgentState
from routing.store import RoutingStore

log = structlog.get_logger(__name__)

PAGES = {"/login": "login.html", "/desk": "desk.html", "/wallboard": "wallboard.html"}
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}


def mask_number(number: str) -> str:
    """A phone number for the logs: the first three and last four digits (138****8000)."""
    if len(number) <= 7:
        return "*" * len(number)
    return number[:3] + "*" * (len(number) - 7) + number[-4:]


def _agent_session(request: web.Request) -> Session:
    session = request_session(request)
    if session is None or not session.agent_id:
        raise ApiError("login-required", "log in as an agent first", status=401)
    return session


def _store(request: web.Request) -> RoutingStore:
    store = request.app[ROUTING_KEY].store
    if store is None:
        raise ApiError("routing-unavailable", "routing is not connected on this node", status=503)
    return store


async def desk_state(
    store: RoutingStore, agent_id: str, now: float, work: DeskWork | None = None
) -> dict[str, Any]:
    """The agent, their call with its screen-pop context, the offer's deadline, and the call
    they work on (``work``: its draft work order, wrap-up code, ticket; kept through wrap-up)
    with the wrap-up codes and ticket types to choose from."""
    agent = await store.agent(agent_id)
    body: dict[str, Any] = {"now": now, "agent": None, "call": None, "offer": None, "work": None}
    if work is not None:
        body["wrap_codes"] = list(work.wrap_codes)
        body["ticket_types"] = list(work.ticket_types)
        body["transfer_queues"] = list(work.transfer_queues)
    if agent is None:
        return body
    body["agent"] = agent_json(agent)
    if work is not None and agent.state is AgentState.WRAP_UP:
        worked = work.worked.get(agent_id)
        body["work"] = worked.as_dict() if worked is not None else None
    if not agent.call_id:
        return body
    call = await store.call(agent.call_id)
    if call is None:
        return body
    body["call"] = call_json(call, None, now)
    if work is not None and agent.state is AgentState.ON_CALL:
        body["work"] = work.seen(agent_id, call).as_dict()
    elif work is not None:  # offered: the draft to read, not yet the agent's call to work
        body["work"] = WorkedCall(call.call_id, call.skill, dict(call.context)).as_dict()
    if agent.state is AgentState.RESERVED:
        timeout = (await store.queue_config(call.skill)).reservation_timeout
        body["offer"] = {
            "call_id": call.call_id,
            "expires_at": agent.since + timeout,
            "timeout_seconds": timeout,
        }
    return body


def _log_pop(agent_id: str, state: Mapping[str, Any]) -> None:
    call = state.get("call")
    if call is not None:
        context = call["context"]
        log.info(
            "screen pop",
            agent_id=agent_id,
            call_id=call["call_id"],
            caller=mask_number(str(context.get("caller", ""))),
            intent=context.get("intent", ""),
        )


@_routing
async def get_desk(request: web.Request, store: RoutingStore, now: float) -> dict[str, Any]:
    """`GET /api/desk`."""
    return await desk_state(store, _agent_session(request).agent_id, now, request.app[WORK_KEY])


@_routing
async def signin(request: web.Request, store: RoutingStore, now: float) -> dict[str, Any]:
    """`POST /api/desk/signin` ``{"contact"}``: log in to routing with the account's skills and
    the agent's phone (a SIP URI or extension), not ready until they say so."""
    session = _agent_session(request)
    body = await json_body(request, allowed=frozenset({"contact"}))
    contact = text_field(body, "contact", default="")
    user = request.app[AUTH_KEY].users.get(session.username)
    if user is None or not user.skills:
        raise ApiError("no-skills", "this account has no skills; ask a supervisor", status=409)
    await store.login(
        session.agent_id, skills=user.skills, now=now, name=user.name, contact=contact
    )
    log.info("agent signed in", agent_id=session.agent_id, contact=contact)
    return await desk_state(store, session.agent_id, now, request.app[WORK_KEY])


async def desk_stream(request: web.Request) -> web.StreamResponse:
    """`GET /api/desk/stream`: the desk state as server-sent events, whenever the agent's state,
    reason or call changes."""
    session = _agent_session(request)
    store = _store(request)
    hub = request.app[HUB_KEY]
    clock = request.app[ROUTING_KEY].clock
    hub.start()
    response = await open_stream(request)
    last: tuple[Any, ...] | None = None
    try:
        async for _version in hub.updates():
            if hub.snapshot is None:
                continue
            status = hub.agents.get(session.agent_id)
            key = ((status.state, status.reason, status.since, status.call_id) if status else None,)
            if key == last:
                await response.write(b": heartbeat\n\n")
                continue
            last = key
            state = await desk_state(store, session.agent_id, clock(), request.app[WORK_KEY])
            if state["offer"] is not None:
                _log_pop(session.agent_id, state)
            await response.write(event(state))
    except (ConnectionResetError, ConnectionError):
        pass
    return response


async def page(request: web.Request) -> web.Response:
    """The desk, wallboard and login pages."""
    name = PAGES[request.path]
    text = resources.files("ivr").joinpath("static", name).read_text(encoding="utf-8")
    return web.Response(
        text=text,
        content_type="text/html",
        charset="utf-8",
        headers={"Content-Security-Policy": "default-src 'self'", "X-Frame-Options": "DENY"},
    )


async def static(request: web.Request) -> web.Response:
    """`/static/{name}`: the pages' scripts and styles (a fixed set of files, no paths)."""
    name = request.match_info["name"]
    kind = next((t for ext, t in STATIC_TYPES.items() if name.endswith(ext)), None)
    file = resources.files("ivr").joinpath("static", name)
    if kind is None or "/" in name or name.startswith(".") or not file.is_file():
        raise web.HTTPNotFound()
    return web.Response(text=file.read_text(encoding="utf-8"), content_type=kind, charset="utf-8")


def add_desk_routes(app: web.Application, work: DeskWork) -> None:
    """The desk API and the pages (after `add_routing_routes` and the wallboard)."""
    app[WORK_KEY] = work
    app.router.add_routes(
        [
            web.get("/api/desk", get_desk),
            web.post("/api/desk/signin", signin),
            web.post("/api/desk/end", _routing(end_call)),
            web.post("/api/desk/ticket", _routing(complete_ticket)),
            web.post("/api/desk/transfer", _routing(transfer)),
            web.get("/api/desk/stream", desk_stream),
            *(web.get(path, page) for path in PAGES),
            web.get("/static/{name}", static),
        ]
    )
