"""The session driver: runs one call's dialog on asyncio, with its timers, transport and services.

The dialog decides, the driver does: it feeds events in, carries actions out on a
:class:`Transport` and the service interfaces, turns service replies and failures back into
events, and logs one summary line when the call ends. Any transport (SIP, Twilio, simulated)
plugs in by implementing :class:`Transport` and calling :meth:`CallSession.feed`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from ivr import metrics
from ivr.dialog import actions as act
from ivr.dialog import events as ev
from ivr.dialog.engine import CallContext, Dialog, Outcome
from ivr.flow.model import Flow
from ivr.logs import bind_call
from ivr.services import Crm, Routing, ServiceError
from speech.understand import Understander

log = structlog.get_logger("ivr.session")

RECENT_SUMMARIES = 1000
"""How many finished calls' summaries a front end keeps for tests and the shutdown log: a
bound, because a node runs for months (bench/soak.py: as plain lists they grew with every call)."""

SERVICE_GRACE_SECONDS = 10.0
"""How long a finished call waits for outstanding service work (a partial ticket, a survey)."""


class Transport(Protocol):
    """The media side of one call.

    Methods start work and return; results come back as events through the session's
    ``feed`` (PromptFinished, DigitPressed, SpeechRecognized, CallerHungUp).
    """

    async def play(self, play: act.Play) -> None:
        """Start playing; feed PromptFinished(play.play_id) when done (not needed if stopped)."""
        ...

    async def stop_playback(self) -> None:
        """Stop the current playback now (barge-in)."""
        ...

    async def start_collecting(self, spec: act.StartCollecting) -> None:
        """Route caller keys (and speech, if asked and available) to the session."""
        ...

    async def stop_collecting(self) -> None:
        """Stop routing caller input."""
        ...

    async def transfer(self, action: act.Transfer) -> None:
        """Bridge the caller to the agent's leg (routing reports when the agent hangs up)."""
        ...

    async def hangup(self, reason: str) -> None:
        """End the call from the IVR side."""
        ...


class Clock(Protocol):
    """Time for the session: real (monotonic) on calls, manual in scripted runs."""

    def now(self) -> float:
        """Current time in seconds."""
        ...

    async def next_event(
        self, queue: asyncio.Queue[ev.Event], wait_seconds: float | None
    ) -> ev.Event | None:
        """The next queued event, or None when ``wait_seconds`` passed first."""
        ...


class MonotonicClock:
    """The real clock."""

    def now(self) -> float:
        """time.monotonic()."""
        return time.monotonic()

    async def next_event(
        self, queue: asyncio.Queue[ev.Event], wait_seconds: float | None
    ) -> ev.Event | None:
        """Wait on the queue with a real timeout."""
        try:
            return await asyncio.wait_for(queue.get(), wait_seconds)
        except TimeoutError:
            return None


class ManualClock:
    """A clock that moves only when told; scripted calls and tests use it instead of sleeping."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._moved = asyncio.Event()
        self._waiting = False
        self.pending_wake = False
        """True from an advance() until the waiting session has looked at the new time."""

    def now(self) -> float:
        """The manual time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward and wake any waiter."""
        self._now += seconds
        if self._waiting:
            self.pending_wake = True
        self._moved.set()

    async def next_event(
        self, queue: asyncio.Queue[ev.Event], wait_seconds: float | None
    ) -> ev.Event | None:
        """The next event, or None once manual time passes ``wait_seconds``."""
        until = None if wait_seconds is None else self._now + wait_seconds
        while True:
            self.pending_wake = False
            if not queue.empty():
                return queue.get_nowait()
            if until is not None and self._now >= until:
                return None
            self._moved.clear()
            getter = asyncio.ensure_future(queue.get())
            mover = asyncio.ensure_future(self._moved.wait())
            self._waiting = True
            try:
                done, pending = await asyncio.wait(
                    {getter, mover}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                self._waiting = False
            for task in pending:
                task.cancel()
            if getter in done:
                self.pending_wake = False
                return getter.result()


@dataclass
class CallSummary:
    """What one call did, logged as the call's summary line."""

    call_id: str
    channel: str
    caller: str
    duration: float
    path: list[str]
    outcomes: list[Outcome]
    slots: dict[str, str]
    failures: dict[str, int]
    errors: list[str] = field(default_factory=list)

    @property
    def final_outcome(self) -> str:
        """The outcome used for metrics: the first enqueue/ticket/self-service/callback, else
        how the call ended."""
        for kind in ("enqueue", "callback", "ticket", "self_service"):
            if any(o.kind == kind for o in self.outcomes):
                return kind
        return self.outcomes[-1].kind if self.outcomes else "none"


class CallSession:
    """One call: a dialog, a transport, the services and a clock."""

    def __init__(
        self,
        flow: Flow,
        context: CallContext,
        transport: Transport,
        crm: Crm,
        routing: Routing,
        *,
        clock: Clock | None = None,
        service_grace: float = SERVICE_GRACE_SECONDS,
        understander: Understander | None = None,
    ) -> None:
        self.context = context
        self.dialog = Dialog(flow, context, understander)
        self.transport = transport
        self.crm = crm
        self.routing = routing
        self.clock: Clock = clock or MonotonicClock()
        self.service_grace = service_grace
        self._queue: asyncio.Queue[ev.Event] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._errors: list[str] = []
        self._fed = 0
        self._handled = 0
        self.waiting = False
        """True while the driver waits for the next event (used by scripted runs to settle)."""

    # ------------------------------------------------------------------ inputs

    def feed(self, event: ev.Event) -> None:
        """Deliver an event from the transport or a service (call from the event loop)."""
        if self.dialog.ended:
            return  # late replies (a ticket number after the caller left) change nothing
        self._fed += 1
        self._queue.put_nowait(event)

    @property
    def queued(self) -> bool:
        """True while fed events are not yet fully handled."""
        return self._handled < self._fed

    @property
    def running_services(self) -> int:
        """Service requests still in progress."""
        return sum(1 for t in self._tasks if not t.done())

    # ------------------------------------------------------------------ the loop

    async def run(self) -> CallSummary:
        """Run the call to its end and return (and log) its summary."""
        started = self.clock.now()
        ctx = self.context
        with bind_call(ctx.call_id):
            metrics.CALLS_STARTED.labels(channel=ctx.channel).inc()
            metrics.CALLS_ACTIVE.inc()
            log.info(
                "call started",
                channel=ctx.channel,
                caller=ctx.caller,
                dialed=ctx.dialed,
                speech=ctx.speech_available,
            )
            try:
                self.feed(ev.CallStarted())
                await self._loop()
                await self._drain()
            except asyncio.CancelledError:
                log.warning("call cancelled", node=self.dialog.node_id)
                if not self.dialog.ended:
                    await self._safe(self.transport.hangup("shutdown"), "hangup")
                raise
            finally:
                metrics.CALLS_ACTIVE.dec()
            summary = self._summary(started)
            metrics.CALLS_ENDED.labels(outcome=summary.final_outcome).inc()
            for kind in ("no_input", "no_match", "escalated"):
                if summary.failures.get(kind):
                    metrics.DIALOG_FAILURES.labels(kind=kind).inc(summary.failures[kind])
            log.info(
                "call ended",
                channel=ctx.channel,
                caller=ctx.caller,
                duration=round(summary.duration, 3),
                path=summary.path,
                outcomes=[f"{o.kind}:{o.detail}" if o.detail else o.kind for o in summary.outcomes],
                outcome=summary.final_outcome,
                failures=summary.failures,
                intent=summary.slots.get("intent"),
                errors=summary.errors,
            )
            return summary

    async def _loop(self) -> None:
        dialog = self.dialog
        seen_warnings = 0
        while not dialog.ended:
            deadline = dialog.deadline
            timeout = None if deadline is None else max(0.0, deadline - self.clock.now())
            self.waiting = True
            event = await self.clock.next_event(self._queue, timeout)  # None: deadline passed
            self.waiting = False
            fed = event is not None
            if event is None:
                event = ev.DeadlineReached()
            node_before = dialog.node_id
            actions = dialog.handle(event, self.clock.now())
            if dialog.node_id != node_before:
                log.debug("node", node=dialog.node_id, trigger=type(event).__name__)
            for warning in dialog.warnings[seen_warnings:]:
                log.warning("flow warning", detail=warning, node=dialog.node_id)
            seen_warnings = len(dialog.warnings)
            for action in actions:
                await self._execute(action)
            if fed:
                self._handled += 1

    async def _drain(self) -> None:
        """Let service work started before the end (a partial ticket, a survey) finish."""
        pending = [t for t in self._tasks if not t.done()]
        if not pending:
            return
        self.waiting = True
        _done, still = await asyncio.wait(pending, timeout=self.service_grace)
        self.waiting = False
        for task in still:
            task.cancel()
            self._errors.append("service work abandoned at call end")
            log.error("service work abandoned at call end", node=self.dialog.node_id)

    # ------------------------------------------------------------------ actions

    async def _execute(self, action: act.Action) -> None:
        ctx = self.context
        match action:
            case act.Play():
                await self._safe(self.transport.play(action), "play")
            case act.StopPlayback():
                await self._safe(self.transport.stop_playback(), "stop_playback")
            case act.StartCollecting():
                await self._safe(self.transport.start_collecting(action), "start_collecting")
            case act.StopCollecting():
                await self._safe(self.transport.stop_collecting(), "stop_collecting")
            case act.Transfer():
                log.info("transfer to agent", agent_id=action.agent_id)
                await self._safe(self.transport.transfer(action), "transfer")
            case act.Hangup():
                await self._safe(self.transport.hangup(action.reason), "hangup")
            case act.Lookup():
                self._spawn("lookup", action.request_id, self._lookup(action))
            case act.CreateTicket():
                self._spawn("ticket", action.request_id, self._ticket(action))
            case act.RecordSurvey():
                self._spawn("survey", action.request_id, self.crm.record_survey(action, ctx))
            case act.Enqueue():
                self._spawn(
                    "enqueue", action.request_id, self.routing.enqueue(action, ctx, self.feed)
                )
            case act.LeaveQueue():
                self._spawn("leave_queue", action.request_id, self.routing.leave_queue(action, ctx))
            case act.ReturnToQueue():
                self._spawn(
                    "return_to_queue", action.request_id, self.routing.return_to_queue(action, ctx)
                )
            case act.RequestCallback():
                self._spawn("callback", action.request_id, self._callback(action))

    async def _lookup(self, action: act.Lookup) -> None:
        reply = await self.crm.lookup(action, self.context)
        self.feed(ev.LookupResult(action.request_id, reply.status, reply.data))

    async def _ticket(self, action: act.CreateTicket) -> None:
        ticket_id = await self.crm.create_ticket(action, self.context)
        log.info(
            "ticket created",
            ticket_id=ticket_id,
            ticket_type=action.ticket_type,
            complete=action.complete,
        )
        self.feed(ev.TicketCreated(action.request_id, ticket_id))

    async def _callback(self, action: act.RequestCallback) -> None:
        await self.routing.request_callback(action, self.context)
        self.feed(ev.ServiceDone(action.request_id))

    def _spawn(self, service: str, request_id: int, work: Coroutine[Any, Any, None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except ServiceError as exc:
                metrics.SERVICE_REQUESTS.labels(service=service, result=exc.reason).inc()
                log.warning("service failed", service=service, reason=exc.reason, detail=str(exc))
                self.feed(ev.ServiceFailed(request_id, exc.reason))
            except Exception:  # a broken service must not take the call down with it
                metrics.SERVICE_REQUESTS.labels(service=service, result="internal_error").inc()
                log.exception("service crashed", service=service)
                self._errors.append(f"{service} crashed")
                self.feed(ev.ServiceFailed(request_id, "internal_error"))
            else:
                metrics.SERVICE_REQUESTS.labels(service=service, result="ok").inc()

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _safe(self, work: Awaitable[None], what: str) -> None:
        """Run a transport call; a failing transport ends the call as hung up, never the loop."""
        try:
            await work
        except Exception:
            log.exception("transport failed", operation=what)
            self._errors.append(f"transport {what} failed")
            if not self.dialog.ended:
                self.feed(ev.CallerHungUp())

    def _summary(self, started: float) -> CallSummary:
        d = self.dialog
        return CallSummary(
            call_id=self.context.call_id,
            channel=self.context.channel,
            caller=self.context.caller,
            duration=self.clock.now() - started,
            path=list(d.path),
            outcomes=list(d.outcomes),
            slots=dict(d.slots),
            failures={k: v for k, v in d.failures.items() if v},
            errors=list(self._errors),
        )


SessionFactory = Callable[[CallContext, Transport], CallSession]
