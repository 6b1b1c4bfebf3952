"""The routing model's checks and the stored form of queue settings."""

from __future__ import annotations

import pytest

from routing.model import NewCall, QueueConfig, Skill, Strategy


def test_queue_config_round_trip() -> None:
    config = QueueConfig(
        "billing",
        strategy=Strategy.FEWEST_CALLS,
        reservation_timeout=20,
        wrap_up_seconds=0,
        max_wait=600,
        max_length=50,
        aging_seconds_per_priority=120,
        callback_window=3600,
        default_handle_seconds=240,
    )
    assert QueueConfig.from_fields("billing", config.as_fields()) == config
    assert QueueConfig.from_fields("billing", {}) == QueueConfig("billing")


@pytest.mark.parametrize(
    "bad",
    [
        {"reservation_timeout": 0},
        {"wrap_up_seconds": -1},
        {"max_length": -1},
        {"aging_seconds_per_priority": 0},
        {"strategy": "random"},
    ],
)
def test_queue_config_checks(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011  (each field has its own message)
        QueueConfig("billing", **bad)  # type: ignore[arg-type]


def test_skill_checks() -> None:
    assert Skill("故障报修", 10).level == 10
    with pytest.raises(ValueError, match="level"):
        Skill("billing", 11)
    with pytest.raises(ValueError, match="bad skill"):
        Skill("a:b", 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"call_id": "", "skills": {"billing": 1}}, "call id"),
        ({"call_id": "c1", "skills": {}}, "at least one"),
        ({"call_id": "c1", "skills": {"billing": 0}}, "level"),
        ({"call_id": "c1", "skills": {"billing": 1}, "node_id": "a|b"}, "bad node"),
    ],
)
def test_new_call_checks(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NewCall(**kwargs)  # type: ignore[arg-type]


def test_the_first_skill_names_the_queue() -> None:
    assert NewCall("c1", {"hazard": 3, "english": 2}).skill == "hazard"
