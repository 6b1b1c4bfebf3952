"""The routing Lua program cut down to one command, for servers that run it by EVALSHA (Redis 6.2).

A script's top level runs again on every EVALSHA: it builds every helper of ``store.lua`` afresh,
one closure each, and Lua 5.1 walks its list of open upvalues for every variable a closure
captures. For the whole program that set-up cost about 310,000 instructions a call (callgrind,
Redis 6.2), half of what ``accept`` cost the server in all. So each command gets its own script
holding only the top-level definitions it can reach; its behaviour is the same, because a
definition it cannot reach is never run. Redis 7 loads the whole program once, as a FUNCTION
library, and needs none of this. See docs/decisions/0009-routing-scripts-per-command.md.

The cut works on the layout ``store.lua`` (and the generated prelude) keep: every top-level
statement starts at column 0 (``local function name(``, ``local name = ...``, ``K.name = ...``),
everything inside one is indented, and a block ends with ``end`` or ``}`` at column 0. Top-level
comments are dropped. A top-level statement that is none of these is kept in every script. A name
is reached when the code of a kept definition mentions it (string literals and comments aside).
``COMMANDS`` keeps only the command's own entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LOCAL_FUNCTION = re.compile(r"local\s+function\s+([A-Za-z_]\w*)")
_LOCAL = re.compile(r"local\s+([A-Za-z_][\w\s,]*?)\s*(?:=|--|$)")
_FUNCTION = re.compile(r"function\s+([A-Za-z_]\w*)\s*\(")
_ASSIGN = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)\s*=[^=]")
_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?")
_ENTRY = re.compile(r"\s+([A-Za-z_]\w*)\s*=\s*([A-Za-z_]\w*)\s*,?\s*$")

COMMAND_TABLE = "COMMANDS"
"""The table of ``store.lua`` mapping a command name to the function that runs it."""


@dataclass
class _Chunk:
    lines: list[str]
    names: list[str] = field(default_factory=list)
    """What the chunk defines; none: it is kept in every script."""


def _defines(line: str) -> list[str] | None:
    """The names a top-level line starts defining; None when it starts nothing we know."""
    for pattern in (_LOCAL_FUNCTION, _LOCAL, _FUNCTION, _ASSIGN):
        m = pattern.match(line)
        if m:
            return [n.strip() for n in m.group(1).split(",")]
    return None


def _chunks(source: str) -> list[_Chunk]:
    chunks: list[_Chunk] = []
    for line in source.splitlines():
        if not line.strip() or line.startswith("--"):
            continue
        if line[0].isspace() or line.startswith(("end", "}", ")")):
            if not chunks:
                raise ValueError(f"an indented line before any statement: {line!r}")
            chunks[-1].lines.append(line)
            continue
        names = _defines(line)
        chunks.append(_Chunk([line], names or []))
    return chunks


def _code(line: str) -> str:
    """The line without its string literals and its comment (the layout has no long strings)."""
    out: list[str] = []
    quote = ""
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
                out.append(" ")
        elif ch in "'\"":
            quote = ch
        elif line.startswith("--", i):
            break
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _mentions(chunk: _Chunk) -> set[str]:
    found: set[str] = set()
    for line in chunk.lines:
        for name in _NAME.findall(_code(line)):
            found.add(name)
            found.add(name.split(".", 1)[0])
    return found


def commands(source: str) -> dict[str, str]:
    """Command name -> the Lua function running it, from the ``COMMANDS`` table."""
    for chunk in _chunks(source):
        if chunk.names == [COMMAND_TABLE]:
            return {m.group(1): m.group(2) for line in chunk.lines if (m := _ENTRY.match(line))}
    raise ValueError(f"no {COMMAND_TABLE} table in the routing program")


def cut(source: str, command: str) -> str:
    """``source`` (a whole script) with only what ``command`` can reach; the rest dropped."""
    table = commands(source)
    if command not in table:
        raise KeyError(command)
    chunks = _chunks(source)
    for chunk in chunks:
        if chunk.names == [COMMAND_TABLE]:
            chunk.lines = [f"local {COMMAND_TABLE} = {{ {command} = {table[command]} }}"]
    defined: dict[str, list[int]] = {}
    for i, chunk in enumerate(chunks):
        for name in chunk.names:
            defined.setdefault(name, []).append(i)
    kept = {i for i, chunk in enumerate(chunks) if not chunk.names}
    todo = list(kept)
    while todo:
        for name in _mentions(chunks[todo.pop()]):
            for j in defined.get(name, ()):
                if j not in kept:
                    kept.add(j)
                    todo.append(j)
    return "".join("\n".join(chunks[i].lines) + "\n" for i in sorted(kept))
