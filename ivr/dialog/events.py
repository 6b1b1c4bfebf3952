"""Events the outside world feeds into a dialog: what the caller did and what services answered."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class CallStarted:
    """The call was answered; the dialog greets the caller."""


@dataclass(frozen=True)
class DigitPressed:
    """One DTMF key from the caller, already de-duplicated by the transport."""

    digit: str
    """One of ``0123456789*#ABCD``."""


@dataclass(frozen=True)
class SpeechRecognized:
    """A final speech recognition result for the current collection."""

    text: str
    """The best hypothesis, in hanzi, as the recognizer returned it."""
    confidence: float = 1.0
    """Recognizer confidence of the best hypothesis, 0..1."""
    alternatives: tuple[str, ...] = ()
    """Further hypotheses from the n-best list, best first."""


@dataclass(frozen=True)
class SpeechStarted:
    """The recognizer heard the caller begin to speak (its words follow as SpeechRecognized)."""


@dataclass(frozen=True)
class PromptFinished:
    """A Play action completed (or was stopped)."""

    play_id: int
    """The ``play_id`` of the Play action that finished."""


@dataclass(frozen=True)
class DeadlineReached:
    """The driver saw ``now >= dialog.deadline``."""


@dataclass(frozen=True)
class CallerHungUp:
    """The caller hung up (BYE, CANCEL, stream stop, terminal closed)."""


ServiceStatus = Literal["found", "not_found", "error"]


@dataclass(frozen=True)
class LookupResult:
    """A reply to a Lookup action."""

    request_id: int
    """The ``request_id`` of the Lookup it answers."""
    status: ServiceStatus
    """Whether the service found something, found nothing, or failed."""
    data: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """Result fields (e.g. ``balance``, ``due_date``), stored as slots under the node's prefix."""


@dataclass(frozen=True)
class TicketCreated:
    """A CreateTicket action was accepted; the work order has a number."""

    request_id: int
    """The ``request_id`` of the CreateTicket it answers."""
    ticket_id: str
    """The work order number to tell the caller."""


@dataclass(frozen=True)
class ServiceDone:
    """A request without a payload (callback registration) was accepted."""

    request_id: int
    """The ``request_id`` of the action it answers."""


@dataclass(frozen=True)
class ServiceFailed:
    """A service request (ticket, enqueue, callback, survey) failed."""

    request_id: int
    """The ``request_id`` of the action that failed."""
    reason: str
    """Short machine-readable reason."""


@dataclass(frozen=True)
class QueuePosition:
    """Routing reports the caller's place in line."""

    request_id: int
    """The ``request_id`` of the Enqueue action."""
    position: int
    """1 = next to be served."""
    wait_seconds: int | None = None
    """Estimated wait, when routing can estimate it."""


@dataclass(frozen=True)
class AgentConnected:
    """Routing reserved an agent and the agent accepted; the caller is being bridged."""

    request_id: int
    """The ``request_id`` of the Enqueue action."""
    agent_id: str
    """Who is taking the call."""
    contact: str = ""
    """Where the agent's phone is reached (a SIP URI), for the transport's bridge."""


@dataclass(frozen=True)
class AgentRinging:
    """The transport placed the call to the accepting agent's phone, which rings: until it
    answers, the caller has not reached anyone (a hang-up now is an abandon)."""

    request_id: int
    """The ``request_id`` of the Enqueue action."""


@dataclass(frozen=True)
class AgentAnswered:
    """The accepting agent's phone answered: the caller and the agent talk."""

    request_id: int
    """The ``request_id`` of the Enqueue action."""


@dataclass(frozen=True)
class AgentDisconnected:
    """The agent leg ended while the caller stays on the line (e.g. for the survey)."""

    request_id: int
    """The ``request_id`` of the Enqueue action."""
    hang_up: bool = False
    """The agent ended the call for both sides (the desk's "end, no survey"): the caller is
    hung up instead of going the flow's way on."""


@dataclass(frozen=True)
class QueueTransferred:
    """The agent sent the caller to another queue: the agent's leg ends, the caller is on hold
    again, in line there, with what the IVR learned kept for the next agent."""

    request_id: int
    """The ``request_id`` of the Enqueue action (the caller's time in routing goes on)."""
    skill: str
    """The queue the caller waits in now."""


@dataclass(frozen=True)
class CallTransferred:
    """The transport handed the caller over to the agent (SIP REFER): the call goes on between
    them without the IVR, which can neither hear the agent hang up nor play the survey."""

    request_id: int
    """The ``request_id`` of the Enqueue action."""


@dataclass(frozen=True)
class AgentUnreachable:
    """The agent accepted, but their phone could not be reached (busy, unreachable, no answer):
    the caller goes back in line, at the place they had."""

    request_id: int
    """The ``request_id`` of the Enqueue action."""
    agent_id: str
    """The agent whose phone failed."""
    reason: str = ""
    """What the transport saw (``486 Busy Here``, ``487 ring timeout``, ``not registered``)."""


@dataclass(frozen=True)
class QueueExited:
    """Routing gave up on the call (max wait, queue full, no agents logged in)."""

    request_id: int
    """The ``request_id`` of the Enqueue action."""
    reason: str
    """``max_wait``, ``queue_full``, ``no_agents`` or another routing reason."""


Event = (
    CallStarted
    | DigitPressed
    | SpeechRecognized
    | SpeechStarted
    | PromptFinished
    | DeadlineReached
    | CallerHungUp
    | LookupResult
    | TicketCreated
    | ServiceDone
    | ServiceFailed
    | QueuePosition
    | AgentConnected
    | AgentRinging
    | AgentAnswered
    | AgentDisconnected
    | QueueTransferred
    | CallTransferred
    | AgentUnreachable
    | QueueExited
)
