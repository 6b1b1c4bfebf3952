"""The simulated caller: the real flow, dialog and session driver, with a terminal for a phone.

Interactive (`hotline call`): prompts are printed as their Mandarin text; type keys (``2``,
``1234567890#``), ``say: 停电了`` for speech (the text stands in for the recognizer's result),
``hangup`` or Ctrl-D to hang up. Silence is real: wait and the no-input prompt comes.

Scripted (`hotline call --script FILE`): one command per line, on a manual clock so a script
never sleeps (see :mod:`ivr.transports.script`). Services that are not built yet answer
``not_connected``; a script may play their part explicitly with ``reply`` lines, and every such
reply is printed as a scripted reply, never as a real ticket.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO, TypeVar

from ivr.dialog import actions as act
from ivr.dialog import events as ev
from ivr.dialog.engine import CallContext
from ivr.flow.model import load_flow
from ivr.logs import configure_logging
from ivr.services import (
    Crm,
    LookupReply,
    NotConnectedCrm,
    NotConnectedRouting,
    Routing,
    ServiceError,
)
from ivr.session import CallSession, CallSummary
from ivr.settings import Settings
from ivr.understanding import load_understander
from sounds.catalog import Catalog


class SimTransport:
    """Prints what the IVR plays; playback finishes as soon as it is printed."""

    def __init__(self, catalog: Catalog, out: TextIO, *, show_collect: bool = True) -> None:
        self.catalog = catalog
        self.out = out
        self.show_collect = show_collect
        self.feed: Callable[[ev.Event], None] = lambda event: None
        """Set by the runner to the session's feed."""
        self.played: list[str] = []
        """Every prompt id played (dynamic text as ``text:...``), for scripts and tests."""
        self.collecting: act.StartCollecting | None = None
        self.hung_up: str | None = None
        self.transferred_to: str | None = None
        self.transfer_request = 0
        """The Enqueue request id of the last transfer (the transport reports against it)."""

    def say(self, items: tuple[act.PlayItem, ...]) -> str:
        """The text a Play speaks."""
        parts: list[str] = []
        for item in items:
            if isinstance(item, act.PromptRef):
                self.played.append(item.prompt_id)
                parts.append(self.catalog.text(item.prompt_id))
            else:
                self.played.append(f"text:{item.text}")
                parts.append(item.text)
        return "".join(parts)

    async def play(self, play: act.Play) -> None:
        """Print the prompt text and report it finished."""
        print(f"IVR ▶ {self.say(play.items)}", file=self.out)
        self.feed(ev.PromptFinished(play.play_id))

    async def stop_playback(self) -> None:
        """Nothing plays for long enough to stop."""

    async def start_collecting(self, spec: act.StartCollecting) -> None:
        """Remember what the dialog listens for; hint it in interactive mode."""
        self.collecting = spec
        if self.show_collect:
            wanted = []
            if spec.dtmf:
                keys = "a key" if spec.max_digits == 1 else f"up to {spec.max_digits} keys"
                end = f", end with {spec.terminator}" if spec.terminator else ""
                wanted.append(keys + end)
            if spec.speech:
                wanted.append("say: <text>")
            print(f"      (waiting for {' or '.join(wanted)})", file=self.out)

    async def stop_collecting(self) -> None:
        """Input is no longer routed."""
        self.collecting = None

    async def transfer(self, action: act.Transfer) -> None:
        """Say who the caller is talking to now."""
        self.transferred_to = action.agent_id
        self.transfer_request = action.request_id
        print(f"IVR ⇄ caller connected to agent {action.agent_id}", file=self.out)

    async def hangup(self, reason: str) -> None:
        """The IVR hung up."""
        self.hung_up = reason
        print(f"IVR hung up ({reason})", file=self.out)


class PrintingCrm:
    """Wraps a CRM and prints what each request hands over, and what came back."""

    def __init__(self, inner: Crm, out: TextIO, label: str) -> None:
        self.inner = inner
        self.out = out
        self.label = label

    async def lookup(self, request: act.Lookup, context: CallContext) -> LookupReply:
        """Print and forward a lookup."""
        print(f"CRM ◀ lookup {request.service} {dict(request.params)}", file=self.out)
        return await _report(self.out, "CRM", self.label, self.inner.lookup(request, context))

    async def create_ticket(self, request: act.CreateTicket, context: CallContext) -> str:
        """Print and forward a ticket."""
        fields = {k: v for k, v in request.fields.items() if not k.startswith("pending_")}
        state = "" if request.complete else " (partial: the caller hung up)"
        print(
            f"CRM ◀ create ticket {request.ticket_type} priority {request.priority}{state} "
            f"{fields}",
            file=self.out,
        )
        return await _report(
            self.out, "CRM", self.label, self.inner.create_ticket(request, context)
        )

    async def record_survey(self, request: act.RecordSurvey, context: CallContext) -> None:
        """Print and forward a survey rating."""
        print(f"CRM ◀ record survey score {request.score}", file=self.out)
        return await _report(
            self.out, "CRM", self.label, self.inner.record_survey(request, context)
        )


class PrintingRouting:
    """Wraps routing and prints what each request hands over."""

    def __init__(self, inner: Routing, out: TextIO, label: str) -> None:
        self.inner = inner
        self.out = out
        self.label = label

    async def enqueue(
        self, request: act.Enqueue, context: CallContext, feed: Callable[[ev.Event], None]
    ) -> None:
        """Print and forward an enqueue."""
        print(
            f"ROUTING ◀ enqueue skill {request.skill} priority {request.priority} "
            f"(screen pop: intent={request.context.get('intent', '')})",
            file=self.out,
        )
        return await _report(
            self.out, "ROUTING", self.label, self.inner.enqueue(request, context, feed)
        )

    async def leave_queue(self, request: act.LeaveQueue, context: CallContext) -> None:
        """Print and forward leaving the queue."""
        print(f"ROUTING ◀ leave queue ({request.reason})", file=self.out)
        return await _report(
            self.out, "ROUTING", self.label, self.inner.leave_queue(request, context)
        )

    async def return_to_queue(self, request: act.ReturnToQueue, context: CallContext) -> None:
        """Print and forward a return to the queue."""
        print(f"ROUTING ◀ back in line ({request.agent_id} unreachable)", file=self.out)
        return await _report(
            self.out, "ROUTING", self.label, self.inner.return_to_queue(request, context)
        )

    async def request_callback(self, request: act.RequestCallback, context: CallContext) -> None:
        """Print and forward a callback request."""
        print(
            f"ROUTING ◀ callback to {request.number} in {request.skill} "
            f"priority {request.priority}",
            file=self.out,
        )
        return await _report(
            self.out, "ROUTING", self.label, self.inner.request_callback(request, context)
        )


T = TypeVar("T")


async def _report(out: TextIO, who: str, label: str, work: Awaitable[T]) -> T:
    try:
        result = await work
    except ServiceError as exc:
        print(f"{who} ▶ failed: {exc.reason} ({exc})", file=out)
        raise
    if isinstance(result, LookupReply):
        shown = f": {result.status} {dict(result.data)}" if result.data else f": {result.status}"
    else:
        shown = "" if result is None else f": {result}"
    print(f"{who} ▶ {label}{shown}", file=out)
    return result


def new_call_id() -> str:
    """A fresh simulated call id."""
    return f"sim-{uuid.uuid4().hex[:12]}"


def _parse_line(line: str) -> list[ev.Event] | None:
    """Interactive input: keys, ``say: text``, or ``hangup``; None for an unknown line."""
    text = line.strip()
    for prefix in ("say:", "say：", "说:", "说："):
        if text.lower().startswith(prefix):
            return [ev.SpeechRecognized(text[len(prefix) :].strip(), 0.9)]
    if text.lower() in ("hangup", "bye", "挂机"):
        return [ev.CallerHungUp()]
    if text and all(c in "0123456789*#ABCD" for c in text):
        return [ev.DigitPressed(c) for c in text]
    return None


async def run_interactive(
    settings: Settings,
    caller: str,
    dialed: str,
    stdin: TextIO,
    out: TextIO,
    *,
    use_crm: bool = False,
) -> CallSummary:
    """Walk the flow from a terminal until one side hangs up.

    With `use_crm` the call files its work orders and asks its lookups in this node's CRM
    (the embedded store under ``var/`` unless the settings name an HTTP CRM), through the
    outbox as a served call does; what it filed is delivered before the command ends.
    """
    if not use_crm:
        return await _interactive(
            settings, caller, dialed, stdin, out, crm_backend=NotConnectedCrm()
        )
    from ivr.crm_runtime import CrmRuntime  # noqa: PLC0415 - only this mode opens the store

    runtime = CrmRuntime(settings)
    service = await runtime.start()
    try:
        return await _interactive(settings, caller, dialed, stdin, out, crm_backend=service)
    finally:
        if runtime.worker is not None:
            delivered = await runtime.worker.run_once(time.time())
            print(f"CRM: {delivered} delivered ({runtime.description})", file=out)
        await runtime.stop()


async def _interactive(
    settings: Settings,
    caller: str,
    dialed: str,
    stdin: TextIO,
    out: TextIO,
    *,
    crm_backend: Crm,
) -> CallSummary:
    flow = load_flow(settings.resolved_flow_file())
    catalog = Catalog.shipped()
    transport = SimTransport(catalog, out)
    context = CallContext(
        call_id=new_call_id(),
        caller=caller,
        dialed=dialed,
        channel="sim",
        speech_available=True,
        min_confidence=settings.speech_min_confidence,
    )
    crm = PrintingCrm(crm_backend, out, "ok")
    routing = PrintingRouting(NotConnectedRouting(), out, "ok")
    session = CallSession(
        flow, context, transport, crm, routing, understander=load_understander(settings)
    )
    transport.feed = session.feed
    print(
        f"Simulated call {context.call_id}: {caller} → {dialed}. Type keys (e.g. 2 or 1234#), "
        "'say: 停电了' for speech, 'hangup' to end.\n"
        f"CRM bridge: {getattr(crm_backend, 'name', 'connected')}; "
        f"routing: {NotConnectedRouting.name}.",
        file=out,
    )
    loop = asyncio.get_running_loop()

    async def read_input() -> None:
        while True:
            line = await loop.run_in_executor(None, stdin.readline)
            if not line:
                session.feed(ev.CallerHungUp())
                return
            events = _parse_line(line)
            if events is None:
                print("      (keys 0-9 * #, 'say: <text>' or 'hangup')", file=out)
                continue
            for event in events:
                session.feed(event)

    reader = loop.create_task(read_input())
    try:
        return await session.run()
    finally:
        reader.cancel()


def call_command(
    settings: Settings, *, script: Path | None, caller: str, dialed: str, use_crm: bool = False
) -> int:
    """`hotline call`: interactive, or scripted with ``--script FILE``."""
    configure_logging(
        "warning" if settings.log_level == "info" else settings.log_level,
        settings.log_format,
        stream=sys.stderr,
    )
    if script is not None:
        from ivr.transports.script import run_script_file  # noqa: PLC0415 - script imports sim

        return run_script_file(settings, script, caller=caller, dialed=dialed, out=sys.stdout)
    summary = asyncio.run(
        run_interactive(settings, caller, dialed, sys.stdin, sys.stdout, use_crm=use_crm)
    )
    outcomes = ", ".join(f"{o.kind}({o.detail})" if o.detail else o.kind for o in summary.outcomes)
    print(f"Call over after {summary.duration:.1f} s: {outcomes or 'no outcome'}", file=sys.stdout)
    return 0
