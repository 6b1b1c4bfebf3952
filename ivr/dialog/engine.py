"""The dialog engine: one call's walk through a flow, as a pure state machine.

``Dialog.handle(event, now)`` returns the actions to carry out; ``Dialog.deadline`` says when the
driver must feed ``DeadlineReached``. Nothing here touches a socket, a clock or a logger, so every
path of a flow is testable by feeding events (CONVENTIONS 1).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

from ivr.dialog import actions as act
from ivr.dialog import events as ev
from ivr.flow.model import (
    ADDRESS_PARTS,
    BranchNode,
    CallbackNode,
    CaptureNode,
    Choice,
    CollectingNode,
    DigitsNode,
    EndNode,
    EnqueueNode,
    Flow,
    LookupNode,
    MenuNode,
    Node,
    PlayNode,
    PromptItem,
    Readback,
    SurveyNode,
    TicketNode,
)
from sounds import readback
from speech.intent import IntentResult
from speech.matching import match_phrases
from speech.numbers import spoken_digits
from speech.streets import StreetList
from speech.understand import Understander, Understanding

TYPEAHEAD_MAX = 16
"""Keys kept from a greeting for the next menu."""

MAX_AUTO_STEPS = 64
"""Nodes entered without caller input in one step; more means the flow loops (the checker
rejects such flows, this is the run-time guard)."""

PARTIAL_TICKET_DEFAULT_PRIORITY = 50

SPEECH_RESULT_WAIT = 30.0
"""Seconds the dialog waits for the words once the caller started to speak. The recognizer
always ends an utterance (end of speech, or its maximum length); this only guards the call
against a recognizer that never answers."""

CONFIRM_INTENTS = ("yes", "no", "repeat")
"""What a caller may answer when an address is read back (besides keys 1 and 2)."""


@cache
def default_understander() -> Understander:
    """What a hotline with default settings understands: no region, the shipped street list."""
    return Understander(streets=StreetList.shipped())


Phase = Literal[
    "idle", "prompting", "collecting", "service", "queued", "bridged", "ending", "ended"
]


@dataclass(frozen=True)
class CallContext:
    """What the transport knows about a call when it starts."""

    call_id: str
    """Unique id, bound to every log line of the call."""
    caller: str
    """The caller's number (ANI), as signalled."""
    dialed: str = "95598"
    """The number dialed (DNIS)."""
    channel: str = "sim"
    """``sip``, ``twilio`` or ``sim``."""
    speech_available: bool = False
    """Whether a recognizer listens on this call (DTMF-only otherwise)."""
    min_confidence: float = 0.5
    """Speech results below this confidence count as no match."""


@dataclass(frozen=True)
class Outcome:
    """Something the call achieved (or how it ended), for the call summary and statistics."""

    kind: str
    """``enqueue``, ``ticket``, ``self_service``, ``callback``, ``survey``, ``hangup``,
    ``transferred``, ``abandoned``, ``error``."""
    detail: str = ""
    """Skill/priority, ticket type, self-service kind, the node where the caller left..."""


class Dialog:
    """One call's dialog over a flow."""

    def __init__(
        self, flow: Flow, context: CallContext, understander: Understander | None = None
    ) -> None:
        self.flow = flow
        self.context = context
        self.understander = understander or default_understander()
        """Intents and addresses from the recognizer's text (pure: the region and street list
        are loaded at the edge)."""
        self.slots: dict[str, str] = {"caller": context.caller, "dialed": context.dialed}
        """Everything collected so far (plus lookup results under their prefix)."""
        self.path: list[str] = []
        """Node ids in the order the caller walked through them."""
        self.outcomes: list[Outcome] = []
        """What the call achieved, in order."""
        self.failures: dict[str, int] = {"no_input": 0, "no_match": 0, "escalated": 0}
        """Counts of input failures over the whole call."""
        self.warnings: list[str] = []
        """Run-time oddities (a readback of an empty slot); the driver logs them."""
        self.deadline: float | None = None
        """When the driver must send DeadlineReached; None when nothing is timed."""
        self.phase: Phase = "idle"
        self.node_id: str | None = None
        self._playing: int | None = None
        self._after_play: str | None = None
        self._play_seq = 0
        self._request_seq = 0
        self._pending: int | None = None
        self._queue_request: int | None = None
        self._node_failures = 0
        self._digits = ""
        self._ticket_created = False
        self._ticket_unanswered = False
        """A work order was handed to the CRM bridge and its answer did not come in time: the
        bridge may still number and deliver it, so a hang-up files no partial one beside it."""
        self._agent_answered = False
        self._agent_ringing = False
        """The transport said the accepting agent's phone rings and has not answered yet."""
        self._typeahead: list[str] = []
        self._steps = 0
        self._confirming = False
        """At an address capture node: the address is being read back for a yes or no."""
        self._unsure_choice: Choice | None = None
        """At a menu: a choice heard with low confidence, waiting for the caller's yes or no."""
        self._heard: dict[str, IntentResult] = {}
        """Intents of the texts of the speech event being handled (classified once)."""

    # ----------------------------------------------------------------- public surface

    @property
    def ended(self) -> bool:
        """True once the call is over; later events are ignored."""
        return self.phase == "ended"

    @property
    def playing(self) -> bool:
        """Whether a Play is outstanding."""
        return self._playing is not None

    def handle(self, event: ev.Event, now: float) -> list[act.Action]:
        """Feed one event; return the actions to carry out, in order."""
        if self.phase == "ended":
            return []
        if self.phase == "idle" and not isinstance(event, (ev.CallStarted, ev.CallerHungUp)):
            return []  # nothing is running yet: keys, replies and timers mean nothing
        self._steps = 0
        out: list[act.Action] = []
        match event:
            case ev.CallStarted():
                if self.phase == "idle":
                    self._enter(self.flow.flow.start, now, out)
            case ev.CallerHungUp():
                self._on_hangup(event, now, out)
            case ev.PromptFinished():
                self._on_prompt_finished(event, now, out)
            case ev.DeadlineReached():
                self._on_deadline(event, now, out)
            case ev.DigitPressed():
                self._on_digit(event, now, out)
            case ev.SpeechRecognized():
                self._on_speech(event, now, out)
            case ev.SpeechStarted():
                self._on_speech_started(now, out)
            case ev.LookupResult():
                self._on_lookup(event, now, out)
            case ev.TicketCreated():
                self._on_ticket(event, now, out)
            case ev.ServiceDone():
                self._on_service_done(event, now, out)
            case ev.ServiceFailed():
                self._on_service_failed(event, now, out)
            case ev.QueuePosition():
                self._on_queue_position(event, now, out)
            case ev.AgentConnected():
                self._on_agent_connected(event, now, out)
            case ev.AgentRinging():
                self._on_agent_ringing(event)
            case ev.AgentAnswered():
                if event.request_id == self._queue_request:
                    self._agent_ringing = False
            case ev.AgentDisconnected():
                self._on_agent_disconnected(event, now, out)
            case ev.QueueTransferred():
                self._on_queue_transferred(event, now, out)
            case ev.CallTransferred():
                self._on_transferred(event, out)
            case ev.AgentUnreachable():
                self._on_agent_unreachable(event, now, out)
            case ev.QueueExited():
                self._on_queue_exited(event, now, out)
        return out

    # ----------------------------------------------------------------- event handlers

    def _on_hangup(self, event: ev.CallerHungUp, now: float, out: list[act.Action]) -> None:
        if self.phase == "queued" and self._queue_request is not None:
            out.append(act.LeaveQueue(self._queue_request, "abandoned"))
        elif self.phase == "bridged" and self._queue_request is not None and self._agent_ringing:
            # Nobody answered the caller yet: an abandon, and the agent is free again.
            out.append(act.LeaveQueue(self._queue_request, "abandoned_ringing"))
        elif self.phase == "bridged" and self._queue_request is not None:
            # Routing must hear it: the agent goes to wrap-up, the call is complete.
            out.append(act.LeaveQueue(self._queue_request, "hangup"))
        pending = self.slots.get("pending_ticket")
        in_flight = self.phase == "service" and isinstance(self._node(), TicketNode)
        served = (self._agent_answered or self.phase == "bridged") and not self._agent_ringing
        handed_over = self._ticket_created or self._ticket_unanswered
        if pending and not handed_over and not in_flight and not served:
            # (A CreateTicket already handed over is the CRM bridge's to deliver, even one whose
            # answer timed out; a second, partial one would be a duplicate work order.)
            # A caller who reported a hazard or a fault and hung up before the work order was
            # made must still leave one: the crew needs it, and the caller can be called back.
            priority = _int(self.slots.get("pending_priority"), PARTIAL_TICKET_DEFAULT_PRIORITY)
            out.append(
                act.CreateTicket(
                    self._next_request(),
                    pending,
                    priority,
                    dict(self.slots),
                    tuple(self.path),
                    complete=False,
                )
            )
            self.outcomes.append(Outcome("ticket", f"{pending} (partial)"))
        # A caller who hangs up during the goodbye of a finished call, or after talking to an
        # agent, did not abandon anything.
        if not served and self.phase != "ending":
            self.outcomes.append(Outcome("abandoned", self.node_id or ""))
        self._finish()

    def _on_prompt_finished(
        self, event: ev.PromptFinished, now: float, out: list[act.Action]
    ) -> None:
        if event.play_id != self._playing:
            return  # a stopped or superseded playback
        self._playing = None
        node = self._node()
        if self.phase == "prompting":
            then = self._after_play
            self._after_play = None
            if then is None and isinstance(node, PlayNode):
                then = node.next
            if then is not None:
                self._enter(then, now, out)
        elif self.phase == "collecting":
            assert isinstance(node, CollectingNode)
            self.deadline = now + self._timeout(node)
        elif self.phase == "ending":
            out.append(act.Hangup("completed"))
            self._finish()

    def _on_deadline(self, event: ev.DeadlineReached, now: float, out: list[act.Action]) -> None:
        if self.deadline is None or now < self.deadline:
            return
        self.deadline = None
        node = self._node()
        if self.phase == "collecting":
            if isinstance(node, DigitsNode) and self._digits:
                if len(self._digits) >= node.min_digits:
                    self._accept_digits(node, self._digits, now, out)
                else:
                    self._fail("no_match", now, out)
            else:
                self._fail("no_input", now, out)
        elif self.phase == "service":
            self._pending = None
            if isinstance(node, TicketNode):
                self._ticket_unanswered = True
            self._service_error(node, "timeout", now, out)
        elif self.phase == "queued":
            assert isinstance(node, EnqueueNode)
            if self._playing is None and node.hold_prompts:
                self._play(node.hold_prompts, out, barge_in=True)
            self.deadline = now + node.hold_interval

    def _on_digit(self, event: ev.DigitPressed, now: float, out: list[act.Action]) -> None:
        node = self._node()
        digit = event.digit
        if self.phase == "queued":
            assert isinstance(node, EnqueueNode)
            if digit == node.callback_key and node.on_callback and self._queue_request is not None:
                self._stop_playback(out)
                out.append(act.LeaveQueue(self._queue_request, "callback"))
                self._queue_request = None
                self._enter(node.on_callback, now, out)
            return
        if self.phase == "prompting" and isinstance(node, PlayNode):
            # Type-ahead: a caller who knows the menu presses during the greeting; the keys
            # are kept and given to the next menu (bounded, like a phone's key buffer).
            if len(self._typeahead) < TYPEAHEAD_MAX:
                self._typeahead.append(digit)
            return
        if self.phase != "collecting":
            return
        assert isinstance(node, CollectingNode)
        if self._playing is not None:
            if not node.barge_in:
                return
            self._stop_playback(out)
        self.deadline = None
        repeat = self.flow.flow.repeat_key
        if isinstance(node, MenuNode):
            if digit == repeat:
                self._reprompt(node, None, now, out)
                return
            if self._unsure_choice is not None:
                self._choice_confirmed(digit == "1" if digit in "12" else None, now, out)
                return
            choice = _choice_by_key(node.choices, digit) if node.input != "speech" else None
            if choice is None and node.globals:
                choice = _choice_by_key(self.flow.flow.global_choices, digit)
            if choice is None:
                self._fail("no_match", now, out)
            else:
                self._choose(choice, now, out)
        elif isinstance(node, SurveyNode):
            if digit == repeat:
                self._reprompt(node, None, now, out)
            elif digit in "123456789" and 1 <= int(digit) <= node.scale:
                self._rate(node, int(digit), now, out)
            else:
                self._fail("no_match", now, out)
        elif isinstance(node, DigitsNode):
            self._digit_into_string(node, digit, now, out)
        elif self._confirming:
            if digit == repeat:
                self._reprompt(node, None, now, out)
            elif digit in "12":
                self._confirmed(node, digit == "1", now, out)
            else:
                self._fail("no_match", now, out)
        elif digit == node.skip_key:
            out.append(act.StopCollecting())
            self._enter(node.fallback, now, out)
        elif digit == repeat:
            self._reprompt(node, None, now, out)
        else:
            self.deadline = now + self._timeout(node)

    def _digit_into_string(
        self, node: DigitsNode, digit: str, now: float, out: list[act.Action]
    ) -> None:
        if digit.isdigit():
            self._digits += digit
            if len(self._digits) >= node.max_digits:
                self._accept_digits(node, self._digits, now, out)
            else:
                self.deadline = now + (
                    node.inter_digit_timeout or self.flow.flow.inter_digit_timeout
                )
        elif digit == node.terminator:
            if not self._digits and node.on_skip is not None:
                out.append(act.StopCollecting())
                self._enter(node.on_skip, now, out)
            elif len(self._digits) >= node.min_digits:
                self._accept_digits(node, self._digits, now, out)
            else:
                self._fail("no_input" if not self._digits else "no_match", now, out)
        elif digit == self.flow.flow.repeat_key:
            self._reprompt(node, None, now, out)  # "*" clears what was typed and starts over
        else:
            # A-D keys carry nothing here; keep waiting for the rest of the string.
            self.deadline = now + (node.inter_digit_timeout or self.flow.flow.inter_digit_timeout)

    def _on_speech_started(self, now: float, out: list[act.Action]) -> None:
        """Barge-in on the first sound of speech, not seconds later when the words are known."""
        if self.phase != "collecting":
            return
        node = self._node()
        assert isinstance(node, CollectingNode)
        if self._playing is not None:
            if not node.barge_in:
                return
            self._stop_playback(out)
        # A long address must not run into the no-input timer while it is being said.
        self.deadline = now + SPEECH_RESULT_WAIT

    def _on_speech(self, event: ev.SpeechRecognized, now: float, out: list[act.Action]) -> None:
        if self.phase != "collecting":
            return
        node = self._node()
        assert isinstance(node, CollectingNode)
        if self._playing is not None:
            if not node.barge_in:
                return
            self._stop_playback(out)
        self.deadline = None
        text = event.text.strip()
        if not text or event.confidence < self.context.min_confidence:
            self._fail("no_match" if text else "no_input", now, out)
            return
        hypotheses = (text, *event.alternatives)
        self._heard = {}
        urgent = self._global_by_speech(node, hypotheses, preempt=True)
        if urgent is not None:
            self._keep_address(text)  # "电线掉了 历下区经十路88号": the ticket needs it
            self._choose(urgent, now, out)
            return
        global_choice = self._global_by_speech(node, hypotheses, preempt=False)
        if isinstance(node, CaptureNode):
            if global_choice is not None:
                self._choose(global_choice, now, out)
                return
            self.slots[f"{node.slot}_confidence"] = f"{event.confidence:.2f}"
            if self._is_address(node):
                self._address_said(node, hypotheses, now, out)
                return
            self.slots[node.slot] = text
            out.append(act.StopCollecting())
            self._enter(node.next, now, out)
        elif isinstance(node, DigitsNode):
            digits = next((d for h in hypotheses if (d := spoken_digits(h))), None)
            if digits is not None and node.speech and self._digits_ok(node, digits):
                self._accept_digits(node, digits, now, out)
            elif global_choice is not None:
                self._choose(global_choice, now, out)
            else:
                self._fail("no_match", now, out)
        elif isinstance(node, SurveyNode):
            score = _match_first(hypotheses, node.say)
            if score is not None and score.isdigit() and 1 <= int(score) <= node.scale:
                self._rate(node, int(score), now, out)
            else:
                self._fail("no_match", now, out)
        else:
            if self._unsure_choice is not None:
                answer = self._first_intent(hypotheses, ("yes", "no"))
                if answer is not None:
                    self._choice_confirmed(answer == "yes", now, out)
                    return
                self._unsure_choice = None  # another choice said outright: take it as said
            choice = self._menu_by_intent(node, hypotheses)
            if choice is None and node.input != "dtmf":
                options = {str(i): c.say for i, c in enumerate(node.choices) if c.say}
                key = _match_first(hypotheses, options)
                choice = node.choices[int(key)] if key is not None else None
            choice = choice or global_choice
            if choice is not None and event.confidence < self.flow.flow.confirm_below:
                self._keep_address(text)
                self._ask_choice(node, choice, text, now, out)
            elif choice is not None:
                self._keep_address(text)  # "我家停电了 历下区经十路88号": not asked again
                self._choose(choice, now, out)
            else:
                self._fail("no_match", now, out)

    def _awaiting(self, request_id: int, kind: type) -> bool:
        """Whether a reply with this id, for this kind of node, is what the dialog waits for."""
        if self.phase != "service" or request_id != self._pending:
            return False
        return isinstance(self._node(), kind)

    def _on_lookup(self, event: ev.LookupResult, now: float, out: list[act.Action]) -> None:
        if not self._awaiting(event.request_id, LookupNode):
            return
        node = self._node()
        assert isinstance(node, LookupNode)
        self._pending = None
        self.deadline = None
        for key, value in event.data.items():
            self.slots[f"{node.save}.{key}"] = value
        self._stop_playback(out)
        target = {"found": node.on_found, "not_found": node.on_not_found}.get(
            event.status, node.on_error
        )
        self._enter(target, now, out)

    def _on_ticket(self, event: ev.TicketCreated, now: float, out: list[act.Action]) -> None:
        if not self._awaiting(event.request_id, TicketNode):
            return
        node = self._node()
        assert isinstance(node, TicketNode)
        self._pending = None
        self.deadline = None
        self._stop_playback(out)
        self._ticket_created = True
        self.slots["ticket_id"] = event.ticket_id
        self.outcomes.append(Outcome("ticket", node.ticket_type))
        self.phase = "prompting"
        if not self._play(node.prompts, out, barge_in=False, then=node.next):
            self._enter(node.next, now, out)

    def _on_service_done(self, event: ev.ServiceDone, now: float, out: list[act.Action]) -> None:
        if not self._awaiting(event.request_id, CallbackNode):
            return
        node = self._node()
        assert isinstance(node, CallbackNode)
        self._pending = None
        self.deadline = None
        self.outcomes.append(Outcome("callback", self.slots.get("queue.skill", "general")))
        self._enter(node.next, now, out)

    def _on_service_failed(
        self, event: ev.ServiceFailed, now: float, out: list[act.Action]
    ) -> None:
        if event.request_id == self._queue_request and self.phase == "queued":
            node = self._node()
            assert isinstance(node, EnqueueNode)
            self._queue_request = None
            self.slots["queue.exit_reason"] = event.reason
            self._stop_playback(out)
            out.append(act.StopCollecting())
            self._enter(node.on_exit, now, out)
            return
        if self.phase != "service" or event.request_id != self._pending:
            return
        self._pending = None
        self.deadline = None
        self._service_error(self._node(), event.reason, now, out)

    def _on_queue_position(
        self, event: ev.QueuePosition, now: float, out: list[act.Action]
    ) -> None:
        if self.phase != "queued" or event.request_id != self._queue_request:
            return
        node = self._node()
        assert isinstance(node, EnqueueNode)
        self.slots["queue.position"] = str(event.position)
        if event.wait_seconds is not None:
            self.slots["queue.wait_minutes"] = str(max(1, -(-event.wait_seconds // 60)))
        if node.position_prompts and self._playing is None:
            self._play(node.position_prompts, out, barge_in=True)

    def _on_agent_connected(
        self, event: ev.AgentConnected, now: float, out: list[act.Action]
    ) -> None:
        if self.phase != "queued" or event.request_id != self._queue_request:
            return
        self._stop_playback(out)
        out.append(act.StopCollecting())
        out.append(act.Transfer(event.agent_id, event.contact, event.request_id))
        self._agent_answered = True
        self.slots["agent_id"] = event.agent_id
        self.phase = "bridged"
        self.deadline = None

    def _on_agent_ringing(self, event: ev.AgentRinging) -> None:
        if self.phase == "bridged" and event.request_id == self._queue_request:
            self._agent_ringing = True

    def _on_agent_disconnected(
        self, event: ev.AgentDisconnected, now: float, out: list[act.Action]
    ) -> None:
        if self.phase != "bridged" or event.request_id != self._queue_request:
            return
        self._agent_ringing = False
        node = self._node()
        assert isinstance(node, EnqueueNode)
        # The agent leg may have ended on the transport's side (the agent hung up the phone):
        # routing hears it here. When routing itself said so, this is a no-op there.
        out.append(act.LeaveQueue(event.request_id, "agent_finished"))
        self._queue_request = None
        if node.after is not None and not event.hang_up:
            self._enter(node.after, now, out)
        else:
            self.outcomes.append(Outcome("hangup", "agent_finished"))
            out.append(act.Hangup("completed"))
            self._finish()

    def _on_queue_transferred(
        self, event: ev.QueueTransferred, now: float, out: list[act.Action]
    ) -> None:
        if self.phase != "bridged" or event.request_id != self._queue_request:
            return
        node = self._node()
        assert isinstance(node, EnqueueNode)
        # Routing has the caller in line in the new queue already (the same request, so its
        # later events reach this call). The IVR speaks to the caller again, which ends the
        # agent's leg; they stay served (no partial ticket, no abandon if they hang up now).
        self.phase = "queued"
        self.slots.pop("agent_id", None)
        self.slots["queue.skill"] = event.skill
        self.outcomes.append(Outcome("enqueue", f"{event.skill} (transferred)"))
        self._play((*node.prompts, *node.hold_prompts), out, barge_in=True)
        if node.callback_key is not None:
            out.append(act.StartCollecting(dtmf=True, speech=False, max_digits=1))
        self.deadline = now + node.hold_interval

    def _on_transferred(self, event: ev.CallTransferred, out: list[act.Action]) -> None:
        if self.phase != "bridged" or event.request_id != self._queue_request:
            return
        # The caller talks to the agent without the IVR now: no survey after it, and routing
        # keeps the call connected until the agent's desktop completes it (the IVR cannot see
        # the agent hang up); LeaveQueue(transferred) only lets go of it here.
        out.append(act.LeaveQueue(event.request_id, "transferred"))
        self._queue_request = None
        self.outcomes.append(Outcome("transferred", self.slots.get("agent_id", "")))
        out.append(act.Hangup("transferred"))
        self._finish()

    def _on_agent_unreachable(
        self, event: ev.AgentUnreachable, now: float, out: list[act.Action]
    ) -> None:
        if self.phase != "bridged" or event.request_id != self._queue_request:
            return
        node = self._node()
        assert isinstance(node, EnqueueNode)
        # Routing puts the caller back at their place; the caller is on hold again meanwhile,
        # and may still choose a callback.
        out.append(act.ReturnToQueue(event.request_id, event.agent_id, event.reason))
        self.phase = "queued"
        self._agent_answered = False
        self._agent_ringing = False
        self.slots.pop("agent_id", None)
        if node.hold_prompts:
            self._play(node.hold_prompts, out, barge_in=True)
        if node.callback_key is not None:
            out.append(act.StartCollecting(dtmf=True, speech=False, max_digits=1))
        self.deadline = now + node.hold_interval

    def _on_queue_exited(self, event: ev.QueueExited, now: float, out: list[act.Action]) -> None:
        if self.phase != "queued" or event.request_id != self._queue_request:
            return
        node = self._node()
        assert isinstance(node, EnqueueNode)
        self._queue_request = None
        self.slots["queue.exit_reason"] = event.reason
        self._stop_playback(out)
        out.append(act.StopCollecting())
        self._enter(node.on_exit, now, out)

    # ----------------------------------------------------------------- node entry

    def _enter(
        self, node_id: str, now: float, out: list[act.Action], lead: Sequence[PromptItem] = ()
    ) -> None:
        self._steps += 1
        if self._steps > MAX_AUTO_STEPS:
            self.outcomes.append(Outcome("error", f"flow loops without input at {node_id}"))
            out.append(act.Hangup("flow_error"))
            self._finish()
            return
        node = self.flow.node(node_id)
        self.node_id = node_id
        self.path.append(node_id)
        self._node_failures = 0
        self._digits = ""
        self.deadline = None
        self._pending = None
        self._confirming = False
        self._unsure_choice = None
        if isinstance(node, PlayNode):
            self.phase = "prompting"
            if not self._play((*lead, *node.prompts), out, barge_in=node.barge_in):
                self._enter(node.next, now, out)
        elif isinstance(node, CaptureNode) and not self.context.speech_available:
            self._enter(node.fallback, now, out, lead)
        elif isinstance(node, CaptureNode) and self._address_known(node):
            # Said already (at the main menu, with the problem): confirmed if need be, never
            # asked for again.
            if self.slots.get(f"{node.slot}.status") == "unsure" and node.confirm_prompts:
                self.phase = "collecting"
                self._read_back(node, now, out, lead)
            else:
                self._enter(node.next, now, out, lead)
        elif isinstance(node, MenuNode) and not self._menu_usable(node):
            self._escalate("no_usable_input", now, out)
        elif isinstance(node, CollectingNode):
            self.phase = "collecting"
            self._play((*lead, *node.prompts), out, barge_in=node.barge_in)
            out.append(self._collecting(node))
            if self._playing is None:
                self.deadline = now + self._timeout(node)
            if self._typeahead:
                keys, self._typeahead = self._typeahead, []
                for key in keys:
                    if self.ended:
                        break
                    self._on_digit(ev.DigitPressed(key), now, out)
        elif isinstance(node, BranchNode):
            self._enter(self._branch(node), now, out, lead)
        elif isinstance(node, LookupNode):
            self._service_request(node.timeout, now)
            self._play((*lead, *node.prompts), out, barge_in=False)
            assert self._pending is not None
            params = {name: self.slots.get(slot, "") for name, slot in node.params.items()}
            out.append(act.Lookup(self._pending, node.service, params))
        elif isinstance(node, TicketNode):
            self._play(lead, out, barge_in=False)
            self._service_request(node.timeout, now)
            assert self._pending is not None
            out.append(
                act.CreateTicket(
                    self._pending,
                    node.ticket_type,
                    node.priority,
                    dict(self.slots),
                    tuple(self.path),
                )
            )
        elif isinstance(node, EnqueueNode):
            self._enqueue(node, now, out, lead)
        elif isinstance(node, CallbackNode):
            self._play(lead, out, barge_in=False)
            self._service_request(None, now)
            assert self._pending is not None
            number = self.slots.get(node.number_slot) or self.context.caller
            self.slots["callback_number"] = number
            skill = node.skill or self.slots.get("queue.skill") or "general"
            priority = (
                node.priority
                if node.priority is not None
                else _int(self.slots.get("queue.priority"), 0)
            )
            out.append(
                act.RequestCallback(self._pending, number, skill, priority, dict(self.slots))
            )
        else:
            assert isinstance(node, EndNode)
            self.outcomes.append(Outcome(node.outcome, node.kind or ""))
            self.phase = "ending"
            out.append(act.StopCollecting())
            if not self._play((*lead, *node.prompts), out, barge_in=False):
                out.append(act.Hangup("completed"))
                self._finish()

    def _enqueue(
        self, node: EnqueueNode, now: float, out: list[act.Action], lead: Sequence[PromptItem]
    ) -> None:
        self.phase = "queued"
        self._queue_request = self._next_request()
        self.slots["queue.skill"] = node.skill
        self.slots["queue.priority"] = str(node.priority)
        self.outcomes.append(Outcome("enqueue", f"{node.skill}/{node.priority}"))
        out.append(
            act.Enqueue(
                self._queue_request, node.skill, node.priority, node.min_level, dict(self.slots)
            )
        )
        self._play((*lead, *node.prompts), out, barge_in=node.barge_in)
        if node.callback_key is not None:
            out.append(act.StartCollecting(dtmf=True, speech=False, max_digits=1))
        self.deadline = now + node.hold_interval

    def _service_request(self, timeout: float | None, now: float) -> None:
        self.phase = "service"
        self._pending = self._next_request()
        self.deadline = now + (timeout or self.flow.flow.service_timeout)

    def _service_error(self, node: Node, reason: str, now: float, out: list[act.Action]) -> None:
        self.slots["service_error"] = reason
        self._stop_playback(out)
        if isinstance(node, (LookupNode, TicketNode, CallbackNode)):
            self._enter(node.on_error, now, out)

    def _branch(self, node: BranchNode) -> str:
        for cond in node.when:
            value = self.slots.get(cond.slot)
            if cond.present is not None:
                hit = bool(value) == cond.present
            elif cond.equals is not None:
                hit = value == cond.equals
            else:
                hit = value in (cond.one_of or ())
            if hit:
                return cond.goto
        return node.otherwise

    # ----------------------------------------------------------------- collecting

    def _phrases(self, choice: Choice) -> tuple[str, ...]:
        """What a caller may say for `choice`: its own phrases, then its intents' phrases."""
        if not choice.intents:
            return choice.say
        extra = self.understander.phrases(choice.intents)
        return choice.say + tuple(p for p in extra if p not in choice.say)

    def _collecting(self, node: CollectingNode) -> act.StartCollecting:
        speech = self.context.speech_available
        globals_ = self.flow.flow.global_choices
        # A grammar must hold every phrase the dialog acts on: a recognizer in grammar mode
        # can only say what is in it, so the intents' phrases go in with the choices' own.
        urgent = [p for c in globals_ if c.preempt for p in self._phrases(c)]
        others = (
            [p for c in globals_ if not c.preempt for p in self._phrases(c)] if node.globals else []
        )
        if isinstance(node, MenuNode) and self._unsure_choice is not None:
            yes_no = self.understander.phrases(("yes", "no"))
            return act.StartCollecting(dtmf=True, speech=speech, grammar=tuple(urgent) + yes_no)
        if isinstance(node, MenuNode):
            own = (
                [p for c in node.choices for p in self._phrases(c)] if node.input != "dtmf" else []
            )
            return act.StartCollecting(
                dtmf=node.input != "speech",
                speech=speech and node.input != "dtmf",
                grammar=tuple(urgent + own + others),
            )
        if isinstance(node, DigitsNode):
            return act.StartCollecting(
                dtmf=True,
                speech=speech and node.speech,
                max_digits=node.max_digits,
                terminator=node.terminator or "",
            )
        if isinstance(node, SurveyNode):
            own = [p for ps in node.say.values() for p in ps]
            return act.StartCollecting(
                dtmf=True, speech=speech and bool(own or urgent), grammar=tuple(urgent + own)
            )
        if self._confirming:
            # Free speech still: "不对，是历下区经十路八十八号" says the address again.
            return act.StartCollecting(dtmf=True, speech=speech)
        return act.StartCollecting(dtmf=node.skip_key is not None, speech=speech)

    def _menu_usable(self, node: MenuNode) -> bool:
        if node.input == "speech":
            return self.context.speech_available
        return True

    def _timeout(self, node: CollectingNode) -> float:
        return node.timeout or self.flow.flow.timeout

    def _ask_choice(
        self, node: MenuNode, choice: Choice, heard: str, now: float, out: list[act.Action]
    ) -> None:
        """A choice heard with low confidence: say back what was heard, ask yes or no."""
        self._unsure_choice = choice
        header = self.flow.flow
        self.deadline = None
        self._stop_playback(out)
        out.append(act.StopCollecting())
        items: list[act.PlayItem] = [act.PromptRef(p) for p in header.confirm_prompts]
        items.append(act.SpokenText(heard))
        items += [act.PromptRef(p) for p in header.confirm_question]
        self._play_seq += 1
        self._playing = self._play_seq
        self._after_play = None
        out.append(act.Play(self._play_seq, tuple(items), node.barge_in))
        out.append(self._collecting(node))

    def _choice_confirmed(self, right: bool | None, now: float, out: list[act.Action]) -> None:
        """The caller's answer to a choice said back: yes takes it, no (or a wrong key) asks
        the menu again as a no-match (two of them lead on to keys only or an agent)."""
        choice, self._unsure_choice = self._unsure_choice, None
        if right and choice is not None:
            self._choose(choice, now, out)
        else:
            self._fail("no_match", now, out)

    def _choose(self, choice: Choice, now: float, out: list[act.Action]) -> None:
        self.slots.update(choice.set)
        if choice.set.get("pending_ticket"):
            # A new report (a hazard said after a fault ticket or an agent call) needs its own
            # work order if the caller drops before it is made.
            self._ticket_created = False
            self._ticket_unanswered = False
            self._agent_answered = False
        out.append(act.StopCollecting())
        self._enter(choice.goto, now, out)

    def _rate(self, node: SurveyNode, score: int, now: float, out: list[act.Action]) -> None:
        self.slots["satisfaction"] = str(score)
        out.append(act.StopCollecting())
        out.append(act.RecordSurvey(self._next_request(), score, self.slots.get("agent_id", "")))
        self.outcomes.append(Outcome("survey", str(score)))
        self._enter(node.next, now, out)

    def _accept_digits(
        self, node: DigitsNode, digits: str, now: float, out: list[act.Action]
    ) -> None:
        if not self._digits_ok(node, digits):
            self._fail("no_match", now, out)
            return
        self.slots[node.slot] = digits
        out.append(act.StopCollecting())
        self._enter(node.next, now, out)

    def _digits_ok(self, node: DigitsNode, digits: str) -> bool:
        if not node.min_digits <= len(digits) <= node.max_digits:
            return False
        return node.pattern is None or re.fullmatch(node.pattern, digits) is not None

    def _global_by_speech(
        self, node: CollectingNode, hypotheses: Sequence[str], *, preempt: bool
    ) -> Choice | None:
        if not preempt and not node.globals:
            return None
        choices = self.flow.flow.global_choices
        options = {str(i): c.say for i, c in enumerate(choices) if c.say and c.preempt == preempt}
        key = _match_first(hypotheses, options)
        if key is not None:
            return choices[int(key)]
        return self._by_intent([c for c in choices if c.preempt == preempt], hypotheses)

    # ----------------------------------------------------------------- understanding

    def _intents(self, text: str) -> IntentResult:
        """The intents of one hypothesis, classified once per speech event."""
        if text not in self._heard:
            self._heard[text] = self.understander.classify(text)
        return self._heard[text]

    def _first_intent(self, hypotheses: Sequence[str], wanted: Collection[str]) -> str | None:
        """The best sure intent among `wanted`, from the first hypothesis that has one.

        All intents are ranked and then filtered, so a longer phrase of another intent still
        takes its words (欠费停电 is not a fault even where billing is not on offer).
        """
        if not wanted:
            return None
        for text in hypotheses:
            found = next((s.intent for s in self._intents(text).sure if s.intent in wanted), None)
            if found is not None:
                return found
        return None

    def _by_intent(self, choices: Sequence[Choice], hypotheses: Sequence[str]) -> Choice | None:
        """The first of `choices` that takes the intent said."""
        intent = self._first_intent(hypotheses, {i for c in choices for i in c.intents})
        return next((c for c in choices if intent in c.intents), None) if intent else None

    def _menu_by_intent(self, node: MenuNode, hypotheses: Sequence[str]) -> Choice | None:
        """A menu's own choice, or a universal one, by the intent said: ranked together, so
        "停电了 转人工" is the fault (priority), not the agent."""
        own = list(node.choices) if node.input != "dtmf" else []
        others = [c for c in self.flow.flow.global_choices if not c.preempt] if node.globals else []
        return self._by_intent([*own, *others], hypotheses)

    def _is_address(self, node: CaptureNode) -> bool:
        return node.slot == self.flow.flow.address_slot

    def _address_known(self, node: CaptureNode) -> bool:
        return self._is_address(node) and bool(self.slots.get(f"{node.slot}.status"))

    def _keep_address(self, text: str) -> None:
        """An address said at a menu goes to the flow's address slot (if it has one)."""
        slot = self.flow.flow.address_slot
        if slot is None:
            return
        understood = self.understander(text)
        if understood.address is not None:
            self._store_address(slot, understood)

    def _store_address(self, slot: str, understood: Understanding) -> None:
        address = understood.address
        assert address is not None
        self.slots[slot] = understood.text.strip()
        parts = {
            "province": address.province,
            "city": address.city,
            "district": address.district,
            "street": address.street,
            "number": address.number,
            "adcode": address.adcode,
            "confidence": f"{understood.confidence:.2f}",
            "readback": understood.readback,
            "corrections": "，".join(understood.corrections),
            "status": "unsure" if understood.needs_confirmation else "ok",
        }
        for part in ADDRESS_PARTS:
            self.slots[f"{slot}.{part}"] = parts[part]

    def _forget_address(self, slot: str) -> None:
        """The caller said the address read back is wrong: its parts go, the words stay (the
        agent and the CRM still see what was said)."""
        for part in ADDRESS_PARTS:
            self.slots.pop(f"{slot}.{part}", None)

    def _address_said(
        self, node: CaptureNode, hypotheses: Sequence[str], now: float, out: list[act.Action]
    ) -> None:
        """An answer at an address capture node: the address, or yes/no to the read-back."""
        text = hypotheses[0]
        if self._confirming:
            answer = self._first_intent(hypotheses, CONFIRM_INTENTS)
            understood = self.understander(text)
            if understood.address is not None and answer != "yes":
                # "不对，是历下区经十路八十八号": the address again, the old one was wrong.
                if self._rejected(node, now, out):
                    self._address_heard(node, understood, now, out)
            elif answer == "repeat":
                self._reprompt(node, None, now, out)
            elif answer in ("yes", "no"):
                self._confirmed(node, answer == "yes", now, out)
            else:
                self._fail("no_match", now, out)
            return
        understood = self.understander(text)
        if understood.address is None:
            self._fail("no_match", now, out)  # nothing like an address: ask again
            return
        self._address_heard(node, understood, now, out)

    def _address_heard(
        self, node: CaptureNode, understood: Understanding, now: float, out: list[act.Action]
    ) -> None:
        self._store_address(node.slot, understood)
        if understood.needs_confirmation and node.confirm_prompts:
            self._read_back(node, now, out)
        else:
            out.append(act.StopCollecting())
            self._enter(node.next, now, out)

    def _read_back(
        self, node: CaptureNode, now: float, out: list[act.Action], lead: Sequence[PromptItem] = ()
    ) -> None:
        """Read the address back and listen for 1/yes or 2/no."""
        self._confirming = True
        self.deadline = None
        self._stop_playback(out)
        out.append(act.StopCollecting())
        self._play((*lead, *node.confirm_prompts), out, barge_in=node.barge_in)
        out.append(self._collecting(node))
        if self._playing is None:
            self.deadline = now + self._timeout(node)

    def _confirmed(self, node: CaptureNode, right: bool, now: float, out: list[act.Action]) -> None:
        if right:
            self.slots[f"{node.slot}.status"] = "confirmed"
            out.append(act.StopCollecting())
            self._enter(node.next, now, out)
        elif self._rejected(node, now, out):
            self._reprompt(node, None, now, out)  # the capture's own prompt: say it again
            out.append(self._collecting(node))

    def _rejected(self, node: CaptureNode, now: float, out: list[act.Action]) -> bool:
        """Count a read-back the caller rejected; False when that was one too many (the call
        has gone on to the node's on_failure, or the flow's escalation)."""
        self._forget_address(node.slot)
        self._confirming = False
        self._node_failures += 1
        if self._node_failures >= (node.max_failures or self.flow.flow.max_failures):
            self._escalate("address_not_confirmed", now, out)
            return False
        out.append(act.StopCollecting())
        return True

    def _fail(
        self, kind: Literal["no_input", "no_match"], now: float, out: list[act.Action]
    ) -> None:
        node = self._node()
        assert isinstance(node, CollectingNode)
        self.failures[kind] += 1
        self._node_failures += 1
        limit = node.max_failures or self.flow.flow.max_failures
        if self._node_failures >= limit:
            self._escalate(kind, now, out)
            return
        header = self.flow.flow
        prompt = (
            (node.no_input_prompt or header.no_input_prompt)
            if kind == "no_input"
            else (node.no_match_prompt or header.no_match_prompt)
        )
        self._reprompt(node, prompt, now, out, keep_failures=True)

    def _reprompt(
        self,
        node: CollectingNode,
        lead: str | None,
        now: float,
        out: list[act.Action],
        *,
        keep_failures: bool = True,
    ) -> None:
        """Say the node's prompts again (after a failure, or on the repeat key).

        The failure count is kept: alternating "*" with bad input still escalates.
        """
        self._digits = ""
        self.deadline = None
        self._unsure_choice = None
        if not keep_failures:
            self._node_failures = 0
        self._stop_playback(out)
        prompts = node.prompts
        if isinstance(node, CaptureNode) and self._confirming:
            prompts = node.confirm_prompts  # "*" or silence during a read-back: read it again
        if not self._play(((lead,) if lead else ()) + tuple(prompts), out, barge_in=node.barge_in):
            self.deadline = now + self._timeout(node)  # nothing to say: the timer must still run

    def _escalate(self, reason: str, now: float, out: list[act.Action]) -> None:
        node = self._node()
        self.failures["escalated"] += 1
        self.slots["escalated"] = reason
        out.append(act.StopCollecting())
        target = getattr(node, "on_failure", None) or self.flow.flow.escalate
        # The "transferring you to an agent" prompt only when that is where the caller goes.
        prompt = self.flow.flow.escalate_prompt
        lead: tuple[str, ...] = (prompt,) if prompt and target == self.flow.flow.escalate else ()
        self._enter(target, now, out, lead)

    # ----------------------------------------------------------------- playback

    def _play(
        self,
        items: Sequence[PromptItem],
        out: list[act.Action],
        *,
        barge_in: bool,
        then: str | None = None,
    ) -> bool:
        """Queue a Play of the items; False when there is nothing to say."""
        resolved = tuple(r for item in items for r in self._resolve(item))
        if not resolved:
            return False
        self._play_seq += 1
        self._playing = self._play_seq
        self._after_play = then
        out.append(act.Play(self._play_seq, resolved, barge_in))
        return True

    def _stop_playback(self, out: list[act.Action]) -> None:
        if self._playing is not None:
            self._playing = None
            out.append(act.StopPlayback())

    def _resolve(self, item: PromptItem) -> list[act.PlayItem]:
        if isinstance(item, str):
            return [act.PromptRef(item)]
        return self._readback(item)

    def _readback(self, item: Readback) -> list[act.PlayItem]:
        value = self.slots.get(item.slot, "")
        if not value:
            self.warnings.append(f"readback of empty slot {item.slot!r} at {self.node_id}")
            return []
        try:
            if item.kind == "text":
                return [act.SpokenText(value)]
            ids = _READERS[item.kind](value)
        except (ValueError, ArithmeticError) as exc:
            self.warnings.append(f"cannot read back {item.slot}={value!r} as {item.kind}: {exc}")
            return [act.SpokenText(value)]
        return [act.PromptRef(i) for i in ids]

    # ----------------------------------------------------------------- helpers

    def _node(self) -> Node:
        assert self.node_id is not None
        return self.flow.node(self.node_id)

    def _next_request(self) -> int:
        self._request_seq += 1
        return self._request_seq

    def _finish(self) -> None:
        self.phase = "ended"
        self.deadline = None
        self._playing = None
        self._pending = None


_READERS: Mapping[str, Callable[[str], list[str]]] = {
    "digits": readback.digits,
    "number": lambda v: readback.number(int(v)),
    "amount": readback.amount,
    "date": readback.date,
    "minutes": lambda v: readback.minutes(int(v)),
}


def _choice_by_key(choices: Sequence[Choice], digit: str) -> Choice | None:
    return next((c for c in choices if c.key == digit), None)


def _match_first(hypotheses: Sequence[str], options: Mapping[str, Sequence[str]]) -> str | None:
    if not options:
        return None
    for text in hypotheses:
        match = match_phrases(text, options)
        if match is not None:
            return match.key
    return None


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default
