"""A Driver that plays the transport and the services around one Dialog, and a walk to every node.

The dialog is pure (CONVENTIONS 1), so a test is a script of events on a fake clock. The Driver
keeps the clock, acknowledges prompts when asked, and answers the last service request by its
request id; `walk_to(node_id)` drives a fresh call along a known path to any node of the shipped
flow, so retry, hang-up and garbage tests can start anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pytest

import ivr
from ivr.dialog import actions as act
from ivr.dialog import events as ev
from ivr.dialog.engine import CallContext, Dialog
from ivr.flow.model import Flow, load_flow
from ivr.settings import SHIPPED_FLOW
from speech.understand import Understander

SHIPPED_FLOW_PATH = Path(ivr.__file__).parent / SHIPPED_FLOW
CALLER = "13812345678"

A = TypeVar("A", bound=act.Action)

LOOKUP_DATA: dict[str, dict[str, str]] = {
    "outage_by_address": {
        "area": "清华东路一带",
        "cause": "线路检修",
        "restore_at": "今天下午五点",
    },
    "bill_summary": {"balance": "123.45", "due_date": "2026-11-27"},
    "ticket_status": {"status_text": "抢修人员正在赶往现场"},
}
"""What a `found` lookup answers in walks, by service."""


class Driver:
    """One call: a Dialog, a fake clock, and the transport's view of playback and requests."""

    def __init__(
        self,
        flow: Flow,
        *,
        speech: bool = False,
        caller: str = CALLER,
        min_confidence: float = 0.5,
        understander: Understander | None = None,
    ) -> None:
        self.dialog = Dialog(
            flow,
            CallContext(
                "test-call",
                caller,
                speech_available=speech,
                min_confidence=min_confidence,
            ),
            understander,
        )
        self.now = 0.0
        self.actions: list[act.Action] = []
        """Every action of the call so far, in order."""
        self.play_id: int | None = None
        """The Play the transport is playing (None once finished or stopped)."""

    # ------------------------------------------------------------------ feeding events

    def send(self, event: ev.Event) -> list[act.Action]:
        """Feed one event at the current time; track playback as a transport would."""
        if isinstance(event, ev.PromptFinished) and event.play_id == self.play_id:
            self.play_id = None
        out = self.dialog.handle(event, self.now)
        self.actions.extend(out)
        for action in out:
            if isinstance(action, act.Play):
                self.play_id = action.play_id
            elif isinstance(action, (act.StopPlayback, act.Hangup)):
                self.play_id = None
        if self.dialog.ended:
            self.play_id = None
        assert self.dialog.playing == (self.play_id is not None), "playback state diverged"
        return out

    def start(self) -> list[act.Action]:
        return self.send(ev.CallStarted())

    def finish_prompts(self) -> list[act.Action]:
        """Report every outstanding Play as finished, including Plays those completions start."""
        out: list[act.Action] = []
        for _ in range(50):
            if self.play_id is None:
                return out
            out += self.send(ev.PromptFinished(self.play_id))
        raise AssertionError("prompts keep coming: the flow plays in a loop")

    def press(self, keys: str) -> list[act.Action]:
        """Press keys one by one, without time passing."""
        out: list[act.Action] = []
        for key in keys:
            out += self.send(ev.DigitPressed(key))
        return out

    def say(
        self, text: str, confidence: float = 0.9, alternatives: tuple[str, ...] = ()
    ) -> list[act.Action]:
        return self.send(ev.SpeechRecognized(text, confidence, alternatives))

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def tick(self) -> list[act.Action]:
        """Report DeadlineReached at the current time, due or not."""
        return self.send(ev.DeadlineReached())

    def timeout(self) -> list[act.Action]:
        """Let time run to the dialog's deadline and report it."""
        assert self.dialog.deadline is not None, "nothing is timed"
        self.now = max(self.now, self.dialog.deadline)
        return self.send(ev.DeadlineReached())

    def hang_up(self) -> list[act.Action]:
        return self.send(ev.CallerHungUp())

    # ------------------------------------------------------------------ answering services

    def last(self, kind: type[A]) -> A:
        """The last action of this type in the call."""
        for action in reversed(self.actions):
            if isinstance(action, kind):
                return action
        raise AssertionError(f"no {kind.__name__} in the call")

    def _request_id(self) -> int:
        requests = (act.Lookup, act.CreateTicket, act.RequestCallback)
        for action in reversed(self.actions):
            if isinstance(action, requests):
                return action.request_id
        raise AssertionError("no service request in the call")

    def lookup(self, status: ev.ServiceStatus, **data: str) -> list[act.Action]:
        request = self.last(act.Lookup)
        if status == "found" and not data:
            data = LOOKUP_DATA.get(request.service, {})
        return self.send(ev.LookupResult(request.request_id, status, data))

    def ticket(self, ticket_id: str) -> list[act.Action]:
        return self.send(ev.TicketCreated(self.last(act.CreateTicket).request_id, ticket_id))

    def done(self) -> list[act.Action]:
        return self.send(ev.ServiceDone(self._request_id()))

    def fail(self, reason: str = "crm_down") -> list[act.Action]:
        return self.send(ev.ServiceFailed(self._request_id(), reason))

    def fail_queue(self, reason: str = "queue_full") -> list[act.Action]:
        return self.send(ev.ServiceFailed(self.last(act.Enqueue).request_id, reason))

    def position(self, position: int, wait_seconds: int | None = None) -> list[act.Action]:
        return self.send(
            ev.QueuePosition(self.last(act.Enqueue).request_id, position, wait_seconds)
        )

    def connect(self, agent_id: str = "A1001", contact: str = "") -> list[act.Action]:
        return self.send(ev.AgentConnected(self.last(act.Enqueue).request_id, agent_id, contact))

    def disconnect(self) -> list[act.Action]:
        return self.send(ev.AgentDisconnected(self.last(act.Enqueue).request_id))

    def unreachable(self, agent_id: str = "A1001", why: str = "486 Busy Here") -> list[act.Action]:
        return self.send(ev.AgentUnreachable(self.last(act.Enqueue).request_id, agent_id, why))

    def exit_queue(self, reason: str = "max_wait") -> list[act.Action]:
        return self.send(ev.QueueExited(self.last(act.Enqueue).request_id, reason))

    # ------------------------------------------------------------------ reading actions

    @staticmethod
    def heard(actions: Iterable[act.Action]) -> list[str | act.SpokenText]:
        """What the caller hears, in order: prompt ids, and SpokenText for TTS items."""
        return [
            item.prompt_id if isinstance(item, act.PromptRef) else item
            for action in actions
            if isinstance(action, act.Play)
            for item in action.items
        ]

    @staticmethod
    def of(actions: Iterable[act.Action], kind: type[A]) -> list[A]:
        return [a for a in actions if isinstance(a, kind)]

    # ------------------------------------------------------------------ scripted walks

    def run(self, steps: Iterable[str]) -> None:
        """Carry out walk steps: start, finish (all prompts), ack (one prompt), press KEYS,
        say TEXT, lookup STATUS, ticket ID, done, fail, exit, connect, disconnect."""
        for step in steps:
            verb, _, arg = step.partition(" ")
            match verb:
                case "start":
                    self.start()
                case "finish":
                    self.finish_prompts()
                case "ack":
                    assert self.play_id is not None, "nothing is playing"
                    self.send(ev.PromptFinished(self.play_id))
                case "press":
                    self.press(arg)
                case "say":
                    self.say(arg)
                case "lookup":
                    self.lookup(arg)  # type: ignore[arg-type]
                case "ticket":
                    self.ticket(arg)
                case "done":
                    self.done()
                case "fail":
                    self.fail()
                case "exit":
                    self.exit_queue()
                case "connect":
                    self.connect()
                case "disconnect":
                    self.disconnect()
                case _:
                    raise ValueError(f"unknown walk step {step!r}")


# A path to every node of the shipped flow, with speech on. "@node" first repeats that node's
# path. A walk ends *at* the node: a collecting node with its prompts finished (the no-input
# timer running), a play or end node still playing, a service node with its request unanswered,
# an enqueue node queued with its announcement finished.
PATHS: dict[str, tuple[str, ...]] = {
    "welcome": ("start",),
    "main_menu": ("@welcome", "finish"),
    # safety hazard: key 1 queues at once; the safety advice plays in the queue
    "hazard_queue": ("@main_menu", "press 1", "finish"),
    "hazard_ticket": ("@hazard_queue", "exit"),
    "hazard_recorded": ("@hazard_ticket", "fail"),
    # 故障报修
    "fault_account": ("@main_menu", "press 2", "finish"),
    "fault_account_confirm": ("@fault_account", "press 1234567890123", "finish"),
    "fault_address": ("@fault_account_confirm", "press 1", "finish"),
    "fault_outage_lookup": ("@fault_address", "say 北京市海淀区清华东路十七号"),
    "fault_outage_known": ("@fault_outage_lookup", "lookup found", "finish"),
    "goodbye_outage": ("@fault_outage_known", "press 2"),
    "fault_outage_ticket": ("@fault_outage_known", "press 1"),
    "fault_ticket": ("@fault_outage_lookup", "lookup not_found"),
    "fault_queue": ("@fault_ticket", "ticket 20261127", "finish"),
    # billing
    "billing_menu": ("@main_menu", "press 3", "finish"),
    "billing_account": ("@billing_menu", "press 1", "finish"),
    "billing_account_confirm": ("@billing_account", "press 1234567890123", "finish"),
    "bill_lookup": ("@billing_account_confirm", "press 1"),
    "bill_report": ("@bill_lookup", "lookup found", "finish"),
    "goodbye_bill": ("@bill_report", "press 1"),
    "account_not_found": ("@bill_lookup", "lookup not_found", "finish"),
    "billing_unavailable": ("@bill_lookup", "lookup error"),
    "billing_queue": ("@billing_menu", "press 2", "finish"),
    # new connection
    "new_connection_info": ("@main_menu", "press 4", "finish"),
    "new_connection_queue": ("@new_connection_info", "press 1", "finish"),
    "new_connection_ticket": ("@new_connection_info", "press 2"),
    "goodbye_new_connection": ("@new_connection_info", "press 3"),
    # complaints
    "complaint_menu": ("@main_menu", "press 5", "finish"),
    "complaint_queue": ("@complaint_menu", "press 1", "finish"),
    "report_queue": ("@complaint_menu", "press 2", "finish"),
    "suggestion_queue": ("@complaint_menu", "press 3", "finish"),
    # ticket status
    "ticket_number": ("@main_menu", "press 6", "finish"),
    "ticket_status_lookup": ("@ticket_number", "press 20261127#"),
    "ticket_status_report": ("@ticket_status_lookup", "lookup found", "finish"),
    "goodbye_status": ("@ticket_status_report", "press 1"),
    "ticket_not_found": ("@ticket_status_lookup", "lookup not_found", "finish"),
    "status_unavailable": ("@ticket_status_lookup", "lookup error"),
    # agents, callback, survey
    "agent_general": ("@main_menu", "press 0", "finish"),
    "queue_busy_menu": ("@agent_general", "exit", "finish"),
    "leave_message_ticket": ("@queue_busy_menu", "press 2"),
    "goodbye_sorry": ("@leave_message_ticket", "fail"),
    "callback_confirm": ("@agent_general", "press 9", "finish"),
    "callback_number": ("@callback_confirm", "press 2", "finish"),
    "callback_number_confirm": ("@callback_number", "press 13912345678#", "finish"),
    "callback_register": ("@callback_confirm", "press 1"),
    "callback_done": ("@callback_register", "done"),
    "survey": ("@agent_general", "connect", "disconnect", "finish"),
    "goodbye_thanks": ("@survey", "press 5"),
    "goodbye": ("@new_connection_ticket", "ticket 20261127", "ack"),
}


def path_steps(node_id: str) -> list[str]:
    """The full list of steps to reach a node (expanding "@node" prefixes)."""
    steps = list(PATHS[node_id])
    if steps and steps[0].startswith("@"):
        return [*path_steps(steps[0][1:]), *steps[1:]]
    return steps


@pytest.fixture(scope="session")
def flow() -> Flow:
    return load_flow(SHIPPED_FLOW_PATH)


@pytest.fixture(scope="session")
def make_driver(flow: Flow) -> Callable[..., Driver]:
    """`make_driver(speech=..., caller=..., min_confidence=..., understander=..., flow=...)`:
    a fresh call."""

    def make(**kwargs: Any) -> Driver:
        return Driver(kwargs.pop("flow", flow), **kwargs)

    return make


@pytest.fixture(scope="session")
def walk_to(make_driver: Callable[..., Driver]) -> Callable[..., Driver]:
    """`walk_to(node_id, speech=True)`: a fresh call driven to that node of the shipped flow.

    With `playing=True` a collecting node's own prompt is still playing.
    """

    def walk(node_id: str, *, speech: bool = True, playing: bool = False) -> Driver:
        driver = make_driver(speech=speech)
        steps = path_steps(node_id)
        if playing:
            assert steps[-1] == "finish", f"the walk to {node_id} does not end with its prompt"
            steps.pop()
        driver.run(steps)
        while playing and driver.dialog.node_id != node_id and driver.play_id is not None:
            driver.run(["ack"])  # e.g. the greeting before the main menu
        assert driver.dialog.node_id == node_id, (
            f"walk to {node_id} ended at {driver.dialog.node_id}"
        )
        return driver

    return walk


@pytest.fixture(scope="session")
def paths() -> dict[str, tuple[str, ...]]:
    return PATHS
