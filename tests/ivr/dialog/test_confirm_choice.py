"""A menu choice heard with low confidence is said back and confirmed before the call goes on."""

from __future__ import annotations

from ivr.dialog.actions import SpokenText, StartCollecting
from ivr.flow.model import load_flow
from speech.intent import shipped_intents

from .conftest import SHIPPED_FLOW_PATH

FLOW = load_flow(SHIPPED_FLOW_PATH)

CONFIRM_BELOW = FLOW.flow.confirm_below
UNSURE = (CONFIRM_BELOW + 0.5) / 2  # above the call's minimum (0.5), under the flow's bar
SAID_BACK = ["heard_you_say", SpokenText("停电"), "confirm_yes_no"]
YES_NO = {p for i in shipped_intents().intents if i.name in ("yes", "no") for p in i.phrases}


def test_the_shipped_flow_confirms_unsure_choices():
    assert 0.5 < CONFIRM_BELOW <= 1.0


def test_an_unsure_choice_is_said_back_and_a_key_confirms_it(walk_to):
    d = walk_to("main_menu")
    out = d.say("停电", confidence=UNSURE)
    assert d.heard(out) == SAID_BACK
    assert d.dialog.node_id == "main_menu"  # nothing chosen yet
    [listen] = [a for a in out if isinstance(a, StartCollecting)]
    assert listen.dtmf
    assert set(listen.grammar) >= YES_NO  # the caller may say 对 / 不对 too
    d.finish_prompts()
    d.press("1")
    assert d.dialog.path[-2:] == ["main_menu", "fault_account"]
    assert d.dialog.slots["intent"] == "fault"


def test_yes_said_confirms(walk_to):
    d = walk_to("main_menu")
    d.say("停电", confidence=UNSURE)
    d.finish_prompts()
    d.say("对")
    assert d.dialog.node_id == "fault_account"


def test_no_asks_the_menu_again_as_a_no_match(walk_to):
    d = walk_to("main_menu")
    d.say("停电", confidence=UNSURE)
    d.finish_prompts()
    out = d.say("不对")
    assert d.heard(out) == ["no_match", "main_menu"]
    assert d.dialog.node_id == "main_menu"
    assert d.dialog.failures["no_match"] == 1
    # The menu works as before: key 1 is its first choice, not the choice said back.
    d.finish_prompts()
    d.press("3")
    assert d.dialog.node_id == "billing_menu"


def test_key_two_rejects_and_repeated_doubt_escalates(walk_to):
    d = walk_to("main_menu")
    limit = FLOW.node("main_menu").max_failures or FLOW.flow.max_failures
    for _ in range(limit - 1):
        d.say("停电", confidence=UNSURE)
        d.finish_prompts()
        d.press("2")
        d.finish_prompts()
    assert d.dialog.node_id == "main_menu"
    d.say("停电", confidence=UNSURE)
    d.finish_prompts()
    out = d.press("2")
    assert FLOW.flow.escalate_prompt in d.heard(out)
    assert d.dialog.failures["escalated"] == 1


def test_silence_after_the_question_forgets_the_choice(walk_to):
    d = walk_to("main_menu")
    d.say("停电", confidence=UNSURE)
    d.finish_prompts()
    out = d.timeout()
    assert d.heard(out) == ["no_input", "main_menu"]
    d.finish_prompts()
    d.press("1")  # the menu's key 1 (a hazard), not a yes to 停电
    assert d.dialog.slots["intent"] == "hazard"


def test_another_choice_said_outright_is_taken(walk_to):
    d = walk_to("main_menu")
    d.say("停电", confidence=UNSURE)
    d.finish_prompts()
    d.say("电费", confidence=0.95)
    assert d.dialog.slots["intent"] == "billing"


def test_a_hazard_said_during_the_question_preempts(walk_to):
    d = walk_to("main_menu")
    d.say("停电", confidence=UNSURE)
    d.say("电线掉了", confidence=0.9)
    assert d.dialog.slots["intent"] == "hazard"
    assert d.dialog.slots["hazard"] == "yes"


def test_a_sure_choice_is_not_said_back(walk_to):
    d = walk_to("main_menu")
    out = d.say("停电", confidence=max(CONFIRM_BELOW, 0.5))
    assert "heard_you_say" not in d.heard(out)
    assert d.dialog.node_id == "fault_account"


def test_results_under_the_minimum_are_still_no_matches(walk_to):
    d = walk_to("main_menu")
    out = d.say("停电", confidence=0.2)
    assert d.heard(out) == ["no_match", "main_menu"]
