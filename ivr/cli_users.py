"""`hotline users add/passwd`: accounts of the agent desktop and the wallboard
(`ivr.accounts`), written to ``<var_dir>/users.json`` on this host."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ivr.settings import Settings

# The parser is built for every `hotline` command: accounts (argon2) are imported only to run one.
ROLES = ("agent", "supervisor")


def _password(args: argparse.Namespace) -> str:
    from ivr.accounts import AccountError  # noqa: PLC0415 - see ROLES

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise AccountError("the passwords differ")
    return first


def _skill(text: str) -> tuple[str, int]:
    from ivr.cli_routing import skill_option  # noqa: PLC0415 - only this option needs it

    return skill_option(text)


def users_command(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``hotline users add|passwd``; exit 1 naming what was refused."""
    from ivr.accounts import USERS_FILE, AccountError, Role, UserFile  # noqa: PLC0415 - see ROLES

    users = UserFile(settings.var_dir / USERS_FILE)
    try:
        if args.users_command == "add":
            user = users.add(
                args.username,
                Role(args.role),
                _password(args),
                name=args.name,
                skills=dict(args.skill or []),
            )
            print(f"added {user.role.value} {user.username} to {users.path}")
        else:
            user = users.set_password(args.username, _password(args))
            print(f"password of {user.username} changed; their sessions end")
    except AccountError as exc:
        print(f"hotline users: {exc}", file=sys.stderr)
        return 1
    return 0


def add_users_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    settings: Callable[[argparse.Namespace], Settings],
) -> None:
    """The ``users`` subcommand."""
    users = sub.add_parser("users", help="accounts of the agent desktop and the wallboard")
    actions = users.add_subparsers(dest="users_command", required=True)
    add = actions.add_parser("add", help="add an agent or a supervisor")
    add.add_argument("username", help="login name; for an agent also the agent id in routing")
    add.add_argument("--role", choices=ROLES, default="agent")
    add.add_argument("--name", default="", help="display name")
    add.add_argument(
        "--skill",
        type=_skill,
        action="append",
        help="an agent's skill and level, e.g. fault_repair=5 (repeat for more)",
    )
    passwd = actions.add_parser("passwd", help="set a user's password (ends their sessions)")
    passwd.add_argument("username")
    for parser in (add, passwd):
        parser.add_argument(
            "--password-stdin", action="store_true", help="read the password from standard input"
        )
    users.set_defaults(func=lambda args: users_command(settings(args), args))
