"""bench/storm.py loaded as a module for the CI-sized storms, and the checks they share before
starting one (the tools it runs, root for SIPp's raw-socket RTP)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_storm() -> ModuleType:
    """bench/storm.py, ready for the checks: tools present, running as root (else skip)."""
    for tool in ("sipp", "redis-server", "kamailio"):
        assert shutil.which(tool, path="/usr/bin:/usr/sbin:/usr/local/bin"), f"{tool} missing"
    if os.geteuid() != 0:
        pytest.skip("SIPp plays the callers' RTP through a raw socket: needs root (CI is root)")
    spec = importlib.util.spec_from_file_location("storm", BENCH / "storm.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
