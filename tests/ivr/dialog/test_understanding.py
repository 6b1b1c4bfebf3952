"""The 95598 flow on free speech: intents choose menu choices, an address said with the problem
is kept (not asked for again), and a doubtful address is read back and confirmed."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ivr.dialog.actions import (
    CreateTicket,
    Enqueue,
    Lookup,
    SpokenText,
    StartCollecting,
    StopCollecting,
)
from speech.streets import StreetList
from speech.understand import Understander

from .conftest import Driver, path_steps

JINAN = Understander("山东省", "济南市", StreetList.shipped())
"""A 济南 hotline with the shipped street list (what its settings would build)."""

READ_BACK = ["address_readback", SpokenText("济南市历下区经十路八十八号"), "confirm_or_resay"]
ADDRESS_PARTS = {
    "address.province": "山东省",
    "address.city": "济南市",
    "address.district": "历下区",
    "address.street": "经十路",
    "address.number": "88号",
    "address.adcode": "370102",
}


@pytest.fixture
def call(make_driver: Callable[..., Driver]) -> Callable[[str], Driver]:
    """`call(node_id)`: a 济南 call with speech, walked to that node of the shipped flow."""

    def walk(node_id: str) -> Driver:
        d = make_driver(speech=True, understander=JINAN)
        d.run(path_steps(node_id))
        assert d.dialog.node_id == node_id
        return d

    return walk


def parts(d: Driver) -> dict[str, str]:
    return {k: v for k, v in d.dialog.slots.items() if k in ADDRESS_PARTS}


# ---------------------------------------------------------------------------- main menu


def test_problem_and_address_at_the_main_menu(call):
    d = call("main_menu")
    out = d.say("我家停电了 历下区经十路 88 号")
    assert d.dialog.node_id == "fault_account"
    assert d.heard(out) == ["fault_account"]
    slots = d.dialog.slots
    assert slots["intent"] == "fault"
    assert slots["address"] == "我家停电了 历下区经十路 88 号"
    assert parts(d) == ADDRESS_PARTS
    assert (slots["address.status"], slots["address.confidence"]) == ("ok", "1.00")

    # No account: the address is not asked for again, the outage lookup has it.
    d.finish_prompts()
    out = d.press("#")
    assert "fault_address" not in d.heard(out)
    assert d.dialog.path[-2:] == ["fault_address", "fault_outage_lookup"]  # passed through
    lookup = only(out, Lookup)
    assert lookup.params["district"] == "历下区"
    assert lookup.params["street"] == "经十路"
    d.lookup("not_found")
    ticket = d.last(CreateTicket)
    assert ticket.ticket_type == "故障报修"
    assert {k: ticket.fields[k] for k in ADDRESS_PARTS} == ADDRESS_PARTS


def test_homophone_address_said_with_the_problem_is_read_back_where_the_address_is_asked(call):
    d = call("main_menu")
    d.say("我家停电了 历下区京十路八十八号")
    assert d.dialog.slots["address.status"] == "unsure"
    d.finish_prompts()
    out = d.press("#")
    assert d.dialog.node_id == "fault_address"
    assert d.heard(out) == READ_BACK  # not the question: the answer, to confirm
    assert StartCollecting(dtmf=True, speech=True) in out  # keys 1/2, or free speech
    d.finish_prompts()
    out = d.press("1")
    assert d.dialog.slots["address.status"] == "confirmed"
    assert d.dialog.slots["address.corrections"] == "京十路→经十路"
    assert only(out, Lookup).params["street"] == "经十路"


def test_hazard_with_an_address_keeps_it_for_the_urgent_ticket(call):
    d = call("main_menu")
    out = d.say("电线掉了还冒火 历下区经十路八十八号")
    assert only(out, Enqueue).skill == "hazard"
    d.finish_prompts()
    d.exit_queue()
    ticket = d.last(CreateTicket)
    assert ticket.priority == 100
    assert ticket.fields["hazard"] == "yes"
    assert {k: ticket.fields[k] for k in ADDRESS_PARTS} == ADDRESS_PARTS


@pytest.mark.parametrize(
    ("said", "node_id"),
    [
        ("家里跳闸了", "fault_account"),
        ("我家亭电了", "fault_account"),  # homophone
        ("停电了 转人工", "fault_account"),  # the fault outranks the agent
        ("我家欠费停电了", "billing_menu"),  # 欠费停电 is billing, though 停电 comes first
        ("店费多少", "billing_menu"),
        ("电费太高了 我要投诉", "complaint_menu"),  # complaint outranks billing
        ("我要举报有人偷电", "complaint_menu"),
        ("想给抄表员送锦旗", "complaint_menu"),
        ("想装个充电桩", "new_connection_info"),
        ("查一下工单处理到哪了", "ticket_number"),
        ("转人公", "agent_general"),
        ("电箱冒火了", "hazard_queue"),  # not a phrase of the menu: the hazard intent
    ],
)
def test_intents_choose_at_the_main_menu(call, said, node_id):
    d = call("main_menu")
    d.say(said)
    assert d.dialog.node_id == node_id


def test_unrelated_speech_at_the_main_menu_is_a_no_match(call):
    d = call("main_menu")
    out = d.say("今天天气怎么样")
    assert d.heard(out)[0] == "no_match"
    assert d.dialog.node_id == "main_menu"
    assert "address.status" not in d.dialog.slots


@pytest.mark.parametrize(
    ("said", "node_id"),
    [
        ("不对", "fault_account"),  # not the 对 inside it
        ("不是", "fault_account"),
        ("对对对", "fault_address"),
        ("没问题", "fault_address"),
        ("嗯 是的", "fault_address"),
    ],
)
def test_yes_and_no_at_a_confirmation_menu(call, said, node_id):
    d = call("fault_account_confirm")
    d.say(said)
    assert d.dialog.node_id == node_id


def test_a_hazard_said_anywhere_by_intent(call):
    d = call("billing_account")
    out = d.say("电箱冒火了")
    assert only(out, Enqueue).skill == "hazard"


# ---------------------------------------------------------------------------- capture node


def test_sure_address_goes_straight_on(call):
    d = call("fault_address")
    out = d.say("嗯 历下区 经十路 八十八号")
    assert parts(d) == ADDRESS_PARTS
    assert only(out, Lookup).params["district"] == "历下区"


def test_address_without_its_district_is_completed_from_the_street_list(call):
    d = call("fault_address")
    out = d.say("泉城路一百号")
    assert d.dialog.slots["address.district"] == "历下区"
    assert only(out, Lookup).params["district"] == "历下区"


def test_homophone_address_is_read_back_and_confirmed_by_voice(call):
    d = call("fault_address")
    out = d.say("立夏区经十路八十八号")
    assert d.heard(out) == READ_BACK
    assert d.dialog.node_id == "fault_address"
    assert d.dialog.slots["address.corrections"] == "立夏区→历下区"
    d.finish_prompts()
    out = d.say("对的")
    assert d.dialog.slots["address.status"] == "confirmed"
    assert only(out, Lookup).params["district"] == "历下区"


def test_rejected_read_back_asks_for_the_address_again(call):
    d = call("fault_address")
    d.say("历下区京十路八十八号")
    d.finish_prompts()
    out = d.press("2")
    assert d.heard(out) == ["fault_address"]
    assert StartCollecting(dtmf=True, speech=True) in out  # free speech again, # to skip
    assert "address.street" not in d.dialog.slots
    d.finish_prompts()
    out = d.say("历下区经十路八十八号")
    assert d.dialog.slots["address.status"] == "ok"
    assert only(out, Lookup).params["street"] == "经十路"


def test_no_with_the_address_again_takes_the_new_address(call):
    d = call("fault_address")
    d.say("历下区京十路八十八号")
    d.finish_prompts()
    out = d.say("不对 是历下区经十路八十八号")
    assert d.dialog.slots["address"] == "不对 是历下区经十路八十八号"
    assert d.dialog.slots["address.status"] == "ok"
    assert only(out, Lookup).params["street"] == "经十路"


def test_two_rejected_read_backs_take_the_keypad_path(call):
    d = call("fault_address")
    d.say("历下区京十路八十八号")
    d.finish_prompts()
    d.say("不对")
    d.finish_prompts()
    d.say("历下区京十路八十八号")
    d.finish_prompts()
    out = d.press("2")
    # The CRM finds the address by account and number; the words said are kept for the agent.
    assert d.dialog.node_id == "fault_outage_lookup"
    assert d.dialog.slots["escalated"] == "address_not_confirmed"
    assert d.dialog.slots["address"] == "历下区京十路八十八号"
    assert "address.street" not in d.dialog.slots
    assert only(out, Lookup).params["street"] == ""
    assert "escalate_agent" not in d.heard(out)


def test_speech_without_an_address_is_asked_again_then_the_keypad_path(call):
    d = call("fault_address")
    out = d.say("我也不知道")
    assert d.heard(out) == ["no_match", "fault_address"]
    d.finish_prompts()
    d.say("今天天气不错")
    assert d.dialog.node_id == "fault_outage_lookup"
    assert d.dialog.slots["escalated"] == "no_match"


def test_repeat_key_and_silence_during_the_read_back_read_it_again(call):
    d = call("fault_address")
    d.say("历下区京十路八十八号")
    d.finish_prompts()
    out = d.press("*")
    assert d.heard(out) == READ_BACK
    d.finish_prompts()
    out = d.timeout()
    assert d.heard(out) == ["no_input", *READ_BACK]
    d.finish_prompts()
    out = d.say("你说啥")
    assert d.heard(out) == READ_BACK  # "what?" is no failure
    d.finish_prompts()
    out = d.press("1")
    assert d.dialog.slots["address.status"] == "confirmed"
    assert only(out, Lookup).params["street"] == "经十路"


def test_a_wrong_key_during_the_read_back_is_a_no_match(call):
    d = call("fault_address")
    d.say("历下区京十路八十八号")
    d.finish_prompts()
    out = d.press("7")
    assert d.heard(out) == ["no_match", *READ_BACK]
    assert d.dialog.failures["no_match"] == 1


def test_hash_still_skips_the_address(call):
    d = call("fault_address")
    out = d.press("#")
    assert out[0] == StopCollecting()
    assert d.dialog.node_id == "fault_outage_lookup"


def test_hazard_during_the_read_back_preempts(call):
    d = call("fault_address")
    d.say("历下区京十路八十八号")
    d.finish_prompts()
    out = d.say("电线落地了")
    assert only(out, Enqueue).skill == "hazard"


def test_default_understanding_has_no_region(make_driver):
    # Without settings (a test's Driver): the shipped street list, no region. 历下区 is found
    # all the same; 鼓楼区 is in four cities, so it is read back.
    d = make_driver(speech=True)
    d.run(path_steps("fault_address"))
    out = d.say("历下区经十路八十八号")
    assert only(out, Lookup).params["city"] == "济南市"
    d = make_driver(speech=True)
    d.run(path_steps("fault_address"))
    out = d.say("鼓楼区中山北路一百号")
    assert d.heard(out) == [
        "address_readback",
        SpokenText("鼓楼区中山北路一百号"),
        "confirm_or_resay",
    ]


# ---------------------------------------------------------------------------- helpers


def only(actions, kind):
    found = [a for a in actions if isinstance(a, kind)]
    assert len(found) == 1, actions
    return found[0]
