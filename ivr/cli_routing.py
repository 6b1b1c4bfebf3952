"""`hotline agents ...` and `hotline queues ...`: the agents and queues API from a terminal.

Each command is one request to the running hotline (`ivr.api_client`), printed as a readable
table or line (or the API's JSON with ``--json``). Exit 0 on success; 1 when the hotline
refused (its ``error_id`` and message go to stderr); 2 when it could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ivr.api_client import ApiAnswerError, ApiClient, HotlineUnreachableError, base_url
from ivr.settings import Settings
from routing.keys import MAX_LEVEL, check_name
from routing.model import check_level

Render = Callable[[Any], str]


@dataclass(frozen=True)
class Command:
    """One API request and how to print its answer."""

    method: str
    """HTTP method."""
    path: str
    """Path under the hotline's base URL."""
    body: dict[str, Any] | None
    """JSON body, if any."""
    render: Render
    """Turns the answer into the text printed without ``--json``."""


def skill_option(text: str) -> tuple[str, int]:
    """Parse ``--skill NAME=LEVEL`` (argparse type)."""
    name, sep, level = text.partition("=")
    try:
        if not sep:
            raise ValueError("missing =LEVEL")
        return check_name("skill", name.strip()), check_level(int(level))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected SKILL=LEVEL with LEVEL 1..{MAX_LEVEL}, e.g. fault_repair=5 ({exc})"
        ) from None


# ---------------------------------------------------------------------- text output


def _width(text: str) -> int:
    # Mandarin names take two columns in a terminal.
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, a header first."""
    widths = [max(_width(str(c)) for c in column) for column in zip(headers, *rows, strict=False)]
    lines = []
    for row in [headers, *rows]:
        cells = [str(c) + " " * (w - _width(str(c))) for c, w in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def clock_time(epoch: float) -> str:
    """Local time of day (the date too when it is not today)."""
    moment = time.localtime(epoch)
    if time.strftime("%Y-%m-%d", moment) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", moment)
    return time.strftime("%Y-%m-%d %H:%M:%S", moment)


def duration(seconds: float | None) -> str:
    """``45s``, ``3m05s``, ``1h02m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _skills_text(skills: dict[str, int]) -> str:
    return ",".join(f"{skill}={level}" for skill, level in sorted(skills.items())) or "-"


def _state_text(agent: dict[str, Any]) -> str:
    state = str(agent["state"])
    if agent.get("reason"):
        state += f" ({agent['reason']})"
    return state


def render_agents(answer: dict[str, Any]) -> str:
    agents = answer["agents"]
    if not agents:
        return "no agents have logged in"
    rows = [
        [
            a["agent_id"],
            a["name"] or "-",
            _state_text(a),
            clock_time(a["since"]),
            a["call_id"] or "-",
            str(a["calls"]),
            duration(a["talk_seconds"]),
            _skills_text(a["skills"]),
        ]
        for a in agents
    ]
    headers = ["AGENT", "NAME", "STATE", "SINCE", "CALL", "CALLS", "TALK", "SKILLS"]
    return table(headers, rows)


def render_agent(agent: dict[str, Any]) -> str:
    lines = [
        ("agent", agent["agent_id"]),
        ("name", agent["name"] or "-"),
        ("state", _state_text(agent)),
        ("since", clock_time(agent["since"])),
        ("call", agent["call_id"] or "-"),
        ("contact", agent["contact"] or "-"),
        ("skills", _skills_text(agent["skills"])),
        ("calls", str(agent["calls"])),
        ("talk", duration(agent["talk_seconds"])),
    ]
    if agent.get("wrap_until") is not None:
        lines.append(("wrap-up until", clock_time(agent["wrap_until"])))
    return table(["", ""], lines).split("\n", 1)[1]


def render_change(answer: dict[str, Any]) -> str:
    agent = answer["agent"]
    lines = [f"{agent['agent_id']}: {_state_text(agent)}"]
    if answer.get("contact") is not None:
        lines.append(f"accepted {answer['call_id']}: bridge the caller to {answer['contact']}")
    lines.extend(f"offered {o['call_id']} to {o['agent_id']}" for o in answer.get("offers", []))
    return "\n".join(lines)


def render_queues(answer: dict[str, Any]) -> str:
    queues = answer["queues"]
    if not queues:
        return "no queues yet (a queue appears with the first agent or call having its skill)"
    rows = [
        [
            q["skill"],
            str(q["waiting"]),
            str(len(q["available"])),
            str(q["staffed"]),
            q["config"]["strategy"],
        ]
        for q in queues
    ]
    return table(["SKILL", "WAITING", "AVAILABLE", "LOGGED IN", "STRATEGY"], rows)


def render_queue(answer: dict[str, Any]) -> str:
    settings = [[name, str(value)] for name, value in answer["config"].items()]
    available = ", ".join(answer["available"]) or "none"
    parts = [
        f"queue {answer['skill']}",
        table(["", ""], settings).split("\n", 1)[1],
        f"available agents: {available}",
    ]
    waiting = answer["waiting"]
    if not waiting:
        parts.append("no calls waiting")
    else:
        rows = [
            [
                str(c["position"]),
                c["call_id"],
                c["kind"],
                str(c["priority"]),
                duration(c["waited_seconds"]),
                duration(c["wait_seconds"]),
            ]
            for c in waiting
        ]
        parts.append(table(["POS", "CALL", "KIND", "PRIORITY", "WAITED", "EST. WAIT"], rows))
    return "\n".join(parts)


# ---------------------------------------------------------------------- commands


def _agent_path(agent_id: str, action: str = "") -> str:
    path = f"/api/agents/{quote(agent_id, safe='')}"
    return f"{path}/{action}" if action else path


def agents_request(args: argparse.Namespace) -> Command:
    """The request of one `hotline agents` command."""
    action: str = args.agents_command
    if action == "list":
        return Command("GET", "/api/agents", None, render_agents)
    agent_id: str = args.agent_id
    if action == "show":
        return Command("GET", _agent_path(agent_id), None, render_agent)
    body: dict[str, Any] = {}
    if action == "login":
        body = {"skills": dict(args.skill), "ready": args.ready}
        if args.name is not None:
            body["name"] = args.name
        if args.contact is not None:
            body["contact"] = args.contact
    elif action == "not-ready":
        body = {"reason": args.reason}
    elif action in ("accept", "reject"):
        body = {"call_id": args.call_id}
    elif action == "skills":
        skills = {"skills": dict(args.skill)}
        return Command("PUT", _agent_path(agent_id, "skills"), skills, render_change)
    return Command("POST", _agent_path(agent_id, action), body, render_change)


def queues_request(args: argparse.Namespace) -> Command:
    """The request of one `hotline queues` command."""
    if args.queues_command == "list":
        return Command("GET", "/api/queues", None, render_queues)
    return Command("GET", f"/api/queues/{quote(args.skill, safe='')}", None, render_queue)


async def _send(url: str, token: str | None, command: Command) -> Any:
    async with ApiClient(url, token) as client:
        return await client.request(command.method, command.path, command.body)


def run(command: Command, settings: Settings, *, url: str | None, as_json: bool) -> int:
    """Send ``command`` to the hotline (``url``, else the settings' web address, with the
    settings' api_token) and print the answer; returns the exit code."""
    try:
        target = url or base_url(settings)
    except ValueError as exc:
        print(f"hotline: {exc}", file=sys.stderr)
        return 2
    try:
        answer = asyncio.run(_send(target, settings.api_token, command))
    except HotlineUnreachableError as exc:
        print(
            f"hotline: cannot reach the hotline at {exc.url} ({exc.reason}); is `hotline serve` "
            "running? (--url sets the address)",
            file=sys.stderr,
        )
        return 2
    except ApiAnswerError as exc:
        print(f"hotline: {exc.error_id}: {exc.message}", file=sys.stderr)
        return 1
    print(json.dumps(answer, ensure_ascii=False, indent=2) if as_json else command.render(answer))
    return 0
