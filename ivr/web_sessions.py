"""Where the desk's and the wallboard's sessions are kept: in routing's Redis, so every node
honours a session any node opened (no sticky sessions behind a load balancer), and a logout or a
password change ends it on all of them; in this node's memory when it has no routing.

A session is found by the SHA-256 of its cookie (a dump of Redis or of memory hands out no
session). Every key is in `SessionKeys`, under the tenant's hash tag like routing's keys
(`routing.keys`), so it sits in routing's Redis Cluster slot:

- ``web:session:<digest>``: hash ``username``, ``role``, ``csrf``, ``expires`` and ``pw`` (a
  SHA-256 of the user's password hash at login: a changed password ends the session, and no
  password hash is copied into Redis); Redis drops it when the session ends (PEXPIRE, a
  duration: the node's clock and Redis's need not agree);
- ``web:user:<username>``: set of the user's session digests, so all of them can be ended at
  once (`revoke_user`), kept as long as the newest session;
- ``web:login:u:<username>`` and ``web:login:p:<address>``: sorted sets of failed login times
  (the login throttle's window, `RedisLoginFailures`), so guesses spread over several nodes
  count together; each expires with its window.

Opening is one MULTI; ending one session or all of a user's is one Lua step each.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis

from ivr.accounts import Role
from routing.keys import NAMESPACE, check_tenant

TEMPLATES: dict[str, str] = {
    "session": "web:session:{0}",  # hash: one session (see the module doc)
    "user_sessions": "web:user:{0}",  # set: the user's session digests
    "login_failures": "web:login:{0}",  # sorted set: failed login times (u:<user>, p:<addr>)
}


class SessionKeys:
    """The session keys of one tenant (the same prefix and hash tag as `routing.keys.Keys`)."""

    def __init__(self, tenant: str = "default", namespace: str = NAMESPACE) -> None:
        self.prefix = f"{namespace}:{{{check_tenant(tenant)}}}:"
        """Every key of the tenant starts with this."""

    def session(self, digest: str) -> str:
        return self.prefix + TEMPLATES["session"].format(digest)

    def user_sessions(self, username: str) -> str:
        return self.prefix + TEMPLATES["user_sessions"].format(username)

    def login_failures(self, key: str) -> str:
        return self.prefix + TEMPLATES["login_failures"].format(key)


@dataclass
class Session:
    """A logged-in browser."""

    username: str
    """The user."""
    role: Role
    """Their role when they logged in."""
    csrf: str
    """The token state-changing requests must echo in ``X-CSRF-Token``."""
    expires: float
    """When the session ends (seconds since the epoch)."""
    password_digest: str
    """`password_digest` of the hash the user had at login: a changed password ends it."""

    @property
    def agent_id(self) -> str:
        """The agent in routing (agents only)."""
        return self.username if self.role is Role.AGENT else ""


def cookie_digest(cookie: str) -> str:
    """What a session is kept by: the SHA-256 of its cookie."""
    return hashlib.sha256(cookie.encode()).hexdigest()


def password_digest(password_hash: str) -> str:
    """What a session remembers of the user's password hash."""
    return hashlib.sha256(password_hash.encode()).hexdigest()


class SessionStore(Protocol):
    """Sessions by cookie digest."""

    async def save(self, digest: str, session: Session, ttl: float) -> None:
        """Keep ``session`` for ``ttl`` seconds (it also carries its end, on the node's clock)."""

    async def get(self, digest: str) -> Session | None:
        """The session, or None (unknown, ended or expired in the store)."""

    async def delete(self, digest: str) -> None:
        """End one session."""

    async def revoke_user(self, username: str) -> int:
        """End every session of a user; how many there were."""


class MemorySessions:
    """Sessions in this node's memory (a node without routing: one node, no Redis)."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    async def save(self, digest: str, session: Session, ttl: float) -> None:
        self._sessions[digest] = session

    async def get(self, digest: str) -> Session | None:
        return self._sessions.get(digest)

    async def delete(self, digest: str) -> None:
        self._sessions.pop(digest, None)

    async def revoke_user(self, username: str) -> int:
        ended = [d for d, s in self._sessions.items() if s.username == username]
        for digest in ended:
            del self._sessions[digest]
        return len(ended)


# Both build keys from the tenant's prefix, under its hash tag (as routing's scripts do).
# KEYS[1]: the session; ARGV: its digest, the prefix of the users' sets.
_DELETE = """
local user = redis.call('HGET', KEYS[1], 'username')
redis.call('DEL', KEYS[1])
if user then redis.call('SREM', ARGV[2] .. user, ARGV[1]) end
return 1
"""
# KEYS[1]: the user's set; ARGV[1]: the prefix of the sessions.
_REVOKE = """
local digests = redis.call('SMEMBERS', KEYS[1])
local ended = 0
for _, digest in ipairs(digests) do
  ended = ended + redis.call('DEL', ARGV[1] .. digest)
end
redis.call('DEL', KEYS[1])
return ended
"""


class RedisSessions:
    """Sessions in routing's Redis, shared by every node of the tenant."""

    def __init__(self, redis: Redis, tenant: str = "default") -> None:
        self.redis = redis
        self.keys = SessionKeys(tenant)
        self._delete = redis.register_script(_DELETE)
        self._revoke = redis.register_script(_REVOKE)

    async def save(self, digest: str, session: Session, ttl: float) -> None:
        keys = self.keys
        ttl_ms = max(1, int(ttl * 1000))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                keys.session(digest),
                mapping={
                    "username": session.username,
                    "role": session.role.value,
                    "csrf": session.csrf,
                    "expires": repr(session.expires),
                    "pw": session.password_digest,
                },
            )
            pipe.pexpire(keys.session(digest), ttl_ms)
            pipe.sadd(keys.user_sessions(session.username), digest)
            # The newest session lasts longest: the set lives as long as it.
            pipe.pexpire(keys.user_sessions(session.username), ttl_ms)
            await pipe.execute()

    async def get(self, digest: str) -> Session | None:
        raw: Mapping[Any, Any] = await self.redis.hgetall(self.keys.session(digest))
        if not raw:
            return None
        stored = {_text(k): _text(v) for k, v in raw.items()}
        try:
            return Session(
                stored["username"],
                Role(stored["role"]),
                stored["csrf"],
                float(stored["expires"]),
                stored["pw"],
            )
        except (KeyError, ValueError):
            return None  # not a session this code wrote: refuse it

    async def delete(self, digest: str) -> None:
        prefix = self.keys.user_sessions("")
        await self._delete(keys=[self.keys.session(digest)], args=[digest, prefix])

    async def revoke_user(self, username: str) -> int:
        prefix = self.keys.session("")
        ended = await self._revoke(keys=[self.keys.user_sessions(username)], args=[prefix])
        return int(ended)


class LoginFailures(Protocol):
    """Failed login times by throttle key (``u:<user>``, ``p:<address>``)."""

    async def since(self, key: str, start: float) -> list[float]:
        """The key's failure times after ``start``, oldest first."""

    async def add(self, keys: Sequence[str], now: float, window: float) -> None:
        """Count a failure at ``now`` under each key, forgetting what is older than the window."""

    async def clear(self, key: str) -> None:
        """Forget the key's failures."""


class MemoryLoginFailures:
    """Failed logins in this node's memory (a node without routing)."""

    def __init__(self) -> None:
        self._times: dict[str, deque[float]] = {}

    async def since(self, key: str, start: float) -> list[float]:
        times = self._times.get(key)
        if times is None:
            return []
        while times and times[0] <= start:
            times.popleft()
        if not times:
            del self._times[key]  # a sweep of addresses leaves nothing behind
        return list(times)

    async def add(self, keys: Sequence[str], now: float, window: float) -> None:
        for key in keys:
            times = self._times.setdefault(key, deque())
            times.append(now)
            while times and times[0] <= now - window:
                times.popleft()

    async def clear(self, key: str) -> None:
        self._times.pop(key, None)


class RedisLoginFailures:
    """Failed logins in routing's Redis, counted together by every node of the tenant."""

    def __init__(self, redis: Redis, tenant: str = "default") -> None:
        self.redis = redis
        self.keys = SessionKeys(tenant)

    async def since(self, key: str, start: float) -> list[float]:
        # "(" makes the bound exclusive, like the memory log's ``<= start`` aging out.
        found: list[Any] = await self.redis.zrangebyscore(
            self.keys.login_failures(key), f"({start!r}", "+inf", withscores=True
        )
        return [float(score) for _member, score in found]  # (member, score) pairs

    async def add(self, keys: Sequence[str], now: float, window: float) -> None:
        member = f"{now!r}:{secrets.token_hex(4)}"  # two failures in one instant count twice
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in keys:
                name = self.keys.login_failures(key)
                pipe.zadd(name, {member: now})
                pipe.zremrangebyscore(name, "-inf", now - window)
                pipe.pexpire(name, max(1, int(window * 1000)))
            await pipe.execute()

    async def clear(self, key: str) -> None:
        await self.redis.delete(self.keys.login_failures(key))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
