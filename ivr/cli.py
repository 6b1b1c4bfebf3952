"""The `hotline` command: serve, simulated calls, flow checks, prompts, agents and queues."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ivr.settings import Settings, SettingsError, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    config: Path | None = args.config
    return load_settings(config)


def _cmd_serve(args: argparse.Namespace) -> int:
    from ivr.serve import run_serve

    return run_serve(_settings(args))


def _cmd_sounds_build(args: argparse.Namespace) -> int:
    from ivr.prompts import build_command

    return build_command(_settings(args), force=args.force, only=args.only)


def _cmd_flow_check(args: argparse.Namespace) -> int:
    from ivr.flow.check import check_command

    return check_command(args.file, _settings(args))


def _cmd_call(args: argparse.Namespace) -> int:
    from ivr.transports.sim import call_command

    return call_command(
        _settings(args),
        script=args.script,
        caller=args.caller,
        dialed=args.dialed,
    )


def _cmd_agents(args: argparse.Namespace) -> int:
    from ivr.cli_routing import agents_request, run

    return run(agents_request(args), _settings(args), url=args.url, as_json=args.json)


def _cmd_queues(args: argparse.Namespace) -> int:
    from ivr.cli_routing import queues_request, run

    return run(queues_request(args), _settings(args), url=args.url, as_json=args.json)


def _skill(text: str) -> tuple[str, int]:
    from ivr.cli_routing import skill_option

    return skill_option(text)


def _add_api_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`agents ...` and `queues ...`: requests to the running hotline's API."""
    # Options every API command takes, after its own arguments (`hotline agents list --json`).
    api = argparse.ArgumentParser(add_help=False)
    api.add_argument(
        "--url", default=None, help="the hotline's web address (default: from web_host/web_port)"
    )
    api.add_argument("--json", action="store_true", help="print the API's JSON answer")

    agents = sub.add_parser("agents", help="agents of the running hotline (through its API)")
    agents.set_defaults(func=_cmd_agents)
    actions = agents.add_subparsers(dest="agents_command", required=True)
    actions.add_parser("list", parents=[api], help="every agent with state and skills")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, parents=[api], help=help_text)
        parser.add_argument("agent_id", metavar="ID", help="the agent id")
        return parser

    action("show", "one agent")
    login = action("login", "log an agent in (not ready unless --ready)")
    skill_help = "SKILL=LEVEL (level 1..10); repeat for more skills"
    login.add_argument("--skill", type=_skill, action="append", required=True, help=skill_help)
    login.add_argument("--name", default=None, help="display name")
    login.add_argument("--contact", default=None, help="the agent phone's SIP URI")
    login.add_argument("--ready", action="store_true", help="available at once")
    action("ready", "available for calls (also ends wrap-up)")
    action("not-ready", "stop taking calls").add_argument(
        "--reason", required=True, help="why (lunch, training...)"
    )
    action("logout", "log the agent out")
    for name, help_text in (
        ("accept", "take the offered call"),
        ("reject", "decline the offered call (the agent goes not ready)"),
    ):
        action(name, help_text).add_argument("call_id", metavar="CALL", help="the call id")
    action("complete", "the agent's call ended: wrap-up starts")
    action("skills", "replace the agent's skills").add_argument(
        "--skill", type=_skill, action="append", required=True, help=skill_help
    )

    queues = sub.add_parser("queues", help="skill queues of the running hotline")
    queues.set_defaults(func=_cmd_queues)
    queue_actions = queues.add_subparsers(dest="queues_command", required=True)
    queue_actions.add_parser("list", parents=[api], help="each queue: waiting, agents, strategy")
    show = queue_actions.add_parser("show", parents=[api], help="a queue's settings and calls")
    show.add_argument("skill", metavar="SKILL", help="the queue's skill")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hotline", description=__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML settings file (values there are overridden by HOTLINE_* variables)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the hotline on the configured (embedded) services")
    serve.set_defaults(func=_cmd_serve)

    call = sub.add_parser("call", help="walk the call flow as a simulated caller in this terminal")
    call.add_argument("--script", type=Path, default=None, help="run a scripted call from FILE")
    call.add_argument("--caller", default="13800138000", help="the caller's number (ANI)")
    call.add_argument("--dialed", default="95598", help="the number dialed")
    call.set_defaults(func=_cmd_call)

    flow = sub.add_parser("flow", help="call-flow tools")
    flow_sub = flow.add_subparsers(dest="flow_command", required=True)
    check = flow_sub.add_parser("check", help="validate a flow file and explain every error")
    check.add_argument(
        "file", type=Path, nargs="?", default=None, help="flow file (default: the configured one)"
    )
    check.set_defaults(func=_cmd_flow_check)

    sounds = sub.add_parser("sounds", help="prompt tools")
    sounds_sub = sounds.add_subparsers(dest="sounds_command", required=True)
    build = sounds_sub.add_parser(
        "build", help="render the prompt catalog to 8 kHz WAV with espeak-ng"
    )
    build.add_argument("--force", action="store_true", help="re-render every prompt")
    build.add_argument("only", nargs="*", help="prompt ids to render (default: all)")
    build.set_defaults(func=_cmd_sounds_build)

    _add_api_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except SettingsError as exc:
        print(f"hotline: bad settings: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
