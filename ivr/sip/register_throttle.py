"""The REGISTER brute-force throttle: failed digest proofs counted per source address and per
user, and REGISTERs from a source or for a user over its limit left unanswered for a while.

Sans-I/O like the registrar that uses it (time is an argument). Decisions a newcomer would
question:

- **Silence, not 403 or 503.** A refusal is an answer: it costs us a response and, for a
  challenge, a nonce, and it paces the guesser (the next guess can go out at once). Unanswered,
  every guess costs a SIP client its whole transaction timeout (Timer F, 32 s) and a scanner such
  as svcrack its own timeout; SIP has no 429, and a 503 with Retry-After invites the next try.
  The held transaction absorbs the guess's retransmissions, so silence costs us nothing more.
- **Per source address (the IP, not the port)**: a scanner picks a new port per run. Per user
  (the digest username, and the To extension), counted from anywhere: a distributed guesser
  spreads over sources, not over passwords. Both are counted the same way for extensions that
  exist and for those that do not, so the throttle tells an enumerator nothing.
- **Only failed proofs count** (403: unknown extension, wrong password, another extension's
  name); challenges (401) are the normal first step of every registration and do not.
- **An agent's own phone is not locked out** by the per-user limit: a source address that holds
  a live binding of the extension is exempt from that extension's limit (an attacker who fails
  on purpose cannot unregister a working phone). The per-source limit has no exemption: an
  office behind one NAT address shares it, hence the higher default.
- **A blocked source stays blocked while it keeps trying**: every dropped REGISTER from it
  restarts its window, so a scanner that does not stop is never heard again. A blocked user is
  not extended by dropped attempts (they are not proofs), so an attacker cannot keep an agent
  out for longer than one window after its last real failure.
- **Bounded**: at most ``max_tracked`` sources and users are remembered (least recently failed
  forgotten first), so a flood of made-up names cannot grow the table.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

Scope = Literal["source", "user"]

MAX_TRACKED = 10_000


@dataclass
class _Failures:
    count: int
    last: float


class RegisterThrottle:
    """Counts failed REGISTER proofs; says whether a REGISTER is to be dropped unanswered."""

    def __init__(
        self,
        *,
        per_source: int = 20,
        per_user: int = 10,
        window: float = 300.0,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        if per_source < 1 or per_user < 1 or window <= 0:
            raise ValueError("limits must be at least 1 and the window positive")
        self.per_source = per_source
        self.per_user = per_user
        self.window = window
        self.max_tracked = max_tracked
        self._tables: dict[Scope, OrderedDict[str, _Failures]] = {
            "source": OrderedDict(),
            "user": OrderedDict(),
        }

    def blocked(
        self, source: str, users: tuple[str, ...], now: float, *, exempt_users: frozenset[str]
    ) -> Scope | None:
        """Whether a REGISTER from ``source`` naming ``users`` is dropped, and by which limit.

        ``exempt_users``: users whose live binding is at this source (not held to their limit).
        """
        entry = self._live("source", source, now)
        if entry is not None and entry.count >= self.per_source:
            entry.last = now  # still trying: the source's window starts again
            return "source"
        for user in users:
            if user in exempt_users:
                continue
            entry = self._live("user", user, now)
            if entry is not None and entry.count >= self.per_user:
                return "user"
        return None

    def failed(self, source: str, users: tuple[str, ...], now: float) -> list[Scope]:
        """Count one failed proof; the limits this failure reached (for one log line each)."""
        reached: list[Scope] = []
        if self._count("source", source, now) == self.per_source:
            reached.append("source")
        for user in dict.fromkeys(users):
            if self._count("user", user, now) == self.per_user and "user" not in reached:
                reached.append("user")
        return reached

    def failures(self, scope: Scope, key: str, now: float) -> int:
        """Failures of a source or user counted in the current window."""
        entry = self._live(scope, key, now)
        return 0 if entry is None else entry.count

    @property
    def tracked(self) -> int:
        """Sources and users remembered (bounded by ``2 * max_tracked``)."""
        return sum(len(table) for table in self._tables.values())

    def _live(self, scope: Scope, key: str, now: float) -> _Failures | None:
        table = self._tables[scope]
        entry = table.get(key)
        if entry is not None and now - entry.last > self.window:
            del table[key]
            return None
        return entry

    def _count(self, scope: Scope, key: str, now: float) -> int:
        table = self._tables[scope]
        entry = self._live(scope, key, now)
        if entry is None:
            entry = table[key] = _Failures(0, now)
        entry.count += 1
        entry.last = now
        table.move_to_end(key)
        while len(table) > self.max_tracked:
            table.popitem(last=False)
        return entry.count
