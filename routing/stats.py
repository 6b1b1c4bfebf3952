"""Statistics for supervisors: interval figures folded from the event stream, and the live state
of queues and agents.

**Interval statistics** (`IntervalFold`) are a pure fold over `RoutingEvent`s, so any period can
be recomputed from the stream at any time. Figures are kept per queue (skill) and for all queues
(``skill`` None), per interval of ``interval_seconds`` (15 minutes by default) aligned to the
epoch (so to the hour and to the quarter hour in UTC+8 too). The definitions:

- **Attribution**: a caller's figures (offered, answered, abandoned, waits, its handle time) all
  count in the interval in which it *entered the queue*, whenever its wait ended: the common
  reporting practice, and it keeps each interval's figures about one set of callers (answered +
  abandoned + ... never exceeds offered). An interval's figures therefore keep changing until its
  last caller has left. A callback counts in the interval it was requested. What is not a
  caller's outcome counts when it happens: queue-full refusals, RONAs, rejects, agent phones
  that could not be reached after an accept, callback attempts nobody answered.
- **offered**: callers who entered a queue (ENTERQUEUE of kind call), and callers an agent
  transferred to another queue (TRANSFER: offered again there, the first talk handled like a
  COMPLETE). Refused callers (queue full) never entered: they are `IntervalStats.refused`, not
  offered. Callbacks are counted
  apart (``callbacks_*``), never as offered, answered or abandoned.
- **answered**: callers an agent accepted (CONNECT); the wait is from entering to the accept.
  An accept whose agent phone then could not be reached (UNREACHABLE) is taken back: the caller
  went back in line, and is answered (or not) later. So is a callback's accept when its
  customer does not answer (CALLBACK_NOANSWER, CALLBACK_FAILED).
- **abandoned**: callers who hung up while waiting, while offered to an agent, or after an
  agent accepted but while the agent's phone still rang (``abandoned_ringing``, taken back from
  answered), after more than ``short_abandon_seconds``; those who hung up within it
  (wait <= it) are **short abandons**, kept out of abandoned and out of every rate.
- **service level** at a threshold T: callers answered with wait <= T, divided by callers whose
  wait ended in an answer, an abandon (not short) or a timeout (routing gave up at the queue's max
  wait). An abandon counts against the service level even when it came before T (the strict
  "answered within T / (answered + abandoned)" form). Callers still waiting are not counted yet;
  callers who left the line for a callback are out of it (their callback is counted apart).
  Several thresholds may be given. None when nobody's wait ended.
- **answer rate** / **abandon rate**: answered / and abandoned / the same denominator.
- **ASA**: mean wait of answered callers (callbacks excluded). **max wait**: the longest wait that
  ended, whatever the outcome (answered, abandoned, short, timeout, left for a callback).
- **AHT**: (talk + wrap-up) / handled, where handled counts callers and callbacks whose wrap-up
  has ended: talk runs from CONNECT to COMPLETE, wrap-up from COMPLETE to the agent's next state
  change (READY with cause ``wrap_end`` or ``wrap_done``, NOTREADY or AGENTLOGOFF) -- the same
  span routing records for its estimated waits.
- **A window that starts mid-stream**: outcomes of calls that entered before the first folded
  event are left out (their interval precedes the window, and counting them would leave an
  interval with more outcomes than offers); events that count when they happen still count.
  Events that lack the skill (an ABANDON may carry only the call id) are attributed through the
  skill the call entered with, which the fold remembers until the call ends.

The stream is bounded (``events_max``); `routing.archive` keeps the fold going in Redis and
stores each interval once it can no longer change (`IntervalFold.close`, `state`, `restore`), so
history outlives the trimming.

**Live statistics** (`Snapshot`): callers and callbacks waiting, offered and connected per queue,
the longest current wait, agents by state (not ready by reason) with their time in state, agents
staffed per skill. `LiveFold` keeps the state they are computed from by folding the event
stream (a `Replay` plus the skills, kinds and times the replay does not keep); `load` reads the
same state from Redis in one atomic step, with the id of the last event it includes. So
`snapshot` (one read, on request) and `LiveView` (one read, then only new events: for a
wallboard refreshing every second) give the same figures, and tests prove the Redis state and
its recount from the stream agree.

Both kinds are frozen dataclasses with ``as_dict()`` for JSON (wallboard, metrics exporter).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from routing.events import ENDED, EventType, Replay, RoutingEvent
from routing.keys import lua_prelude
from routing.model import AgentState, CallState, ItemKind
from routing.store import RoutingStore

INTERVAL_SECONDS = 900.0
"""The default reporting interval: 15 minutes."""
SHORT_ABANDON_SECONDS = 5.0
"""Callers who hang up within this many seconds are short abandons (a misdial, not a failure)."""
SL_THRESHOLDS: tuple[float, ...] = (20.0,)
"""The default service-level threshold: answered within 20 seconds."""
READ_BATCH = 1000
"""Events read per round trip by `fold_events`."""

_GONE_BACK = {EventType.UNREACHABLE, EventType.CALLBACK_NOANSWER, EventType.CALLBACK_FAILED}
"""An accepted call or callback that did not get through after all."""

_CALLER_ENDINGS = {
    EventType.ABANDON,
    EventType.EXITWITHTIMEOUT,
    EventType.EXITWITHKEY,
    EventType.CALLBACK_EXPIRED,
}


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _threshold_key(threshold: float) -> str:
    return f"{threshold:g}"


# ---------------------------------------------------------------------- interval statistics


@dataclass(frozen=True)
class IntervalStats:
    """The figures of one queue (or all queues) in one interval; see the module docstring."""

    start: float
    """When the interval starts (seconds since the epoch, a multiple of ``length``)."""
    length: float
    """The interval's length in seconds."""
    skill: str | None
    """The queue; None for all queues together."""
    thresholds: tuple[float, ...]
    """The service-level thresholds ``answered_within`` counts against, in seconds."""
    offered: int = 0
    """Callers who entered the queue in the interval."""
    answered: int = 0
    """Of them, answered by an agent."""
    answered_within: tuple[int, ...] = ()
    """Of them, answered with a wait <= each threshold."""
    abandoned: int = 0
    """Of them, hung up waiting or while offered, after the short-abandon time."""
    short_abandoned: int = 0
    """Of them, hung up within the short-abandon time."""
    abandoned_ringing: int = 0
    """Of the abandoned and short abandoned, those who hung up after an agent accepted, while
    the agent's phone rang (ABANDON with reason ``abandon_while_ringing``): never answered."""
    timed_out: int = 0
    """Of them, given up by routing at the queue's max wait (EXITWITHTIMEOUT)."""
    left_for_callback: int = 0
    """Of them, left the line for a callback (EXITWITHKEY)."""
    answer_wait: float = 0.0
    """Total wait of the answered callers, in seconds (the ASA's numerator)."""
    max_wait: float = 0.0
    """The longest wait that ended, whatever the outcome."""
    refused: int = 0
    """Callers refused in the interval because the queue was full (FULL)."""
    callbacks_requested: int = 0
    """Callbacks put in line in the interval."""
    callbacks_kept_place: int = 0
    """Of them, taking the place their caller left."""
    callbacks_connected: int = 0
    """Of them, accepted by an agent."""
    callbacks_expired: int = 0
    """Of them, expired after the callback window."""
    callbacks_cancelled: int = 0
    """Of them, withdrawn (ended in another way than connected, expired or failed)."""
    callbacks_failed: int = 0
    """Of them, failed: the customer did not answer the last attempt (the queue's
    ``callback_attempts``), or the number cannot be dialed (CALLBACK_FAILED)."""
    handled: int = 0
    """Callers and callbacks whose wrap-up has ended."""
    talk: float = 0.0
    """Their total talk time, in seconds."""
    wrap: float = 0.0
    """Their total wrap-up time, in seconds."""
    ronas: int = 0
    """Offers that timed out in the interval (ring no answer)."""
    rejects: int = 0
    """Offers agents rejected in the interval."""
    unreachable: int = 0
    """Accepted calls and callbacks whose agent phone could not be reached, in the interval (each
    went back in line)."""
    callback_attempts_failed: int = 0
    """Callback dial attempts whose customer did not answer, in the interval (the last one of a
    failed callback included)."""

    @property
    def closed(self) -> int:
        """Callers whose wait ended in a way that counts for the service level."""
        return self.answered + self.abandoned + self.timed_out

    def service_level(self, threshold: float | None = None) -> float | None:
        """Answered within ``threshold`` (the first one when None) / `closed`."""
        index = 0 if threshold is None else self.thresholds.index(threshold)
        return _ratio(self.answered_within[index], self.closed)

    @property
    def answer_rate(self) -> float | None:
        """Answered / `closed`."""
        return _ratio(self.answered, self.closed)

    @property
    def abandon_rate(self) -> float | None:
        """Abandoned (not short) / `closed`."""
        return _ratio(self.abandoned, self.closed)

    @property
    def asa(self) -> float | None:
        """Average speed of answer: mean wait of answered callers, in seconds."""
        return _ratio(self.answer_wait, self.answered)

    @property
    def aht(self) -> float | None:
        """Average handle time (talk + wrap-up), in seconds."""
        return _ratio(self.talk + self.wrap, self.handled)

    def as_dict(self) -> dict[str, Any]:
        """The figures and the rates derived from them, for JSON."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["thresholds"] = list(self.thresholds)
        out["answered_within"] = {
            _threshold_key(t): n for t, n in zip(self.thresholds, self.answered_within, strict=True)
        }
        out["service_level"] = {_threshold_key(t): self.service_level(t) for t in self.thresholds}
        out.update(
            closed=self.closed,
            answer_rate=self.answer_rate,
            abandon_rate=self.abandon_rate,
            asa=self.asa,
            aht=self.aht,
        )
        return out


@dataclass(slots=True)
class _Tally:
    """The mutable counters behind one `IntervalStats` while folding (same names)."""

    answered_within: list[int]
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    abandoned_ringing: int = 0
    timed_out: int = 0
    left_for_callback: int = 0
    answer_wait: float = 0.0
    max_wait: float = 0.0
    refused: int = 0
    callbacks_requested: int = 0
    callbacks_kept_place: int = 0
    callbacks_connected: int = 0
    callbacks_expired: int = 0
    callbacks_cancelled: int = 0
    callbacks_failed: int = 0
    handled: int = 0
    talk: float = 0.0
    wrap: float = 0.0
    ronas: int = 0
    rejects: int = 0
    unreachable: int = 0
    callback_attempts_failed: int = 0

    def freeze(
        self, start: float, length: float, skill: str | None, thresholds: tuple[float, ...]
    ) -> IntervalStats:
        counts: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        counts["answered_within"] = tuple(self.answered_within)
        return IntervalStats(start, length, skill, thresholds, **counts)


@dataclass(slots=True)
class _Item:
    """A caller or callback the fold saw enter, until it leaves routing."""

    skill: str
    callback: bool
    start: float
    """The interval it counts in."""
    entered: float
    connected: float | None = None


@dataclass(slots=True)
class _Wrap:
    """An agent in wrap-up after ``item``: its handle time is known when wrap-up ends."""

    item: _Item
    completed: float
    talk: float


class IntervalFold:
    """Folds events into `IntervalStats` per interval and queue; see the module docstring."""

    def __init__(
        self,
        *,
        interval_seconds: float = INTERVAL_SECONDS,
        short_abandon_seconds: float = SHORT_ABANDON_SECONDS,
        sl_thresholds: Sequence[float] = SL_THRESHOLDS,
    ) -> None:
        if interval_seconds <= 0:
            raise ValueError("interval_seconds must be positive")
        if short_abandon_seconds < 0:
            raise ValueError("short_abandon_seconds must not be negative")
        if not sl_thresholds or min(sl_thresholds) < 0:
            raise ValueError("give at least one service-level threshold, none negative")
        if len(set(sl_thresholds)) != len(sl_thresholds):
            raise ValueError("service-level thresholds must differ")
        self.interval_seconds = float(interval_seconds)
        """The length of an interval."""
        self.short_abandon_seconds = float(short_abandon_seconds)
        """Abandons within this wait are short."""
        self.thresholds = tuple(float(t) for t in sl_thresholds)
        """The service-level thresholds."""
        self._tallies: dict[tuple[float, str | None], _Tally] = {}
        self._items: dict[str, _Item] = {}
        self._wrapping: dict[str, _Wrap] = {}

    def interval_of(self, t: float) -> float:
        """The start of the interval holding the time ``t``."""
        return math.floor(t / self.interval_seconds) * self.interval_seconds

    def apply(self, event: RoutingEvent) -> None:
        """Fold one event in (events must come in stream order)."""
        f = event.fields
        wrap = self._wrapping.get(event.agent_id)
        if wrap is not None and f.get("astate", AgentState.WRAP_UP) != AgentState.WRAP_UP:
            del self._wrapping[event.agent_id]
            for tally in self._tallies_of(wrap.item):
                tally.handled += 1
                tally.talk += wrap.talk
                tally.wrap += event.t - wrap.completed
        kind = event.type
        if kind in (EventType.ENTERQUEUE, EventType.CALLBACK):
            self._enter(event)
        elif kind is EventType.CONNECT:
            self._connect(event)
        elif kind is EventType.COMPLETE:
            self._complete(event)
        elif kind is EventType.TRANSFER:
            # The talk ends for the agent (handled, as after a COMPLETE), and the caller is
            # offered anew in the queue it was sent to, counted in the interval it entered it.
            self._complete(event)
            self._enter(event)
        elif kind in _CALLER_ENDINGS:
            self._end(event)
        elif kind in _GONE_BACK:
            self._gone_back(event)
        elif kind in (EventType.FULL, EventType.RONA, EventType.REJECT):
            item = self._items.get(event.call_id)
            skill = f.get("skill") or (item.skill if item else None)
            for tally in self._tallies_at(self.interval_of(event.t), skill):
                if kind is EventType.FULL:
                    tally.refused += 1
                elif kind is EventType.RONA:
                    tally.ronas += 1
                else:
                    tally.rejects += 1
        elif f.get("cstate") == ENDED:  # an ending this fold has no figure for: forget the call
            self._items.pop(event.call_id, None)

    def apply_all(self, events: Iterable[RoutingEvent]) -> IntervalFold:
        """Fold many events in, in order; returns self."""
        for event in events:
            self.apply(event)
        return self

    # -- keeping the fold: its open part saved, its closed intervals taken out (routing.archive)

    def close(self, horizon: float) -> list[IntervalStats]:
        """Take out the intervals that can no longer change: ended by ``horizon`` and with none
        of their callers or callbacks still in routing or in wrap-up. Every queue of such an
        interval, and all queues, come out together. (An event that counts when it happens may
        still land in a closed interval if a node's clock lags by more than the horizon's
        margin: the interval is then counted anew, to be added to what was taken out.)"""
        busy = {item.start for item in self._items.values()}
        busy |= {wrap.item.start for wrap in self._wrapping.values()}
        done = [
            key
            for key in self._tallies
            if key[0] + self.interval_seconds <= horizon and key[0] not in busy
        ]
        done.sort(key=lambda k: (k[0], k[1] or ""))
        return [
            self._tallies.pop(key).freeze(key[0], self.interval_seconds, key[1], self.thresholds)
            for key in done
        ]

    def state(self) -> dict[str, Any]:
        """What the fold holds, as JSON-ready data: `restore` continues from it."""

        def item(i: _Item) -> list[Any]:
            return [i.skill, i.callback, i.start, i.entered, i.connected]

        return {
            "params": self.params(),
            "tallies": [
                [start, skill, {f.name: getattr(t, f.name) for f in fields(t)}]
                for (start, skill), t in self._tallies.items()
            ],
            "items": {call: item(i) for call, i in self._items.items()},
            "wrapping": {
                agent: [*item(w.item), w.completed, w.talk] for agent, w in self._wrapping.items()
            },
        }

    def params(self) -> dict[str, Any]:
        """The settings the figures depend on (two folds with the same params agree)."""
        return {
            "interval_seconds": self.interval_seconds,
            "short_abandon_seconds": self.short_abandon_seconds,
            "sl_thresholds": list(self.thresholds),
        }

    @classmethod
    def restore(cls, state: Mapping[str, Any]) -> IntervalFold:
        """A fold continuing from `state` (its settings included)."""
        fold = cls(**state["params"])
        for start, skill, counts in state["tallies"]:
            fold._tallies[(float(start), skill)] = _Tally(**counts)
        fold._items = {call: _Item(*i) for call, i in state["items"].items()}
        fold._wrapping = {
            agent: _Wrap(_Item(*w[:5]), w[5], w[6]) for agent, w in state["wrapping"].items()
        }
        return fold

    def intervals(self) -> list[IntervalStats]:
        """Every interval and queue with something counted, by start then skill (all queues
        first)."""
        return [
            self._tallies[key].freeze(key[0], self.interval_seconds, key[1], self.thresholds)
            for key in sorted(self._tallies, key=lambda k: (k[0], k[1] or ""))
        ]

    def _tallies_at(self, start: float, skill: str | None) -> tuple[_Tally, ...]:
        """The queue's tally and the all-queues tally of an interval, made on first use."""
        keys = [(start, None)] if skill is None else [(start, skill), (start, None)]
        out = []
        for key in keys:
            tally = self._tallies.get(key)
            if tally is None:
                tally = self._tallies[key] = _Tally([0] * len(self.thresholds))
            out.append(tally)
        return tuple(out)

    def _tallies_of(self, item: _Item) -> tuple[_Tally, ...]:
        return self._tallies_at(item.start, item.skill)

    def _enter(self, event: RoutingEvent) -> None:
        f = event.fields
        callback = event.type is EventType.CALLBACK or f.get("kind") == ItemKind.CALLBACK
        item = _Item(f["skill"], callback, self.interval_of(event.t), event.t)
        self._items[event.call_id] = item
        for tally in self._tallies_of(item):
            if not callback:
                tally.offered += 1
                continue
            tally.callbacks_requested += 1
            if f.get("kept") == "1":
                tally.callbacks_kept_place += 1

    def _connect(self, event: RoutingEvent) -> None:
        item = self._items.get(event.call_id)
        if item is None:
            return
        item.connected = event.t
        wait = event.t - item.entered
        for tally in self._tallies_of(item):
            if item.callback:
                tally.callbacks_connected += 1
                continue
            tally.answered += 1
            tally.answer_wait += wait
            tally.max_wait = max(tally.max_wait, wait)
            for i, threshold in enumerate(self.thresholds):
                if wait <= threshold:
                    tally.answered_within[i] += 1

    def _gone_back(self, event: RoutingEvent) -> None:
        """An accept that did not get through: taken back from the figures of the call's entry
        interval; the event itself counts where it happens."""
        item = self._items.get(event.call_id)
        skill = event.fields.get("skill") or (item.skill if item else None)
        for tally in self._tallies_at(self.interval_of(event.t), skill):
            if event.type is EventType.UNREACHABLE:
                tally.unreachable += 1
            else:
                tally.callback_attempts_failed += 1
        if item is None:
            return
        self._take_back(item)
        if event.type is EventType.CALLBACK_FAILED:
            del self._items[event.call_id]
            for tally in self._tallies_of(item):
                tally.callbacks_failed += 1

    def _take_back(self, item: _Item) -> None:
        """An accept that turned out not to answer anyone leaves the figures."""
        if item.connected is None:
            return
        wait = item.connected - item.entered
        item.connected = None
        for tally in self._tallies_of(item):
            if item.callback:
                tally.callbacks_connected -= 1
                continue
            tally.answered -= 1
            tally.answer_wait -= wait
            for i, threshold in enumerate(self.thresholds):
                if wait <= threshold:
                    tally.answered_within[i] -= 1

    def _complete(self, event: RoutingEvent) -> None:
        self._wrapping.pop(event.agent_id, None)
        item = self._items.pop(event.call_id, None)
        if item is None or item.connected is None or not event.agent_id:
            return
        self._wrapping[event.agent_id] = _Wrap(item, event.t, event.t - item.connected)

    def _end(self, event: RoutingEvent) -> None:
        item = self._items.pop(event.call_id, None)
        if item is None:
            return
        ringing = event.fields.get("reason") == "abandon_while_ringing"
        if ringing:  # accepted, but the agent's phone never answered: not answered after all
            self._take_back(item)
        wait = event.t - item.entered
        for tally in self._tallies_of(item):
            if ringing and not item.callback:
                tally.abandoned_ringing += 1
            if item.callback:
                if event.type is EventType.CALLBACK_EXPIRED:
                    tally.callbacks_expired += 1
                else:
                    tally.callbacks_cancelled += 1
                continue
            tally.max_wait = max(tally.max_wait, wait)
            if event.type is EventType.ABANDON:
                if wait <= self.short_abandon_seconds:
                    tally.short_abandoned += 1
                else:
                    tally.abandoned += 1
            elif event.type is EventType.EXITWITHKEY:
                tally.left_for_callback += 1
            else:  # EXITWITHTIMEOUT (CALLBACK_EXPIRED only ends callbacks)
                tally.timed_out += 1


def interval_stats(
    events: Iterable[RoutingEvent],
    *,
    interval_seconds: float = INTERVAL_SECONDS,
    short_abandon_seconds: float = SHORT_ABANDON_SECONDS,
    sl_thresholds: Sequence[float] = SL_THRESHOLDS,
) -> list[IntervalStats]:
    """Fold ``events`` (in stream order) into interval statistics."""
    fold = IntervalFold(
        interval_seconds=interval_seconds,
        short_abandon_seconds=short_abandon_seconds,
        sl_thresholds=sl_thresholds,
    )
    return fold.apply_all(events).intervals()


class EventFold(Protocol):
    """Anything folding routing events: `IntervalFold`, `LiveFold`, `Replay`."""

    def apply(self, event: RoutingEvent) -> None: ...


async def fold_events(
    store: RoutingStore, fold: EventFold, after: str = "-", batch: int = READ_BATCH
) -> str:
    """Feed ``fold`` the stream's events after the id ``after``, a page at a time.

    Returns the id of the last event read (``after`` when there was none), to pass next time.
    """
    while True:
        events = await store.events(after=after, count=batch)
        for event in events:
            fold.apply(event)
        if events:
            after = events[-1].event_id
        if len(events) < batch:
            return after


# ---------------------------------------------------------------------- live statistics


@dataclass(frozen=True)
class AgentStatus:
    """One agent as the wallboard shows it."""

    agent_id: str
    """The agent."""
    state: AgentState
    """The current state."""
    reason: str
    """The not-ready reason; empty in other states."""
    since: float
    """When the agent entered the state."""
    in_state: float
    """Seconds in the state at the snapshot's time."""
    call_id: str
    """The call offered to or connected with the agent; empty otherwise."""

    def as_dict(self) -> dict[str, Any]:
        """For JSON."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class AgentCounts:
    """Logged-in agents by state."""

    available: int = 0
    reserved: int = 0
    """Being offered a call."""
    on_call: int = 0
    wrap_up: int = 0
    not_ready: Mapping[str, int] = field(default_factory=dict)
    """Reason -> agents not ready for it."""

    @property
    def staffed(self) -> int:
        """Every logged-in agent counted."""
        return (
            self.available
            + self.reserved
            + self.on_call
            + self.wrap_up
            + sum(self.not_ready.values())
        )

    def as_dict(self) -> dict[str, Any]:
        """For JSON."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["not_ready"] = dict(sorted(self.not_ready.items()))
        out["staffed"] = self.staffed
        return out


@dataclass(frozen=True)
class QueueSnapshot:
    """One queue (or all queues) at the snapshot's time."""

    skill: str | None
    """The queue; None for all queues together."""
    waiting: int
    """Callers in line, not yet offered to an agent."""
    callbacks_waiting: int
    """Callbacks in line, not yet offered."""
    offered: int
    """Callers and callbacks being offered to an agent (ringing)."""
    connected: int
    """Callers and callbacks talking with an agent."""
    longest_wait: float
    """Seconds since the longest-waiting unanswered caller (waiting or offered) entered; 0 when
    none. A callback that kept its place counts from when its caller entered."""
    oldest_callback: float
    """The same for callbacks."""
    agents: AgentCounts
    """The logged-in agents having the queue's skill (all logged-in agents for all queues)."""
    callbacks_retrying: int = 0
    """Callbacks whose customer did not answer, out of line until their retry delay is over."""

    def as_dict(self) -> dict[str, Any]:
        """For JSON."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["agents"] = self.agents.as_dict()
        return out


@dataclass(frozen=True)
class Snapshot:
    """Queues and agents at one instant."""

    now: float
    """The time the figures are computed for."""
    overall: QueueSnapshot
    """All queues together."""
    queues: tuple[QueueSnapshot, ...]
    """Every queue routing knows (a skill that has had agents, calls or settings), by name."""
    agents: tuple[AgentStatus, ...]
    """Every agent that ever logged in, by id."""

    @property
    def logged_out(self) -> int:
        """Agents known to routing but logged out."""
        return sum(1 for a in self.agents if a.state is AgentState.LOGGED_OUT)

    def queue(self, skill: str) -> QueueSnapshot:
        """One queue's figures (KeyError when routing does not know the skill)."""
        for q in self.queues:
            if q.skill == skill:
                return q
        raise KeyError(skill)

    def as_dict(self) -> dict[str, Any]:
        """For JSON."""
        return {
            "now": self.now,
            "overall": self.overall.as_dict(),
            "queues": {q.skill: q.as_dict() for q in self.queues},
            "agents": [a.as_dict() for a in self.agents],
            "logged_out": self.logged_out,
        }


_LiveCall = tuple[str, ItemKind, float, CallState]
"""What the snapshot needs of a call routing holds: queue, kind, enqueue time, state."""


def _agent_counts(agents: Iterable[AgentStatus]) -> AgentCounts:
    # Identity tests, not a Counter: an enum member hashes in Python code, and this runs over
    # thousands of agents every refresh.
    available = reserved = on_call = wrap_up = 0
    not_ready: dict[str, int] = {}
    for a in agents:
        state = a.state
        if state is AgentState.AVAILABLE:
            available += 1
        elif state is AgentState.RESERVED:
            reserved += 1
        elif state is AgentState.ON_CALL:
            on_call += 1
        elif state is AgentState.WRAP_UP:
            wrap_up += 1
        elif state is AgentState.NOT_READY:
            not_ready[a.reason] = not_ready.get(a.reason, 0) + 1
    return AgentCounts(available, reserved, on_call, wrap_up, not_ready)


@dataclass(slots=True)
class _Line:
    """One queue's calls, counted in one pass."""

    waiting: int = 0
    callbacks_waiting: int = 0
    offered: int = 0
    connected: int = 0
    retrying: int = 0
    oldest_call: float = math.inf
    oldest_callback: float = math.inf

    def count(self, kind: ItemKind, entered: float, state: CallState) -> None:
        if state is CallState.CONNECTED:
            self.connected += 1
            return
        if state is CallState.OFFERED:
            self.offered += 1
        if kind is ItemKind.CALLBACK:
            if state is CallState.WAITING:
                self.callbacks_waiting += 1
            elif state is CallState.RETRY:
                self.retrying += 1
            self.oldest_callback = min(self.oldest_callback, entered)
            return
        if state is CallState.WAITING:
            self.waiting += 1
        self.oldest_call = min(self.oldest_call, entered)

    def add(self, other: _Line) -> None:
        self.waiting += other.waiting
        self.callbacks_waiting += other.callbacks_waiting
        self.offered += other.offered
        self.connected += other.connected
        self.retrying += other.retrying
        self.oldest_call = min(self.oldest_call, other.oldest_call)
        self.oldest_callback = min(self.oldest_callback, other.oldest_callback)

    def freeze(self, skill: str | None, now: float, agents: AgentCounts) -> QueueSnapshot:
        return QueueSnapshot(
            skill=skill,
            waiting=self.waiting,
            callbacks_waiting=self.callbacks_waiting,
            offered=self.offered,
            connected=self.connected,
            longest_wait=max(0.0, now - self.oldest_call) if self.oldest_call < math.inf else 0.0,
            oldest_callback=max(0.0, now - self.oldest_callback)
            if self.oldest_callback < math.inf
            else 0.0,
            agents=agents,
            callbacks_retrying=self.retrying,
        )


def _build(
    now: float,
    agents: Iterable[AgentStatus],
    calls: Iterable[_LiveCall],
    staffed: Mapping[str, Iterable[str]],
    skills: Iterable[str],
) -> Snapshot:
    """The snapshot from the rows, wherever they were read (Redis or the stream)."""
    by_id = {a.agent_id: a for a in sorted(agents, key=lambda a: a.agent_id)}
    lines = {skill: _Line() for skill in skills}
    for skill, kind, entered, state in calls:
        line = lines.get(skill)
        if line is None:
            line = lines[skill] = _Line()
        line.count(kind, entered, state)
    total = _Line()
    queues = []
    for skill in sorted(lines):
        total.add(lines[skill])
        members = (by_id[a] for a in staffed.get(skill, ()) if a in by_id)
        queues.append(lines[skill].freeze(skill, now, _agent_counts(members)))
    logged_in = (a for a in by_id.values() if a.state is not AgentState.LOGGED_OUT)
    overall = total.freeze(None, now, _agent_counts(logged_in))
    return Snapshot(now, overall, tuple(queues), tuple(by_id.values()))


class LiveFold:
    """The live state of queues and agents, kept by folding the event stream.

    A `Replay` gives agent and call states; this adds what the replay does not keep: each
    agent's skills and time of its last state change, each call's queue, kind and enqueue time
    (a callback that kept its place inherits the time its caller entered), and the queues that
    exist. Start empty and fold the whole stream, or start from `load` (routing's state read at
    one stream position) and fold what follows.
    """

    def __init__(self) -> None:
        self.replay = Replay()
        """Agent and call states."""
        self._since: dict[str, float] = {}
        self._skills: dict[str, set[str]] = {}
        self._calls: dict[str, tuple[str, ItemKind, float]] = {}
        self._parked: dict[str, float] = {}
        """A call that left for a callback -> its enqueue time, for a callback keeping its place
        (never forgotten when the place expires unclaimed: that expiry leaves no event)."""
        self._queues: set[str] = set()

    def apply(self, event: RoutingEvent) -> None:
        """Fold one event in (events must come in stream order)."""
        self.replay.apply(event)
        f = event.fields
        if "astate" in f:
            self._since[event.agent_id] = event.t
        kind = event.type
        if kind in (EventType.AGENTLOGIN, EventType.SKILLS):
            skills = set(json.loads(f["skills"]))
            self._skills[event.agent_id] = skills
            self._queues |= skills
        elif kind is EventType.CONFIG:
            self._queues.add(f["skill"])
        elif kind is EventType.TRANSFER:
            self._calls[event.call_id] = (f["skill"], ItemKind.CALL, event.t)
            self._queues.add(f["skill"])
        elif kind in (EventType.ENTERQUEUE, EventType.CALLBACK):
            entered = event.t
            if kind is EventType.CALLBACK and f.get("kept") == "1":
                entered = self._parked.pop(f.get("from", ""), entered)
            self._calls[event.call_id] = (f["skill"], ItemKind(f.get("kind", "call")), entered)
            self._queues.add(f["skill"])
        elif kind is EventType.EXITWITHKEY and event.call_id in self._calls:
            self._parked[event.call_id] = self._calls[event.call_id][2]
        if f.get("cstate") == ENDED:
            self._calls.pop(event.call_id, None)

    def apply_all(self, events: Iterable[RoutingEvent]) -> LiveFold:
        """Fold many events in, in order; returns self."""
        for event in events:
            self.apply(event)
        return self

    def snapshot(self, now: float) -> Snapshot:
        """Queues and agents at ``now``, as folded so far."""
        call_of = {agent: call for call, agent in self.replay.agent_of.items()}
        agents = [
            AgentStatus(
                a,
                state,
                reason,
                self._since[a],
                max(0.0, now - self._since[a]),
                call_of.get(a, ""),
            )
            for a, (state, reason) in self.replay.agents.items()
        ]
        calls = [(*self._calls[c], state) for c, state in self.replay.calls.items()]
        staffed: dict[str, set[str]] = {}
        for a, (state, _) in self.replay.agents.items():
            if state is not AgentState.LOGGED_OUT:
                for skill in self._skills.get(a, ()):
                    staffed.setdefault(skill, set()).add(a)
        return _build(now, agents, calls, staffed, self._queues)


_LOAD_LUA = """
P = ARGV[1]
local agents, calls, queues, parked = {}, {}, {}, {}
for _, a in ipairs(redis.call('SMEMBERS', K.agents())) do
    local v = redis.call('HMGET', K.agent(a), 'state', 'reason', 'since', 'call')
    if v[1] then
        agents[#agents + 1] = { a, v[1], v[2] or '', v[3], v[4] or '' }
    end
end
for _, c in ipairs(redis.call('SMEMBERS', K.calls())) do
    local v = redis.call('HMGET', K.call(c), 'skill', 'kind', 'enq', 'state')
    if v[4] then
        calls[#calls + 1] = { c, v[1], v[2], v[3], v[4] }
    end
end
for _, s in ipairs(redis.call('SMEMBERS', K.queues())) do
    queues[#queues + 1] = { s, redis.call('SMEMBERS', K.staffed(s)) }
end
if ARGV[2] == '1' then
    -- places parked for a callback; their timers are the only index of them
    for _, m in ipairs(redis.call('ZRANGE', K.timers(), 0, -1)) do
        if string.sub(m, 1, 5) == 'park|' then
            local enq = redis.call('HGET', K.parked(string.sub(m, 6)), 'enq')
            if enq then
                parked[#parked + 1] = { string.sub(m, 6), enq }
            end
        end
    end
end
local last = redis.call('XREVRANGE', K.events(), '+', '-', 'COUNT', 1)
local last_id = ''
if #last > 0 then
    last_id = last[1][1]
end
return cjson.encode({ agents, calls, queues, parked, last_id })
"""
"""Routing's live state in one atomic, read-only step, as one JSON string: the fields the
snapshot needs of every agent and call (not the screen-pop context), each queue's staffed
agents, optionally the parked places, and the id of the last event the state includes. (cjson
encodes an empty table as ``{}``: the Python side iterates either form.)"""
_LOAD_SOURCE = lua_prelude() + _LOAD_LUA


async def load(store: RoutingStore, *, parked: bool = True) -> tuple[LiveFold, str]:
    """Routing's live state read from Redis, and the id of the last event it includes.

    Folding the events after that id keeps it current (`LiveView`). ``parked``: also read the
    places callers left for a callback (only a fold that goes on needs them, and finding them
    reads every timer).

    One script, one round trip, one reply: a consistent instant (no agent on a call that reads
    as waiting). A pipeline of HMGETs returned the same in 1.2 s at 2,000 agents and 10,000
    calls, nearly all of it the client parsing 80,000 reply elements; the script takes tens of
    milliseconds of Redis's time at that size, during which routing waits: fine once, or on
    request, but a wallboard refreshing every second should follow the stream (`LiveView`).
    """
    # A Script object costs one SHA1 of the source; it loads itself on the first NOSCRIPT.
    script = store.redis.register_script(_LOAD_SOURCE)
    raw = await script(keys=[store.keys.seq], args=[store.keys.prefix, "1" if parked else "0"])
    agent_rows, call_rows, queue_rows, parked_rows, last_id = json.loads(raw)
    fold = LiveFold()
    for agent_id, state, reason, since, call_id in agent_rows:
        fold.replay.agents[agent_id] = (AgentState(state), reason)
        fold._since[agent_id] = float(since)
        if call_id:
            fold.replay.agent_of[call_id] = agent_id
    for call_id, skill, kind, enq, state in call_rows:
        fold.replay.calls[call_id] = CallState(state)
        fold._calls[call_id] = (skill, ItemKind(kind), float(enq))
    for skill, members in queue_rows:
        fold._queues.add(skill)
        for agent_id in members:  # logged-in agents; a login event brings the others' skills
            fold._skills.setdefault(agent_id, set()).add(skill)
    fold._parked = {call_id: float(enq) for call_id, enq in parked_rows}
    return fold, last_id or "-"


async def snapshot(store: RoutingStore, now: float) -> Snapshot:
    """Queues and agents as routing holds them, computed for the time ``now`` (see `load` for
    the cost; a wallboard uses `LiveView`)."""
    fold, _ = await load(store, parked=False)
    return fold.snapshot(now)


class LiveView:
    """The live snapshot kept current for a wallboard: routing's state is read once (`load`),
    then each `refresh` reads only the events since, so a refresh every second costs Redis a
    short XRANGE however many agents and calls there are.

    The stream must keep every event until the view has read it (routing never trims it).
    """

    def __init__(self, batch: int = READ_BATCH) -> None:
        self.batch = batch
        """Events read per round trip."""
        self._fold: LiveFold | None = None
        self._last = "-"

    async def refresh(self, store: RoutingStore) -> None:
        """Catch up with routing: the first time, read its state; then fold the new events."""
        if self._fold is None:
            self._fold, self._last = await load(store)
        self._last = await fold_events(store, self._fold, self._last, self.batch)

    def snapshot(self, now: float) -> Snapshot:
        """Queues and agents at ``now``, as of the last refresh."""
        if self._fold is None:
            raise RuntimeError("refresh the view before reading it")
        return self._fold.snapshot(now)
