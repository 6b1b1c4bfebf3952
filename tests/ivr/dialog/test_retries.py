"""No input, no match, repeat, barge-in and escalation at every collecting node of the flow."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import ivr
from ivr.dialog.actions import Enqueue, Play, PromptRef, StopCollecting, StopPlayback
from ivr.dialog.engine import SPEECH_RESULT_WAIT
from ivr.dialog.events import SpeechStarted
from ivr.flow.model import CaptureNode, DigitsNode, MenuNode, SurveyNode, load_flow
from ivr.settings import SHIPPED_FLOW

FLOW = load_flow(Path(ivr.__file__).parent / SHIPPED_FLOW)
COLLECTING = [
    node_id
    for node_id, node in FLOW.nodes.items()
    if isinstance(node, (MenuNode, DigitsNode, CaptureNode, SurveyNode))
]
DIGITS = [node_id for node_id in COLLECTING if isinstance(FLOW.node(node_id), DigitsNode)]
WITH_PATTERN = [node_id for node_id in DIGITS if FLOW.node(node_id).pattern is not None]
HEADER = FLOW.flow


def test_the_shipped_flow_has_every_kind_of_collecting_node():
    kinds = {type(FLOW.node(node_id)) for node_id in COLLECTING}
    assert kinds == {MenuNode, DigitsNode, CaptureNode, SurveyNode}
    assert len(COLLECTING) == 20
    assert WITH_PATTERN == ["callback_number"]


def test_the_walk_table_covers_every_collecting_node(paths):
    assert set(COLLECTING) <= set(paths)
    assert all(paths[node_id][-1] == "finish" for node_id in COLLECTING)


# ---------------------------------------------------------------------------- inputs per node


def no_match_key(node) -> str:
    """A key the node does not accept."""
    if isinstance(node, SurveyNode):
        return "0"
    taken = {c.key for c in node.choices} | {HEADER.repeat_key}
    if node.globals:
        taken |= {c.key for c in HEADER.global_choices}
    return next(k for k in "123456789#" if k not in taken)


def give_no_match(d, node):
    """The node's kind of wrong answer: an unknown key, too few digits, unsure speech."""
    if isinstance(node, DigitsNode):
        return d.press("1" * (node.min_digits - 1) + node.terminator)
    if isinstance(node, CaptureNode):
        return d.say("嗯嗯", confidence=0.2)
    return d.press(no_match_key(node))


def digit_string(node: DigitsNode, length: int, *, valid: bool = True) -> str:
    """A digit string of that length that the node's pattern accepts (or rejects)."""
    candidates = [
        ("0" + "1234567890" * 2)[:length],
        ("13" + "9876543210" * 2)[:length],
        ("23456789012345678901")[:length],
        ("12" + "3" * 20)[:length],
    ]
    for value in candidates:
        accepted = node.pattern is None or re.fullmatch(node.pattern, value) is not None
        if accepted == valid:
            return value
    raise AssertionError(f"no {'valid' if valid else 'invalid'} {length}-digit sample")


def entry_items(d):
    """What the node's own prompt said (the last Play of the walk)."""
    return d.last(Play).items


def timeout_of(node) -> float:
    return node.timeout or HEADER.timeout


# ---------------------------------------------------------------------------- every collecting node


@pytest.mark.parametrize("node_id", COLLECTING)
def test_no_input_reprompts(walk_to, node_id):
    node = FLOW.node(node_id)
    d = walk_to(node_id)
    entry = entry_items(d)
    assert d.dialog.deadline == d.now + timeout_of(node)
    d.advance(timeout_of(node) - 0.5)
    assert d.tick() == []  # not due yet
    out = d.timeout()
    lead = node.no_input_prompt or HEADER.no_input_prompt
    assert out == [Play(d.play_id, (PromptRef(lead), *entry), barge_in=node.barge_in)]
    assert d.dialog.node_id == node_id
    assert d.dialog.failures == {"no_input": 1, "no_match": 0, "escalated": 0}
    assert d.dialog.deadline is None  # the timer restarts when the reprompt ends
    d.finish_prompts()
    assert d.dialog.deadline == d.now + timeout_of(node)


@pytest.mark.parametrize("node_id", COLLECTING)
def test_no_match_reprompts(walk_to, node_id):
    node = FLOW.node(node_id)
    d = walk_to(node_id)
    entry = d.heard([d.last(Play)])
    out = give_no_match(d, node)
    lead = node.no_match_prompt or HEADER.no_match_prompt
    assert d.heard(out) == [lead, *entry]
    assert d.dialog.node_id == node_id
    assert d.dialog.failures == {"no_input": 0, "no_match": 1, "escalated": 0}


@pytest.mark.parametrize("node_id", COLLECTING)
def test_unsure_speech_is_a_no_match(walk_to, node_id):
    d = walk_to(node_id)
    out = d.say("转人工", confidence=0.49)  # would be a universal choice if it were sure
    assert d.heard(out)[0] == "no_match"
    assert not [a for a in out if isinstance(a, Enqueue)]
    assert d.dialog.failures["no_match"] == 1


@pytest.mark.parametrize("node_id", COLLECTING)
def test_third_failure_escalates(walk_to, node_id):
    node = FLOW.node(node_id)
    limit = node.max_failures or HEADER.max_failures
    d = walk_to(node_id)
    for attempt in range(limit - 1):
        if attempt % 2:
            give_no_match(d, node)
        else:
            d.timeout()
        d.finish_prompts()
        assert d.dialog.node_id == node_id
    out = d.timeout()
    target = node.on_failure or HEADER.escalate
    assert StopCollecting() in out
    assert d.dialog.node_id == target
    assert d.dialog.failures["escalated"] == 1
    assert d.dialog.slots["escalated"] == "no_input"
    if target == HEADER.escalate:
        queue = next(a for a in out if isinstance(a, Enqueue))
        assert (queue.skill, queue.priority) == ("general", 20)
        assert d.heard(out) == [HEADER.escalate_prompt, "transfer_agent"]
    else:
        assert HEADER.escalate_prompt not in d.heard(out)


ON_FAILURE = [node_id for node_id in COLLECTING if FLOW.node(node_id).on_failure]
ON_FAILURE_HEARD = {
    "fault_address": [],  # fault_outage_lookup: the CRM finds the address by account, quietly
    "queue_busy_menu": [],  # leave_message_ticket: nothing until the ticket number
    "callback_confirm": [],  # callback_register: nothing until it is registered
    "callback_number": [],
    "callback_number_confirm": [],
    "survey": ["goodbye"],
}


def test_the_on_failure_nodes_of_the_shipped_flow():
    assert set(ON_FAILURE) == set(ON_FAILURE_HEARD)
    assert all(FLOW.node(node_id).on_failure != HEADER.escalate for node_id in ON_FAILURE)


def limit_of(node) -> int:
    return node.max_failures or HEADER.max_failures


@pytest.mark.parametrize("node_id", ON_FAILURE)
def test_escalation_to_on_failure_does_not_announce_an_agent(walk_to, node_id):
    d = walk_to(node_id)
    for _ in range(limit_of(FLOW.node(node_id)) - 1):
        d.timeout()
        d.finish_prompts()
    out = d.timeout()
    assert d.dialog.node_id == FLOW.node(node_id).on_failure
    assert d.heard(out) == ON_FAILURE_HEARD[node_id]
    assert d.dialog.failures["escalated"] == 1
    assert not [a for a in out if isinstance(a, Enqueue)]


@pytest.mark.parametrize("node_id", COLLECTING)
def test_repeat_key_replays_without_counting_a_failure(walk_to, node_id):
    node = FLOW.node(node_id)
    d = walk_to(node_id)
    entry = entry_items(d)
    d.timeout()  # one real failure first
    d.finish_prompts()
    for _ in range(4):  # more repeats than max_failures: never an escalation
        out = d.press(HEADER.repeat_key)
        assert out == [Play(d.play_id, entry, barge_in=node.barge_in)]
        assert d.dialog.node_id == node_id
        d.finish_prompts()
    assert d.dialog.failures == {"no_input": 1, "no_match": 0, "escalated": 0}


@pytest.mark.parametrize("node_id", COLLECTING)
def test_repeat_key_does_not_forgive_failures(walk_to, node_id):
    # Alternating "*" with a wrong answer still escalates on the last failure allowed.
    node = FLOW.node(node_id)
    d = walk_to(node_id)
    entry = entry_items(d)
    for _ in range(limit_of(node) - 1):
        give_no_match(d, node)
        d.finish_prompts()
        out = d.press(HEADER.repeat_key)
        assert out == [Play(d.play_id, entry, barge_in=node.barge_in)]
        d.finish_prompts()
        assert d.dialog.node_id == node_id
    out = give_no_match(d, node)
    assert d.dialog.node_id == (node.on_failure or HEADER.escalate)
    assert d.dialog.failures == {"no_input": 0, "no_match": limit_of(node), "escalated": 1}
    assert d.dialog.slots["escalated"] == "no_match"
    assert StopCollecting() in out


def test_repeat_key_and_a_bad_key_at_the_main_menu_escalate_to_an_agent(walk_to):
    d = walk_to("main_menu")
    heard = []
    for key in "7*7*":
        heard.append(d.heard(d.press(key)))
        d.finish_prompts()
    assert heard == [["no_match", "main_menu"], ["main_menu"]] * 2
    assert d.dialog.node_id == "main_menu"
    out = d.press("7")  # the third failure
    queue = next(a for a in out if isinstance(a, Enqueue))
    assert (queue.skill, queue.priority) == ("general", 20)
    assert d.heard(out) == [HEADER.escalate_prompt, "transfer_agent"]
    assert d.dialog.node_id == "agent_general"
    assert d.dialog.failures == {"no_input": 0, "no_match": 3, "escalated": 1}


@pytest.mark.parametrize("node_id", COLLECTING)
def test_key_during_barge_in_prompt_stops_it(walk_to, node_id):
    node = FLOW.node(node_id)
    assert node.barge_in  # every collecting node of the shipped flow may be interrupted
    d = walk_to(node_id, playing=True)
    assert d.play_id is not None
    assert d.dialog.deadline is None  # no timer while the prompt plays
    key = "5" if isinstance(node, (DigitsNode, CaptureNode)) else no_match_key(node)
    out = d.press(key)
    assert out[0] == StopPlayback()
    assert d.dialog.node_id == node_id


@pytest.mark.parametrize("node_id", COLLECTING)
def test_speech_during_barge_in_prompt_stops_it(walk_to, node_id):
    d = walk_to(node_id, playing=True)
    out = d.say("转人工", confidence=0.1)
    assert out[0] == StopPlayback()


# ---------------------------------------------------------------------------- digit strings


@pytest.mark.parametrize("node_id", DIGITS)
def test_enough_digits_then_inter_digit_timeout_accepts(walk_to, node_id):
    node = FLOW.node(node_id)
    d = walk_to(node_id)
    value = digit_string(node, node.min_digits)
    out = d.press(value)
    assert out == []
    assert d.dialog.deadline == d.now + (node.inter_digit_timeout or HEADER.inter_digit_timeout)
    d.advance(1.0)
    assert d.tick() == []
    out = d.timeout()
    assert out[0] == StopCollecting()
    assert d.dialog.slots[node.slot] == value
    assert d.dialog.node_id == node.next


@pytest.mark.parametrize("node_id", DIGITS)
def test_enough_digits_then_terminator_accepts(walk_to, node_id):
    node = FLOW.node(node_id)
    d = walk_to(node_id)
    value = digit_string(node, node.min_digits)
    d.press(value + node.terminator)
    assert d.dialog.slots[node.slot] == value
    assert d.dialog.node_id == node.next


@pytest.mark.parametrize("node_id", DIGITS)
def test_max_digits_are_accepted_at_once(walk_to, node_id):
    node = FLOW.node(node_id)
    d = walk_to(node_id)
    value = digit_string(node, node.max_digits)
    out = d.press(value)
    assert out[0] == StopCollecting()
    assert d.dialog.slots[node.slot] == value
    assert d.dialog.node_id == node.next


@pytest.mark.parametrize("node_id", DIGITS)
def test_too_few_digits_then_terminator_is_a_no_match(walk_to, node_id):
    node = FLOW.node(node_id)
    d = walk_to(node_id)
    out = d.press("2" * (node.min_digits - 1) + node.terminator)
    assert d.heard(out)[0] == "no_match"
    assert node.slot not in d.dialog.slots
    assert d.dialog.node_id == node_id


@pytest.mark.parametrize("node_id", DIGITS)
def test_too_few_digits_then_silence_is_a_no_match(walk_to, node_id):
    node = FLOW.node(node_id)
    d = walk_to(node_id)
    d.press("2" * (node.min_digits - 1))
    out = d.timeout()
    assert d.heard(out)[0] == "no_match"
    assert d.dialog.failures["no_match"] == 1
    assert d.dialog.node_id == node_id


@pytest.mark.parametrize("node_id", DIGITS)
def test_terminator_alone(walk_to, node_id):
    node = FLOW.node(node_id)
    d = walk_to(node_id)
    out = d.press(node.terminator)
    if node.on_skip:
        assert out[0] == StopCollecting()
        assert d.dialog.node_id == node.on_skip
        assert d.dialog.failures["no_input"] == 0
    else:
        assert d.heard(out)[0] == "no_input"
        assert d.dialog.failures["no_input"] == 1


@pytest.mark.parametrize("node_id", DIGITS)
def test_repeat_key_clears_what_was_typed(walk_to, node_id):
    node = FLOW.node(node_id)
    d = walk_to(node_id)
    d.press("999" + HEADER.repeat_key)
    d.finish_prompts()
    value = digit_string(node, node.min_digits)
    d.press(value + node.terminator)
    assert d.dialog.slots[node.slot] == value


@pytest.mark.parametrize("node_id", DIGITS)
def test_letter_keys_are_ignored_in_a_digit_string(walk_to, node_id):
    node = FLOW.node(node_id)
    d = walk_to(node_id)
    value = digit_string(node, node.min_digits)
    d.press(value[:3] + "AD" + value[3:] + node.terminator)
    assert d.dialog.slots[node.slot] == value


@pytest.mark.parametrize("node_id", DIGITS)
def test_digits_said_aloud(walk_to, node_id):
    node = FLOW.node(node_id)
    d = walk_to(node_id)
    value = digit_string(node, node.min_digits)
    d.say(" ".join("零幺二三四五六七八九"[int(ch)] for ch in value))
    assert d.dialog.slots[node.slot] == value
    assert d.dialog.node_id == node.next


@pytest.mark.parametrize("node_id", WITH_PATTERN)
@pytest.mark.parametrize("end", ["terminator", "max_digits"])
def test_pattern_rejects(walk_to, node_id, end):
    node = FLOW.node(node_id)
    d = walk_to(node_id)
    length = node.max_digits if end == "max_digits" else node.max_digits - 1
    value = digit_string(node, length, valid=False)
    out = d.press(value + (node.terminator if end == "terminator" else ""))
    assert d.heard(out)[0] == "no_match"
    assert node.slot not in d.dialog.slots
    assert d.dialog.node_id == node_id


@pytest.mark.parametrize("node_id", COLLECTING)
def test_speech_onset_stops_barge_in_prompt_and_waits_for_the_words(walk_to, node_id):
    d = walk_to(node_id, playing=True)
    out = d.send(SpeechStarted())
    assert out == [StopPlayback()]
    assert d.dialog.deadline == d.now + SPEECH_RESULT_WAIT
    assert d.dialog.node_id == node_id
    d.advance(10.0)  # a long address: longer than the node's no-input timeout
    assert d.tick() == []
    assert d.dialog.node_id == node_id


@pytest.mark.parametrize("node_id", COLLECTING)
def test_speech_onset_after_the_prompt_holds_off_no_input(walk_to, node_id):
    d = walk_to(node_id)
    assert d.send(SpeechStarted()) == []
    assert d.dialog.deadline == d.now + SPEECH_RESULT_WAIT
