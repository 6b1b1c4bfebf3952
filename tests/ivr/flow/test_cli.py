"""`hotline flow check` run for real, as `python -m ivr flow check [FILE]` in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

HERE = Path(__file__).parent
BROKEN = HERE / "broken"
SHIPPED = Path(str(resources.files("ivr").joinpath("flows/95598.toml")))


def hotline(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI with no HOTLINE_* variable from the developer's shell."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ivr", "flow", "check", *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )


def _ok_line(path: Path) -> re.Pattern[str]:
    return re.compile(rf"{re.escape(str(path))}: ok \(\d+ nodes, 0 warning\(s\)\)")


def test_configured_flow_is_ok(tmp_path: Path) -> None:
    """No FILE argument: the configured flow, which by default is the shipped one."""
    result = hotline(cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _ok_line(SHIPPED).fullmatch(result.stdout.strip()), result.stdout
    assert result.stderr == ""


def test_shipped_flow_given_explicitly_is_ok(tmp_path: Path) -> None:
    result = hotline(str(SHIPPED), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _ok_line(SHIPPED).fullmatch(result.stdout.strip()), result.stdout


def test_broken_fixture_exits_1_with_file_line_message(tmp_path: Path) -> None:
    path = BROKEN / "goto_nowhere_choice.toml"
    result = hotline(str(path), cwd=tmp_path)
    assert result.returncode == 1
    out = result.stdout + result.stderr
    assert (
        f"{path}:16: error: nodes.main_menu.choices[0].goto: "
        "branch to nowhere: there is no node 'fault_queu'"
    ) in out.splitlines()
    assert f"{path}: 1 error(s)" in result.stderr
    assert ": ok (" not in out


def test_configured_broken_flow_exits_1(tmp_path: Path) -> None:
    """HOTLINE_FLOW_FILE configures the flow; `flow check` with no FILE checks that one."""
    path = BROKEN / "unknown_prompt.toml"
    result = hotline(cwd=tmp_path, env={"HOTLINE_FLOW_FILE": str(path)})
    assert result.returncode == 1
    assert f"{path}:11: error: nodes.main_menu.prompts[0]: unknown prompt 'main_menus'" in (
        result.stdout + result.stderr
    )


@pytest.mark.parametrize("name", ["unknown_field", "loop_menu_no_exit"])
def test_every_error_is_printed(name: str, tmp_path: Path) -> None:
    path = BROKEN / f"{name}.toml"
    result = hotline(str(path), cwd=tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stdout.splitlines() if ": error: " in line]
    assert len(errors) == 2
    assert all(line.startswith(f"{path}:") for line in errors)
    assert f"{path}: 2 error(s)" in result.stderr


def test_warning_only_flow_exits_0(tmp_path: Path) -> None:
    path = HERE / "warn_global_key_shadowed.toml"
    result = hotline(str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"{path}:25: warning: nodes.main_menu.choices[1].key: "
        "key '0' hides the universal choice with the same key here",
        f"{path}: ok (4 nodes, 1 warning(s))",
    ]


def test_missing_file_exits_1_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    result = hotline(str(path), cwd=tmp_path)
    assert result.returncode == 1
    out = result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"{path}: error: cannot read the flow file: No such file or directory"
    ]
    assert f"{path}: 1 error(s)" in result.stderr
    assert "Traceback" not in out


def test_toml_syntax_error_is_printed_with_its_line(tmp_path: Path) -> None:
    path = BROKEN / "bad_toml_syntax.toml"
    result = hotline(str(path), cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stdout.splitlines()
    assert re.fullmatch(
        rf"{re.escape(str(path))}:11: error: not valid TOML: Illegal character .*"
        r"\(at line 11, column 23\)",
        line,
    ), line
    assert result.stderr == f"{path}: 1 error(s)\n"


def test_non_utf8_file_exits_1_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "gbk.toml"
    path.write_bytes((HERE / "minimal_ok.toml").read_text("utf-8").encode("gbk"))
    result = hotline(str(path), cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stdout.splitlines()
    assert re.fullmatch(
        rf"{re.escape(str(path))}: error: not UTF-8 text \(byte \d+\); save the flow file as UTF-8",
        line,
    ), line
    assert "Traceback" not in result.stderr


def test_on_skip_with_empty_terminator_is_printed_at_its_line(tmp_path: Path) -> None:
    path = BROKEN / "on_skip_without_terminator.toml"
    result = hotline(str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{path}:36: error: nodes.fault_account.on_skip: "
        "on_skip needs a terminator key to skip with"
    ]
