"""RedisRouting: the session driver's `Routing` interface (``ivr.services``) over the store.

This is the one routing module that knows the IVR's event and action types; the store and the
model know nothing of dialogs. A node keeps, per caller it put in line, the dialog's request id
and ``feed``; everything else lives in Redis. What happens to a caller elsewhere (an agent on
another node accepts, the agent hangs up, the max wait runs out) reaches this node through its
inbox, which `run_once` drains together with the due timers and the periodic position updates.

A node heartbeats from its pump (and before its first call), and its tick reclaims the nodes
whose heartbeat ran out: their callers are ended and their callbacks move here. A node that finds
it was declared lost itself (cut off from Redis longer than the timeout) tells its waiting
callers they left the queue, since routing no longer holds them.

An agent who accepted a caller but whose phone then fails (the transport's report reaches the
dialog, which asks for `return_to_queue`) is made not ready (missed) and the caller goes back to
their place in line, held by this node again.

Callbacks have no caller on the line: when an agent accepts one, the ``connected`` message names
a ``cb:`` id, and the node runs its ``on_callback`` hook (the SIP front end dials the agent, then
the customer) with a `CallbackOrder`. The hook returns when the callback is over, with a
`CallbackEnd`; routing is then told, whatever happened, also when the hook fails: a callback that
was talked (or could not be carried out, e.g. the node stopped) is completed (the agent goes to
wrap-up); one whose agent phone failed goes back to its place (the agent not ready, missed); one
whose customer did not answer goes back to its place (after its queue's retry delay, out of line
meanwhile) until its queue's last attempt, then fails;
one whose number cannot be dialed fails at once. When routing ends a callback being dialed (its
agent completed it through the API), the ``disconnected`` message makes the node run its
``on_callback_ended`` hook, which hangs up the callback's legs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, TypeVar

import structlog
from redis.exceptions import RedisError
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from ivr.dialog import actions as act
from ivr.dialog import events as ev
from ivr.dialog.engine import CallContext
from ivr.services import Feed, ServiceError
from routing.archive import IntervalArchive
from routing.errors import RoutingError
from routing.keys import check_name
from routing.model import ItemKind, NewCall, NodeMessage
from routing.store import PARK_SECONDS, RoutingStore

log = structlog.get_logger("routing")

POSITION_INTERVAL = 30.0
"""Seconds between position / estimated-wait updates pushed to a waiting caller."""

POLL_INTERVAL = 0.2
"""`serve`: the longest a node waits for its inbox before handling timers again."""

HEARTBEAT_INTERVAL = 5.0
"""Seconds between heartbeats (``routing_heartbeat_seconds``)."""

NODE_TIMEOUT = 20.0
"""A node not heard from this long is declared lost (``routing_node_timeout_seconds``)."""

ARCHIVE_INTERVAL = 60.0
"""Seconds between the pump's runs of the statistics archive (`routing.archive`): closed
intervals are kept in Redis before the event stream is trimmed."""

NODE_LOST = "node_lost"
"""The reason a caller is told it left the queue when routing declared its node lost."""

T = TypeVar("T")

HANGUP_RETRY_SECONDS = 600.0
"""How long a hang-up routing could not hear (Redis restarting, failing over) is retried."""

CALLBACK_PREFIX = "cb:"
"""A callback's id in routing is this prefix and the id of the call that asked for it."""

CALLBACK_LEAVE_WAIT = 3.0
"""Seconds `leave` waits for callbacks in progress to tell routing they ended (the SIP front end
hangs them up when it stops, before routing stops)."""


@dataclass(frozen=True)
class CallbackOrder:
    """An agent accepted a callback: call the agent's phone, then the customer, and bridge."""

    call_id: str
    """The callback's id in routing (``cb:<id of the call that asked for it>``)."""
    agent_id: str
    """The agent who accepted it."""
    contact: str
    """The agent's phone as routing knows it (a SIP URI; the registrar's binding wins)."""
    number: str
    """The customer's number to dial."""
    context: Mapping[str, str] = field(default_factory=dict)
    """What the IVR learned when the callback was asked for (the agent's screen pop)."""


class CallbackEnd(StrEnum):
    """How a dialed callback ended, as far as routing is concerned (what a hook returns)."""

    DONE = "done"
    """Talked, or over for a reason that is nobody's fault (the node stopped, routing ended
    it): routing completes it and the agent wraps up."""
    AGENT_UNREACHABLE = "agent_unreachable"
    """The agent's phone failed (busy, unreachable, no answer): back in its place, the agent
    not ready (missed)."""
    NO_ANSWER = "no_answer"
    """The customer did not answer: an attempt; back in its place until the last one."""
    CANNOT_DIAL = "cannot_dial"
    """The number cannot be dialed (or no trunk is configured): it fails at once."""


CallbackHook = Callable[[CallbackOrder], Awaitable[object]]
"""Dials a callback and returns when it is over (both sides hung up, or it failed), with a
`CallbackEnd` (anything else counts as `CallbackEnd.DONE`)."""

CallbackEndedHook = Callable[[str], object]
"""Hangs up the legs of a callback (by id) that routing ended while this node dials it."""


@dataclass
class _Held:
    """A caller this node put in line."""

    request_id: int
    feed: Feed
    next_position_at: float
    connected: bool = False


class RedisRouting:
    """Queues and agents in Redis, for the calls of one IVR node."""

    name = "redis"

    def __init__(
        self,
        store: RoutingStore,
        node_id: str,
        *,
        clock: Callable[[], float] = time.time,
        position_interval: float = POSITION_INTERVAL,
        park_seconds: float = PARK_SECONDS,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        node_timeout: float = NODE_TIMEOUT,
        on_callback: CallbackHook | None = None,
        on_callback_ended: CallbackEndedHook | None = None,
        archive_interval: float = ARCHIVE_INTERVAL,
    ) -> None:
        """``archive_interval``: seconds between runs of the statistics archive (0: never; the
        first run comes that long after the first pump)."""
        if not 0 < heartbeat_interval < node_timeout:
            raise ValueError("the heartbeat interval must be positive and below the node timeout")
        self.store = store
        self.node_id = check_name("node", node_id)
        self.clock = clock
        self.position_interval = position_interval
        self.park_seconds = park_seconds
        self.heartbeat_interval = heartbeat_interval
        self.node_timeout = node_timeout
        self._held: dict[str, _Held] = {}
        self._next_heartbeat: float | None = None
        """When the next heartbeat is due; None until the first one (this process started)."""
        self._heartbeat_lock = asyncio.Lock()
        self._on_callback: CallbackHook | None = on_callback
        self.on_callback_ended: CallbackEndedHook | None = on_callback_ended
        """Run when routing ends a callback this node is dialing (see the module doc)."""
        self._callbacks: dict[str, asyncio.Task[None]] = {}
        """Callbacks being dialed by this node, by call id."""
        self._waiting_for_hook: list[CallbackOrder] = []
        """Callbacks accepted before a hook was set (the pump starts before SIP does)."""
        self._hangups: dict[str, asyncio.Task[None]] = {}
        """Hang-ups routing could not hear (Redis down), being retried, by call id."""
        self.archive = IntervalArchive(store)
        """Keeps closed statistics intervals in Redis; run by the pump."""
        self.archive_interval = archive_interval
        self._next_archive: float | None = None

    @property
    def held(self) -> frozenset[str]:
        """Ids of the calls this node holds in line or bridged."""
        return frozenset(self._held)

    @property
    def on_callback(self) -> CallbackHook | None:
        """Runs each callback an agent accepted (see the module doc); None: none are dialed
        yet, they wait for a hook to be set."""
        return self._on_callback

    @on_callback.setter
    def on_callback(self, hook: CallbackHook | None) -> None:
        self._on_callback = hook
        if hook is not None:
            waiting, self._waiting_for_hook = self._waiting_for_hook, []
            for order in waiting:
                self._start_callback(order)

    @property
    def callbacks(self) -> frozenset[str]:
        """Ids of the callbacks this node is dialing or has bridged."""
        return frozenset(self._callbacks)

    # ------------------------------------------------------------------ the Routing protocol

    async def enqueue(self, request: act.Enqueue, context: CallContext, feed: Feed) -> None:
        """Put the call in line and tell it its place; later events come through ``feed``."""
        now = self.clock()
        call = _new_call(
            call_id=context.call_id,
            skills={request.skill: request.min_level},
            priority=request.priority,
            node_id=self.node_id,
            request_id=request.request_id,
            context=request.context,
            caller=context.caller,
        )
        await self._first_heartbeat(now)
        # Held before the script runs: an agent on another node may accept before we resume.
        self._held[call.call_id] = _Held(request.request_id, feed, now + self.position_interval)
        try:
            result = await _service_call(self.store.enqueue(call, now))
        except ServiceError:
            self._held.pop(call.call_id, None)
            raise
        if not result.accepted:
            self._held.pop(call.call_id, None)
            log.info("queue full", skill=request.skill)
            feed(ev.QueueExited(request.request_id, "queue_full"))
            return
        pos = result.position
        log.info(
            "queued",
            skill=request.skill,
            priority=request.priority,
            position=pos.position,
            wait=pos.wait_seconds,
            offered_to=result.offers[0].agent_id if result.offers else None,
        )
        held = self._held.get(call.call_id)
        if held is not None and pos.position > 0:
            _feed(held, ev.QueuePosition(request.request_id, pos.position, pos.wait_seconds))

    async def leave_queue(self, request: act.LeaveQueue, context: CallContext) -> None:
        """The caller hung up (``abandoned``, ``hangup``; ``abandoned_ringing``: while the
        accepting agent's phone rang, an abandon), chose a callback (``callback``: place
        parked), or was handed to the agent by SIP REFER (``transferred``)."""
        now = self.clock()
        self._held.pop(context.call_id, None)
        if request.reason == "transferred":
            # The caller and the agent talk without the IVR now; it cannot see the end of it.
            # The call stays connected in routing, the agent on it, until the agent's desktop
            # completes it (POST /api/agents/{id}/complete: wrap-up as usual). Its later
            # "disconnected" message finds no caller held here and is dropped.
            log.info("left queue", reason=request.reason, outcome="handed_off")
            return
        if request.reason == "callback":
            outcome = await _service_call(
                self.store.leave_for_callback(context.call_id, now, self.park_seconds)
            )
        else:
            ringing = request.reason == "abandoned_ringing"
            try:
                outcome = await _service_call(
                    self.store.hangup(context.call_id, now, agent_ringing=ringing)
                )
            except ServiceError as exc:
                if exc.reason != "routing_unavailable":
                    raise
                # The caller is gone whatever Redis says: routing must hear it when it is back,
                # or the call waits in line with nobody on it (and is offered to agents).
                self._retry_hangup(context.call_id, now, ringing)
                outcome = "retrying"
        log.info("left queue", reason=request.reason, outcome=outcome)

    def _retry_hangup(self, call_id: str, at: float, agent_ringing: bool = False) -> None:
        """Tell routing of a hang-up at ``at`` until it hears it (exponential backoff with
        jitter, for up to `HANGUP_RETRY_SECONDS`); a node that leaves first ends the call
        anyway (``node_leave``)."""
        if call_id in self._hangups:
            return

        async def retry() -> None:
            try:
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception_type(RedisError),
                    wait=wait_exponential_jitter(multiplier=0.2, max=10.0, jitter=0.2),
                    stop=stop_after_delay(HANGUP_RETRY_SECONDS),
                    reraise=True,
                ):
                    with attempt:
                        outcome = await self.store.hangup(call_id, at, agent_ringing=agent_ringing)
                log.info(
                    "left queue",
                    reason="hangup",
                    outcome=outcome,
                    attempts=attempt.retry_state.attempt_number,
                )
            except RedisError as exc:
                log.error("hang-up never reached routing", call_id=call_id, error=str(exc))
            finally:
                self._hangups.pop(call_id, None)

        self._hangups[call_id] = asyncio.get_running_loop().create_task(retry())

    async def return_to_queue(self, request: act.ReturnToQueue, context: CallContext) -> None:
        """The agent's phone could not be reached: routing puts the call back at its place and
        makes the agent not ready (missed); this node holds the caller in line again and tells
        them their place at the next pump. If routing no longer holds the call that way (it
        ended meanwhile), the caller hears the queue gave up rather than waiting forever."""
        now = self.clock()
        call_id = context.call_id
        held = self._held.get(call_id)
        if held is not None:
            # Before the script runs: a new accept may reach this node before we resume.
            held.connected = False
            held.next_position_at = now
        state = await _service_call(
            self.store.agent_unreachable(call_id, request.agent_id, now, request.reason)
        )
        log.info(
            "agent unreachable, back in line",
            agent_id=request.agent_id,
            reason=request.reason,
            routing_state=state,
        )
        if state == "none":
            held = self._held.pop(call_id, None)
            if held is not None:
                _feed(held, ev.QueueExited(held.request_id, "agent_unreachable"))

    async def request_callback(self, request: act.RequestCallback, context: CallContext) -> None:
        """Register a callback; it takes the place the caller left in line, if any."""
        now = self.clock()
        call = _new_call(
            call_id=CALLBACK_PREFIX + context.call_id,
            skills={request.skill: 1},
            priority=request.priority,
            node_id=self.node_id,
            context=request.context,
            kind=ItemKind.CALLBACK,
            number=request.number,
        )
        await self._first_heartbeat(now)
        result = await _service_call(self.store.add_callback(call, now, from_call=context.call_id))
        log.info(
            "callback registered",
            skill=request.skill,
            kept_place=result.kept_place,
            position=result.position.position,
        )

    # ------------------------------------------------------------------ the pump

    async def run_once(self, now: float | None = None, *, wait: float = 0.0) -> int:
        """Handle due timers, deliver this node's inbox, push due position updates.

        Returns how many events were fed to calls. ``wait`` > 0 blocks that long for the inbox
        when it is empty (used by `serve`); tests call it with an explicit ``now`` and no wait.
        """
        if now is None:
            now = self.clock()
        await self._heartbeat(now)
        await self.store.tick(now, self.node_id)
        await self._archive(now)
        fed = 0
        for message in await self.store.drain_inbox(self.node_id, wait):
            fed += self._deliver(message)
        due = [
            call_id
            for call_id, held in self._held.items()
            if not held.connected and held.next_position_at <= now
        ]
        if due:
            for call_id, pos in (await self.store.positions(due, now)).items():
                held = self._held.get(call_id)
                if held is None or held.connected or pos.position == 0:
                    continue
                held.next_position_at = now + self.position_interval
                fed += _feed(
                    held, ev.QueuePosition(held.request_id, pos.position, pos.wait_seconds)
                )
        return fed

    async def leave(self) -> None:
        """This node stops: routing ends the calls it still holds and moves its callbacks to a
        live node at once, instead of after the node timeout. Stop the pump first.

        Callbacks in progress get `CALLBACK_LEAVE_WAIT` to end (stopping SIP hangs them up) and
        tell routing so; one left bridged would move to another node with its agent on it."""
        if self._callbacks:
            await asyncio.wait(list(self._callbacks.values()), timeout=CALLBACK_LEAVE_WAIT)
        waiting, self._waiting_for_hook = self._waiting_for_hook, []
        for order in waiting:  # accepted, never dialed: free the agent rather than strand it
            await self.callback_ended(order.call_id)
        if self._hangups:  # Redis just came back: let the retries land first, briefly
            await asyncio.wait(list(self._hangups.values()), timeout=CALLBACK_LEAVE_WAIT)
        for task in list(self._hangups.values()):
            task.cancel()
        await _service_call(self.store.node_leave(self.node_id, self.clock()))
        self._held.clear()
        self._next_heartbeat = None
        log.info("node left routing")

    async def _archive(self, now: float) -> None:
        """Run the statistics archive when due (every node does; one of them does the work)."""
        if self.archive_interval <= 0:
            return
        if self._next_archive is None:
            self._next_archive = now + self.archive_interval
        if now < self._next_archive:
            return
        self._next_archive = now + self.archive_interval
        await self.archive.run_once(now)

    async def _first_heartbeat(self, now: float) -> None:
        # The first heartbeat reclaims what an earlier process of this node id left behind: it
        # must come before this process puts its own first call in line.
        if self._next_heartbeat is None:
            await _service_call(self._heartbeat(now))

    async def _heartbeat(self, now: float) -> None:
        """Heartbeat when due (the first time always)."""
        async with self._heartbeat_lock:
            due = self._next_heartbeat
            if due is not None and now < due:
                return
            starting = due is None
            known = await self.store.heartbeat(
                self.node_id, now, self.node_timeout, starting=starting
            )
            self._next_heartbeat = now + self.heartbeat_interval
        if starting or known:
            return
        # Declared lost while this process ran (cut off longer than the timeout): routing ended
        # every call held here. Waiting callers hear so now instead of waiting forever; a bridged
        # caller keeps talking (routing only forgot the call) until someone hangs up.
        log.warning("node was declared lost", calls=len(self._held))
        held, self._held = self._held, {}
        for held_call in held.values():
            if not held_call.connected:
                _feed(held_call, ev.QueueExited(held_call.request_id, NODE_LOST))

    async def serve(self, poll_interval: float = POLL_INTERVAL) -> None:
        """Pump forever (cancel to stop); a Redis outage is logged and retried."""
        task = asyncio.current_task()
        while True:
            # redis-py (8.1, Python 3.11) can lose a cancellation that lands while a command
            # reads under its socket timeout: the command completes and the task runs on, still
            # marked as cancelling. Honour such a cancel here, or the pump could never be stopped.
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            try:
                await self.run_once(wait=poll_interval)
            except RedisError as exc:
                log.warning("routing pump failed", error=str(exc))
                await asyncio.sleep(poll_interval)

    async def callback_ended(
        self, call_id: str, end: CallbackEnd = CallbackEnd.DONE, agent_id: str = ""
    ) -> str:
        """A callback ``agent_id`` was dialing is over (see `CallbackEnd`): routing completes it,
        puts it back in its place, or fails it. Returns routing's outcome: ``completed``,
        ``requeued``, ``retrying`` (back in its place after the queue's retry delay), ``failed``
        (the last attempt), the callback's state after an unreachable
        agent (``waiting``, ``offered``...), or ``none`` when routing no longer holds it so."""
        store, now = self.store, self.clock()
        outcome: str
        if end is CallbackEnd.AGENT_UNREACHABLE:
            outcome = await _service_call(store.agent_unreachable(call_id, agent_id, now))
        elif end in (CallbackEnd.NO_ANSWER, CallbackEnd.CANNOT_DIAL):
            final = end is CallbackEnd.CANNOT_DIAL
            outcome, attempts = await _service_call(
                store.callback_no_answer(call_id, agent_id, now, cause=end.value, final=final)
            )
            log.info("callback attempt not answered", call_id=call_id, attempts=attempts)
        else:
            outcome = await _service_call(store.hangup(call_id, now))
        log.info("callback ended", call_id=call_id, end=end.value, routing_outcome=outcome)
        return outcome

    def _deliver(self, message: NodeMessage) -> int:
        if message.call_id.startswith(CALLBACK_PREFIX):
            return self._deliver_callback(message)
        held = self._held.get(message.call_id)
        if held is None or held.request_id != message.request_id:
            log.debug("message for a call no longer held", call_id=message.call_id)
            return 0
        rid = held.request_id
        if message.kind == "connected":
            held.connected = True
            log.info("agent connected", call_id=message.call_id, agent_id=message.agent_id)
            return _feed(held, ev.AgentConnected(rid, message.agent_id, message.contact))
        if message.kind == "transferred":
            # Still this node's caller, in line in another queue: its place is told again.
            held.connected = False
            held.next_position_at = self.clock()
            log.info("transferred to a queue", call_id=message.call_id, skill=message.reason)
            return _feed(held, ev.QueueTransferred(rid, message.reason))
        del self._held[message.call_id]
        if message.kind == "disconnected":
            hang_up = message.reason == "end"
            log.info("agent disconnected", call_id=message.call_id, hang_up=hang_up)
            return _feed(held, ev.AgentDisconnected(rid, hang_up=hang_up))
        log.info("queue exited", call_id=message.call_id, reason=message.reason)
        return _feed(held, ev.QueueExited(rid, message.reason))

    # ------------------------------------------------------------------ callbacks

    def _deliver_callback(self, message: NodeMessage) -> int:
        if message.kind == "disconnected":
            # Routing completed it (its agent, through the API): hang up what is still dialed.
            hook = self.on_callback_ended
            if message.call_id in self._callbacks and hook is not None:
                log.info("callback ended in routing", call_id=message.call_id)
                hook(message.call_id)
                return 1
            return 0
        if message.kind != "connected":
            log.debug("callback message ignored", call_id=message.call_id, kind=message.kind)
            return 0
        if message.call_id in self._callbacks:
            log.warning("callback already being dialed", call_id=message.call_id)
            return 0
        order = CallbackOrder(message.call_id, message.agent_id, message.contact, "")
        self._start_callback(order)
        return 1

    def _start_callback(self, order: CallbackOrder) -> None:
        task = asyncio.get_running_loop().create_task(self._run_callback(order))
        self._callbacks[order.call_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._callbacks.get(order.call_id) is done:
                del self._callbacks[order.call_id]

        task.add_done_callback(forget)

    async def _run_callback(self, order: CallbackOrder) -> None:
        """Read the callback's number and context, run the hook, then tell routing it ended.

        Never raises: one broken callback must not stop the pump or the other callbacks."""
        try:
            queued = await _service_call(self.store.call(order.call_id))
        except ServiceError as exc:  # stays connected in routing until this node is reclaimed
            log.warning("callback unreadable", call_id=order.call_id, error=str(exc))
            return
        if queued is None:
            log.warning("callback accepted but gone from routing", call_id=order.call_id)
            return
        order = replace(order, number=queued.number, context=dict(queued.context))
        hook = self._on_callback
        if hook is None:
            log.info("callback waits for this node to dial", call_id=order.call_id)
            self._waiting_for_hook.append(order)
            return
        log.info("callback to dial", call_id=order.call_id, agent_id=order.agent_id)
        end = CallbackEnd.DONE
        try:
            result = await hook(order)
            if isinstance(result, CallbackEnd):
                end = result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("callback failed", call_id=order.call_id)
        finally:
            try:
                await self.callback_ended(order.call_id, end, order.agent_id)
            except ServiceError as exc:
                # Routing is unreachable: its agent stays on the call until this node is
                # declared lost (then routing completes it).
                log.warning("callback end not recorded", call_id=order.call_id, error=str(exc))


def _new_call(**fields: Any) -> NewCall:
    try:
        return NewCall(**fields)
    except ValueError as exc:
        raise ServiceError("bad_request", str(exc)) from exc


def _feed(held: _Held, event: ev.Event) -> int:
    try:
        held.feed(event)
    except Exception:  # one broken session must not stop the pump for every other call
        log.exception("feeding a call failed", event_type=type(event).__name__)
        return 0
    return 1


async def _service_call(work: Awaitable[T]) -> T:
    """Await a store call, turning routing and Redis failures into the IVR's ServiceError."""
    try:
        return await work
    except RoutingError as exc:
        raise ServiceError(exc.error_id.replace("-", "_"), str(exc)) from exc
    except ValueError as exc:
        raise ServiceError("bad_request", str(exc)) from exc
    except RedisError as exc:
        log.warning("routing store unavailable", error=str(exc))
        raise ServiceError("routing_unavailable", str(exc)) from exc
