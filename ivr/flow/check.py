"""The flow checker: every structural and graph error of a flow file, each with its location.

`hotline flow check FILE` prints one line per problem, ``FILE:LINE: where: what``, and exits
non-zero when there is an error. Graph checks: missing targets, unknown prompts, unreachable
nodes, loops that take no caller input, nodes with no way to an outcome, collecting nodes without
no-input / no-match handling, readbacks of slots that nothing sets.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

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
    FlowLoadError,
    LookupNode,
    MenuNode,
    Node,
    PlayNode,
    PromptItem,
    Readback,
    SurveyNode,
    TicketNode,
    node_targets,
    parse_flow,
    read_flow_data,
)
from ivr.services import LOOKUP_SERVICES
from sounds.catalog import Catalog
from speech.intent import shipped_intents

if TYPE_CHECKING:
    from ivr.settings import Settings

Loc = tuple[str | int, ...]

BUILTIN_SLOTS = frozenset(
    {
        "caller",
        "dialed",
        "ticket_id",
        "agent_id",
        "satisfaction",
        "callback_number",
        "escalated",
        "service_error",
        "queue.position",
        "queue.wait_minutes",
        "queue.skill",
        "queue.priority",
        "queue.exit_reason",
    }
)
"""Slots the dialog engine itself sets."""

_AUTO_TYPES = (PlayNode, BranchNode, LookupNode, TicketNode, CallbackNode)
"""Nodes that move on without caller input."""

_EXIT_TYPES = (EndNode, EnqueueNode)
"""Nodes that are outcomes: the call ends, or waits for an agent."""


@dataclass(frozen=True)
class Problem:
    """One finding of the checker."""

    loc: Loc
    """Path of keys in the flow file, e.g. ``("nodes", "main_menu", "choices", 1, "goto")``."""
    message: str
    """What is wrong, in words an operator understands."""
    severity: Literal["error", "warning"] = "error"
    """Errors make the flow unusable; warnings are suspicious but allowed."""

    @property
    def where(self) -> str:
        """The location as dotted keys with list indexes: ``nodes.main_menu.choices[1].goto``."""
        out = ""
        for part in self.loc:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out or "(file)"


@dataclass
class CheckReport:
    """Everything the checker found in one file."""

    path: Path
    """The file checked."""
    problems: list[Problem] = field(default_factory=list)
    """Errors and warnings, in file order where lines are known."""
    lines: dict[Loc, int] = field(default_factory=dict)
    """Line number per problem location (1-based), where it could be found."""
    flow: Flow | None = None
    """The parsed flow when it had no structural errors."""

    @property
    def errors(self) -> list[Problem]:
        """Only the errors."""
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        """True when the flow can be used."""
        return not self.errors

    def render(self) -> list[str]:
        """One line per problem, ``FILE:LINE: severity: where: message``."""
        out = []
        for p in self.problems:
            line = self.lines.get(p.loc)
            pos = f"{self.path}:{line}" if line else str(self.path)
            where = f"{p.where}: " if p.loc else ""
            out.append(f"{pos}: {p.severity}: {where}{p.message}")
        return out


class SourceMap:
    """Finds the line of a key path in TOML text (tomllib keeps no positions)."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?")
    _KEY = re.compile(r"^\s*(\"[^\"]*\"|'[^']*'|[A-Za-z0-9_\-]+)\s*=")

    def __init__(self, text: str) -> None:
        # Only "\n" ends a TOML line; str.splitlines() would also split on U+2028 etc.
        self._lines = text.split("\n")
        self._tables: dict[str, list[int]] = {}
        for no, line in enumerate(self._lines, start=1):
            m = self._HEADER.match(line)
            if m:
                name = ".".join(p.strip().strip("\"'") for p in m.group(2).split("."))
                self._tables.setdefault(name, []).append(no)

    def line_of(self, loc: Loc) -> int | None:
        """Best line for a location: the key's own line, else its closest table header."""
        best: int | None = None
        names: list[str] = []
        for i, part in enumerate(loc):
            if isinstance(part, int):
                continue
            names.append(part)
            table = ".".join(names)
            starts = self._tables.get(table)
            if starts:
                after = [n for n in starts if best is None or n > best]
                nxt = loc[i + 1] if i + 1 < len(loc) else None
                if isinstance(nxt, int) and len(starts) > 1:
                    # An array of tables: the n-th [[header]] is element n.
                    if nxt < len(starts):
                        best = starts[nxt]
                        continue
                elif after:
                    best = after[0]
                    continue
            if best is not None:
                key_line = self._key_after(best, part)
                if key_line is not None:
                    return key_line
            elif i == 0:
                key_line = self._key_after(0, part)
                if key_line is not None:
                    return key_line
        return best

    def _key_after(self, header: int, key: str) -> int | None:
        for no in range(header + 1, len(self._lines) + 1):
            line = self._lines[no - 1]
            if self._HEADER.match(line):
                return None
            m = self._KEY.match(line)
            if m and m.group(1).strip("\"'") == key:
                return no
        return None


def check_file(path: Path, catalog: Catalog) -> CheckReport:
    """Check one flow file against a prompt catalog."""
    report = CheckReport(path)
    try:
        data = read_flow_data(path)
        text = path.read_text(encoding="utf-8")
    except FlowLoadError as exc:
        report.problems.append(Problem((), exc.detail))
        if exc.line is not None:
            report.lines[()] = exc.line
        return report
    source = SourceMap(text)
    try:
        flow = parse_flow(data)
    except FlowLoadError as exc:
        report.problems.extend(Problem(loc, msg) for loc, msg in exc.errors)
    else:
        report.flow = flow
        report.problems.extend(check_flow(flow, catalog))
    for p in report.problems:
        line = source.line_of(p.loc)
        if line is not None:
            report.lines[p.loc] = line
    report.problems.sort(key=lambda p: (report.lines.get(p.loc, 0), p.severity))
    return report


def check_flow(flow: Flow, catalog: Catalog) -> list[Problem]:
    """Graph and reference checks of a structurally valid flow."""
    problems: list[Problem] = []
    problems += _check_targets(flow)
    problems += _check_prompts(flow, catalog)
    problems += _check_collecting(flow)
    problems += _check_intents(flow)
    problems += _check_slots(flow)
    if not any(p.severity == "error" for p in problems):
        problems += _check_graph(flow)
    return problems


# --------------------------------------------------------------------------- references


def _check_targets(flow: Flow) -> list[Problem]:
    out: list[Problem] = []
    head = flow.flow
    for name in ("start", "escalate"):
        target = getattr(head, name)
        if target not in flow.nodes:
            out.append(Problem(("flow", name), f"branch to nowhere: there is no node {target!r}"))
    for i, choice in enumerate(head.global_choices):
        if choice.goto not in flow.nodes:
            out.append(
                Problem(
                    ("flow", "global_choices", i, "goto"),
                    f"branch to nowhere: there is no node {choice.goto!r}",
                )
            )
    for node_id, node in flow.nodes.items():
        for fname, target in node_targets(node):
            if target not in flow.nodes:
                out.append(
                    Problem(
                        ("nodes", node_id, *_split_field(fname)),
                        f"branch to nowhere: there is no node {target!r}",
                    )
                )
        if isinstance(node, LookupNode) and node.service not in LOOKUP_SERVICES:
            out.append(
                Problem(
                    ("nodes", node_id, "service"),
                    f"unknown lookup service {node.service!r} "
                    f"(known: {', '.join(sorted(LOOKUP_SERVICES))})",
                )
            )
    return out


def _split_field(fname: str) -> Loc:
    """``"choices[2].goto"`` -> ``("choices", 2, "goto")``."""
    parts: list[str | int] = []
    for piece in fname.split("."):
        m = re.fullmatch(r"(\w+)\[(\d+)\]", piece)
        if m:
            parts += [m.group(1), int(m.group(2))]
        else:
            parts.append(piece)
    return tuple(parts)


def _prompt_fields(node: Node) -> Iterator[tuple[str, tuple[PromptItem, ...]]]:
    for name in ("prompts", "hold_prompts", "position_prompts", "confirm_prompts"):
        items = getattr(node, name, None)
        if items:
            yield name, items


def _check_prompts(flow: Flow, catalog: Catalog) -> list[Problem]:
    out: list[Problem] = []

    def need(loc: Loc, prompt_id: str | None) -> None:
        if prompt_id is not None and prompt_id not in catalog:
            out.append(
                Problem(loc, f"unknown prompt {prompt_id!r}: it is not in the prompt catalog")
            )

    head = flow.flow
    for name in ("no_input_prompt", "no_match_prompt", "escalate_prompt"):
        need(("flow", name), getattr(head, name))
    if head.confirm_below > 0:
        for name in ("confirm_prompts", "confirm_question"):
            for i, prompt_id in enumerate(getattr(head, name)):
                need(("flow", name, i), prompt_id)
    for node_id, node in flow.nodes.items():
        for fname, items in _prompt_fields(node):
            for i, item in enumerate(items):
                if isinstance(item, str):
                    need(("nodes", node_id, fname, i), item)
        for name in ("no_input_prompt", "no_match_prompt"):
            need(("nodes", node_id, name), getattr(node, name, None))
        if (
            isinstance(node, (PlayNode, EndNode))
            and not node.prompts
            and isinstance(node, PlayNode)
        ):
            out.append(Problem(("nodes", node_id, "prompts"), "a play node with nothing to play"))
    return out


def _check_collecting(flow: Flow) -> list[Problem]:
    out: list[Problem] = []
    head = flow.flow
    global_keys = {c.key for c in head.global_choices if c.key is not None}
    for node_id, node in flow.nodes.items():
        if not isinstance(node, CollectingNode):
            continue
        loc: Loc = ("nodes", node_id)
        if not (node.no_input_prompt or head.no_input_prompt):
            out.append(
                Problem(loc, "missing no-input handling: set no_input_prompt here or in [flow]")
            )
        if not isinstance(node, CaptureNode) and not (node.no_match_prompt or head.no_match_prompt):
            out.append(
                Problem(loc, "missing no-match handling: set no_match_prompt here or in [flow]")
            )
        if not node.prompts:
            out.append(Problem((*loc, "prompts"), "a collecting node must say something first"))
        if isinstance(node, MenuNode):
            out += _check_menu(node_id, node, head.repeat_key, global_keys)
        elif isinstance(node, CaptureNode):
            if node.confirm_prompts and node.slot != head.address_slot:
                out.append(
                    Problem(
                        (*loc, "confirm_prompts"),
                        f"only an address is read back: slot {node.slot!r} is not the flow's "
                        f"address_slot ({head.address_slot!r})",
                        "warning",
                    )
                )
        elif isinstance(node, DigitsNode):
            if node.on_skip is not None and node.terminator is None:
                out.append(
                    Problem((*loc, "on_skip"), "on_skip needs a terminator key to skip with")
                )
        elif isinstance(node, SurveyNode):
            for key in node.say:
                if not (key.isdigit() and 1 <= int(key) <= node.scale):
                    out.append(
                        Problem((*loc, "say", key), f"rating {key!r} is not in 1..{node.scale}")
                    )
    return out


def _check_intents(flow: Flow) -> list[Problem]:
    """Every intent a choice names is one the intent table knows."""
    known = shipped_intents().names()
    out: list[Problem] = []
    located: list[tuple[Loc, Choice]] = [
        (("flow", "global_choices", i), c) for i, c in enumerate(flow.flow.global_choices)
    ]
    for node_id, node in flow.nodes.items():
        if isinstance(node, MenuNode):
            located += [(("nodes", node_id, "choices", i), c) for i, c in enumerate(node.choices)]
    for loc, choice in located:
        for j, intent in enumerate(choice.intents):
            if intent not in known:
                out.append(
                    Problem(
                        (*loc, "intents", j),
                        f"unknown intent {intent!r} (speech/intents.toml has {', '.join(known)})",
                    )
                )
    return out


def _check_menu(
    node_id: str, node: MenuNode, repeat_key: str | None, global_keys: set[str]
) -> list[Problem]:
    out: list[Problem] = []
    seen: dict[str, int] = {}
    for i, choice in enumerate(node.choices):
        loc: Loc = ("nodes", node_id, "choices", i)
        if choice.key is not None:
            if choice.key in seen:
                out.append(
                    Problem(
                        (*loc, "key"),
                        f"key {choice.key!r} is already used by choice {seen[choice.key]}",
                    )
                )
            seen.setdefault(choice.key, i)
            if choice.key == repeat_key:
                out.append(Problem((*loc, "key"), f"key {choice.key!r} is the flow's repeat key"))
            elif node.globals and choice.key in global_keys:
                out.append(
                    Problem(
                        (*loc, "key"),
                        f"key {choice.key!r} hides the universal choice with the same key here",
                        "warning",
                    )
                )
        if node.input == "dtmf" and choice.key is None:
            out.append(Problem(loc, "this choice has no key but the menu takes only keys"))
        if node.input == "speech" and not choice.say:
            out.append(Problem(loc, "this choice has no phrases but the menu takes only speech"))
    return out


def _set_slots(flow: Flow) -> tuple[set[str], set[str]]:
    """Slots some node sets, and the prefixes lookups save under."""
    slots = set(BUILTIN_SLOTS)
    prefixes: set[str] = set()
    choices: list[Choice] = list(flow.flow.global_choices)
    for node in flow.nodes.values():
        if isinstance(node, MenuNode):
            choices += node.choices
        if isinstance(node, (DigitsNode, CaptureNode)):
            slots.add(node.slot)
            slots.add(f"{node.slot}_confidence")
        if isinstance(node, LookupNode):
            prefixes.add(f"{node.save}.")
    for choice in choices:
        slots.update(choice.set)
    if flow.flow.address_slot is not None:
        # An address said at any menu fills the slot and its parts.
        slots.add(flow.flow.address_slot)
        slots.update(f"{flow.flow.address_slot}.{part}" for part in ADDRESS_PARTS)
    return slots, prefixes


def _check_slots(flow: Flow) -> list[Problem]:
    out: list[Problem] = []
    slots, prefixes = _set_slots(flow)

    def known(slot: str) -> bool:
        return slot in slots or any(slot.startswith(p) for p in prefixes)

    for node_id, node in flow.nodes.items():
        for fname, items in _prompt_fields(node):
            for i, item in enumerate(items):
                if isinstance(item, Readback) and not known(item.slot):
                    out.append(
                        Problem(
                            ("nodes", node_id, fname, i, item.kind),
                            f"reads back slot {item.slot!r}, which no node sets",
                        )
                    )
        if isinstance(node, BranchNode):
            for i, cond in enumerate(node.when):
                if not known(cond.slot):
                    out.append(
                        Problem(
                            ("nodes", node_id, "when", i, "slot"),
                            f"tests slot {cond.slot!r}, which no node sets",
                        )
                    )
        if isinstance(node, LookupNode):
            for name, slot in node.params.items():
                if not known(slot):
                    out.append(
                        Problem(
                            ("nodes", node_id, "params", name),
                            f"passes slot {slot!r}, which no node sets",
                        )
                    )
    return out


# --------------------------------------------------------------------------- graph


def _edges(flow: Flow, node_id: str) -> list[str]:
    """Where a node can lead, including escalation and universal choices."""
    node = flow.nodes[node_id]
    out = [t for _, t in node_targets(node)]
    if isinstance(node, CollectingNode):
        out.append(node.on_failure or flow.flow.escalate)
        if node.globals:
            out += [c.goto for c in flow.flow.global_choices]
    return out


def _reachable(flow: Flow, roots: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        node_id = stack.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        stack.extend(_edges(flow, node_id))
    return seen


def _check_graph(flow: Flow) -> list[Problem]:
    out: list[Problem] = []
    reachable = _reachable(flow, [flow.flow.start])
    for node_id in flow.nodes:
        if node_id not in reachable:
            out.append(
                Problem(("nodes", node_id), "unreachable: no path from the start leads here")
            )
    # A node must be able to end somewhere: reverse reachability from the outcome nodes.
    reverse: dict[str, set[str]] = {n: set() for n in flow.nodes}
    for node_id in flow.nodes:
        for target in _edges(flow, node_id):
            reverse[target].add(node_id)
    can_finish: set[str] = set()
    stack = [n for n, node in flow.nodes.items() if isinstance(node, _EXIT_TYPES)]
    while stack:
        node_id = stack.pop()
        if node_id in can_finish:
            continue
        can_finish.add(node_id)
        stack.extend(reverse[node_id])
    cycles, in_cycles = _auto_cycles(flow)
    for node_id in flow.nodes:
        if node_id in reachable and node_id not in can_finish and node_id not in in_cycles:
            out.append(
                Problem(
                    ("nodes", node_id),
                    "loop without exit: no path from here reaches an end or a queue",
                )
            )
    out += cycles
    return out


def _auto_cycles(flow: Flow) -> tuple[list[Problem], set[str]]:
    """Cycles made only of nodes that move on without caller input spin forever.

    Returns the problems and the nodes on such cycles (reported once, as the cycle).
    """
    auto = {n for n, node in flow.nodes.items() if isinstance(node, _AUTO_TYPES)}
    out: list[Problem] = []
    state: dict[str, int] = {}
    reported: set[frozenset[str]] = set()
    on_cycles: set[str] = set()

    def visit(node_id: str, trail: list[str]) -> None:
        state[node_id] = 1
        trail.append(node_id)
        for target in _edges(flow, node_id):
            if target not in auto:
                continue
            if state.get(target) == 1:
                cycle = trail[trail.index(target) :]
                key = frozenset(cycle)
                on_cycles.update(cycle)
                if key not in reported:
                    reported.add(key)
                    chain = " -> ".join([*cycle, target])
                    out.append(
                        Problem(
                            ("nodes", cycle[0]),
                            f"loop without exit: {chain} never waits for the caller",
                        )
                    )
            elif state.get(target) is None:
                visit(target, trail)
        trail.pop()
        state[node_id] = 2

    for node_id in sorted(auto):
        if node_id not in state:
            visit(node_id, [])
    return out, on_cycles


# --------------------------------------------------------------------------- command


def check_command(file: Path | None, settings: Settings) -> int:
    """`hotline flow check`: print every problem; exit 1 on errors, 0 otherwise."""
    path = file or settings.resolved_flow_file()
    report = check_file(path, Catalog.shipped())
    for line in report.render():
        print(line)
    if report.ok:
        flow = report.flow
        count = len(flow.nodes) if flow else 0
        warnings = len(report.problems)
        print(f"{path}: ok ({count} nodes, {warnings} warning(s))")
        return 0
    print(f"{path}: {len(report.errors)} error(s)", file=sys.stderr)
    return 1
