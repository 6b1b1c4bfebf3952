"""The `hotline` command: serve, simulated calls, flow checks, prompt rendering."""

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
