"""docker/kamailio/kamailio.cfg passes Kamailio's own check (`kamailio -c`, Debian's 5.6, the
version the image installs), and the check is not a rubber stamp."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

KAMAILIO_DIR = Path(__file__).resolve().parents[2] / "docker" / "kamailio"
CFG = KAMAILIO_DIR / "kamailio.cfg"


def kamailio() -> str:
    found = shutil.which("kamailio", path="/usr/sbin:/usr/bin:/usr/local/sbin")
    assert found, "kamailio missing: apt-get install kamailio (scripts/test does)"
    return found


def check(cfg: Path, tmp_path: Path, *defines: str) -> subprocess.CompletedProcess[str]:
    args = [
        kamailio(),
        "-c",
        "-f",
        str(cfg),
        # The container paths do not exist here: the list beside the cfg, a temporary socket.
        "-A",
        f'DISPATCHER_LIST="{KAMAILIO_DIR / "dispatcher.list"}"',
        "-A",
        f'CTL_SOCKET="unix:{tmp_path / "ctl"}"',
    ]
    for define in defines:
        args += ["-A", define]
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)


def test_config_is_valid(tmp_path: Path) -> None:
    result = check(CFG, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "config file ok" in result.stdout + result.stderr


def test_config_is_valid_behind_nat(tmp_path: Path) -> None:
    result = check(CFG, tmp_path, "PUBLIC_ADDRESS=203.0.113.10")
    assert result.returncode == 0, result.stderr[-3000:]


def test_dispatcher_probes_with_options_and_fails_over_on_503() -> None:
    text = CFG.read_text()
    assert 'loadmodule "dispatcher.so"' in text
    assert 'modparam("dispatcher", "ds_ping_method", "OPTIONS")' in text
    assert 'modparam("dispatcher", "ds_probing_mode", 1)' in text
    assert 't_check_status("503")' in text
    assert "ds_next_dst()" in text
    assert "record_route();" in text


def test_dispatcher_list_names_the_compose_nodes() -> None:
    rows = [
        line.split()
        for line in (KAMAILIO_DIR / "dispatcher.list").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert [row[1] for row in rows] == ["sip:hotline-1:5060", "sip:hotline-2:5060"]
    assert {row[0] for row in rows} == {"1"}


def test_a_broken_config_fails_the_check(tmp_path: Path) -> None:
    broken = tmp_path / "kamailio.cfg"
    broken.write_text(CFG.read_text().replace("ds_select_dst(", "ds_select_dstx("))
    result = check(broken, tmp_path)
    assert result.returncode != 0
