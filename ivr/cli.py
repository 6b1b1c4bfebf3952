"""The `hotline` command: serve, simulated calls, flow checks, prompts, speech models, agents and
queues, tickets and outages."""

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
        use_crm=args.crm,
    )


def _cmd_models_check(args: argparse.Namespace) -> int:
    from ivr.cli_models import check_command

    return check_command(_settings(args), args.path)


def _cmd_models_download(args: argparse.Namespace) -> int:
    from ivr.cli_models import download_command

    return download_command(
        _settings(args), args.name, dest=args.dest, url=args.url, sha256=args.sha256, md5=args.md5
    )


def _cmd_agents(args: argparse.Namespace) -> int:
    from ivr.cli_routing import agents_request, run

    return run(agents_request(args), _settings(args), url=args.url, as_json=args.json)


def _cmd_queues(args: argparse.Namespace) -> int:
    from ivr.cli_routing import queues_request, run

    return run(queues_request(args), _settings(args), url=args.url, as_json=args.json)


def _cmd_crm_api(args: argparse.Namespace) -> int:
    from ivr import cli_crm
    from ivr.cli_routing import run

    requests = {
        "tickets": cli_crm.tickets_request,
        "outages": cli_crm.outages_request,
        "crm": cli_crm.crm_request,
    }
    command = requests[args.command](args)
    return run(command, _settings(args), url=args.url, as_json=args.json)


def _time(text: str) -> float:
    from ivr.cli_crm import time_option

    return time_option(text)


def _skill(text: str) -> tuple[str, int]:
    from ivr.cli_routing import skill_option

    return skill_option(text)


def _api_options() -> argparse.ArgumentParser:
    """Options every API command takes, after its own arguments (`hotline agents list --json`)."""
    api = argparse.ArgumentParser(add_help=False)
    api.add_argument(
        "--url", default=None, help="the hotline's web address (default: from web_host/web_port)"
    )
    api.add_argument("--json", action="store_true", help="print the API's JSON answer")
    return api


def _add_api_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], api: argparse.ArgumentParser
) -> None:
    """`agents ...` and `queues ...`: requests to the running hotline's API."""
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


def _add_crm_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], api: argparse.ArgumentParser
) -> None:
    """`tickets ...`, `outages ...` and `crm ...`: the CRM admin API of the running hotline."""
    tickets = sub.add_parser("tickets", help="work orders (工单) of the running hotline")
    tickets.set_defaults(func=_cmd_crm_api)
    ticket_actions = tickets.add_subparsers(dest="tickets_command", required=True)
    listing = ticket_actions.add_parser("list", parents=[api], help="the newest tickets first")
    statuses = ["new", "submitted", "in_progress", "resolved", "closed"]
    listing.add_argument("--status", choices=statuses, default=None, help="only these")
    listing.add_argument("--limit", type=int, default=50, help="at most N (1..500, default 50)")
    show = ticket_actions.add_parser("show", parents=[api], help="a ticket and its history")
    show.add_argument("ticket_id", metavar="ID", help="the ticket number")
    status = ticket_actions.add_parser(
        "status", parents=[api], help="move a ticket on (embedded CRM)"
    )
    status.add_argument("ticket_id", metavar="ID", help="the ticket number")
    status.add_argument("status", choices=statuses[1:], help="the new status")
    status.add_argument("--note", default="", help="what was done, for the history")
    ticket_actions.add_parser(
        "outbox",
        parents=[api],
        help="this node's tickets and surveys on their way to the CRM: dead letters",
    )
    retry = ticket_actions.add_parser(
        "retry", parents=[api], help="replay a dead letter (or every one) to the CRM"
    )
    retry.add_argument(
        "ticket_id",
        metavar="ID",
        nargs="?",
        default=None,
        help="the ticket number or survey-… id (default: all)",
    )

    outages = sub.add_parser("outages", help="outage notices of the running hotline")
    outages.set_defaults(func=_cmd_crm_api)
    outage_actions = outages.add_subparsers(dest="outages_command", required=True)
    listing = outage_actions.add_parser("list", parents=[api], help="every notice, newest first")
    listing.add_argument("--active", action="store_true", help="only those active now")
    post = outage_actions.add_parser(
        "post", parents=[api], help="post a notice: callers from the area hear of it"
    )
    for level, example in (
        ("province", "江苏省"),
        ("city", "南京市"),
        ("district", "鼓楼区"),
        ("street", "中山北路"),
    ):
        post.add_argument(f"--{level}", default=None, help=f"e.g. {example}")
    post.add_argument("--kind", choices=["planned", "fault"], required=True, help="why")
    post.add_argument("--cause", required=True, help="what callers hear, e.g. 线路检修")
    # A time in the past needs the = form (--starts-at=-30m): argparse reads -30m as an option.
    time_help = "now, +2h, +1d, =-30m, or a local date-time like 2026-11-27T14:00"
    post.add_argument("--starts-at", type=_time, default=None, help=f"{time_help} (default now)")
    post.add_argument("--restore-at", type=_time, default=None, help=f"{time_help} (estimate)")
    end = outage_actions.add_parser("end", parents=[api], help="the power is back")
    end.add_argument("outage_id", metavar="ID", help="the notice's id")

    crm = sub.add_parser("crm", help="the embedded CRM of the running hotline")
    crm.set_defaults(func=_cmd_crm_api)
    crm_actions = crm.add_subparsers(dest="crm_command", required=True)
    crm_actions.add_parser(
        "seed-demo", parents=[api], help="load demo customers, bills and outages (safe to repeat)"
    )


def _add_models_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`models check` and `models download`: the Vosk speech model."""
    models = sub.add_parser("models", help="speech models: check one, download a published one")
    actions = models.add_subparsers(dest="models_command", required=True)
    check = actions.add_parser("check", help="load a Vosk model and describe it")
    check.add_argument(
        "path", type=Path, nargs="?", default=None, help="model folder (default: vosk_model)"
    )
    check.set_defaults(func=_cmd_models_check)
    download = actions.add_parser(
        "download", help="download, verify and unpack a published Vosk model"
    )
    download.add_argument(
        "name",
        metavar="NAME",
        help="small-cn (Mandarin, 42 MB) or cn (Mandarin, 1.3 GB); any other name needs --url "
        "and a checksum, and becomes the model's folder name",
    )
    download.add_argument(
        "--dest", type=Path, default=Path("models"), help="folder to install into (default models)"
    )
    download.add_argument("--url", default=None, help="fetch the archive from here (a mirror)")
    checksum = download.add_mutually_exclusive_group()
    checksum.add_argument("--sha256", metavar="HEX", default=None, help="the archive's SHA-256")
    checksum.add_argument("--md5", metavar="HEX", default=None, help="the archive's MD5")
    download.set_defaults(func=_cmd_models_download)


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
    call.add_argument(
        "--crm",
        action="store_true",
        help="file tickets and ask lookups in this node's CRM (embedded store under var/, or the"
        " configured HTTP CRM); not while hotline serve runs on the same var/",
    )
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

    _add_models_commands(sub)

    api = _api_options()
    _add_api_commands(sub, api)
    _add_crm_commands(sub, api)
    from ivr.cli_users import add_users_commands

    add_users_commands(sub, _settings)
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
