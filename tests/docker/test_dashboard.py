"""docker/grafana/hotline.json asks only for series the code exports.

The names come from `ivr.metrics.REGISTRY` after importing every module of the packages and
making the per-process series of the speech pool and the CRM outbox (the node makes those on
start); each family gives the sample names Prometheus sees (`_total` for counters, `_bucket`,
`_sum`, `_count` for histograms). Every `hotline_*` name in a panel's PromQL must be one of them.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from pathlib import Path
from typing import Any

import pytest

DASHBOARD = Path(__file__).resolve().parents[2] / "docker" / "grafana" / "hotline.json"
PACKAGES = ("ivr", "routing", "speech", "crm_bridge", "sounds")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}
METRIC = re.compile(r"\b(hotline_[a-z0-9_]+)\b")


def exported_names() -> set[str]:
    for package in PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, f"{package}."):
            if not info.name.endswith(".__main__"):  # `python -m ivr` would run the CLI
                importlib.import_module(info.name)
    from ivr import crm_runtime, speech_runtime
    from ivr.metrics import REGISTRY

    # The per-process series a running node makes when its speech pool and outbox start.
    speech_runtime._metrics()
    crm_runtime._metrics()
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    return found


@pytest.fixture(scope="module")
def names() -> set[str]:
    return exported_names()


def test_dashboard_is_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"]
    assert dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]


def test_every_metric_in_the_dashboard_is_exported(names: set[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    missing = [
        (title, name)
        for title, expr in expressions(dashboard)
        for name in METRIC.findall(expr)
        if name not in names
    ]
    assert missing == []


def test_the_check_sees_the_metrics_it_should(names: set[str]) -> None:
    # Sanity: series from each place that defines them were collected.
    for name in (
        "hotline_calls_active",
        "hotline_calls_started_total",
        "hotline_sip_calls_refused_total",
        "hotline_speech_real_time_factor_bucket",
        "hotline_crm_outbox_backlog",
        "hotline_twilio_handoffs_total",
        "hotline_routing_waiting",
        "hotline_routing_reservation_timeouts_total",
        "hotline_rtp_packets_lost_total",
    ):
        assert name in names
    assert "hotline_calls_active_total" not in names
