"""Accounts of the agent desktop and the wallboard: users, roles, argon2 password hashes, kept in
a small JSON file (``<var_dir>/users.json``).

Why a file and not the embedded SQLite: the SQLite store belongs to the CRM bridge (and is absent
when the CRM is external); accounts are a few dozen rows changed by `hotline users`, read by the
web app. The file is replaced atomically (write a temporary file, ``os.replace``), is readable by
its owner only, and the web app reloads it when it changes, so ``hotline users passwd`` takes
effect on a running hotline (sessions of a changed or removed user end: see `ivr.web_auth`).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

USERS_FILE = "users.json"
"""The accounts file, under ``var_dir``."""
MIN_PASSWORD_LENGTH = 8
"""Shorter passwords are refused by `hotline users add/passwd`."""

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# argon2-cffi's defaults (RFC 9106's second recommended option, memory-hard): ~50 ms a check.
_HASHER = PasswordHasher()
# Checked against when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash("not-a-password-of-anyone")


class Role(StrEnum):
    """What a user may do."""

    AGENT = "agent"
    """Sees and changes only their own routing state and calls."""
    SUPERVISOR = "supervisor"
    """Sees everything; can force agents not ready or log them out; sees the wallboard."""


class AccountError(Exception):
    """A refused change of the accounts file (bad name, short password, unknown user)."""


@dataclass(frozen=True)
class User:
    """One account."""

    username: str
    """Login name; for an agent, also the agent id in routing."""
    role: Role
    """Agent or supervisor."""
    password_hash: str
    """argon2id hash (PHC string)."""
    name: str = ""
    """Display name."""
    skills: dict[str, int] = field(default_factory=dict)
    """For an agent: the skills the desk signs in with (skill -> level)."""

    @property
    def agent_id(self) -> str:
        """The agent this user is in routing (agents only; empty for supervisors)."""
        return self.username if self.role is Role.AGENT else ""


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (slow on purpose: call it off the event loop)."""
    return _HASHER.hash(password)


def verify_password(user: User | None, password: str) -> bool:
    """Whether ``password`` is ``user``'s (False for no user, after the same work)."""
    try:
        return _HASHER.verify(user.password_hash if user else _DUMMY_HASH, password) and bool(user)
    except (VerificationError, InvalidHashError):
        return False


def check_username(username: str) -> str:
    """``username`` when it is a valid login name (letters, digits, ``_ . -``, 1..64)."""
    if not _NAME.match(username):
        raise AccountError(f"a user name is 1..64 letters, digits, '_', '.' or '-': {username!r}")
    return username


class UserFile:
    """The accounts file; `users` reloads it when its modification time changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        """``<var_dir>/users.json``."""
        self._users: dict[str, User] = {}
        self._stamp: tuple[int, int] | None = None

    def users(self) -> dict[str, User]:
        """Every account by name (none when the file does not exist)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._users, self._stamp = {}, None
            return {}
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            self._users = {u["username"]: _user(u) for u in raw.get("users", [])}
            self._stamp = stamp
        return self._users

    def get(self, username: str) -> User | None:
        """One account."""
        return self.users().get(username)

    def add(
        self,
        username: str,
        role: Role,
        password: str,
        *,
        name: str = "",
        skills: dict[str, int] | None = None,
    ) -> User:
        """Add an account (AccountError when the name is taken or the password too short)."""
        check_username(username)
        _check_password(password)
        users = dict(self.users())
        if username in users:
            raise AccountError(f"user {username} exists; use 'hotline users passwd'")
        user = User(username, role, hash_password(password), name, dict(skills or {}))
        users[username] = user
        self._write(users)
        return user

    def set_password(self, username: str, password: str) -> User:
        """Change a password (which ends the user's sessions)."""
        _check_password(password)
        users = dict(self.users())
        if username not in users:
            raise AccountError(f"no user {username}")
        users[username] = replace(users[username], password_hash=hash_password(password))
        self._write(users)
        return users[username]

    def _write(self, users: dict[str, User]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {"users": [_json(u) for u in sorted(users.values(), key=lambda u: u.username)]}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".users-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(body, out, ensure_ascii=False, indent=2)
            os.chmod(tmp, 0o600)  # password hashes: the owner only
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._stamp = None


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")


def _json(user: User) -> dict[str, Any]:
    out = asdict(user)
    out["role"] = user.role.value
    return out


def _user(raw: dict[str, Any]) -> User:
    return User(
        username=str(raw["username"]),
        role=Role(raw["role"]),
        password_hash=str(raw["password_hash"]),
        name=str(raw.get("name", "")),
        skills={str(k): int(v) for k, v in dict(raw.get("skills", {})).items()},
    )
