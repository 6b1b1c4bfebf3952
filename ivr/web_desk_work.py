"""The desk's work on a call: the draft work order, ending the call with a wrap-up code (the
caller to the survey, or hung up), transferring it to another queue, and completing the work
order through the CRM bridge.

An agent acts only on their own call: the one routing has them connected with, or, once it
ended (wrap-up), the last call this node saw them on (kept in memory per agent, as sessions are:
decision 0015). Anything else is 403 ``not-your-call``. A work order goes through this node's
outbox (`CrmService.desk_ticket`): the CRM being down loses nothing.

Routes (agents only; state changes carry the session's CSRF token):

- ``POST /api/desk/end`` ``{"call_id", "code", "survey"}``: the agent ends their leg; the
  COMPLETE event carries ``code``; with ``survey`` (default true) the caller goes on to the
  satisfaction survey, else is hung up. Answers ``{"call_id", "code", "survey"}``.
- ``POST /api/desk/ticket`` ``{"call_id", "code", "ticket": {...}}``: creates the call's work
  order (one per call; again answers the first) with the wrap-up code; for a call the caller
  ended (no code on its COMPLETE), routing records the code (event WRAPUP). Answers
  ``ticket_id`` and the ticket.
- ``POST /api/desk/transfer`` ``{"call_id", "skill"}``: the caller (still on the line) goes back
  in line in another queue with its context, the agent to wrap-up (event TRANSFER). Answers
  ``{"call_id", "skill", "state"}`` (``waiting`` or ``offered``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from ivr.crm_service import CrmService
from ivr.desk_ticket import DeskTicket, DraftError, draft
from ivr.logs import mask_phone
from ivr.services import ServiceError
from ivr.web_api import ApiError, bool_field, invalid, json_body, text_field
from ivr.web_auth import Session, request_session
from ivr.web_crm import ticket_json
from routing.model import AgentState, QueuedCall
from routing.store import RoutingStore

log = structlog.get_logger(__name__)


@dataclass
class WorkedCall:
    """The call an agent works on (or last worked on), as this node saw it."""

    call_id: str
    """Routing's id of the call."""
    skill: str
    """The queue it came through."""
    context: Mapping[str, Any]
    """What the IVR learned (the screen pop)."""
    code: str = ""
    """The wrap-up code the agent ended it with."""
    ticket_id: str = ""
    """The work order completed for it, once it is."""
    transferred_to: str = ""
    """The queue the agent sent the caller to, if they did."""

    def as_dict(self) -> dict[str, Any]:
        """What the desk shows of it."""
        return {
            "call_id": self.call_id,
            "skill": self.skill,
            "code": self.code,
            "ticket_id": self.ticket_id,
            "transferred_to": self.transferred_to,
            "draft": draft(self.context, self.skill).as_dict(),
        }


@dataclass
class DeskWork:
    """The desk's settings and the calls agents work on, for one web app."""

    tickets: CrmService | None
    """Where work orders go (None: no CRM on this node, 503 ``crm-unavailable``)."""
    wrap_codes: tuple[str, ...]
    """The codes an agent may choose (`Settings.desk_wrap_codes`)."""
    transfer_queues: tuple[str, ...] = ()
    """The queues an agent may send a caller to (`Settings.desk_transfer_queues`)."""
    worked: dict[str, WorkedCall] = field(default_factory=dict)
    """Agent id -> their current or last call."""

    @property
    def ticket_types(self) -> tuple[str, ...]:
        """The work-order types an agent may choose."""
        return self.tickets.ticket_types if self.tickets is not None else ()

    def seen(self, agent_id: str, call: QueuedCall) -> WorkedCall:
        """The agent has ``call`` (offered or connected): remember it as theirs."""
        current = self.worked.get(agent_id)
        if current is None or current.call_id != call.call_id:
            current = WorkedCall(call.call_id, call.skill, dict(call.context))
            self.worked[agent_id] = current
        return current


WORK_KEY = web.AppKey("desk_work", DeskWork)


def _agent(request: web.Request) -> Session:
    session = request_session(request)
    if session is None or not session.agent_id:
        raise ApiError("login-required", "log in as an agent first", status=401)
    return session


def _code(body: Mapping[str, Any], work: DeskWork) -> str:
    code = text_field(body, "code")
    if code not in work.wrap_codes:
        raise invalid("code", f"must be one of {', '.join(work.wrap_codes)}")
    return code


def _not_yours(call_id: str) -> ApiError:
    return ApiError("not-your-call", f"call {call_id} is not yours", status=403)


async def _connected(store: RoutingStore, agent_id: str, call_id: str) -> QueuedCall | None:
    """The call, if routing has the agent connected with it now."""
    agent = await store.agent(agent_id)
    if agent is None or agent.call_id != call_id or agent.state is not AgentState.ON_CALL:
        return None
    return await store.call(call_id)


Handler = Callable[[web.Request, RoutingStore, float], Awaitable[dict[str, Any]]]


def _call_bound(handler: Handler) -> Handler:
    """The handler's log lines carry the call id it binds once the body names the call (the
    request's task may serve the next request of its connection: unbound at the end)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request, store: RoutingStore, now: float) -> dict[str, Any]:
        try:
            return await handler(request, store, now)
        finally:
            structlog.contextvars.unbind_contextvars("call_id")

    return wrapped


@_call_bound
async def end_call(request: web.Request, store: RoutingStore, now: float) -> dict[str, Any]:
    """`POST /api/desk/end` ``{"call_id", "code", "survey"}``."""
    session = _agent(request)
    work = request.app[WORK_KEY]
    body = await json_body(request, allowed=frozenset({"call_id", "code", "survey"}))
    call_id = text_field(body, "call_id")
    structlog.contextvars.bind_contextvars(call_id=call_id)
    code = _code(body, work)
    survey = bool_field(body, "survey", default=True)
    call = await _connected(store, session.agent_id, call_id)
    if call is None:
        raise _not_yours(call_id)
    worked = work.seen(session.agent_id, call)
    await store.complete(session.agent_id, now, code=code, after="" if survey else "end")
    worked.code = code
    log.info(
        "agent ended call",
        agent_id=session.agent_id,
        wrap_code=code,
        survey=survey,
    )
    return {"call_id": call_id, "code": code, "survey": survey}


@_call_bound
async def transfer(request: web.Request, store: RoutingStore, now: float) -> dict[str, Any]:
    """`POST /api/desk/transfer` ``{"call_id", "skill"}``."""
    session = _agent(request)
    work = request.app[WORK_KEY]
    body = await json_body(request, allowed=frozenset({"call_id", "skill"}))
    call_id = text_field(body, "call_id")
    structlog.contextvars.bind_contextvars(call_id=call_id)
    skill = text_field(body, "skill")
    if skill not in work.transfer_queues:
        raise invalid("skill", f"must be one of {', '.join(work.transfer_queues)}")
    call = await _connected(store, session.agent_id, call_id)
    if call is None:
        raise _not_yours(call_id)
    if skill == call.skill:
        raise invalid("skill", f"the caller is in {skill} already")
    worked = work.seen(session.agent_id, call)
    state = await store.transfer(session.agent_id, call_id, skill, now)
    worked.transferred_to = skill
    log.info(
        "agent transferred call",
        agent_id=session.agent_id,
        skill=skill,
        from_skill=call.skill,
        routing_state=state,
    )
    return {"call_id": call_id, "skill": skill, "state": state}


@_call_bound
async def complete_ticket(request: web.Request, store: RoutingStore, now: float) -> dict[str, Any]:
    """`POST /api/desk/ticket` ``{"call_id", "code", "ticket": {...}}``."""
    session = _agent(request)
    work = request.app[WORK_KEY]
    body = await json_body(request, allowed=frozenset({"call_id", "code", "ticket"}))
    call_id = text_field(body, "call_id")
    structlog.contextvars.bind_contextvars(call_id=call_id)
    code = _code(body, work)
    edited = body.get("ticket")
    if not isinstance(edited, dict):
        raise invalid("ticket", "required: the work order's fields")
    worked = work.worked.get(session.agent_id)
    call = await _connected(store, session.agent_id, call_id)
    if call is not None:
        worked = work.seen(session.agent_id, call)
    elif worked is None or worked.call_id != call_id:
        raise _not_yours(call_id)
    if work.tickets is None:
        raise ApiError("crm-unavailable", "no CRM is connected on this node", status=503)
    try:
        desk = DeskTicket.parse(edited, work.ticket_types)
    except DraftError as exc:
        raise invalid(f"ticket.{exc.field}", exc.problem) from None
    try:
        ticket = await work.tickets.desk_ticket(
            desk, call_id=call_id, agent_id=session.agent_id, code=code, skill=worked.skill
        )
    except ServiceError as exc:
        raise invalid("ticket", str(exc)) from None
    worked.ticket_id = ticket.ticket_id
    if call is None and not worked.code and not worked.transferred_to:
        # The call ended without the desk (the caller hung up): routing hears the code now.
        agent = await store.agent(session.agent_id)
        if agent is not None and agent.state is AgentState.WRAP_UP:
            await store.wrap_up_code(session.agent_id, call_id, code, now)
            worked.code = code
    log.info(
        "desk ticket completed",
        agent_id=session.agent_id,
        ticket_id=ticket.ticket_id,
        caller=mask_phone(desk.caller),
        wrap_code=code,
    )
    return {"ticket_id": ticket.ticket_id, "ticket": ticket_json(ticket)}
