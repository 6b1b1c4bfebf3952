"""Actions a dialog asks its driver to carry out on the transport and the services."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class PromptRef:
    """A recorded prompt from the catalog."""

    prompt_id: str
    """Catalog id; the transport resolves it to audio."""


@dataclass(frozen=True)
class SpokenText:
    """Dynamic text (an outage cause, an address) to be spoken by TTS."""

    text: str
    """Mandarin text."""


PlayItem = PromptRef | SpokenText


@dataclass(frozen=True)
class Play:
    """Play prompts in order; report PromptFinished(play_id) when done."""

    play_id: int
    """Echoed back in PromptFinished so a stale completion is ignored."""
    items: tuple[PlayItem, ...]
    """What to say, in order."""
    barge_in: bool = True
    """Whether a key press (or speech) stops this playback."""


@dataclass(frozen=True)
class StopPlayback:
    """Stop the current playback at once (barge-in)."""


@dataclass(frozen=True)
class StartCollecting:
    """Listen for caller input; the transport routes DTMF and/or speech to the dialog."""

    dtmf: bool
    """Keys are wanted."""
    speech: bool
    """Speech is wanted (ignored by transports without a recognizer)."""
    grammar: tuple[str, ...] = ()
    """Phrases for a grammar-mode recognizer; empty = free-form (addresses)."""
    max_digits: int = 1
    """The most keys this collection takes."""
    terminator: str = ""
    """Key that ends a digit string (usually ``#``); empty = none."""


@dataclass(frozen=True)
class StopCollecting:
    """Stop routing caller input to the dialog."""


@dataclass(frozen=True)
class Lookup:
    """Ask a self-service backend (CRM) for data; answered by LookupResult."""

    request_id: int
    """Echoed in the LookupResult."""
    service: str
    """``customer_by_phone``, ``bill_summary``, ``outage_by_address``, ``ticket_status``, ..."""
    params: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """Named arguments taken from the call's slots."""


@dataclass(frozen=True)
class CreateTicket:
    """Create a work order (工单); answered by TicketCreated or ServiceFailed."""

    request_id: int
    """Echoed in the reply."""
    ticket_type: str
    """故障报修, 咨询, 业扩报装, 投诉, 举报, 建议, ..."""
    priority: int
    """Higher is more urgent."""
    fields: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """Everything the IVR collected (slots), for the ticket body."""
    path: tuple[str, ...] = ()
    """The nodes the caller walked through."""
    complete: bool = True
    """False when the caller hung up before the flow finished (partial report)."""


@dataclass(frozen=True)
class Enqueue:
    """Put the caller in line for an agent; answered by queue events."""

    request_id: int
    """Echoed in QueuePosition, AgentConnected, AgentDisconnected, AgentUnreachable,
    QueueExited."""
    skill: str
    """The queue / required skill."""
    priority: int
    """Higher is served first."""
    min_level: int = 1
    """Minimum skill level of the agent."""
    context: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """What the IVR learned, for the agent's screen pop."""


@dataclass(frozen=True)
class LeaveQueue:
    """Tell routing the caller's time in its queue is over: hung up while waiting, chose a
    callback, hung up while talking to the agent, or the agent's leg ended."""

    request_id: int
    """The Enqueue it ends."""
    reason: str
    """``abandoned`` (hung up waiting), ``callback`` (the place is parked for a callback),
    ``hangup`` (hung up while bridged), ``abandoned_ringing`` (hung up while the accepting
    agent's phone rang, as the transport reported), ``agent_finished`` (the agent's leg ended) or
    ``transferred`` (handed to the agent by REFER: the talk goes on without the IVR, and the
    agent's desktop says when it ends)."""


@dataclass(frozen=True)
class ReturnToQueue:
    """Tell routing the agent it connected the caller to could not be reached: the caller is
    back in line at their place, and the agent is not ready (missed)."""

    request_id: int
    """The Enqueue the caller is back in."""
    agent_id: str
    """The agent whose phone failed."""
    reason: str = ""
    """What the transport saw, for routing's event."""


@dataclass(frozen=True)
class RequestCallback:
    """Ask routing to call the caller back when an agent is free."""

    request_id: int
    """Echoed in a ServiceFailed if it cannot be registered."""
    number: str
    """Number to call back."""
    skill: str
    """The queue the callback waits in."""
    priority: int
    """Its priority in that queue."""
    context: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """Screen-pop context for the agent who makes the call."""


@dataclass(frozen=True)
class RecordSurvey:
    """Store the caller's satisfaction rating through the CRM interface."""

    request_id: int
    """Echoed in a ServiceFailed if the rating cannot be stored."""
    score: int
    """1 (very dissatisfied) .. 5 (very satisfied)."""
    agent_id: str = ""
    """The agent rated, when the survey follows an agent call."""


@dataclass(frozen=True)
class Transfer:
    """Connect the caller to an agent: the transport bridges media to the agent's leg."""

    agent_id: str
    """The agent routing reserved."""
    contact: str = ""
    """The agent phone's address (SIP URI), when routing knows it."""
    request_id: int = 0
    """The Enqueue it belongs to: the transport reports the agent leg's end against it."""


@dataclass(frozen=True)
class Hangup:
    """End the call from the IVR side."""

    reason: str
    """Why (``completed``, ``no_input``, ``caller``...)."""


Action = (
    Play
    | StopPlayback
    | StartCollecting
    | StopCollecting
    | Lookup
    | CreateTicket
    | Enqueue
    | LeaveQueue
    | ReturnToQueue
    | RequestCallback
    | RecordSurvey
    | Transfer
    | Hangup
)
