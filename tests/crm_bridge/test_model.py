"""The CRM bridge's model: every field rule names its field, `Address.within`, outages in time."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from crm_bridge.errors import TicketInvalidError
from crm_bridge.model import (
    MAX_DESCRIPTION,
    MAX_EXTRA_FIELDS,
    MAX_FIELD,
    TICKET_TYPES,
    Address,
    Outage,
    OutageKind,
    Survey,
    Ticket,
    TicketSource,
    TicketStatus,
    idempotency_key,
)

T0 = 1_800_000_000.0


def ticket(**changes: Any) -> Ticket:
    values: dict[str, Any] = {
        "ticket_id": "2601150100001",
        "idempotency_key": "call-1:fault",
        "ticket_type": "故障报修",
        "priority": 50,
        "created_at": T0,
    }
    values.update(changes)
    return Ticket(**values)


def field_of(excinfo: pytest.ExceptionInfo[TicketInvalidError]) -> str:
    return excinfo.value.field


# ---------------------------------------------------------------------- tickets


def test_a_valid_ticket_keeps_its_values_and_freezes_its_fields() -> None:
    source = {"intent": "fault"}
    made = ticket(
        caller="+8613800138000",
        account="1234567890",
        source="ivr_agent",
        status="submitted",
        fields=source,
        ivr_path=("main_menu", "fault_account"),
    )
    source["intent"] = "changed after"
    assert made.fields == {"intent": "fault"}
    assert isinstance(made.fields, MappingProxyType)
    assert made.source is TicketSource.IVR_AGENT
    assert made.status is TicketStatus.SUBMITTED
    assert made.validate() is made


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"ticket_id": ""}, "ticket_id"),
        ({"ticket_id": "a" * 41}, "ticket_id"),
        ({"ticket_id": "26 01"}, "ticket_id"),
        ({"ticket_id": "工单1"}, "ticket_id"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "k" * (MAX_FIELD + 1)}, "idempotency_key"),
        ({"priority": -1}, "priority"),
        ({"priority": 101}, "priority"),
        ({"caller": "138-0013-8000"}, "caller"),
        ({"caller": "1" * 21}, "caller"),
        ({"caller": "13800138000+"}, "caller"),
        ({"account": "12345x"}, "account"),
        ({"account": "1" * 33}, "account"),
        ({"customer_id": "c" * (MAX_FIELD + 1)}, "customer_id"),
        ({"call_id": "x\x00y"}, "call_id"),
        ({"crm_ref": "r" * (MAX_FIELD + 1)}, "crm_ref"),
        ({"ticket_type": "t" * (MAX_FIELD + 1)}, "ticket_type"),
        ({"description": "说" * (MAX_DESCRIPTION + 1)}, "description"),
        ({"ivr_path": ("node",) * 501}, "ivr_path"),
        ({"fields": {f"k{i}": "v" for i in range(MAX_EXTRA_FIELDS + 1)}}, "fields"),
        ({"fields": {"k" * (MAX_FIELD + 1): "v"}}, "fields." + "k" * (MAX_FIELD + 1)),
        ({"fields": {"slot": "v" * (MAX_DESCRIPTION + 1)}}, "fields.slot"),
    ],
)
def test_each_ticket_rule_names_its_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(TicketInvalidError) as excinfo:
        ticket(**changes)
    assert field_of(excinfo) == field
    assert excinfo.value.error_id == "invalid-ticket"
    assert str(excinfo.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    "changes",
    [
        {"priority": 0},
        {"priority": 100},
        {"ticket_id": "a" * 40},
        {"ticket_id": "EXT-2026-0001"},
        {"caller": ""},
        {"caller": "1" * 20},
        {"account": "1" * 32},
        {"description": "说" * MAX_DESCRIPTION},
        {"ivr_path": ("node",) * 500},
        {"fields": {f"k{i}": "v" for i in range(MAX_EXTRA_FIELDS)}},
    ],
)
def test_the_limits_themselves_are_allowed(changes: dict[str, Any]) -> None:
    made = ticket(**changes)
    for name, value in changes.items():
        assert getattr(made, name) == value


def test_unknown_source_or_status_is_refused() -> None:
    with pytest.raises(ValueError, match="'robot'"):
        ticket(source="robot")
    with pytest.raises(ValueError, match="'lost'"):
        ticket(status="lost")


def test_the_type_is_checked_against_the_allowed_ones() -> None:
    made = ticket(ticket_type="回访")
    with pytest.raises(TicketInvalidError) as excinfo:
        made.validate()
    assert field_of(excinfo) == "ticket_type"
    assert "'回访'" in excinfo.value.problem
    assert made.validate((*TICKET_TYPES, "回访")) is made
    for kind in TICKET_TYPES:
        assert ticket(ticket_type=kind).validate().ticket_type == kind


def test_idempotency_key_is_stable_per_call_and_outcome() -> None:
    assert idempotency_key("call-1", "fault") == idempotency_key("call-1", "fault")
    assert idempotency_key("call-1", "fault") != idempotency_key("call-1", "complaint")
    assert idempotency_key("call-1", "fault") != idempotency_key("call-2", "fault")


# ---------------------------------------------------------------------- addresses


@pytest.mark.parametrize("name", ["province", "city", "district", "street", "number"])
def test_address_levels_are_limited(name: str) -> None:
    Address(**{name: "路" * MAX_FIELD})
    with pytest.raises(TicketInvalidError) as excinfo:
        Address(**{name: "路" * (MAX_FIELD + 1)})
    assert field_of(excinfo) == f"address.{name}"
    with pytest.raises(TicketInvalidError) as excinfo:
        Address(**{name: "中\x00山"})
    assert field_of(excinfo) == f"address.{name}"


def test_address_raw_text_may_be_a_long_utterance() -> None:
    assert Address(raw="话" * MAX_DESCRIPTION).known
    with pytest.raises(TicketInvalidError) as excinfo:
        Address(raw="话" * (MAX_DESCRIPTION + 1))
    assert field_of(excinfo) == "address.raw"


def test_a_ticket_reports_its_address_field_by_its_dotted_name() -> None:
    with pytest.raises(TicketInvalidError) as excinfo:
        ticket(address=Address(city="x" * (MAX_FIELD + 1)))
    assert field_of(excinfo) == "address.city"


def test_address_known() -> None:
    assert not Address().known
    assert Address(raw="不知道").known
    assert Address(number="100号").known


HOME = Address("江苏省", "南京市", "鼓楼区", "中山北路", "100号", "南京市鼓楼区中山北路一百号")


@pytest.mark.parametrize(
    ("area", "inside"),
    [
        (Address("江苏省"), True),
        (Address("江苏省", "南京市"), True),
        (Address("江苏省", "南京市", "鼓楼区"), True),
        (Address("江苏省", "南京市", "鼓楼区", "中山北路"), True),
        # An empty level in the area matches anything at that level.
        (Address(city="南京市", district="鼓楼区"), True),
        (Address(street="中山北路"), True),
        # The area's house number and raw text play no part.
        (Address("江苏省", number="1号", raw="别处"), True),
        (Address("浙江省"), False),
        (Address("江苏省", "苏州市"), False),
        (Address("江苏省", "南京市", "玄武区"), False),
        (Address("江苏省", "南京市", "鼓楼区", "中山路"), False),
        # Matching is exact: a shortened name is another name.
        (Address("江苏", "南京"), False),
    ],
)
def test_within(area: Address, inside: bool) -> None:
    assert HOME.within(area) is inside


def test_an_unknown_level_matches_nothing_the_area_names() -> None:
    vague = Address("江苏省", "南京市")
    assert vague.within(Address("江苏省", "南京市"))
    assert not vague.within(Address("江苏省", "南京市", "鼓楼区"))
    assert not Address().within(Address("江苏省"))
    assert Address().within(Address())


# ---------------------------------------------------------------------- outages and surveys


def test_outage_is_active_from_its_start_until_it_is_ended() -> None:
    outage = Outage("1", Address("江苏省"), OutageKind.PLANNED, "线路检修", starts_at=T0)
    assert not outage.active(T0 - 1)
    assert outage.active(T0)
    assert outage.active(T0 + 86_400 * 30)  # the estimate is not the end: it must be declared
    ended = Outage("1", Address("江苏省"), OutageKind.FAULT, "抢修", T0, T0 + 60, T0 + 100)
    assert ended.active(T0 + 99)
    assert not ended.active(T0 + 100)


@pytest.mark.parametrize("score", [0, 6, -1])
def test_survey_score_is_one_to_five(score: int) -> None:
    with pytest.raises(TicketInvalidError) as excinfo:
        Survey("call-1", score, T0)
    assert field_of(excinfo) == "score"


def test_survey_scores_one_to_five_are_kept() -> None:
    assert [Survey("call-1", s, T0).score for s in range(1, 6)] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"call_id": ""}, "call_id"),
        ({"call_id": "c" * 201}, "call_id"),
        ({"caller": "not a number"}, "caller"),
        ({"at": float("nan")}, "at"),
        ({"agent_id": "a" * 201}, "agent_id"),
        ({"score": 4.5}, "score"),
        ({"score": True}, "score"),
    ],
)
def test_survey_fields_are_checked_when_it_is_made(changes: dict[str, Any], field: str) -> None:
    # Refused where it is made, never a dead letter in the outbox later.
    values: dict[str, Any] = {"call_id": "call-1", "score": 5, "at": T0, **changes}
    with pytest.raises(TicketInvalidError) as excinfo:
        Survey(**values)
    assert field_of(excinfo) == field


def test_a_survey_is_keyed_by_its_call() -> None:
    assert Survey("call-1", 5, T0).idempotency_key == idempotency_key("call-1", "survey")
    assert Survey("call-1", 1, T0 + 9).idempotency_key == "call-1:survey"
