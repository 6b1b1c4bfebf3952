"""Scripted calls through every branch of the shipped 95598 flow."""

from __future__ import annotations

from pathlib import Path

import pytest

import ivr
from ivr.dialog.actions import (
    CreateTicket,
    Enqueue,
    Hangup,
    LeaveQueue,
    Lookup,
    Play,
    PromptRef,
    RecordSurvey,
    RequestCallback,
    ReturnToQueue,
    SpokenText,
    StartCollecting,
    StopCollecting,
    StopPlayback,
    Transfer,
)
from ivr.dialog.engine import Outcome
from ivr.dialog.events import (
    AgentDisconnected,
    CallerHungUp,
    CallTransferred,
    QueueTransferred,
)
from ivr.flow.model import load_flow
from ivr.settings import SHIPPED_FLOW
from speech.intent import shipped_intents

FLOW = load_flow(Path(ivr.__file__).parent / SHIPPED_FLOW)
CALLER = "13812345678"
ACCOUNT = "1234567890123"
HAZARD_SPEECH = "我家门口电线落地了"
[AGENT_CHOICE, HAZARD_CHOICE] = FLOW.flow.global_choices
HAZARD_PHRASES = HAZARD_CHOICE.say
AGENT_PHRASES = AGENT_CHOICE.say
HAZARD_GRAMMAR = HAZARD_PHRASES + tuple(
    p
    for i in shipped_intents().intents
    if i.name in HAZARD_CHOICE.intents
    for p in i.phrases
    if p not in HAZARD_PHRASES
)
"""What a recognizer must be able to say for a hazard: the flow's phrases, then its intent's."""


def digits(value: str) -> list[str]:
    """Prompt ids of a digit-by-digit readback; 1 is read 幺."""
    return ["digit_1_yao" if ch == "1" else f"digit_{ch}" for ch in value]


def only(actions, kind):
    found = [a for a in actions if isinstance(a, kind)]
    assert len(found) == 1, f"expected one {kind.__name__}, got {actions}"
    return found[0]


# ---------------------------------------------------------------------------- greeting


@pytest.mark.parametrize("speech", [False, True])
def test_greeting_then_main_menu(make_driver, speech):
    d = make_driver(speech=speech)
    assert d.start() == [Play(1, (PromptRef("welcome"),), barge_in=False)]
    assert d.dialog.deadline is None
    out = d.finish_prompts()
    assert d.heard(out) == ["main_menu"]
    collect = only(out, StartCollecting)
    assert (collect.dtmf, collect.speech) == (True, speech)
    assert {"停电", "电费", "转人工", "电线落地"} <= set(collect.grammar)
    assert d.dialog.deadline == 6.0  # the no-input timer runs from the end of the prompt


@pytest.mark.parametrize(
    ("said", "node", "intent"),
    [
        ("我家停电了", "fault_account", "fault"),
        ("我想查一下电费", "billing_menu", "billing"),
        ("我要办理新装", "new_connection_info", "new_connection"),
        ("我要投诉", "complaint_menu", None),
        ("查询工单进度", "ticket_number", "ticket_status"),
    ],
)
def test_main_menu_by_speech(walk_to, said, node, intent):
    d = walk_to("main_menu")
    out = d.say(said)
    assert out[0] == StopCollecting()
    assert d.dialog.node_id == node
    assert d.dialog.slots.get("intent") == intent


# ---------------------------------------------------------------------------- safety hazard


def test_the_hazard_goes_straight_to_its_queue():
    assert "hazard_notice" not in FLOW.nodes  # the advice is played in the queue now
    assert (HAZARD_CHOICE.goto, HAZARD_CHOICE.preempt) == ("hazard_queue", True)
    assert (AGENT_CHOICE.goto, AGENT_CHOICE.preempt) == ("agent_general", False)
    [key_1] = [c for c in FLOW.node("main_menu").choices if c.key == "1"]
    assert key_1.goto == "hazard_queue"
    assert key_1.set == HAZARD_CHOICE.set


def assert_hazard_queued_at_once(d, out):
    """The hazard choice was taken: queued for the hazard skill at 100 before anything is said,
    the safety advice and the priority transfer announced, nothing more asked."""
    queue = only(out, Enqueue)
    assert out == [
        StopCollecting(),
        queue,
        Play(d.play_id, (PromptRef("hazard_safety"), PromptRef("transfer_priority")), False),
    ]
    assert (queue.skill, queue.priority, queue.min_level) == ("hazard", 100, 1)
    assert queue.context["intent"] == "hazard"
    assert queue.context["hazard"] == "yes"
    assert queue.context["pending_ticket"] == "故障报修"
    assert queue.context["pending_priority"] == "100"
    assert d.dialog.node_id == "hazard_queue"
    assert d.dialog.phase == "queued"
    assert d.dialog.outcomes[-1] == Outcome("enqueue", "hazard/100")
    assert d.dialog.deadline == d.now + 20.0  # the hold message interval


@pytest.mark.parametrize(
    ("node", "how", "speech"),
    [
        ("main_menu", "key", False),
        ("main_menu", "key", True),
        ("main_menu", "speech", True),
        ("fault_account", "speech", True),
        ("billing_account", "speech", True),
        ("fault_address", "speech", True),
        ("fault_account_confirm", "speech", True),
        ("ticket_number", "speech", True),
        ("queue_busy_menu", "speech", True),
    ],
)
def test_hazard_is_queued_first_at_top_priority(walk_to, node, how, speech):
    d = walk_to(node, speech=speech)
    out = d.press("1") if how == "key" else d.say(HAZARD_SPEECH)
    assert_hazard_queued_at_once(d, out)
    assert d.dialog.path[-2:] == [node, "hazard_queue"]  # no node in between
    assert d.dialog.slots["pending_ticket"] == "故障报修"
    assert d.dialog.slots["pending_priority"] == "100"
    # Nothing the caller does cuts the safety advice short: the queue takes no keys but the
    # callback key, and hazard_queue has none.
    play_id = d.play_id
    assert not d.of(out, StartCollecting)
    assert d.press("1") == []
    assert d.press("9") == []
    assert d.say("转人工") == []
    assert d.play_id == play_id
    assert d.dialog.node_id == "hazard_queue"
    # The advice ends; the caller waits with the hold message, asked nothing more.
    assert d.finish_prompts() == []
    assert d.dialog.deadline == d.now + 20.0


@pytest.mark.parametrize(
    ("node", "said"),
    [
        ("survey", "我家门口电线落地了"),  # globals = false, and the survey has its own phrases
        ("callback_confirm", "电线杆倒了"),  # globals = false
        ("callback_number", "我这边着火了"),  # globals = false, a digits node
        ("callback_number_confirm", "有人触电了"),  # globals = false
    ],
)
def test_hazard_phrase_is_heard_where_universal_choices_are_off(walk_to, node, said):
    assert FLOW.node(node).globals is False
    d = walk_to(node)
    out = d.say(said)
    assert_hazard_queued_at_once(d, out)
    assert not d.of(out, RecordSurvey)
    assert not d.of(out, RequestCallback)
    assert "satisfaction" not in d.dialog.slots


@pytest.mark.parametrize("node", ["survey", "callback_confirm"])
def test_hazard_phrase_is_in_the_grammar_where_universal_choices_are_off(walk_to, node):
    d = walk_to(node)
    grammar = d.last(StartCollecting).grammar
    assert grammar[: len(HAZARD_PHRASES)] == HAZARD_PHRASES  # first: they win
    assert not set(grammar) & set(AGENT_PHRASES)  # the other universal choice stays off
    assert d.last(StartCollecting).speech


@pytest.mark.parametrize("said", ["我家门口有一根电线断了", "两根电线掉了"])
@pytest.mark.parametrize("node", ["fault_account", "ticket_number"])
def test_hazard_phrase_with_a_numeral_at_a_digits_node(walk_to, node, said):
    # '一根' / '两根' read as the digit strings '1' / '2' must not turn the report into a
    # no-match (too few digits): the hazard phrase wins.
    d = walk_to(node)
    slot = FLOW.node(node).slot
    out = d.say(said)
    assert_hazard_queued_at_once(d, out)
    assert slot not in d.dialog.slots
    assert d.dialog.failures == {"no_input": 0, "no_match": 0, "escalated": 0}


def test_hazard_phrase_wins_over_a_menu_phrase_in_the_same_sentence(walk_to):
    # 停电 is main menu key 2 (fault, priority 50); 电线落地 is the universal hazard phrase.
    d = walk_to("main_menu")
    out = d.say("电线落地了，停电了")
    assert_hazard_queued_at_once(d, out)
    assert d.dialog.slots["intent"] == "hazard"
    assert "fault_account" not in d.dialog.path


def test_hazard_phrases_come_first_in_the_main_menu_grammar(walk_to):
    d = walk_to("main_menu")
    grammar = d.last(StartCollecting).grammar
    intents = {i.name: i.phrases for i in shipped_intents().intents}
    # The universal hazard phrases first: they preempt everything else.
    assert grammar[: len(HAZARD_PHRASES)] == HAZARD_PHRASES
    hazard_part = grammar[: len(HAZARD_PHRASES) + len(intents["hazard"])]
    assert set(intents["hazard"]) <= set(hazard_part)
    for choice in FLOW.node("main_menu").choices:
        assert set(choice.say) <= set(grammar)
    # A recognizer in grammar mode can only say what is in its grammar: every phrase of the
    # menu's intents is there, not only the flow's own (没电 is the fault intent's).
    for name in ("fault", "billing", "new_connection", "agent"):
        assert set(intents[name]) <= set(grammar), name
    assert "没电" in grammar
    assert set(AGENT_PHRASES) <= set(grammar)


def test_spoken_digits_too_short_fall_through_to_the_universal_choice(walk_to):
    # "一二三" would be a 3-digit account, which fault_account does not accept (10-13 digits):
    # the caller asked for an agent.
    d = walk_to("fault_account")
    out = d.say("我要转人工 一二三")
    assert "account" not in d.dialog.slots
    queue = only(out, Enqueue)
    assert (queue.skill, queue.priority) == ("general", 20)
    assert d.dialog.failures["no_match"] == 0


def test_spoken_digits_the_pattern_rejects_are_a_no_match_where_globals_are_off(walk_to):
    # callback_number (globals = false): a rejected number is a no match, not an agent.
    d = walk_to("callback_number")
    out = d.say("转人工 幺二三四五六七八九零幺")  # 12345678901: no phone number
    assert d.heard(out) == ["no_match", "callback_number"]
    assert not d.of(out, Enqueue)
    assert "callback_number" not in d.dialog.slots


def test_hazard_hold_message_every_20_seconds(walk_to):
    d = walk_to("hazard_queue")
    assert d.dialog.deadline == 20.0
    d.advance(19.9)
    assert d.tick() == []
    out = d.timeout()
    assert out == [Play(d.play_id, (PromptRef("hold_hazard"),), barge_in=True)]
    assert d.dialog.deadline == 40.0


def test_hazard_queue_exit_files_a_top_priority_ticket_and_reads_its_number(walk_to):
    d = walk_to("hazard_queue")
    out = d.exit_queue("no_agents")
    ticket = only(out, CreateTicket)
    assert (ticket.ticket_type, ticket.priority, ticket.complete) == ("故障报修", 100, True)
    assert ticket.fields["intent"] == "hazard"
    assert ticket.fields["caller"] == CALLER
    assert ticket.fields["queue.exit_reason"] == "no_agents"
    assert ticket.path[-3:] == ("main_menu", "hazard_queue", "hazard_ticket")
    out = d.ticket("1024")
    assert d.heard(out) == [
        "hazard_ticket_created",
        "digit_1_yao",
        "digit_0",
        "digit_2",
        "digit_4",
        "hazard_callback_promise",
    ]
    out = d.finish_prompts()
    assert d.heard(out) == ["goodbye"]
    assert out[-1] == Hangup("completed")
    assert d.dialog.ended
    assert d.dialog.outcomes == [
        Outcome("enqueue", "hazard/100"),
        Outcome("ticket", "故障报修"),
        Outcome("hangup", "completed"),
    ]


def test_hazard_ticket_failure_still_tells_the_caller_it_was_recorded(walk_to):
    d = walk_to("hazard_ticket")
    out = d.fail("crm_down")
    assert d.heard(out) == ["hazard_recorded"]
    assert d.dialog.slots["service_error"] == "crm_down"
    assert d.finish_prompts()[-1] == Hangup("completed")
    assert d.dialog.outcomes[-1] == Outcome("hangup", "hazard_ticket_failed")


# ---------------------------------------------------------------------------- 故障报修


def test_fault_account_is_confirmed_by_reading_it_back(walk_to):
    d = walk_to("fault_account")
    assert only(d.actions[-2:], StartCollecting) == StartCollecting(
        dtmf=True, speech=True, max_digits=13, terminator="#"
    )
    out = d.press(ACCOUNT)  # 13 = max_digits: accepted without "#"
    assert d.dialog.slots["account"] == ACCOUNT
    assert d.heard(out) == ["you_entered", *digits(ACCOUNT), "confirm_or_reenter"]
    d.finish_prompts()
    out = d.press("2")  # wrong: enter it again
    assert d.dialog.node_id == "fault_account"
    assert d.heard(out) == ["fault_account"]


def test_fault_account_said_aloud(walk_to):
    d = walk_to("fault_account")
    out = d.say("幺二三四 五六七八 九零")
    assert d.dialog.slots["account"] == "1234567890"
    assert d.heard(out)[0] == "you_entered"


def test_fault_address_by_speech(walk_to):
    d = walk_to("fault_address")
    assert d.last(StartCollecting) == StartCollecting(dtmf=True, speech=True)
    out = d.say("北京市海淀区清华东路十七号", confidence=0.82)
    assert d.dialog.slots["address"] == "北京市海淀区清华东路十七号"
    assert d.dialog.slots["address_confidence"] == "0.82"
    assert only(out, Lookup) == Lookup(
        only(out, Lookup).request_id,
        "outage_by_address",
        {
            "address": "北京市海淀区清华东路十七号",
            "account": ACCOUNT,
            "caller": CALLER,
            # The address as understood, parts apart (no street list covers 北京: unchecked).
            "province": "北京市",
            "city": "北京市",
            "district": "海淀区",
            "street": "清华东路",
        },
    )
    assert d.dialog.slots["address.number"] == "17号"
    assert d.dialog.slots["address.status"] == "ok"
    assert d.dialog.phase == "service"
    assert d.dialog.deadline == d.now + 5.0


def test_fault_address_falls_back_without_speech(walk_to):
    d = walk_to("fault_account_confirm", speech=False)
    out = d.press("1")
    # No recognizer: the address is not asked for; the CRM finds it by account and number.
    assert "fault_address" not in d.heard(out)
    assert only(out, Lookup).params == {
        "address": "",
        "account": ACCOUNT,
        "caller": CALLER,
        "province": "",
        "city": "",
        "district": "",
        "street": "",
    }
    assert d.dialog.node_id == "fault_outage_lookup"


@pytest.mark.parametrize("speech", [False, True])
def test_fault_account_skipped_with_hash(walk_to, speech):
    d = walk_to("fault_account", speech=speech)
    out = d.press("#")
    assert out[0] == StopCollecting()
    assert "account" not in d.dialog.slots
    if speech:
        assert d.heard(out) == ["fault_address"]
    else:
        assert only(out, Lookup).params["account"] == ""


def test_outage_known_is_announced_and_the_caller_can_stop_there(walk_to):
    d = walk_to("fault_outage_lookup")
    out = d.lookup("found", area="清华东路一带", cause="线路检修", restore_at="今天下午五点")
    assert d.heard(out) == [
        "outage_known",
        SpokenText("清华东路一带"),
        "outage_cause",
        SpokenText("线路检修"),
        "outage_restore",
        SpokenText("今天下午五点"),
        "outage_known_menu",
    ]
    assert d.dialog.slots["outage.cause"] == "线路检修"
    d.finish_prompts()
    out = d.press("2")
    assert d.heard(out) == ["goodbye"]
    assert d.dialog.slots["pending_ticket"] == ""  # nothing left to report
    assert d.finish_prompts() == [Hangup("completed")]
    assert d.dialog.outcomes == [Outcome("self_service", "outage_notice")]
    assert not d.of(d.actions, CreateTicket)


def test_outage_known_but_the_caller_still_reports(walk_to):
    """The report is registered without queueing (the crew already knows of the outage)."""
    d = walk_to("fault_outage_known")
    out = d.press("1")
    ticket = only(out, CreateTicket)
    assert (ticket.ticket_type, ticket.priority) == ("故障报修", 40)
    out = d.ticket("20261127")
    assert d.heard(out) == ["fault_ticket_created", *digits("20261127")]
    d.finish_prompts()
    assert d.dialog.node_id == "goodbye"
    assert not d.of(d.actions, Enqueue)


@pytest.mark.parametrize("status", ["not_found", "error"])
def test_unknown_outage_files_a_fault_ticket_then_queues(walk_to, status):
    d = walk_to("fault_outage_lookup")
    out = d.lookup(status)
    ticket = only(out, CreateTicket)
    assert (ticket.ticket_type, ticket.priority, ticket.complete) == ("故障报修", 50, True)
    assert ticket.fields["account"] == ACCOUNT
    assert ticket.fields["address"] == "北京市海淀区清华东路十七号"
    assert ticket.fields["intent"] == "fault"
    out = d.ticket("20261127")
    assert d.heard(out) == ["fault_ticket_created", *digits("20261127")]
    assert d.dialog.slots["ticket_id"] == "20261127"
    out = d.finish_prompts()
    queue = only(out, Enqueue)
    assert (queue.skill, queue.priority) == ("fault_repair", 50)
    assert queue.context["ticket_id"] == "20261127"
    assert d.heard(out) == ["transfer_agent"]
    assert d.dialog.outcomes == [
        Outcome("ticket", "故障报修"),
        Outcome("enqueue", "fault_repair/50"),
    ]


def test_outage_lookup_timeout_files_the_ticket(walk_to):
    d = walk_to("fault_outage_lookup")
    d.advance(4.9)
    assert d.tick() == []
    out = d.timeout()
    assert only(out, CreateTicket).priority == 50
    assert d.dialog.slots["service_error"] == "timeout"


def test_fault_ticket_failure_still_queues(walk_to):
    d = walk_to("fault_ticket")
    out = d.fail("crm_down")
    assert (only(out, Enqueue).skill, only(out, Enqueue).priority) == ("fault_repair", 50)


# ---------------------------------------------------------------------------- billing


def test_bill_summary(walk_to):
    d = walk_to("billing_account")
    out = d.press("1234567890#")
    assert d.heard(out) == ["you_entered", *digits("1234567890"), "confirm_or_reenter"]
    d.finish_prompts()
    out = d.press("1")
    assert d.heard(out) == ["please_wait"]
    lookup = only(out, Lookup)
    assert (lookup.service, dict(lookup.params)) == ("bill_summary", {"account": "1234567890"})
    out = d.lookup("found", balance="123.45", due_date="2026-11-27")
    assert out[0] == StopPlayback()  # please_wait is cut short
    assert d.heard(out) == [
        "bill_balance",
        *["digit_1", "num_100", "digit_2", "num_10", "digit_3", "unit_yuan"],
        *["digit_4", "unit_jiao", "digit_5", "unit_fen"],
        "bill_due",
        *["digit_2", "digit_0", "digit_2", "digit_6", "unit_year"],
        *["num_10", "digit_1", "unit_month", "digit_2", "num_10", "digit_7", "unit_day"],
        "bill_menu",
    ]
    d.finish_prompts()
    out = d.press("1")
    assert d.heard(out) == ["goodbye"]
    assert d.finish_prompts() == [Hangup("completed")]
    assert d.dialog.outcomes == [Outcome("self_service", "bill_summary")]


def test_bill_report_questions_go_to_the_billing_queue(walk_to):
    d = walk_to("bill_report")
    out = d.press("2")
    assert (only(out, Enqueue).skill, only(out, Enqueue).priority) == ("billing", 20)


def test_billing_account_not_found(walk_to):
    d = walk_to("bill_lookup")
    out = d.lookup("not_found")
    assert d.heard(out) == ["account_not_found"]
    d.finish_prompts()
    out = d.press("1")
    assert d.heard(out) == ["billing_account"]
    d = walk_to("account_not_found")
    out = d.press("2")
    assert only(out, Enqueue).skill == "billing"


@pytest.mark.parametrize("failure", ["timeout", "error"])
def test_bill_lookup_failure_goes_to_the_billing_queue(walk_to, failure):
    d = walk_to("bill_lookup")
    if failure == "timeout":
        assert d.dialog.deadline == 5.0
        out = d.timeout()
    else:
        out = d.lookup("error")
    assert out[0] == StopPlayback()
    assert d.heard(out) == ["service_unavailable"]
    assert not d.of(out, Enqueue)
    out = d.finish_prompts()
    assert (only(out, Enqueue).skill, only(out, Enqueue).priority) == ("billing", 20)


def test_billing_menu_back_to_main_menu(walk_to):
    d = walk_to("billing_menu")
    out = d.press("9")
    assert d.heard(out) == ["main_menu"]
    assert d.dialog.node_id == "main_menu"


# ---------------------------------------------------------------------------- queues by intent


@pytest.mark.parametrize(
    ("node", "skill", "priority", "intent"),
    [
        ("complaint_queue", "complaint", 60, "complaint"),
        ("report_queue", "complaint", 60, "report"),
        ("suggestion_queue", "complaint", 30, "suggestion"),
        ("billing_queue", "billing", 20, "consultation"),
        ("new_connection_queue", "new_connection", 30, "new_connection"),
        ("agent_general", "general", 20, None),
    ],
)
def test_queue_skill_and_priority(walk_to, node, skill, priority, intent):
    d = walk_to(node)
    queue = d.last(Enqueue)
    assert (queue.skill, queue.priority, queue.min_level) == (skill, priority, 1)
    assert queue.context.get("intent") == intent
    assert d.dialog.phase == "queued"


def test_complaints_outrank_consultation_and_new_connection(walk_to):
    def priority(node):
        return walk_to(node).last(Enqueue).priority

    assert priority("complaint_queue") > priority("new_connection_queue")
    assert priority("complaint_queue") > priority("billing_queue")
    assert priority("hazard_queue") > priority("complaint_queue")


# ---------------------------------------------------------------------------- 业扩报装


def test_new_connection_application_ticket(walk_to):
    d = walk_to("new_connection_info")
    out = d.press("2")
    ticket = only(out, CreateTicket)
    assert (ticket.ticket_type, ticket.priority) == ("业扩报装", 30)
    assert ticket.fields["intent"] == "new_connection"
    out = d.ticket("88880001")
    assert d.heard(out) == [
        "application_ticket_created",
        *digits("88880001"),
        "application_followup",
    ]
    out = d.finish_prompts()
    assert d.heard(out) == ["goodbye"]
    assert out[-1] == Hangup("completed")
    assert d.dialog.outcomes == [Outcome("ticket", "业扩报装"), Outcome("hangup", "completed")]


def test_new_connection_ticket_failure_queues(walk_to):
    d = walk_to("new_connection_ticket")
    out = d.fail()
    assert (only(out, Enqueue).skill, only(out, Enqueue).priority) == ("new_connection", 30)


def test_new_connection_info_only(walk_to):
    d = walk_to("new_connection_info")
    d.press("3")
    assert d.finish_prompts()[-1] == Hangup("completed")
    assert d.dialog.outcomes == [Outcome("self_service", "new_connection_info")]


# ---------------------------------------------------------------------------- ticket status


@pytest.mark.parametrize("how", ["keys", "speech"])
def test_ticket_status_found(walk_to, how):
    d = walk_to("ticket_number")
    out = d.press("20261127#") if how == "keys" else d.say("二零二六 幺幺二七")
    lookup = only(out, Lookup)
    assert (lookup.service, dict(lookup.params)) == ("ticket_status", {"ticket_id": "20261127"})
    out = d.lookup("found", status_text="抢修人员正在赶往现场")
    assert d.heard(out) == [
        "ticket_status_is",
        SpokenText("抢修人员正在赶往现场"),
        "ticket_status_menu",
    ]
    d.finish_prompts()
    d.press("1")
    d.finish_prompts()
    assert d.dialog.outcomes == [Outcome("self_service", "ticket_status")]


def test_ticket_status_report_then_agent(walk_to):
    d = walk_to("ticket_status_report")
    out = d.press("2")
    assert only(out, Enqueue).skill == "general"


def test_ticket_not_found(walk_to):
    d = walk_to("ticket_not_found")
    assert d.heard(d.actions)[-1] == "ticket_not_found"
    out = d.press("1")
    assert d.heard(out) == ["ticket_number"]
    d = walk_to("ticket_not_found")
    assert only(d.press("2"), Enqueue).skill == "general"


def test_ticket_status_error_goes_to_an_agent(walk_to):
    d = walk_to("ticket_status_lookup")
    out = d.lookup("error")
    assert d.heard(out) == ["service_unavailable"]
    out = d.finish_prompts()
    assert (only(out, Enqueue).skill, only(out, Enqueue).priority) == ("general", 20)


# ------------------------------------------------------------------- agent, queue, callback


@pytest.mark.parametrize(
    ("node", "how"),
    [
        ("main_menu", "key"),
        ("billing_menu", "key"),
        ("bill_report", "key"),
        ("main_menu", "speech"),
        ("fault_account", "speech"),
        ("complaint_menu", "speech"),
    ],
)
def test_agent_by_zero_or_by_asking(walk_to, node, how):
    d = walk_to(node)
    out = d.press("0") if how == "key" else d.say("我要转人工")
    queue = only(out, Enqueue)
    assert (queue.skill, queue.priority) == ("general", 20)
    assert d.heard(out) == ["transfer_agent"]
    assert d.dialog.outcomes[-1] == Outcome("enqueue", "general/20")


def test_hold_prompt_while_waiting(walk_to):
    d = walk_to("agent_general")
    assert d.dialog.deadline == 30.0
    d.advance(29.0)
    assert d.tick() == []
    out = d.timeout()
    assert out == [Play(d.play_id, (PromptRef("hold"),), barge_in=True)]
    assert d.dialog.deadline == 60.0


def test_queue_position_callback_on_own_number(walk_to):
    d = walk_to("agent_general")
    queue = d.last(Enqueue)
    out = d.position(3, wait_seconds=150)
    assert d.heard(out) == ["queue_ahead", "digit_3", "queue_people", "callback_offer"]
    assert d.dialog.slots["queue.wait_minutes"] == "3"
    out = d.press("9")  # during the announcement
    assert out[:2] == [StopPlayback(), LeaveQueue(queue.request_id, "callback")]
    assert d.heard(out) == ["callback_confirm", *digits(CALLER), "confirm_or_other"]
    d.finish_prompts()
    out = d.press("1")
    assert only(out, RequestCallback) == RequestCallback(
        only(out, RequestCallback).request_id, CALLER, "general", 20, d.dialog.slots
    )
    out = d.done()
    assert d.heard(out) == ["callback_registered"]
    assert d.finish_prompts() == [Hangup("completed")]
    assert d.dialog.outcomes == [
        Outcome("enqueue", "general/20"),
        Outcome("callback", "general"),
        Outcome("hangup", "callback_registered"),
    ]


def test_queue_position_not_announced_over_another_prompt(walk_to):
    d = walk_to("agent_general")
    d.timeout()  # the hold prompt is playing
    assert d.position(12) == []
    d.finish_prompts()
    assert d.heard(d.position(12)) == [
        "queue_ahead",
        "num_10",
        "digit_2",
        "queue_people",
        "callback_offer",
    ]


def test_callback_keeps_the_queue_skill_and_priority(walk_to):
    d = walk_to("complaint_queue")
    d.press("9")
    d.finish_prompts()
    out = d.press("1")
    callback = only(out, RequestCallback)
    assert (callback.number, callback.skill, callback.priority) == (CALLER, "complaint", 60)


@pytest.mark.parametrize("number", ["13912345678", "01088886666", "88886666"])
def test_callback_on_another_number(walk_to, number):
    d = walk_to("callback_number")
    out = d.press(number + "#")
    assert d.heard(out) == ["you_entered", *digits(number), "confirm_or_reenter"]
    d.finish_prompts()
    out = d.press("1")
    assert only(out, RequestCallback).number == number


@pytest.mark.parametrize("number", ["12345678901", "23456789012", "123456"])
def test_callback_number_that_is_no_phone_number_is_a_no_match(walk_to, number):
    d = walk_to("callback_number")
    out = d.press(number + "#")
    assert d.heard(out) == ["no_match", "callback_number"]
    assert d.dialog.node_id == "callback_number"
    assert "callback_number" not in d.dialog.slots
    assert d.dialog.failures["no_match"] == 1


def test_callback_number_reentered(walk_to):
    d = walk_to("callback_number_confirm")
    assert d.dialog.slots["callback_number"] == "13912345678"
    out = d.press("2")
    assert d.heard(out) == ["callback_number"]
    assert d.dialog.slots["callback_number"] == ""  # the rejected number is forgotten
    d.finish_prompts()
    d.press("88886666#")
    d.finish_prompts()
    assert only(d.press("1"), RequestCallback).number == "88886666"


@pytest.mark.parametrize("failure", ["silence", "bad_number", "mixed"])
def test_rejected_number_then_failed_reentry_calls_back_the_callers_own_number(walk_to, failure):
    d = walk_to("callback_number_confirm")
    d.press("2")  # 13912345678 is wrong
    d.finish_prompts()
    mark = len(d.actions)
    for attempt in range(3):
        assert d.dialog.node_id == "callback_number"
        bad = failure == "bad_number" or (failure == "mixed" and attempt % 2)
        out = d.press("12345678901#") if bad else d.timeout()
        if attempt < 2:
            d.finish_prompts()
    # on_failure: callback_register, on the caller's own number, not the rejected one.
    assert d.dialog.node_id == "callback_register"
    callback = only(out, RequestCallback)
    assert (callback.number, callback.skill, callback.priority) == (CALLER, "general", 20)
    assert d.dialog.slots["callback_number"] == CALLER
    assert d.heard(out) == []  # no "transferring you to an agent": the caller gets no agent
    assert d.dialog.failures["escalated"] == 1
    assert not d.of(d.actions[mark:], Enqueue)
    assert d.heard(d.done()) == ["callback_registered"]
    assert d.finish_prompts() == [Hangup("completed")]
    assert d.dialog.outcomes[-2:] == [
        Outcome("callback", "general"),
        Outcome("hangup", "callback_registered"),
    ]


def test_callback_registration_failure_leaves_a_message_ticket(walk_to):
    d = walk_to("callback_register")
    out = d.fail("routing_down")
    ticket = only(out, CreateTicket)
    assert (ticket.ticket_type, ticket.priority) == ("服务申请", 20)


def test_agent_call_then_survey(walk_to):
    d = walk_to("agent_general")
    d.position(2)  # the announcement is playing when the agent answers
    queue = d.last(Enqueue).request_id
    out = d.connect("A1001", "sip:a1001@10.0.0.7")
    assert out == [
        StopPlayback(),
        StopCollecting(),
        Transfer("A1001", "sip:a1001@10.0.0.7", queue),
    ]
    assert d.dialog.phase == "bridged"
    assert d.press("9") == []  # keys go to the agent, not to the IVR
    assert d.dialog.deadline is None
    out = d.disconnect()
    assert d.heard(out) == ["survey"]
    # The hazard phrases first (they pre-empt), then the survey's own, longest first.
    own = ("非常不满意", "非常满意", "不满意", "满意", "还行", "挺好", "一般")
    assert only(out, StartCollecting) == StartCollecting(
        dtmf=True, speech=True, grammar=HAZARD_GRAMMAR + own
    )


def test_agent_who_ends_the_call_for_both_sides_leaves_no_survey(walk_to):
    d = walk_to("agent_general")
    queue = d.last(Enqueue).request_id
    d.connect("A1001", "sip:a1001@10.0.0.7")
    out = d.send(AgentDisconnected(queue, hang_up=True))
    assert out == [LeaveQueue(queue, "agent_finished"), Hangup("completed")]
    assert d.dialog.ended
    assert d.dialog.outcomes[-1] == Outcome("hangup", "agent_finished")


def test_agent_sends_the_caller_to_another_queue(walk_to):
    d = walk_to("agent_general")
    queue = d.last(Enqueue).request_id
    d.connect("A1001", "sip:a1001@10.0.0.7")
    assert d.send(QueueTransferred(queue + 1, "complaint")) == []  # not this call's
    out = d.send(QueueTransferred(queue, "complaint"))
    assert d.dialog.phase == "queued"
    assert d.heard(out) == ["transfer_agent", "hold"]  # the IVR speaks: the agent leg ends
    assert d.dialog.slots["queue.skill"] == "complaint"
    assert "agent_id" not in d.dialog.slots
    assert d.dialog.outcomes[-1] == Outcome("enqueue", "complaint (transferred)")
    out = d.connect("A2002", "sip:a2002@10.0.0.8")  # the next agent, same request
    assert only(out, Transfer) == Transfer("A2002", "sip:a2002@10.0.0.8", queue)
    d.disconnect()
    assert d.dialog.node_id == "survey"


def test_agent_call_handed_off_by_refer_ends_without_a_survey(walk_to):
    d = walk_to("agent_general")
    queue = d.last(Enqueue).request_id
    d.connect("A1001", "sip:a1001@10.0.0.7")
    assert d.send(CallTransferred(queue + 1)) == []  # another queue request: not this call's
    out = d.send(CallTransferred(queue))
    # The IVR left the call: routing keeps it connected (the agent's desktop completes it).
    assert out == [LeaveQueue(queue, "transferred"), Hangup("transferred")]
    assert d.dialog.ended
    assert d.dialog.outcomes[-1] == Outcome("transferred", "A1001")
    assert d.disconnect() == []  # routing's later word changes nothing


def test_a_transfer_report_outside_a_bridge_is_ignored(walk_to):
    d = walk_to("agent_general")
    assert d.send(CallTransferred(d.last(Enqueue).request_id)) == []
    assert d.dialog.phase == "queued"


def test_an_unreachable_agent_phone_puts_the_caller_back_on_hold(walk_to):
    d = walk_to("agent_general")
    queue = d.last(Enqueue).request_id
    d.connect("A1001", "sip:a1001@10.0.0.7")
    d.now = 100.0
    out = d.unreachable("A1001", "486 Busy Here")
    assert out[0] == ReturnToQueue(queue, "A1001", "486 Busy Here")
    assert d.heard(out) == ["hold"]
    assert only(out, StartCollecting) == StartCollecting(dtmf=True, speech=False, max_digits=1)
    assert d.dialog.phase == "queued"
    assert d.dialog.deadline == 130.0
    assert "agent_id" not in d.dialog.slots
    # Still in line: the place is announced, the callback key works, the next agent bridges.
    d.finish_prompts()
    assert d.heard(d.position(1)) == [
        "queue_ahead",
        "digit_1",
        "queue_people",
        "callback_offer",
    ]
    d.finish_prompts()
    out = d.connect("A1002", "sip:a1002@10.0.0.8")
    assert only(out, Transfer) == Transfer("A1002", "sip:a1002@10.0.0.8", queue)
    assert d.unreachable("A1002") != []  # and again, should that phone fail too
    assert d.dialog.phase == "queued"
    # A caller hanging up now abandons the queue (not a completed agent call).
    out = d.send(CallerHungUp())
    assert only(out, LeaveQueue) == LeaveQueue(queue, "abandoned")
    assert d.dialog.outcomes[-1].kind == "abandoned"


def test_an_unreachable_report_out_of_turn_is_ignored(walk_to):
    d = walk_to("agent_general")
    assert d.unreachable() == []  # not bridged: nothing to return from
    d.connect()
    d.disconnect()  # talked: now in the survey
    assert d.unreachable() == []
    assert d.dialog.node_id == "survey"


@pytest.mark.parametrize("score", [1, 2, 3, 4, 5])
def test_survey_by_key(walk_to, score):
    d = walk_to("survey")
    out = d.press(str(score))
    assert only(out, RecordSurvey) == RecordSurvey(
        only(out, RecordSurvey).request_id, score, "A1001"
    )
    assert d.heard(out) == ["survey_thanks"]
    assert d.finish_prompts() == [Hangup("completed")]
    assert d.dialog.outcomes[-2:] == [
        Outcome("survey", str(score)),
        Outcome("hangup", "survey_done"),
    ]


@pytest.mark.parametrize(
    ("said", "score"),
    [("非常满意", 5), ("不满意", 2), ("满意", 4), ("非常不满意", 1), ("一般吧", 3), ("还行", 4)],
)
def test_survey_by_speech(walk_to, said, score):
    d = walk_to("survey")
    out = d.say(said)
    assert only(out, RecordSurvey).score == score
    assert d.dialog.slots["satisfaction"] == str(score)


@pytest.mark.parametrize(
    "key",
    [
        "0",
        "6",
        "9",
        "#",
        "A",
        "\uff15",  # fullwidth 5: int() reads it as 5, but no phone sends it
        "\u0663",  # Arabic-Indic 3
        "\u00b2",  # superscript 2: isdigit(), yet int() fails on it
    ],
)
def test_survey_key_outside_the_scale(walk_to, key):
    d = walk_to("survey")
    out = d.press(key)
    assert d.heard(out) == ["no_match", "survey"]
    assert not d.of(out, RecordSurvey)
    assert "satisfaction" not in d.dialog.slots
    assert d.dialog.failures["no_match"] == 1


def test_survey_unanswered_says_goodbye_without_an_agent(walk_to):
    d = walk_to("survey")
    mark = len(d.actions)
    for _ in range(2):
        assert d.dialog.deadline == d.now + 8.0
        out = d.timeout()
        assert d.heard(out) == ["no_input", "survey"]
        d.finish_prompts()
    out = d.timeout()
    assert d.dialog.node_id == "goodbye"
    assert "goodbye" in d.heard(out)
    assert d.finish_prompts() == [Hangup("completed")]
    assert not d.of(d.actions[mark:], Enqueue)
    assert not d.of(d.actions[mark:], RecordSurvey)
    assert d.dialog.outcomes[-1] == Outcome("hangup", "completed")
    assert d.heard(out) == ["goodbye"]  # no "transferring you to an agent" before it


@pytest.mark.parametrize("exit_by", ["queue_exited", "service_failed"])
def test_queue_busy_menu_after_the_queue_gives_up(walk_to, exit_by):
    d = walk_to("agent_general")
    out = d.exit_queue("no_agents") if exit_by == "queue_exited" else d.fail_queue("queue_full")
    assert out[0] == StopCollecting()
    assert d.heard(out) == ["queue_busy"]
    assert d.dialog.slots["queue.exit_reason"] in {"no_agents", "queue_full"}
    d.finish_prompts()
    out = d.press("1")
    assert d.heard(out) == ["callback_confirm", *digits(CALLER), "confirm_or_other"]


def test_queue_busy_menu_leave_a_message(walk_to):
    d = walk_to("queue_busy_menu")
    out = d.press("2")
    ticket = only(out, CreateTicket)
    assert (ticket.ticket_type, ticket.priority) == ("服务申请", 20)
    out = d.ticket("55550001")
    assert d.heard(out) == ["message_ticket_created", *digits("55550001")]
    out = d.finish_prompts()
    assert out[-1] == Hangup("completed")


def test_message_ticket_failure_apologises(walk_to):
    d = walk_to("leave_message_ticket")
    out = d.fail()
    assert d.heard(out) == ["sorry_goodbye"]
    d.finish_prompts()
    assert d.dialog.outcomes[-1] == Outcome("hangup", "ticket_failed")
