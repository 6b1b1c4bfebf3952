"""The flow model: typed nodes parsed from an operator-editable TOML file.

A flow is a graph of nodes. Collecting nodes (menu, digits, capture, survey) play prompts and
wait for keys or speech; service nodes (lookup, ticket, enqueue, callback) ask a backend and
branch on its reply; play, branch and end nodes move on by themselves. Structural problems are
caught here by pydantic; graph problems (unreachable nodes, loops, missing targets) by
:mod:`ivr.flow.check`.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

KEYS = frozenset("0123456789*#")
READBACK_KINDS = ("digits", "number", "amount", "date", "minutes", "text")
ADDRESS_PARTS = (
    "province",
    "city",
    "district",
    "street",
    "number",
    "adcode",
    "confidence",
    "readback",
    "corrections",
    "status",
)
"""Slots ``<address_slot>.<part>`` an understood address fills. ``readback`` is the address as
read back (numbers in words), ``corrections`` what the street list changed (京十路→经十路),
``status`` ``ok`` (sure), ``unsure`` (to be read back) or ``confirmed`` (the caller said yes)."""


class FlowLoadError(Exception):
    """The flow file cannot be read or does not have the right shape."""

    def __init__(
        self,
        message: str,
        errors: list[tuple[tuple[str | int, ...], str]] | None = None,
        *,
        detail: str | None = None,
        line: int | None = None,
    ):
        super().__init__(message)
        self.errors = errors or []
        """(location path, message) pairs; the checker turns paths into file lines."""
        self.detail = detail or message
        """The message without the file name (the checker prints the file itself)."""
        self.line = line
        """The file line the problem is on, when known (TOML syntax errors)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Readback(_Model):
    """A prompt item that speaks a slot's value: ``{ digits = "account" }``."""

    digits: str | None = None
    number: str | None = None
    amount: str | None = None
    date: str | None = None
    minutes: str | None = None
    text: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Readback:
        given = [k for k in READBACK_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a readback names exactly one of {', '.join(READBACK_KINDS)}")
        return self

    @property
    def kind(self) -> str:
        """How the value is spoken."""
        return next(k for k in READBACK_KINDS if getattr(self, k) is not None)

    @property
    def slot(self) -> str:
        """The slot whose value is spoken."""
        value = getattr(self, self.kind)
        assert isinstance(value, str)
        return value


PromptItem = str | Readback


def _check_key(value: str | None) -> str | None:
    if value == "":
        return None  # TOML has no null: an empty string switches the key off
    if value is not None and value not in KEYS:
        raise ValueError(f"key {value!r} is not a phone key (0-9, *, #)")
    return value


class Choice(_Model):
    """One answer of a menu: a key, phrases the caller may say, and where it leads."""

    key: str | None = None
    say: tuple[str, ...] = ()
    intents: tuple[str, ...] = ()
    """Intents (speech/intents.toml) that choose this in free speech ("我家停电了" is fault),
    before the phrases are tried: synonyms and homophones without listing them here."""
    goto: str
    set: dict[str, str] = Field(default_factory=dict)
    preempt: bool = False
    """(Universal choices) its phrases win over a node's own phrases and apply even where
    ``globals = false``: a safety hazard said anywhere must be heard."""

    _key = field_validator("key")(_check_key)

    @model_validator(mode="after")
    def _key_or_say(self) -> Choice:
        if self.key is None and not self.say and not self.intents:
            raise ValueError("a choice needs a key, phrases to say or intents")
        return self


class _Collecting(_Model):
    prompts: tuple[PromptItem, ...]
    barge_in: bool = True
    timeout: float | None = Field(default=None, gt=0)
    no_input_prompt: str | None = None
    no_match_prompt: str | None = None
    max_failures: int | None = Field(default=None, ge=1)
    on_failure: str | None = None


class PlayNode(_Model):
    """Play prompts, then move on."""

    type: Literal["play"]
    prompts: tuple[PromptItem, ...]
    barge_in: bool = False
    next: str


class MenuNode(_Collecting):
    """Offer choices by key and/or speech."""

    type: Literal["menu"]
    input: Literal["dtmf", "speech", "both"] = "both"
    choices: tuple[Choice, ...] = Field(min_length=1)
    globals: bool = True


class DigitsNode(_Collecting):
    """Collect a digit string (account, phone, ticket number) by keys or spoken digits."""

    type: Literal["digits"]
    slot: str
    min_digits: int = Field(ge=1)
    max_digits: int = Field(ge=1)
    terminator: str | None = "#"
    pattern: str | None = None
    speech: bool = True
    inter_digit_timeout: float | None = Field(default=None, gt=0)
    on_skip: str | None = None
    next: str
    globals: bool = True

    _terminator = field_validator("terminator")(_check_key)

    @field_validator("pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _bounds(self) -> DigitsNode:
        if self.min_digits > self.max_digits:
            raise ValueError("min_digits is larger than max_digits")
        if self.terminator is not None and self.terminator.isdigit():
            raise ValueError("the terminator cannot be a digit")
        return self


class CaptureNode(_Collecting):
    """Capture free speech (an address, a description) into a slot.

    When the slot is the flow's ``address_slot`` the answer must be an address: its parts go
    to ``<slot>.province`` … ``<slot>.number`` (see `ivr.dialog.engine`), an address the
    caller already said (at the main menu) is not asked for again, and one that needs
    confirming is read back with ``confirm_prompts`` (1 = right, 2 = say it again).
    """

    type: Literal["capture"]
    slot: str
    next: str
    fallback: str
    skip_key: str | None = "#"
    globals: bool = True
    confirm_prompts: tuple[PromptItem, ...] = ()
    """Read-back of an address to confirm, e.g. ["address_readback", { text = "address.readback" },
    "confirm_or_resay"]; empty = an address is never read back."""

    _skip = field_validator("skip_key")(_check_key)


class SurveyNode(_Collecting):
    """Ask for a 1..scale satisfaction rating and store it through the CRM interface."""

    type: Literal["survey"]
    scale: int = Field(default=5, ge=2, le=9)
    say: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    next: str
    globals: bool = False


class LookupNode(_Model):
    """Ask a self-service backend and branch on what it found."""

    type: Literal["lookup"]
    service: str
    params: dict[str, str] = Field(default_factory=dict)
    save: str
    prompts: tuple[PromptItem, ...] = ()
    timeout: float | None = Field(default=None, gt=0)
    on_found: str
    on_not_found: str
    on_error: str


class Condition(_Model):
    """One branch: when the slot matches, go to the target."""

    slot: str
    equals: str | None = None
    one_of: tuple[str, ...] | None = None
    present: bool | None = None
    goto: str

    @model_validator(mode="after")
    def _one_test(self) -> Condition:
        tests = [t for t in (self.equals, self.one_of, self.present) if t is not None]
        if len(tests) != 1:
            raise ValueError("a condition has exactly one of equals, one_of, present")
        return self


class BranchNode(_Model):
    """Go to the first target whose condition holds, else to ``otherwise``."""

    type: Literal["branch"]
    when: tuple[Condition, ...] = Field(min_length=1)
    otherwise: str


class TicketNode(_Model):
    """Create a work order from what was collected; the caller hears its number."""

    type: Literal["ticket"]
    ticket_type: str
    priority: int = Field(ge=0, le=100)
    prompts: tuple[PromptItem, ...] = ()
    timeout: float | None = Field(default=None, gt=0)
    next: str
    on_error: str


class EnqueueNode(_Model):
    """Put the caller in line for an agent with a skill, at a priority."""

    type: Literal["enqueue"]
    skill: str
    priority: int = Field(ge=0, le=100)
    min_level: int = Field(default=1, ge=1, le=10)
    prompts: tuple[PromptItem, ...] = ()
    barge_in: bool = True
    """Whether the callback key stops the announcement (off for safety advice)."""
    hold_prompts: tuple[PromptItem, ...] = ()
    hold_interval: float = Field(default=30.0, gt=0)
    position_prompts: tuple[PromptItem, ...] = ()
    callback_key: str | None = None
    on_callback: str | None = None
    after: str | None = None
    on_exit: str

    _cb = field_validator("callback_key")(_check_key)

    @model_validator(mode="after")
    def _callback_pair(self) -> EnqueueNode:
        if (self.callback_key is None) != (self.on_callback is None):
            raise ValueError("callback_key and on_callback go together")
        return self


class CallbackNode(_Model):
    """Register a callback to the number in a slot (the caller's own number by default)."""

    type: Literal["callback"]
    number_slot: str = "caller"
    skill: str | None = None
    """None = the queue the caller just left (slot ``queue.skill``), else ``general``."""
    priority: int | None = Field(default=None, ge=0, le=100)
    """None = the priority the caller had in that queue."""
    next: str
    on_error: str


class EndNode(_Model):
    """Play a last message and hang up, recording the call's outcome."""

    type: Literal["end"]
    prompts: tuple[PromptItem, ...] = ()
    outcome: Literal["self_service", "hangup"]
    kind: str | None = None


Node = Annotated[
    PlayNode
    | MenuNode
    | DigitsNode
    | CaptureNode
    | SurveyNode
    | LookupNode
    | BranchNode
    | TicketNode
    | EnqueueNode
    | CallbackNode
    | EndNode,
    Field(discriminator="type"),
]
CollectingNode = MenuNode | DigitsNode | CaptureNode | SurveyNode


class FlowHeader(_Model):
    """Flow-wide settings: where to start, defaults, escalation and universal choices."""

    name: str
    start: str
    escalate: str
    max_failures: int = Field(default=3, ge=1)
    repeat_key: str | None = "*"
    timeout: float = Field(default=6.0, gt=0)
    inter_digit_timeout: float = Field(default=4.0, gt=0)
    service_timeout: float = Field(default=5.0, gt=0)
    no_input_prompt: str | None = None
    no_match_prompt: str | None = None
    escalate_prompt: str | None = None
    global_choices: tuple[Choice, ...] = ()
    confirm_below: float = Field(default=0.0, ge=0.0, le=1.0)
    """A menu choice heard by speech with a confidence under this is confirmed first ("您说的
    是 停电，对请按1…"); 0 = never. Results under the call's minimum confidence stay no-matches."""
    confirm_prompts: tuple[str, ...] = ("heard_you_say",)
    """Played before the words heard, when a menu choice is confirmed."""
    confirm_question: tuple[str, ...] = ("confirm_yes_no",)
    """Played after the words heard: how to say yes or no."""
    address_slot: str | None = None
    """Slot an address said anywhere fills (with its parts under ``<slot>.``): said at a menu
    together with the problem, it is not asked for again by the capture node of this slot."""

    _repeat = field_validator("repeat_key")(_check_key)


class Flow(_Model):
    """A whole call flow: header plus nodes by id."""

    flow: FlowHeader
    nodes: dict[str, Node]

    def node(self, node_id: str) -> Node:
        """The node with this id (KeyError if the flow has none)."""
        return self.nodes[node_id]


def node_targets(node: Node) -> list[tuple[str, str]]:
    """Every (field, target node id) a node can lead to, for graph checks."""
    out: list[tuple[str, str]] = []
    for name in (
        "next",
        "on_found",
        "on_not_found",
        "on_error",
        "on_failure",
        "on_skip",
        "fallback",
        "otherwise",
        "on_callback",
        "after",
        "on_exit",
    ):
        value = getattr(node, name, None)
        if isinstance(value, str):
            out.append((name, value))
    if isinstance(node, MenuNode):
        out.extend((f"choices[{i}].goto", c.goto) for i, c in enumerate(node.choices))
    if isinstance(node, BranchNode):
        out.extend((f"when[{i}].goto", c.goto) for i, c in enumerate(node.when))
    return out


def parse_flow(data: dict[str, Any]) -> Flow:
    """Validate parsed TOML data as a flow; FlowLoadError lists every structural error."""
    try:
        return Flow.model_validate(data)
    except ValidationError as exc:
        raw = [(_clean_loc(err["loc"]), _message(err)) for err in exc.errors()]
        errors: list[tuple[tuple[str | int, ...], str]] = []
        for loc, (kind, msg) in raw:
            # A failing union member or list item also produces follow-on errors at the same
            # place or its parent ("should be a valid string", "at least 1 item"); keep the
            # precise one.
            others = [o for o, (k, _) in raw if o[: len(loc)] == loc and (o, k) != (loc, kind)]
            if others and kind in ("string_type", "too_short", "prompt_item"):
                continue
            if (loc, msg) not in errors:
                errors.append((loc, msg))
        raise FlowLoadError(f"{len(errors)} error(s) in the flow's structure", errors) from None


_PROMPT_LISTS = ("prompts", "hold_prompts", "position_prompts", "confirm_prompts")


def _message(err: Any) -> tuple[str, str]:
    """(kind, message) in an operator's words for one pydantic error."""
    kind: str = err["type"]
    loc = err["loc"]
    msg: str = err["msg"]
    in_prompts = any(
        isinstance(loc[i], int) and loc[i - 1] in _PROMPT_LISTS for i in range(1, len(loc))
    )
    if in_prompts and kind in ("string_type", "model_type", "dict_type"):
        return (
            "prompt_item",
            'a prompt item is a prompt id or a readback such as { digits = "slot" }',
        )
    if kind == "value_error":
        return kind, msg.removeprefix("Value error, ")
    if kind == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag", "?")
        return kind, f"unknown node type {tag!r} (one of {', '.join(sorted(_NODE_TYPES))})"
    if kind == "union_tag_not_found":
        return kind, 'the node has no type (type = "menu", "play", ...)'
    if kind == "extra_forbidden":
        name = str(loc[-1])
        model = _model_at(loc)
        fields = sorted(model.model_fields) if model is not None else _FIELD_NAMES
        close = difflib.get_close_matches(name, fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        if model is not None and len(loc) == 4 and name in _FIELD_NAMES:
            return kind, f"{name!r} is not a field of a {loc[2]} node{hint}"
        return kind, f"unknown field {name!r}{hint}"
    if kind == "missing":
        return kind, f"missing field {loc[-1]!r}"
    if kind in ("tuple_type", "list_type"):
        return kind, f"should be a list, e.g. {loc[-1]} = [...]"
    return kind, msg


def _clean_loc(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Drop the union-member tags pydantic inserts, so a location matches the file's keys.

    ``("nodes", "main", "menu", "prompts", 1, "Readback", "digit")`` becomes
    ``("nodes", "main", "prompts", 1, "digit")``.
    """
    parts = list(loc)
    if len(parts) > 2 and parts[0] == "nodes" and parts[2] in _NODE_TYPES:
        del parts[2]
    cleaned: list[str | int] = []
    for i, part in enumerate(parts):
        after_index = i > 0 and isinstance(parts[i - 1], int)
        if after_index and isinstance(part, str) and part.startswith(("str", "function-")):
            continue
        cleaned.append(part)
    return tuple(cleaned)


_NODE_TYPES = {
    "play",
    "menu",
    "digits",
    "capture",
    "survey",
    "lookup",
    "branch",
    "ticket",
    "enqueue",
    "callback",
    "end",
}


def read_flow_data(path: Path) -> dict[str, Any]:
    """Read a flow file's TOML; FlowLoadError with the parser's line and column on bad syntax."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        detail = f"cannot read the flow file: {exc.strerror}"
        raise FlowLoadError(f"{path}: {detail}", detail=detail) from None
    except UnicodeDecodeError as exc:
        detail = f"not UTF-8 text (byte {exc.start}); save the flow file as UTF-8"
        raise FlowLoadError(f"{path}: {detail}", detail=detail) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's message ends with "(at line N, column M)"; later versions add .lineno.
        line = getattr(exc, "lineno", None)
        if line is None:
            m = re.search(r"\(at line (\d+)", str(exc))
            if m:
                line = int(m.group(1))
            elif "end of document" in str(exc):
                line = text.count("\n") + (0 if text.endswith("\n") else 1)
        detail = f"not valid TOML: {exc}"
        raise FlowLoadError(f"{path}: {detail}", detail=detail, line=line) from None
    except RecursionError:
        detail = "not valid TOML: nested too deeply"
        raise FlowLoadError(f"{path}: {detail}", detail=detail) from None


def load_flow(path: Path) -> Flow:
    """Read and structurally validate a flow file (graph checks are in ivr.flow.check)."""
    return parse_flow(read_flow_data(path))


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model whose field list applies at a raw pydantic location, when it is clear."""
    if len(loc) > 3 and loc[0] == "nodes" and loc[2] in _NODE_MODELS:
        if len(loc) == 4:
            return _NODE_MODELS[str(loc[2])]
        nested: dict[str, type[BaseModel]] = {"choices": Choice, "when": Condition}
        return nested.get(str(loc[3]))
    if len(loc) == 2 and loc[0] == "flow":
        return FlowHeader
    if len(loc) == 4 and loc[:2] == ("flow", "global_choices"):
        return Choice
    return None


def _all_field_names() -> list[str]:
    models: list[type[BaseModel]] = [
        FlowHeader,
        Choice,
        Readback,
        Condition,
        PlayNode,
        MenuNode,
        DigitsNode,
        CaptureNode,
        SurveyNode,
        LookupNode,
        BranchNode,
        TicketNode,
        EnqueueNode,
        CallbackNode,
        EndNode,
    ]
    return sorted({name for model in models for name in model.model_fields})


_FIELD_NAMES = _all_field_names()

_NODE_MODELS: dict[str, type[BaseModel]] = {
    "play": PlayNode,
    "menu": MenuNode,
    "digits": DigitsNode,
    "capture": CaptureNode,
    "survey": SurveyNode,
    "lookup": LookupNode,
    "branch": BranchNode,
    "ticket": TicketNode,
    "enqueue": EnqueueNode,
    "callback": CallbackNode,
    "end": EndNode,
}
