"""The routing event stream (like Asterisk's queue_log): event types, parsing, and replay.

Every change of a call's or an agent's state is one entry in the tenant's Redis Stream, written by
the same Lua step that makes the change. An entry that changes a call carries ``call`` and
``cstate`` (``waiting``, ``offered``, ``connected``, ``retry``, ``ended``); one that changes an
agent carries ``agent``, ``astate`` and ``reason`` (the not-ready reason, empty in other
states). Where no agent changes, ``reason`` says why a call ended (``max_wait``, ``expired``,
``queue_full``, ``node_lost``); an ``ABANDON`` of an offered call by a lost node carries
``reason`` ``node_lost`` next to ``astate`` ``available``, and one of a caller who hung up while
the accepting agent's phone rang carries ``abandon_while_ringing``, which is why only a
not-ready ``astate`` takes the reason. An entry about one agent of a ring-all call's ring
(OFFER, REJECT, RONA, RELEASE, RINGCANCEL) carries ``ringall`` ``1`` (a CONNECT's ``ring`` is
the seconds the accepted offer rang): such a call stays ``offered`` while any agent still rings.

`Replay` folds a stream back into states, which is how tests prove nothing changes without an
event, and how statistics can be recomputed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from routing.model import AgentState, CallState


class EventType(StrEnum):
    """What happened."""

    ENTERQUEUE = "ENTERQUEUE"
    """A caller joined a queue (fields: skill, min, req, prio, node, seq, score). A returning
    caller routed to the agent they talked to last also has pref (that agent) and hold (until
    when the call is held for them; empty when it was offered to them at once)."""
    FULL = "FULL"
    """A caller was refused: the queue was at its max length."""
    OFFER = "OFFER"
    """A waiting call was reserved for an agent (wait: seconds since it entered; ring: 1 when
    the call rings this agent among others, a ring-all queue)."""
    CONNECT = "CONNECT"
    """The agent accepted the offer (wait: since entering, ring: since the offer)."""
    RONA = "RONA"
    """Reservation timed out ("ring no answer"): the call went back in place, the agent is not
    ready (missed)."""
    REJECT = "REJECT"
    """The agent rejected the offer: the call went back in place, the agent is not ready."""
    RELEASE = "RELEASE"
    """The agent gave up an offer by logging out or going not ready; the call went back."""
    RINGCANCEL = "RINGCANCEL"
    """A ring-all call stopped ringing this agent because another agent accepted it or the
    caller left; the agent is available again, not penalised."""
    ABANDON = "ABANDON"
    """The caller hung up while waiting or while offered (reason ``node_lost``: the caller's
    IVR node was lost)."""
    COMPLETE = "COMPLETE"
    """The call ended after talking (by: agent, caller, or ``node_lost``); the agent goes to
    wrap-up. One the agent ended from the desk carries the wrap-up ``code`` they chose."""
    TRANSFER = "TRANSFER"
    """The agent sent the caller to another queue (skill: the new one, from: the old one,
    talk; min, req, node, seq, score: its new place and needs): the agent goes to wrap-up as
    after a COMPLETE, the caller waits again, keeping its context."""
    WRAPUP = "WRAPUP"
    """The agent in wrap-up chose the wrap-up ``code`` of a call whose COMPLETE carried none
    (the caller hung up first); no state changes."""
    EXITWITHTIMEOUT = "EXITWITHTIMEOUT"
    """Routing gave up on a caller after the queue's max wait."""
    EXITWITHKEY = "EXITWITHKEY"
    """The caller left the line for a callback; the place is parked for it."""
    CALLBACK = "CALLBACK"
    """A callback joined a queue (kept: 1 when it took the place its caller left)."""
    CALLBACK_EXPIRED = "CALLBACK_EXPIRED"
    """A callback waited past the callback window."""
    CALLBACK_NOANSWER = "CALLBACK_NOANSWER"
    """The customer of a callback an agent was dialing did not answer (attempts: how many so
    far; cause: what the dialer saw): the callback went back to its place, or (cstate
    ``retry``, retry_at: until when) out of line for its queue's ``callback_retry_seconds``;
    the agent wraps up (no call handled)."""
    CALLBACK_RETRY = "CALLBACK_RETRY"
    """A callback's retry delay is over: it waits at its place again (attempts: made so far)."""
    CALLBACK_FAILED = "CALLBACK_FAILED"
    """A callback's last attempt was not answered (the queue's ``callback_attempts``), or its
    number cannot be dialed: it ended; the agent wraps up (no call handled)."""
    UNREACHABLE = "UNREACHABLE"
    """The agent accepted, but their phone could not be reached (busy, unreachable, no answer;
    cause: what the dialer saw): the call went back to its place, the agent is not ready
    (missed), as after a RONA."""
    ESCALATE = "ESCALATE"
    """A call waited its queue's ``escalate_after``: its minimum level dropped (fields: min,
    from_min) and its extra requirements were dropped; it kept its place."""
    OVERFLOW = "OVERFLOW"
    """A call waited its queue's ``overflow_after`` and moved to the overflow queue (fields:
    from, to, and its new place: score, seq), keeping its enqueue time and priority."""
    OVERFLOW_FULL = "OVERFLOW_FULL"
    """An overflow was refused because the overflow queue was at its max length: the call stays
    where it waits (fields: from, to)."""
    AGENTLOGIN = "AGENTLOGIN"
    AGENTLOGOFF = "AGENTLOGOFF"
    READY = "READY"
    """The agent became available (cause: ``ready`` when asked, ``wrap_done`` when ending
    wrap-up early, ``wrap_end`` when the wrap-up timer ran out)."""
    NOTREADY = "NOTREADY"
    SKILLS = "SKILLS"
    """The agent's skills changed."""
    CONFIG = "CONFIG"
    """A queue's settings changed."""
    PREF_EXPIRED = "PREF_EXPIRED"
    """A call held for the caller's last agent (pref) was not offered to them in time: it
    competes with everyone from its place in line now."""
    NODELOST = "NODELOST"
    """An IVR node was reclaimed (node; cause: ``timeout``, ``left`` or ``restart``; to: the
    node its callbacks moved to, empty when they stayed; abandoned, completed, rehomed: how
    many of its calls ended each way and how many callbacks moved). Its calls' own events come
    just before it."""


@dataclass(frozen=True)
class RoutingEvent:
    """One entry of the event stream."""

    event_id: str
    """The stream entry id (orders events; time-based, assigned by Redis)."""
    type: EventType
    """What happened."""
    t: float
    """When, on the clock of the node that caused it."""
    fields: Mapping[str, str] = field(default_factory=dict)
    """Everything else: call, agent, skill, cstate, astate, reason, wait, talk..."""

    @property
    def call_id(self) -> str:
        """The call concerned, or empty."""
        return self.fields.get("call", "")

    @property
    def agent_id(self) -> str:
        """The agent concerned, or empty."""
        return self.fields.get("agent", "")

    @classmethod
    def parse(cls, event_id: str, raw: Mapping[str, str]) -> RoutingEvent:
        """Build from a decoded stream entry."""
        rest = {k: v for k, v in raw.items() if k not in ("type", "t")}
        return cls(event_id, EventType(raw["type"]), float(raw["t"]), rest)


ENDED = "ended"
"""The ``cstate`` of an event after which the call is no longer in routing."""


@dataclass
class Replay:
    """Agent and call states rebuilt from the event stream alone."""

    agents: dict[str, tuple[AgentState, str]] = field(default_factory=dict)
    """Agent id -> (state, not-ready reason) for every agent that ever logged in."""
    calls: dict[str, CallState] = field(default_factory=dict)
    """Call id -> state for every call still in routing."""
    agent_of: dict[str, str] = field(default_factory=dict)
    """Call id -> the agent it is offered to (not ring-all) or connected with."""
    offered_to: dict[str, set[str]] = field(default_factory=dict)
    """Call id -> the agents a ring-all call rings, while it rings."""
    node_of: dict[str, str] = field(default_factory=dict)
    """Call id -> the IVR node holding it (callbacks move when their node is lost)."""
    holds: dict[str, str] = field(default_factory=dict)
    """Call id -> the agent it is held for (last-agent routing), while it is."""
    attempts: dict[str, int] = field(default_factory=dict)
    """Callback id -> the dial attempts its customer did not answer, once there was one."""

    def apply(self, event: RoutingEvent) -> None:
        """Fold one event in."""
        f = event.fields
        ring = f.get("ringall") == "1"
        if "astate" in f:
            astate = AgentState(f["astate"])
            reason = f.get("reason", "") if astate is AgentState.NOT_READY else ""
            self.agents[f["agent"]] = (astate, reason)
        if event.type in (EventType.ENTERQUEUE, EventType.CALLBACK):
            self.node_of[f["call"]] = f["node"]
            if f.get("hold"):
                self.holds[f["call"]] = f["pref"]
        elif event.type in (EventType.OFFER, EventType.PREF_EXPIRED):
            self.holds.pop(f["call"], None)  # a hold ends at the call's first offer
        elif event.type is EventType.CALLBACK_NOANSWER:
            self.attempts[f["call"]] = int(f["attempts"])
        elif event.type is EventType.NODELOST and f["to"]:
            lost, heir = f["node"], f["to"]
            for call, node in self.node_of.items():
                if node == lost:
                    self.node_of[call] = heir
        if "cstate" in f:
            call = f["call"]
            if f["cstate"] == ENDED:
                self.calls.pop(call, None)
                self.agent_of.pop(call, None)
                self.offered_to.pop(call, None)
                self.node_of.pop(call, None)
                self.holds.pop(call, None)
                self.attempts.pop(call, None)
            else:
                state = CallState(f["cstate"])
                self.calls[call] = state
                if state in (CallState.WAITING, CallState.RETRY):
                    self.agent_of.pop(call, None)
                    self.offered_to.pop(call, None)
                elif f.get("agent") and not ring:
                    self.agent_of[call] = f["agent"]
                    self.offered_to.pop(call, None)  # connected: the ring is over
        if ring:
            call, agent = f["call"], f["agent"]
            if event.type is EventType.OFFER:
                self.offered_to.setdefault(call, set()).add(agent)
            elif call in self.offered_to:
                self.offered_to[call].discard(agent)
                if not self.offered_to[call]:
                    del self.offered_to[call]

    def apply_all(self, events: Iterable[RoutingEvent]) -> Replay:
        """Fold many events in, in order; returns self."""
        for event in events:
            self.apply(event)
        return self
