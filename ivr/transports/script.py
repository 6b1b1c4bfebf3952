"""Scripted simulated calls: `hotline call --script FILE`, for tests and demos.

One command per line (a line starting with ``#`` is a comment)::

    speech on|off            whether a recognizer is simulated (default on; before the call)
    press 1234#              caller keys
    say 停电了 [@0.4]         caller speech, with an optional confidence
    silence [SECONDS]        time passes: to the dialog's next deadline, or N seconds
    hangup                   the caller hangs up
    agent-unreachable [WHY]  the phone of the agent the caller is being connected to fails
    reply lookup found k=v k=v | reply lookup not_found | reply lookup error
    reply ticket ID | reply ticket-fail REASON
    reply survey ok | reply survey-fail REASON
    reply callback ok | reply callback-fail REASON
    reply queue position N [WAIT_SECONDS] | reply agent AGENT_ID | reply agent-hangup
    reply queue-exit REASON
    expect PROMPT_ID ...     these prompts were played (in order) since the last expect
    expect-text TEXT         dynamic text spoken since the last expect
    expect-node NODE         the dialog is at this node
    expect-slot NAME VALUE   a collected slot
    expect-outcome KIND [DETAIL]
    expect-request KIND key=value ...   the last lookup/ticket/enqueue/callback/survey handed over
    expect-ended [REASON]    the call is over (IVR hang-up reason, or "caller")

``reply`` lines play the part of services that are not connected to this run; each reply is
printed as a scripted reply so nobody mistakes it for a real work order.

With a real routing service (`ScriptRunner(routing=...)`, a node's `RedisRouting`), the call waits
in a real queue: ``reply queue/agent...`` lines are refused, and after every line routing's pump
runs once at the script's time (due timers, this node's inbox, position updates), so
``silence 30`` lets a position announcement come round and an agent's accept reaches the call.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ivr.dialog import actions as act
from ivr.dialog import events as ev
from ivr.dialog.engine import CallContext
from ivr.flow.model import Flow, load_flow
from ivr.routing_redis import RedisRouting
from ivr.services import Crm, LookupReply, Routing, ServiceError
from ivr.session import CallSession, CallSummary, ManualClock
from ivr.settings import Settings
from ivr.transports.sim import PrintingCrm, PrintingRouting, SimTransport, new_call_id
from ivr.understanding import load_understander
from sounds.catalog import Catalog
from speech.understand import Understander

SETTLE_ROUNDS = 2000
"""Event-loop turns a call may take to settle when only in-process work is pending."""

CRM_REPLIES = frozenset({"lookup", "ticket", "ticket-fail", "survey", "survey-fail"})
"""``reply`` kinds that play the CRM's part."""

SETTLE_SECONDS = 10.0
"""Real seconds a call may take to settle when it waits on real I/O (a Redis round trip)."""


class ScriptError(Exception):
    """A script line failed; the message names the line."""


@dataclass
class _Pending:
    kind: str
    request: Any
    future: asyncio.Future[Any]


@dataclass
class ScriptedServices:
    """CRM and routing whose answers come from the script's ``reply`` lines."""

    pending: list[_Pending] = field(default_factory=list)
    handed: list[tuple[str, Any]] = field(default_factory=list)
    queue: act.Enqueue | None = None
    feed: Callable[[ev.Event], None] | None = None

    async def _wait(self, kind: str, request: Any) -> Any:
        self.handed.append((kind, request))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending.append(_Pending(kind, request, future))
        return await future

    def take(self, kind: str) -> _Pending | None:
        for item in self.pending:
            if item.kind == kind and not item.future.done():
                self.pending.remove(item)
                return item
        return None

    @property
    def waiting(self) -> int:
        return sum(1 for p in self.pending if not p.future.done())

    # CRM
    async def lookup(self, request: act.Lookup, context: CallContext) -> LookupReply:
        result: LookupReply = await self._wait("lookup", request)
        return result

    async def create_ticket(self, request: act.CreateTicket, context: CallContext) -> str:
        result: str = await self._wait("ticket", request)
        return result

    async def record_survey(self, request: act.RecordSurvey, context: CallContext) -> None:
        await self._wait("survey", request)

    # routing
    async def enqueue(
        self, request: act.Enqueue, context: CallContext, feed: Callable[[ev.Event], None]
    ) -> None:
        self.handed.append(("enqueue", request))
        self.queue = request
        self.feed = feed

    async def leave_queue(self, request: act.LeaveQueue, context: CallContext) -> None:
        self.handed.append(("leave_queue", request))
        self.queue = None

    async def return_to_queue(self, request: act.ReturnToQueue, context: CallContext) -> None:
        self.handed.append(("return_to_queue", request))

    async def request_callback(self, request: act.RequestCallback, context: CallContext) -> None:
        await self._wait("callback", request)


class ScriptRunner:
    """Runs one script against the real flow, dialog and session driver on a manual clock."""

    def __init__(
        self,
        flow: Flow,
        catalog: Catalog,
        out: TextIO,
        *,
        caller: str,
        dialed: str,
        min_confidence: float = 0.5,
        routing: RedisRouting | None = None,
        clock: ManualClock | None = None,
        crm: Crm | None = None,
        understander: Understander | None = None,
    ) -> None:
        """``routing``: a real routing service whose pump the runner drives (``reply`` lines for
        routing are then refused); ``clock``: the script's clock (share it with whatever else
        acts at the script's time, e.g. an agent API in a test); ``understander``: the
        hotline's region and street list (default: none, and the shipped list)."""
        self.understander = understander
        self.routing = routing
        self.crm = crm
        """A real CRM service (lookups and tickets are then answered by it, not the script)."""
        self.flow = flow
        self.catalog = catalog
        self.out = out
        self.caller = caller
        self.dialed = dialed
        self.min_confidence = min_confidence
        self.speech = True
        self.services = ScriptedServices()
        self.clock = clock if clock is not None else ManualClock()
        self.transport = SimTransport(catalog, out, show_collect=False)
        self.session: CallSession | None = None
        self._task: asyncio.Task[CallSummary] | None = None
        self._cursor = 0
        self._text_cursor = 0

    # ------------------------------------------------------------------ running

    async def run(self, lines: list[str]) -> CallSummary:
        """Run every line; ScriptError on the first failing one."""
        await self.step(lines)
        return await self.finish()

    async def step(self, lines: list[str], *, first_line: int = 1) -> None:
        """Run some lines and leave the call where they put it (tests interleave other work)."""
        for no, raw in enumerate(lines, start=first_line):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            words = shlex.split(line)
            command, args = words[0], words[1:]
            try:
                if command == "speech":
                    if self.session is not None:
                        raise ScriptError("'speech' must come before the call starts")
                    self.speech = _on_off(args)
                    continue
                if self.session is None:
                    await self._start()
                print(f"  ## {line}", file=self.out)
                await self._command(command, args, line)
                await self._settle()
                await self.pump()
            except ScriptError as exc:
                raise ScriptError(f"line {no}: {line}: {exc}") from None

    async def pump(self) -> None:
        """Run the real routing's pump once at the script's time, then let the call settle."""
        if self.routing is None or self.session is None:
            return
        await self.routing.run_once(self.clock.now())
        await self._settle()

    async def finish(self) -> CallSummary:
        """Check the call is over and return its summary."""
        if self.session is None:
            await self._start()
        return await self._finish()

    async def _start(self) -> None:
        context = CallContext(
            call_id=new_call_id(),
            caller=self.caller,
            dialed=self.dialed,
            channel="sim",
            speech_available=self.speech,
            min_confidence=self.min_confidence,
        )
        label = "scripted reply"
        inner_crm: Crm = self.crm if self.crm is not None else self.services
        crm = PrintingCrm(inner_crm, self.out, "crm" if self.crm else label)
        inner: Routing = self.routing if self.routing is not None else self.services
        routing = PrintingRouting(inner, self.out, "routing" if self.routing else label)
        self.session = CallSession(
            self.flow,
            context,
            self.transport,
            crm,
            routing,
            clock=self.clock,
            service_grace=1.0,
            understander=self.understander,
        )
        self.transport.feed = self.session.feed
        self._task = asyncio.get_running_loop().create_task(self.session.run())
        await self._settle()

    async def _finish(self) -> CallSummary:
        assert self._task is not None
        assert self.session is not None
        if not self.session.dialog.ended:
            raise ScriptError(
                f"the script ended but the call is still at node {self.session.dialog.node_id!r}"
                " (end it with 'hangup' or walk it to its end)"
            )
        for item in self.services.pending:
            if not item.future.done():
                item.future.set_exception(ServiceError("script_ended", "no reply in the script"))
        return await self._task

    async def _settle(self) -> None:
        """Let the session process everything until it waits for the caller or a reply."""
        assert self.session is not None
        assert self._task is not None
        deadline = time.monotonic() + SETTLE_SECONDS
        rounds = 0
        while True:
            rounds += 1
            # Turns of the loop settle in-process work; real I/O needs the selector to wait.
            await asyncio.sleep(0 if rounds < SETTLE_ROUNDS else 0.001)
            if self._task.done():
                return
            running = self.session.running_services
            if (
                self.session.waiting
                and not self.session.queued
                and not self.clock.pending_wake
                and running <= self.services.waiting
            ):
                return
            if self.routing is None and self.crm is None and rounds >= SETTLE_ROUNDS:
                break
            if time.monotonic() > deadline:
                break
        raise ScriptError("the call did not settle")

    # ------------------------------------------------------------------ commands

    async def _command(self, command: str, args: list[str], line: str) -> None:
        session = self.session
        assert session is not None
        dialog = session.dialog
        if command == "press":
            keys = "".join(args)
            if not keys or any(k not in "0123456789*#ABCD" for k in keys):
                raise ScriptError("press takes phone keys: 0-9 * # A-D")
            for key in keys:
                session.feed(ev.DigitPressed(key))
                await self._settle()
        elif command == "say":
            confidence = 0.9
            if args and args[-1].startswith("@"):
                confidence = float(args.pop()[1:])
            session.feed(ev.SpeechRecognized(" ".join(args), confidence))
        elif command == "silence":
            if args:
                seconds = float(args[0])
            elif dialog.deadline is None:
                raise ScriptError(f"nothing is timed at node {dialog.node_id!r}")
            else:
                seconds = max(0.0, dialog.deadline - self.clock.now())
            if self.routing is not None:
                # Routing's news for the time that passes (a new place in line) reaches the call
                # before the call's own timers fire, so a hold announcement is not stale.
                await self.routing.run_once(self.clock.now() + seconds)
                await self._settle()
            self.clock.advance(seconds)
        elif command == "hangup":
            session.feed(ev.CallerHungUp())
        elif command == "agent-unreachable":
            transport = self.transport
            if transport.transferred_to is None:
                raise ScriptError("no agent is being connected")
            why = " ".join(args) or "480 Temporarily Unavailable"
            print(f"IVR ⇄ agent {transport.transferred_to} unreachable ({why})", file=self.out)
            session.feed(
                ev.AgentUnreachable(transport.transfer_request, transport.transferred_to, why)
            )
            transport.transferred_to = None
        elif command == "reply":
            self._reply(args)
        elif command == "expect":
            self._expect_prompts(args)
        elif command == "expect-text":
            self._expect_text(" ".join(args))
        elif command == "expect-node":
            if dialog.node_id != args[0]:
                raise ScriptError(f"the call is at {dialog.node_id!r}, not {args[0]!r}")
        elif command == "expect-slot":
            value = dialog.slots.get(args[0])
            if value != " ".join(args[1:]):
                raise ScriptError(f"slot {args[0]} is {value!r}")
        elif command == "expect-outcome":
            wanted = (args[0], " ".join(args[1:]))
            got = [(o.kind, o.detail) for o in dialog.outcomes]
            if not any(k == wanted[0] and (not wanted[1] or d == wanted[1]) for k, d in got):
                raise ScriptError(f"no outcome {' '.join(args)}; outcomes so far: {got}")
        elif command == "expect-request":
            self._expect_request(args)
        elif command == "expect-ended":
            if not dialog.ended:
                raise ScriptError(f"the call is still at {dialog.node_id!r}")
            reason = self.transport.hung_up or "caller"
            if args and args[0] != reason:
                raise ScriptError(f"the call ended with {reason!r}")
        else:
            raise ScriptError(f"unknown command {command!r}")

    def _reply(self, args: list[str]) -> None:
        if not args:
            raise ScriptError("reply what?")
        kind, rest = args[0], args[1:]
        services = self.services
        if self.crm is not None and kind in CRM_REPLIES:
            raise ScriptError("the CRM is real in this run: it answers, not the script")
        if kind == "lookup":
            item = self._take("lookup")
            status = rest[0] if rest else ""
            if status not in ("found", "not_found", "error"):
                raise ScriptError("reply lookup found|not_found|error [key=value ...]")
            item.future.set_result(LookupReply(status, _pairs(rest[1:])))  # type: ignore[arg-type]
        elif kind == "ticket":
            self._take("ticket").future.set_result(rest[0])
        elif kind in ("ticket-fail", "survey-fail", "callback-fail"):
            item = self._take(kind.removesuffix("-fail"))
            item.future.set_exception(ServiceError(rest[0] if rest else "failed"))
        elif kind in ("survey", "callback"):
            self._take(kind).future.set_result(None)
        elif kind in ("queue", "agent", "agent-hangup", "queue-exit"):
            if self.routing is not None:
                raise ScriptError("routing is real in this run: agents answer, not the script")
            if services.queue is None or services.feed is None:
                raise ScriptError("the caller is not in a queue")
            rid = services.queue.request_id
            event: ev.Event
            if kind == "queue":
                wait = int(rest[2]) if len(rest) > 2 else None
                event = ev.QueuePosition(rid, int(rest[1]), wait)
            elif kind == "agent":
                event = ev.AgentConnected(rid, rest[0])
            elif kind == "agent-hangup":
                event = ev.AgentDisconnected(rid)
            else:
                event = ev.QueueExited(rid, rest[0] if rest else "max_wait")
            print(f"ROUTING ▶ scripted reply: {kind} {' '.join(rest)}".rstrip(), file=self.out)
            services.feed(event)
        else:
            raise ScriptError(f"unknown reply {kind!r}")

    def _take(self, kind: str) -> _Pending:
        item = self.services.take(kind)
        if item is None:
            raise ScriptError(f"no {kind} request is waiting for a reply")
        return item

    def _expect_prompts(self, wanted: list[str]) -> None:
        played = self.transport.played
        pos = self._cursor
        for prompt in wanted:
            if prompt not in self.catalog:
                raise ScriptError(f"{prompt!r} is not a prompt id")
            try:
                pos = played.index(prompt, pos) + 1
            except ValueError:
                recent = [p for p in played[self._cursor :] if not p.startswith("text:")]
                raise ScriptError(f"{prompt!r} was not played; played since: {recent}") from None
        self._cursor = pos

    def _expect_text(self, text: str) -> None:
        spoken = [p[5:] for p in self.transport.played[self._cursor :] if p.startswith("text:")]
        if not any(text in s for s in spoken):
            raise ScriptError(f"no spoken text contains {text!r}; spoken: {spoken}")

    def _expect_request(self, args: list[str]) -> None:
        if not args:
            raise ScriptError("expect-request KIND key=value ...")
        kind, wanted = args[0], _pairs(args[1:])
        requests = [r for k, r in self.services.handed if k == kind]
        if not requests:
            raise ScriptError(f"no {kind} request was handed over")
        request = requests[-1]
        for key, value in wanted.items():
            got = getattr(request, key, None)
            if got is None and hasattr(request, "fields"):
                got = request.fields.get(key)
            if got is None and hasattr(request, "params"):
                got = request.params.get(key)
            if str(got) != value:
                raise ScriptError(f"{kind} {key} is {got!r}, not {value!r}")


def _on_off(args: list[str]) -> bool:
    if args not in (["on"], ["off"]):
        raise ScriptError("speech on|off")
    return args == ["on"]


def _pairs(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ScriptError(f"{item!r} is not key=value")
        out[key] = value
    return out


async def run_script(
    settings: Settings, script: str, *, caller: str, dialed: str, out: TextIO
) -> CallSummary:
    """Run a script's text against the configured flow."""
    runner = ScriptRunner(
        load_flow(settings.resolved_flow_file()),
        Catalog.shipped(),
        out,
        caller=caller,
        dialed=dialed,
        min_confidence=settings.speech_min_confidence,
        understander=load_understander(settings),
    )
    return await runner.run(script.splitlines())


def run_script_file(
    settings: Settings, path: Path, *, caller: str, dialed: str, out: TextIO
) -> int:
    """`hotline call --script FILE`: 0 when every line held, 1 with the failing line otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"{path}: cannot read script: {exc.strerror}", file=out)
        return 1
    try:
        summary = asyncio.run(run_script(settings, text, caller=caller, dialed=dialed, out=out))
    except ScriptError as exc:
        print(f"{path}: {exc}", file=out)
        return 1
    outcomes = ", ".join(f"{o.kind}({o.detail})" if o.detail else o.kind for o in summary.outcomes)
    print(f"{path}: ok — {outcomes or 'no outcome'}", file=out)
    return 0
