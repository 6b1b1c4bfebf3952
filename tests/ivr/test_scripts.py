"""Scripted simulated calls through the real flow, dialog and session driver."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from ivr.settings import load_settings
from ivr.transports.script import ScriptError, run_script

SCRIPT_DIR = Path(__file__).parent / "scripts"
SCRIPTS = sorted(SCRIPT_DIR.glob("*.call"))
TEXTS = {p.stem: p.read_text(encoding="utf-8") for p in SCRIPTS}


def test_there_are_scripts_for_every_outcome() -> None:
    names = {p.stem for p in SCRIPTS}
    assert {
        "hazard_key",
        "hazard_speech",
        "fault_report",
        "billing",
        "complaint",
        "callback",
        "survey_speech",
        "hangup_partial_ticket",
    } <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
async def test_script_passes(script: Path) -> None:
    out = io.StringIO()
    summary = await run_script(
        load_settings(),
        TEXTS[script.stem],
        caller="13800138000",
        dialed="95598",
        out=out,
    )
    assert summary.outcomes, out.getvalue()
    assert summary.path[0] == "welcome"


async def test_hazard_outranks_everything() -> None:
    hazard = await run_script(
        load_settings(),
        TEXTS["hazard_key"],
        caller="13800138000",
        dialed="95598",
        out=io.StringIO(),
    )
    complaint = await run_script(
        load_settings(),
        TEXTS["complaint"],
        caller="13800138000",
        dialed="95598",
        out=io.StringIO(),
    )
    consult = await run_script(
        load_settings(),
        TEXTS["consultation"],
        caller="13800138000",
        dialed="95598",
        out=io.StringIO(),
    )

    def priority(summary: object) -> int:
        outcome = next(o for o in summary.outcomes if o.kind == "enqueue")  # type: ignore[attr-defined]
        return int(outcome.detail.split("/")[1])

    assert priority(hazard) > priority(complaint) > priority(consult)


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (
            "press 2\nexpect billing_menu\n",
            "line 2: expect billing_menu: 'billing_menu' was not played",
        ),
        ("press 9x\n", "line 1: press 9x: press takes phone keys"),
        ("press 3\n", "the script ended but the call is still at node 'billing_menu'"),
        ("reply ticket 1\n", "line 1: reply ticket 1: no ticket request is waiting"),
        ("frobnicate\n", "unknown command 'frobnicate'"),
        ("press 1\nspeech on\n", "'speech' must come before the call starts"),
        ("expect no_such_prompt\n", "'no_such_prompt' is not a prompt id"),
        ("hangup\nexpect-outcome ticket\n", "no outcome ticket"),
    ],
)
async def test_script_failures_name_the_line(script: str, message: str) -> None:
    with pytest.raises(ScriptError) as info:
        await run_script(
            load_settings(), script, caller="13800138000", dialed="95598", out=io.StringIO()
        )
    assert message in str(info.value)


def test_cli_runs_a_script(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ivr", "call", "--script", str(SCRIPTS[0])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{SCRIPTS[0]}: ok" in done.stdout
    assert "IVR ▶ 您好，欢迎致电" in done.stdout


def test_cli_script_failure_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.call"
    bad.write_text("press 2\nexpect billing_menu\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "ivr", "call", "--script", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "line 2: expect billing_menu" in done.stdout


def test_cli_interactive_call_over_stdin() -> None:
    """The terminal caller: each answer typed once the IVR waits for it, as a person would."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "ivr", "call", "--caller", "13912345678"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    seen: list[str] = []

    def wait_for(marker: str) -> None:
        assert proc.stdout is not None
        while True:
            line = proc.stdout.readline()
            assert line, f"the call ended before {marker!r}: {seen}"
            seen.append(line)
            if marker in line:
                return

    def answer(text: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(text + "\n")
        proc.stdin.flush()

    try:
        for marker, typed in [
            ("(waiting for", "3"),  # main menu: bills
            ("(waiting for", "1"),  # balance
            ("(waiting for", "1234567890#"),
            ("您输入的号码是幺二三四五六七八九零", None),
            ("(waiting for", "1"),
            # No CRM yet: the lookup fails honestly and the caller is offered an agent, whose
            # queue is not connected either, so the busy menu comes.
            ("CRM ▶ failed: not_connected", None),
            ("IVR ▶ 系统繁忙", None),
            ("(waiting for", "hangup"),
        ]:
            wait_for(marker)
            if typed is not None:
                answer(typed)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    text = "".join(seen) + out
    assert proc.returncode == 0
    assert "CRM ◀ lookup bill_summary {'account': '1234567890'}" in text
    assert "ticket created" not in text
    assert "Call over after" in text
