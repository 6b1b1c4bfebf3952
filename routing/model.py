"""The routing domain: agents and their states, skills, queue settings, queued calls, offers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from routing.keys import MAX_LEVEL, check_name

_EMPTY: Mapping[str, str] = MappingProxyType({})


class AgentState(StrEnum):
    """Where an agent is; ``not_ready`` carries a reason (``Agent.reason``)."""

    LOGGED_OUT = "logged_out"
    AVAILABLE = "available"
    RESERVED = "reserved"
    """A call is offered to the agent and waits for accept or reject (or the timeout)."""
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    NOT_READY = "not_ready"


class CallState(StrEnum):
    """Where a queued call (or callback) is."""

    WAITING = "waiting"
    OFFERED = "offered"
    CONNECTED = "connected"
    RETRY = "retry"
    """A callback whose customer did not answer, out of line until its queue's
    ``callback_retry_seconds`` have passed; then it waits at its place again."""


class ItemKind(StrEnum):
    """What waits in a queue: a caller on the line, or a callback to be dialed."""

    CALL = "call"
    CALLBACK = "callback"


class Strategy(StrEnum):
    """How a queue chooses among the available agents eligible for a call."""

    LONGEST_IDLE = "longest_idle"
    """The agent available the longest (the default)."""
    ROUND_ROBIN = "round_robin"
    """The agent offered a call least recently."""
    FEWEST_CALLS = "fewest_calls"
    """The agent who handled the fewest calls since logging in (then longest idle)."""
    LEAST_TALK_TIME = "least_talk_time"
    """The agent with the least talk time since logging in, in whole seconds (then longest idle)."""
    SKILL_LEVEL_FIRST = "skill_level_first"
    """The agent with the highest level in the queue's skill (then longest idle)."""
    RING_ALL = "ring_all"
    """Every eligible available agent at once; the first to accept takes the call. Each agent
    rung has its own reservation timeout, and an agent who becomes available while the call
    still rings others joins the ring."""


NOT_READY_MISSED = "missed"
"""The reason an agent is made not ready when an offer times out (RONA)."""
NOT_READY_REJECTED = "rejected"
"""The reason an agent is made not ready after rejecting an offer."""
NOT_READY_LOGIN = "login"
"""The reason of an agent who logged in without going ready."""


@dataclass(frozen=True)
class Skill:
    """A skill an agent has, at a level."""

    name: str
    """The queue / skill name (``fault_repair``, ``billing``...)."""
    level: int
    """1 (novice) .. 10 (expert)."""

    def __post_init__(self) -> None:
        check_name("skill", self.name)
        check_level(self.level)


def check_level(level: int) -> int:
    """A skill level must be 1..MAX_LEVEL."""
    if not 1 <= level <= MAX_LEVEL:
        raise ValueError(f"skill level {level} is not in 1..{MAX_LEVEL}")
    return level


@dataclass(frozen=True)
class QueueConfig:
    """Settings of one skill queue; a skill without a stored config uses these defaults."""

    skill: str
    """The queue / skill this configures."""
    strategy: Strategy = Strategy.LONGEST_IDLE
    """How the agent is chosen among the eligible available ones."""
    reservation_timeout: float = 15.0
    """Seconds an offered call waits for the agent's accept before it goes back in line."""
    wrap_up_seconds: float = 30.0
    """Wrap-up after each call before the agent is available again (0: none)."""
    max_wait: float = 0.0
    """Seconds a caller may wait before routing gives up with ``max_wait`` (0: no limit). The
    setting of the queue the call entered applies, counted from its enqueue, also after an
    escalation or overflow."""
    max_length: int = 0
    """Calls waiting at most; an enqueue beyond it is refused with ``queue_full`` (0: no limit)."""
    aging_seconds_per_priority: float = 600.0
    """How many seconds of waiting one priority step is worth. A call's place in line is its
    enqueue time minus ``priority * aging``: a higher priority goes first, yet a low-priority
    call that has waited long enough overtakes newcomers, so it is never starved."""
    callback_window: float = 7200.0
    """Seconds a callback stays in line before it expires."""
    callback_attempts: int = 3
    """Dial attempts of a callback: one its customer does not answer puts it back in its place,
    until this many were made; then it ends as failed (``CALLBACK_FAILED``)."""
    callback_retry_seconds: float = 120.0
    """After an unanswered attempt, seconds a callback stays out of line before it waits at
    its place again (0: back at once; its expiry keeps running meanwhile)."""
    default_handle_seconds: float = 180.0
    """Assumed handle time for estimated waits until the skill has recent calls to average."""
    escalate_after: float = 0.0
    """Seconds of waiting (from the enqueue) after which a call's minimum level in this queue
    drops to ``escalate_min_level`` and its extra skill requirements are dropped; it keeps its
    place (0: never)."""
    escalate_min_level: int = 1
    """The minimum level an escalated call asks for (a call already asking less keeps its own)."""
    overflow_after: float = 0.0
    """Seconds of waiting (from the enqueue) after which a call moves to ``overflow_queue``,
    keeping its enqueue time and priority; there it asks for level 1 and nothing else. A call
    overflows once: the overflow queue's own overflow does not move it again (0: never)."""
    overflow_queue: str = ""
    """Where calls overflow to; set together with ``overflow_after``."""
    last_agent_hours: float = 24.0
    """Last-agent routing: for how many hours after a caller talked to an agent of this queue
    that caller is routed back to that agent; calls entering this queue look for it too
    (0: off for this queue)."""
    last_agent_seconds: float = 20.0
    """How long a returning caller whose last agent is busy is held for that agent: offered to
    them first when they become available; afterwards the call competes from its own place in
    line, which the hold did not cost it (0: no hold, only an offer when the agent is free)."""

    def __post_init__(self) -> None:
        check_name("skill", self.skill)
        object.__setattr__(self, "strategy", Strategy(self.strategy))
        for name in (
            "reservation_timeout",
            "wrap_up_seconds",
            "max_wait",
            "callback_window",
            "callback_retry_seconds",
            "last_agent_hours",
            "last_agent_seconds",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        self._check_escalation_and_overflow()
        if self.reservation_timeout <= 0:
            raise ValueError("reservation_timeout must be positive")
        if self.max_length < 0:
            raise ValueError("max_length must not be negative")
        if self.callback_attempts < 1:
            raise ValueError("callback_attempts must be at least 1")
        if self.aging_seconds_per_priority <= 0 or self.default_handle_seconds <= 0:
            raise ValueError("aging and default handle time must be positive")

    def _check_escalation_and_overflow(self) -> None:
        if self.escalate_after < 0 or self.overflow_after < 0:
            raise ValueError("escalate_after and overflow_after must not be negative")
        check_level(self.escalate_min_level)
        if (self.overflow_after > 0) != (self.overflow_queue != ""):
            raise ValueError("overflow_after and overflow_queue are set together or not at all")
        if self.overflow_queue:
            check_name("skill", self.overflow_queue)
            if self.overflow_queue == self.skill:
                raise ValueError("a queue cannot overflow to itself")

    def as_fields(self) -> dict[str, str]:
        """The stored form (all fields but the skill, as strings)."""
        return {f.name: str(getattr(self, f.name)) for f in fields(self) if f.name != "skill"}

    @classmethod
    def from_fields(cls, skill: str, stored: Mapping[str, str]) -> QueueConfig:
        """Read back the stored form; unknown or missing fields take the defaults."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "skill" or f.name not in stored:
                continue
            raw = stored[f.name]
            if f.name == "strategy":
                values[f.name] = Strategy(raw)
            elif f.name == "overflow_queue":
                values[f.name] = raw
            elif f.name in ("max_length", "escalate_min_level", "callback_attempts"):
                values[f.name] = int(float(raw))
            else:
                values[f.name] = float(raw)
        return replace(cls(skill), **values)


@dataclass(frozen=True)
class Agent:
    """An agent as routing sees it."""

    agent_id: str
    """Stable id (login name / employee number)."""
    name: str
    """Display name for the wallboard."""
    contact: str
    """Where the agent's phone is reached (a SIP URI), for the bridge."""
    skills: Mapping[str, int]
    """Skill -> level (1..10)."""
    state: AgentState
    """Current state."""
    reason: str
    """Why the agent is not ready (``missed``, ``rejected``, ``lunch``...); empty otherwise."""
    since: float
    """When the agent entered the current state."""
    calls: int
    """Calls handled since logging in."""
    talk_seconds: float
    """Talk time since logging in."""
    call_id: str = ""
    """The call offered to or connected with the agent; empty otherwise."""
    wrap_until: float | None = None
    """When wrap-up ends by itself, while in wrap-up."""


@dataclass(frozen=True)
class NewCall:
    """A call (or callback) to put in line."""

    call_id: str
    """Unique while in routing: the IVR call id, or ``cb:<call id>`` for a callback."""
    skills: Mapping[str, int]
    """Required skills -> minimum level. The first one names the queue the call waits in."""
    priority: int = 0
    """Higher is served first (a hazard before a consultation)."""
    node_id: str = ""
    """The IVR node holding the caller (messages for the call go to its inbox)."""
    request_id: int | None = None
    """The dialog's Enqueue request id, echoed in the events fed back to the call."""
    context: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """What the IVR learned, for the agent's screen pop."""
    kind: ItemKind = ItemKind.CALL
    """A caller on the line, or a callback to dial."""
    number: str = ""
    """For a callback: the number to dial."""
    caller: str = ""
    """The caller's number (ANI), for last-agent routing; empty when unknown."""

    def __post_init__(self) -> None:
        if not self.call_id or "\n" in self.call_id:
            raise ValueError("a call id must be non-empty and one line")
        if not self.skills:
            raise ValueError("a call needs at least one required skill")
        for skill, level in self.skills.items():
            check_name("skill", skill)
            check_level(level)
        if self.node_id:
            check_name("node", self.node_id)

    @property
    def skill(self) -> str:
        """The queue the call waits in (its first required skill)."""
        return next(iter(self.skills))


@dataclass(frozen=True)
class QueuedCall:
    """A call or callback that routing holds."""

    call_id: str
    """Its id in routing."""
    kind: ItemKind
    """A caller on the line or a callback."""
    skills: Mapping[str, int]
    """Required skills -> minimum level; the first is the queue."""
    priority: int
    """Higher is served first."""
    enqueued_at: float
    """When it entered the line (for a callback that kept its place: the original caller's)."""
    node_id: str
    """The IVR node holding the caller."""
    request_id: int | None
    """The dialog's Enqueue request id."""
    context: Mapping[str, str]
    """Screen-pop context."""
    state: CallState
    """Waiting, offered or connected."""
    agent_id: str
    """The agent offered or connected; empty while waiting, and while a ring-all call rings
    (see ``offered_to``)."""
    number: str = ""
    """For a callback: the number to dial."""
    entered_queue: str = ""
    """The queue the call entered; differs from `skill` once it overflowed."""
    escalated: bool = False
    """Its requirements were relaxed by the queue's escalation or by an overflow."""
    offered_to: tuple[str, ...] = ()
    """A ring-all call being offered: the agents it rings, sorted (``agent_id`` stays empty
    until one of them accepts). Empty for every other call."""
    caller: str = ""
    """The caller's number, when known."""
    preferred_agent: str = ""
    """While the call is held for the caller's last agent: that agent; empty otherwise."""
    held_until: float | None = None
    """When that hold ends (the call then competes with everyone from its place in line)."""
    attempts: int = 0
    """For a callback: the dial attempts its customer did not answer so far."""
    retry_at: float | None = None
    """For a callback in state ``retry``: when it waits at its place again."""

    @property
    def skill(self) -> str:
        """The queue the call waits in."""
        return next(iter(self.skills))


@dataclass(frozen=True)
class Offer:
    """A reservation: the call is offered to the agent until it is accepted or times out."""

    call_id: str
    """The offered call."""
    agent_id: str
    """The reserved agent."""


@dataclass(frozen=True)
class Position:
    """A waiting call's place in line."""

    position: int
    """1 = next to be served; 0 = no longer waiting (offered, connected or gone)."""
    wait_seconds: int | None
    """Estimated wait, or None when no agent with the skill is logged in."""


@dataclass(frozen=True)
class EnqueueResult:
    """What happened to a call put in line."""

    accepted: bool
    """False when the queue was full (``max_length``)."""
    position: Position
    """Its place at once (position 0 when it was offered straight away)."""
    offers: tuple[Offer, ...] = ()
    """Reservations the enqueue made, all for this call: at most one, or one per agent rung in
    a ring-all queue."""
    kept_place: bool = False
    """For a callback: it took the place its caller left."""
    preferred_agent: str = ""
    """The caller's last agent when last-agent routing applied: the call was offered to them at
    once, or is held for them."""


@dataclass(frozen=True)
class NodeMessage:
    """Something the IVR node holding a caller must tell the call."""

    kind: str
    """``connected`` (agent accepted), ``disconnected`` (agent finished), ``exited`` (gave up),
    ``transferred`` (the agent sent the caller to another queue, ``reason``: its skill)."""
    call_id: str
    """The call."""
    request_id: int | None
    """The dialog's Enqueue request id."""
    agent_id: str = ""
    """For ``connected``: who took the call."""
    contact: str = ""
    """For ``connected``: the agent phone's address."""
    reason: str = ""
    """For ``exited``: why (``max_wait``); for ``disconnected``: what the caller's node does
    next (empty: the flow's way, e.g. the survey; ``end``: hang up); for ``transferred``: the
    queue (skill) the caller waits in now."""
