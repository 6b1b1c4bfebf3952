"""Engine behaviour the shipped flow does not use, on tiny inline flows."""

from __future__ import annotations

from typing import Any

import pytest

from ivr.dialog.actions import (
    Enqueue,
    Hangup,
    Play,
    PromptRef,
    SpokenText,
    StartCollecting,
    StopCollecting,
    StopPlayback,
)
from ivr.dialog.engine import MAX_AUTO_STEPS, Outcome
from ivr.dialog.events import PromptFinished, SpeechStarted
from ivr.flow.model import Flow, parse_flow

AGENT = {"type": "enqueue", "skill": "general", "priority": 20, "on_exit": "bye"}
BYE = {"type": "end", "outcome": "hangup", "prompts": ["goodbye"]}


def small_flow(nodes: dict[str, Any], **header: Any) -> Flow:
    """A flow starting at `start`, escalating to an `agent` queue, with a `bye` end."""
    return parse_flow(
        {
            "flow": {"name": "t", "start": "start", "escalate": "agent", **header},
            "nodes": {"agent": AGENT, "bye": BYE, **nodes},
        }
    )


def end(kind: str) -> dict[str, Any]:
    return {"type": "end", "outcome": "self_service", "kind": kind}


# ---------------------------------------------------------------------------- branch


BRANCH_FLOW = small_flow(
    {
        "start": {
            "type": "menu",
            "prompts": ["pick"],
            "choices": [
                {"key": "1", "goto": "check", "set": {"kind": "gold"}},
                {"key": "2", "goto": "check", "set": {"kind": "silver"}},
                {"key": "3", "goto": "check", "set": {"kind": "bronze", "note": "x"}},
                {"key": "4", "goto": "check", "set": {"note": "y"}},
                {"key": "5", "goto": "check", "set": {"kind": ""}},
                {"key": "6", "goto": "check"},
                {"key": "7", "goto": "check", "set": {"kind": "platinum"}},
            ],
        },
        "check": {
            "type": "branch",
            "when": [
                {"slot": "kind", "equals": "gold", "goto": "equals"},
                {"slot": "kind", "one_of": ["silver", "bronze"], "goto": "one_of"},
                {"slot": "note", "present": True, "goto": "present"},
                {"slot": "kind", "present": False, "goto": "absent"},
            ],
            "otherwise": "otherwise",
        },
        **{kind: end(kind) for kind in ("equals", "one_of", "present", "absent", "otherwise")},
    }
)


@pytest.mark.parametrize(
    ("key", "reached"),
    [
        ("1", "equals"),
        ("2", "one_of"),
        ("3", "one_of"),  # the first condition that holds wins (note is present too)
        ("4", "present"),
        ("5", "absent"),  # an empty slot is not present
        ("6", "absent"),  # nor is a slot never set
        ("7", "otherwise"),
    ],
)
def test_branch_conditions(make_driver, key, reached):
    d = make_driver(flow=BRANCH_FLOW)
    d.start()
    d.finish_prompts()
    out = d.press(key)
    assert d.dialog.path == ["start", "check", reached]
    assert d.dialog.outcomes == [Outcome("self_service", reached)]
    assert out == [StopCollecting(), StopCollecting(), Hangup("completed")]  # no prompts: at once
    assert d.dialog.ended


def test_branch_on_call_context_slots(make_driver):
    flow = small_flow(
        {
            "start": {
                "type": "branch",
                "when": [{"slot": "dialed", "one_of": ["95598", "4008"], "goto": "hotline"}],
                "otherwise": "other",
            },
            "hotline": end("hotline"),
            "other": end("other"),
        }
    )
    d = make_driver(flow=flow)
    d.start()
    assert d.dialog.outcomes == [Outcome("self_service", "hotline")]


# ---------------------------------------------------------------------------- loop guard


def chain(length: int) -> Flow:
    """`length` branch nodes in a row (the first is `start`), then an end node."""

    def name(i: int) -> str:
        return "start" if i == 0 else f"n{i}"

    nodes: dict[str, Any] = {
        name(i): {
            "type": "branch",
            "when": [{"slot": "nothing", "present": True, "goto": "bye"}],
            "otherwise": name(i + 1) if i + 1 < length else "done",
        }
        for i in range(length)
    }
    return small_flow({**nodes, "done": end("done")})


def test_a_long_chain_without_input_is_fine_up_to_the_limit(make_driver):
    d = make_driver(flow=chain(MAX_AUTO_STEPS - 1))  # + the end node = MAX_AUTO_STEPS entries
    out = d.start()
    assert out == [StopCollecting(), Hangup("completed")]
    assert d.dialog.outcomes == [Outcome("self_service", "done")]


def test_one_node_more_trips_the_loop_guard(make_driver):
    d = make_driver(flow=chain(MAX_AUTO_STEPS))
    out = d.start()
    assert out == [Hangup("flow_error")]
    assert d.dialog.ended
    assert d.dialog.outcomes == [Outcome("error", "flow loops without input at done")]
    assert len(d.dialog.path) == MAX_AUTO_STEPS


def test_a_loop_of_silent_plays_ends_the_call_with_an_error(make_driver):
    # Plays whose only prompt is a readback of an empty slot say nothing and move on at once.
    flow = small_flow(
        {
            "start": {"type": "play", "prompts": [{"text": "empty"}], "next": "again"},
            "again": {"type": "play", "prompts": [{"digits": "empty"}], "next": "start"},
        }
    )
    d = make_driver(flow=flow)
    out = d.start()
    assert out == [Hangup("flow_error")]
    assert d.dialog.outcomes[-1].kind == "error"
    assert d.dialog.ended
    assert d.press("1") == []


def test_the_loop_guard_counts_per_event(make_driver):
    # Two chains of 40 auto nodes, each behind a menu: 80 entries in the call, 41 per event.
    nodes: dict[str, Any] = {
        "start": {"type": "menu", "prompts": ["m1"], "choices": [{"key": "1", "goto": "a0"}]},
        "middle": {"type": "menu", "prompts": ["m2"], "choices": [{"key": "1", "goto": "b0"}]},
        "done": end("done"),
    }
    for prefix, last in (("a", "middle"), ("b", "done")):
        for i in range(40):
            nodes[f"{prefix}{i}"] = {
                "type": "branch",
                "when": [{"slot": "nothing", "present": True, "goto": "bye"}],
                "otherwise": f"{prefix}{i + 1}" if i < 39 else last,
            }
    d = make_driver(flow=small_flow(nodes))
    d.start()
    d.finish_prompts()
    d.press("1")
    d.finish_prompts()
    d.press("1")
    assert d.dialog.outcomes == [Outcome("self_service", "done")]


# ---------------------------------------------------------------------------- speech-only menus


SPEECH_MENU = small_flow(
    {
        "start": {
            "type": "menu",
            "input": "speech",
            "prompts": ["say_it"],
            "choices": [{"say": ["是的"], "goto": "yes"}],
        },
        "yes": end("yes"),
    },
    escalate_prompt="escalate_agent",
    global_choices=[{"key": "0", "say": ["转人工"], "goto": "agent"}],
)


def test_speech_only_menu_without_a_recognizer_escalates_at_once(make_driver):
    d = make_driver(flow=SPEECH_MENU, speech=False)
    out = d.start()
    assert out[0] == StopCollecting()
    assert d.heard(out) == ["escalate_agent"]
    assert [a.skill for a in d.of(out, Enqueue)] == ["general"]
    assert d.dialog.slots["escalated"] == "no_usable_input"
    assert d.dialog.failures["escalated"] == 1
    assert not d.of(out, StartCollecting)


def test_speech_only_menu_with_a_recognizer(make_driver):
    d = make_driver(flow=SPEECH_MENU, speech=True)
    out = d.start()
    assert d.of(out, StartCollecting) == [
        StartCollecting(dtmf=False, speech=True, grammar=("是的", "转人工"))
    ]
    d.finish_prompts()
    assert d.heard(d.press("1")) == ["say_it"]  # no keys in this menu: a reprompt ...
    assert d.dialog.failures["no_match"] == 1  # ... counted as a no match
    d.finish_prompts()
    d.say("是的")
    assert d.dialog.outcomes == [Outcome("self_service", "yes")]


def test_universal_key_still_works_in_a_speech_menu(make_driver):
    d = make_driver(flow=SPEECH_MENU, speech=True)
    d.start()
    d.finish_prompts()
    assert [a.skill for a in d.of(d.press("0"), Enqueue)] == ["general"]


# ---------------------------------------------------------------------------- barge-in off


def test_prompt_without_barge_in_ignores_keys_and_speech(make_driver):
    flow = small_flow(
        {
            "start": {
                "type": "menu",
                "barge_in": False,
                "prompts": ["listen"],
                "choices": [{"key": "1", "say": ["好"], "goto": "ok"}],
            },
            "ok": end("ok"),
        }
    )
    d = make_driver(flow=flow, speech=True)
    [play, _] = d.start()
    assert play == Play(1, (PromptRef("listen"),), barge_in=False)
    assert d.press("1") == []
    assert d.say("好") == []
    assert d.dialog.node_id == "start"
    assert d.dialog.failures == {"no_input": 0, "no_match": 0, "escalated": 0}
    d.finish_prompts()
    d.press("1")
    assert d.dialog.outcomes == [Outcome("self_service", "ok")]


# ---------------------------------------------------------------------------- readbacks


READBACK_FLOW = small_flow(
    {
        "start": {
            "type": "menu",
            "prompts": ["pick"],
            "choices": [
                {"key": "1", "goto": "read"},
                {"key": "2", "goto": "read", "set": {"account": "12a"}},
                {"key": "3", "goto": "read", "set": {"account": "120"}},
                {"key": "4", "goto": "silent"},
            ],
        },
        "read": {
            "type": "play",
            "prompts": ["intro", {"digits": "account"}, "outro"],
            "next": "bye",
        },
        "silent": {"type": "play", "prompts": [{"amount": "bill.balance"}], "next": "bye"},
    }
)


def test_readback_of_an_empty_slot_plays_nothing_and_warns(make_driver):
    d = make_driver(flow=READBACK_FLOW)
    d.start()
    d.finish_prompts()
    out = d.press("1")
    assert d.heard(out) == ["intro", "outro"]
    assert d.dialog.warnings == ["readback of empty slot 'account' at read"]


def test_play_with_only_an_empty_readback_moves_on(make_driver):
    d = make_driver(flow=READBACK_FLOW)
    d.start()
    d.finish_prompts()
    out = d.press("4")
    assert d.heard(out) == ["goodbye"]  # straight to the next node
    assert d.dialog.path[-2:] == ["silent", "bye"]
    assert d.dialog.warnings == ["readback of empty slot 'bill.balance' at silent"]


def test_unreadable_value_is_spoken_as_text(make_driver):
    d = make_driver(flow=READBACK_FLOW)
    d.start()
    d.finish_prompts()
    out = d.press("2")
    assert d.heard(out) == ["intro", SpokenText("12a"), "outro"]
    assert len(d.dialog.warnings) == 1
    assert d.dialog.warnings[0].startswith("cannot read back account='12a' as digits")


def test_readback_of_digits(make_driver):
    d = make_driver(flow=READBACK_FLOW)
    d.start()
    d.finish_prompts()
    assert d.heard(d.press("3")) == ["intro", "digit_1_yao", "digit_2", "digit_0", "outro"]
    assert d.dialog.warnings == []


# ---------------------------------------------------------------------------- speech confidence


YES_FLOW = small_flow(
    {
        "start": {
            "type": "menu",
            "prompts": ["q"],
            "choices": [{"key": "1", "say": ["确认"], "goto": "yes"}],
        },
        "yes": end("yes"),
    },
    no_match_prompt="no_match",
    no_input_prompt="no_input",
)


@pytest.mark.parametrize(
    ("min_confidence", "confidence", "accepted"),
    [(0.8, 0.79, False), (0.8, 0.8, True), (0.5, 0.49, False), (0.5, 0.5, True), (0.0, 0.0, True)],
)
def test_min_confidence(make_driver, min_confidence, confidence, accepted):
    d = make_driver(flow=YES_FLOW, speech=True, min_confidence=min_confidence)
    d.start()
    d.finish_prompts()
    out = d.say("确认", confidence=confidence)
    if accepted:
        assert d.dialog.outcomes == [Outcome("self_service", "yes")]
    else:
        assert d.heard(out) == ["no_match", "q"]
        assert d.dialog.failures["no_match"] == 1


def test_blank_speech_is_no_input(make_driver):
    d = make_driver(flow=YES_FLOW, speech=True)
    d.start()
    d.finish_prompts()
    assert d.heard(d.say("  ", confidence=0.99)) == ["no_input", "q"]
    assert d.dialog.failures["no_input"] == 1


def test_second_hypothesis_of_the_n_best_list(make_driver):
    d = make_driver(flow=YES_FLOW, speech=True)
    d.start()
    d.finish_prompts()
    d.say("却仍", alternatives=("嗯", "确认"))
    assert d.dialog.outcomes == [Outcome("self_service", "yes")]


# ---------------------------------------------------------------------------- escalation options


def test_node_max_failures_and_no_escalate_prompt(make_driver):
    flow = small_flow(
        {
            "start": {
                "type": "menu",
                "prompts": ["q"],
                "max_failures": 1,
                "on_failure": "bye",
                "choices": [{"key": "1", "goto": "bye"}],
            },
        }
    )
    d = make_driver(flow=flow)
    d.start()
    d.finish_prompts()
    out = d.timeout()
    assert d.heard(out) == ["goodbye"]  # no escalate_prompt configured: nothing before it
    assert d.dialog.failures == {"no_input": 1, "no_match": 0, "escalated": 1}


def test_repeat_at_a_node_with_nothing_to_say_keeps_the_timer(make_driver):
    flow = small_flow(
        {
            "start": {
                "type": "menu",
                "prompts": [{"digits": "nothing"}],
                "choices": [{"key": "1", "goto": "bye"}],
            },
        }
    )
    d = make_driver(flow=flow)
    d.start()
    assert d.dialog.deadline == 6.0  # entering with nothing to say starts the timer at once
    d.advance(2.0)
    assert d.press("*") == []
    assert d.dialog.deadline == 8.0  # restarted from the repeat
    # Silence (no no_input_prompt here: again nothing to say) still counts and escalates.
    for n in (1, 2):
        assert d.timeout() == []
        assert d.dialog.failures["no_input"] == n
        assert d.dialog.deadline == d.now + 6.0
    out = d.timeout()
    assert [a.skill for a in d.of(out, Enqueue)] == ["general"]
    assert d.dialog.failures == {"no_input": 3, "no_match": 0, "escalated": 1}


# ---------------------------------------------------------------------------- escalation prompt


def failing_menu(**node: Any) -> dict[str, Any]:
    return {
        "type": "menu",
        "prompts": ["q"],
        "max_failures": 1,
        "choices": [{"key": "1", "goto": "bye"}],
        **node,
    }


@pytest.mark.parametrize(
    ("node", "heard", "target"),
    [
        ({}, ["escalate_agent"], "agent"),  # flow.escalate
        ({"on_failure": "agent"}, ["escalate_agent"], "agent"),  # on_failure that is the agent
        ({"on_failure": "bye"}, ["goodbye"], "bye"),  # no agent: no announcement
    ],
)
def test_escalate_prompt_only_when_going_to_flow_escalate(make_driver, node, heard, target):
    flow = small_flow({"start": failing_menu(**node)}, escalate_prompt="escalate_agent")
    d = make_driver(flow=flow)
    d.start()
    d.finish_prompts()
    out = d.timeout()
    assert d.heard(out) == heard
    assert d.dialog.node_id == target
    assert d.dialog.failures["escalated"] == 1


def test_ticket_node_stops_the_escalation_prompt_before_reading_the_ticket(make_driver):
    # flow.escalate is a ticket node: it is entered with the escalate prompt still playing.
    flow = small_flow(
        {
            "start": failing_menu(),
            "file": {
                "type": "ticket",
                "ticket_type": "服务申请",
                "priority": 20,
                "prompts": ["ticket_created", {"digits": "ticket_id"}],
                "next": "bye",
                "on_error": "bye",
            },
        },
        escalate="file",
        escalate_prompt="escalate_agent",
    )
    d = make_driver(flow=flow)
    d.start()
    d.finish_prompts()
    out = d.timeout()
    assert d.heard(out) == ["escalate_agent"]
    assert d.dialog.node_id == "file"
    assert d.play_id is not None
    out = d.ticket("42")
    assert out[0] == StopPlayback()
    assert d.heard(out) == ["ticket_created", "digit_4", "digit_2"]
    # The stale completion of the stopped prompt does not skip the ticket number.
    assert d.send(PromptFinished(out[1].play_id - 1)) == []
    assert d.dialog.node_id == "file"
    d.finish_prompts()
    assert d.heard(d.actions[-2:]) == ["goodbye"]
    assert d.dialog.ended


# ---------------------------------------------------------------------------- pre-empting phrases


PREEMPT_FLOW = small_flow(
    {
        "start": {
            "type": "menu",
            "prompts": ["q"],
            "globals": False,
            "choices": [
                {"key": "1", "say": ["停电"], "goto": "outage"},
                {"key": "2", "say": ["人工"], "goto": "bye"},
            ],
        },
        "outage": end("outage"),
        "urgent": end("urgent"),
    },
    global_choices=[
        {"key": "0", "say": ["转人工"], "goto": "agent"},
        {"say": ["着火"], "goto": "urgent", "preempt": True, "set": {"hazard": "yes"}},
    ],
)


def test_preempting_phrases_apply_where_globals_are_off_and_come_first(make_driver):
    d = make_driver(flow=PREEMPT_FLOW, speech=True)
    out = d.start()
    assert d.of(out, StartCollecting) == [
        StartCollecting(dtmf=True, speech=True, grammar=("着火", "停电", "人工"))
    ]
    d.finish_prompts()
    d.say("停电了，还着火了")  # both an own phrase and the pre-empting one
    assert d.dialog.outcomes == [Outcome("self_service", "urgent")]
    assert d.dialog.slots["hazard"] == "yes"


def test_other_universal_choices_stay_off_where_globals_are_off(make_driver):
    d = make_driver(flow=PREEMPT_FLOW, speech=True)
    d.start()
    d.finish_prompts()
    assert d.heard(d.press("0")) == ["q"]  # the universal key 0 is off: a no match
    assert d.dialog.failures["no_match"] == 1
    d.finish_prompts()
    d.say("转人工")  # contains the own phrase 人工, not the universal choice
    assert d.dialog.path == ["start", "bye"]


def test_keys_pressed_during_the_greeting_go_to_the_next_menu() -> None:
    """Type-ahead: a caller who knows the menu presses 2 and # during the welcome."""
    from ivr.dialog import actions as act
    from ivr.dialog import events as ev
    from ivr.dialog.engine import CallContext, Dialog
    from ivr.flow.model import load_flow
    from ivr.settings import load_settings

    d = Dialog(load_flow(load_settings().resolved_flow_file()), CallContext("c", "13800138000"))
    out = d.handle(ev.CallStarted(), 0.0)
    welcome = next(a for a in out if isinstance(a, act.Play))
    assert d.handle(ev.DigitPressed("2"), 1.0) == []  # kept, not lost, not acted on yet
    assert d.handle(ev.DigitPressed("#"), 1.5) == []
    d.handle(ev.PromptFinished(welcome.play_id), 4.6)
    # main menu took "2" (fault), the account entry took "#" (no account): the address step
    assert d.path[:4] == ["welcome", "main_menu", "fault_account", "fault_address"]


def test_type_ahead_is_bounded() -> None:
    from ivr.dialog import events as ev
    from ivr.dialog.engine import TYPEAHEAD_MAX, CallContext, Dialog
    from ivr.flow.model import load_flow
    from ivr.settings import load_settings

    d = Dialog(load_flow(load_settings().resolved_flow_file()), CallContext("c", "13800138000"))
    d.handle(ev.CallStarted(), 0.0)
    for _ in range(TYPEAHEAD_MAX * 3):
        d.handle(ev.DigitPressed("8"), 1.0)
    assert len(d._typeahead) == TYPEAHEAD_MAX


UNBREAKABLE_FLOW = small_flow(
    {
        "start": {
            "type": "menu",
            "prompts": ["pick"],
            "barge_in": False,
            "choices": [{"key": "1", "goto": "bye", "say": ["好"]}],
        },
    }
)


def test_speech_onset_during_an_unbreakable_prompt_is_ignored(make_driver):
    d = make_driver(flow=UNBREAKABLE_FLOW, speech=True)
    d.start()
    assert d.play_id is not None
    assert d.send(SpeechStarted()) == []
    assert d.play_id is not None
    d.finish_prompts()
    assert d.dialog.deadline is not None
