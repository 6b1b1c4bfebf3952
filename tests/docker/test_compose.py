"""docker/compose.yaml and its Sentinel override, checked without a Docker engine.

Two layers, as `docker compose config` would: each file (and the two merged) validates against
the Compose Specification schema (tests/docker/data/README.md says where it comes from); then
what the schema cannot see: every build context and Dockerfile, bind-mounted file, named
volume, network and depends_on target exists; a service others wait for as healthy has a health
check (its own or its image's HEALTHCHECK); every HOTLINE_* variable is a real setting; each
hotline node's published RTP range is its sip_rtp_port_min/max range; and a node's stop
grace outlasts its drain.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from ivr.settings import ENV_PREFIX, Settings

DOCKER = Path(__file__).resolve().parents[2] / "docker"
SCHEMA = json.loads((Path(__file__).parent / "data" / "compose_spec.json").read_text())
BASE = DOCKER / "compose.yaml"
SENTINEL = DOCKER / "compose.sentinel.yaml"
HOTLINE_NODES = ("hotline-1", "hotline-2")


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def merge(base: Any, override: Any) -> Any:
    """Compose's merge of an override file, as far as these files need: mappings merge key by
    key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base[key], value) if key in base else value
        return merged
    return override


def projects() -> dict[str, dict[str, Any]]:
    base = load(BASE)
    return {"compose.yaml": base, "compose.yaml+sentinel": merge(base, load(SENTINEL))}


PROJECTS = projects()


@pytest.mark.parametrize("path", [BASE, SENTINEL], ids=lambda p: p.name)
def test_each_file_matches_the_compose_specification(path: Path) -> None:
    validator = jsonschema.Draft201909Validator(SCHEMA)
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(load(path))]
    assert errors == []


@pytest.mark.parametrize("name", PROJECTS)
def test_merged_project_matches_the_compose_specification(name: str) -> None:
    validator = jsonschema.Draft201909Validator(SCHEMA)
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(PROJECTS[name])]
    assert errors == []


def test_the_schema_check_is_not_a_rubber_stamp() -> None:
    validator = jsonschema.Draft201909Validator(SCHEMA)
    bad = merge(load(BASE), {"services": {"redis": {"restart": ["always"], "imagee": "x"}}})
    assert len(list(validator.iter_errors(bad))) >= 2


def image_has_healthcheck(service: dict[str, Any]) -> bool:
    build = service.get("build")
    if build is None:
        return False
    context = DOCKER / (build if isinstance(build, str) else build["context"])
    dockerfile = context / (
        "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    )
    return re.search(r"^HEALTHCHECK ", dockerfile.read_text(), re.MULTILINE) is not None


def names(refs: Any) -> list[str]:
    """Names from the short (list) or long (mapping) form of networks / depends_on."""
    if refs is None:
        return []
    return list(refs) if isinstance(refs, dict | list) else [refs]


@pytest.mark.parametrize("name", PROJECTS)
def test_everything_referenced_exists(name: str) -> None:
    project = PROJECTS[name]
    services: dict[str, dict[str, Any]] = project["services"]
    volumes = set(project.get("volumes") or {})
    networks = set(project.get("networks") or {})
    for service_name, service in services.items():
        where = f"{name}: {service_name}"
        assert "image" in service or "build" in service, where
        build = service.get("build")
        if build is not None:
            context = DOCKER / (build if isinstance(build, str) else build["context"])
            assert context.is_dir(), where
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
            assert (context / (dockerfile or "Dockerfile")).is_file(), where
        for network in names(service.get("networks")):
            assert network in networks, f"{where}: network {network}"
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0] if isinstance(mount, str) else mount["source"]
            if source.startswith(("./", "../", "/")):
                assert (DOCKER / source).exists(), f"{where}: bind mount {source}"
            elif not source.startswith("$"):  # ${HOTLINE_MODELS_DIR:-./models}: the operator's
                assert source in volumes, f"{where}: volume {source}"
        depends = service.get("depends_on") or {}
        for target in names(depends):
            assert target in services, f"{where}: depends_on {target}"
            wanted = depends[target]["condition"] if isinstance(depends, dict) else ""
            if wanted == "service_healthy":
                has_check = "healthcheck" in services[target] or image_has_healthcheck(
                    services[target]
                )
                assert has_check, f"{where}: waits for {target} healthy, it has no check"


def settings_variables() -> set[str]:
    return {f"{ENV_PREFIX}{field}".upper() for field in Settings.model_fields}


@pytest.mark.parametrize("name", PROJECTS)
def test_hotline_variables_are_real_settings(name: str) -> None:
    known = settings_variables()
    for service_name in HOTLINE_NODES:
        env = PROJECTS[name]["services"][service_name]["environment"]
        unknown = {key for key in env if key.startswith(ENV_PREFIX.upper())} - known
        assert unknown == set(), f"{service_name}: {unknown}"


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", text)
    assert match, text
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def test_nodes_differ_where_they_must_and_drain_before_a_kill() -> None:
    services = PROJECTS["compose.yaml"]["services"]
    node_ids, codes, ranges = set(), set(), []
    for name in HOTLINE_NODES:
        node = services[name]
        env = node["environment"]
        node_ids.add(env["HOTLINE_NODE_ID"])
        codes.add(env["HOTLINE_CRM_NODE_CODE"])
        assert env["HOTLINE_REDIS_URL"].startswith("redis://redis:")
        assert "sysctls" not in node  # the port range is a setting now, not the kernel's
        assert seconds(node["stop_grace_period"]) > float(env["HOTLINE_SHUTDOWN_GRACE_SECONDS"])
        low = int(env["HOTLINE_SIP_RTP_PORT_MIN"])
        high = int(env["HOTLINE_SIP_RTP_PORT_MAX"])
        published = [p for p in node["ports"] if p.endswith("/udp")]
        assert published == [f"{low}-{high}:{low}-{high}/udp"], name
        ranges.append(range(low, high + 1))
        assert any(v.endswith(":/srv/hotline/var") for v in node["volumes"])
        assert any(":/models" in v for v in node["volumes"])
    assert len(node_ids) == len(codes) == len(HOTLINE_NODES)
    assert not set(ranges[0]) & set(ranges[1])


def test_redis_keeps_an_append_only_file() -> None:
    for project in PROJECTS.values():
        command = project["services"]["redis"]["command"]
        assert command[command.index("--appendonly") + 1] == "yes"


def test_sentinel_override_points_every_node_at_the_primary_proxy() -> None:
    services = PROJECTS["compose.yaml+sentinel"]["services"]
    sentinels = [name for name in services if name.startswith("sentinel-")]
    assert len(sentinels) == 3
    monitor = (DOCKER / "redis" / "sentinel.conf").read_text()
    quorum = re.search(r"^sentinel monitor hotline redis 6379 (\d+)$", monitor, re.MULTILINE)
    assert quorum is not None
    assert int(quorum.group(1)) == len(sentinels) // 2 + 1
    for name in HOTLINE_NODES:
        assert services[name]["environment"]["HOTLINE_REDIS_URL"] == "redis://redis-primary:6379/0"
        # The merged node keeps what the base file gave it.
        assert services[name]["environment"]["HOTLINE_NODE_ID"] == name
        assert "redis" in services[name]["depends_on"]
    assert "--replicaof" in services["redis-replica"]["command"]
