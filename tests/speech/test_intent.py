"""Intents from free speech: synonyms, fillers, homophones, priorities, and "unsure"."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speech.intent import (
    IntentTable,
    IntentTableError,
    classify,
    shipped_intents,
    strip_fillers,
)

MENU = (
    "hazard",
    "fault",
    "billing",
    "new_connection",
    "complaint",
    "report",
    "suggestion",
    "praise",
    "ticket_status",
    "agent",
)
CONFIRM = ("yes", "no", "repeat")

# (what the recognizer wrote, the intent). Hand-written the way callers talk, with the
# recognizer's typical errors: homophones (亭电, 店费), fillers (嗯, 那个, 就是), a dropped or
# added character.
UTTERANCES: list[tuple[str, str]] = [
    # hazard
    ("电线掉了", "hazard"),
    ("我家门口电线掉下来了", "hazard"),
    ("嗯 那个 电线落地了", "hazard"),
    ("路边有根电线落了", "hazard"),  # 落了 for 落地
    ("电线断了 耷拉在地上", "hazard"),
    ("楼下电线杆倒了", "hazard"),
    ("电箱冒火了", "hazard"),
    ("变压器冒烟了", "hazard"),
    ("插座打火", "hazard"),
    ("家里起货了", "hazard"),  # 起火, homophone
    ("有人处电了", "hazard"),  # 触电, homophone
    ("店现掉了", "hazard"),  # 电线掉, two homophones
    ("电线调了", "hazard"),
    ("就是 外面那个墙上漏电", "hazard"),
    ("这边很危险 快来人", "hazard"),
    ("电线掉了还冒火 家里停电了", "hazard"),  # hazard outranks the fault said with it
    ("我家停电了 外面电线落地了", "hazard"),
    # fault
    ("停电了", "fault"),
    ("我家停电了", "fault"),
    ("我家亭电了", "fault"),  # homophone
    ("我家亭店了", "fault"),
    ("喂 你好 是这样的 我们小区没电了", "fault"),
    ("家里突然断电了", "fault"),
    ("嗯 我家停了电", "fault"),
    ("停 嗯 电了", "fault"),  # a filler inside the phrase
    ("家里跳闸了 推不上去", "fault"),
    ("家里掉闸了", "fault"),
    ("没有电了 什么时候来电", "fault"),
    ("电压不稳 灯一闪一闪的", "fault"),
    ("我要报修", "fault"),
    ("请问一下 我家电没了", "fault"),
    ("整栋楼一片黑", "fault"),
    ("那个 就是 家里电表那块有故障", "fault"),
    # billing
    ("我想查一下电费", "billing"),
    ("嗯 那个 我想查一下电费", "billing"),
    ("店费多少", "billing"),  # homophone
    ("我要交电费", "billing"),
    ("交点费", "billing"),
    ("我家欠费停电了", "billing"),  # 欠费停电 holds 停电: billing, not a fault
    ("这个月电量怎么这么多", "billing"),
    ("帮我查一下余额", "billing"),
    ("电价是多少", "billing"),
    ("电费怎么多扣了", "billing"),
    # new connection
    ("我想办个新装", "new_connection"),
    ("新房子要装电表", "new_connection"),
    ("厂里要增容", "new_connection"),
    ("房子卖了要过户", "new_connection"),
    ("我想装个充电桩", "new_connection"),
    ("临时用电怎么申请", "new_connection"),
    # complaint / report / suggestion / praise
    ("我要投诉", "complaint"),
    ("我要投诉你们的抄表员", "complaint"),
    ("你们服务态度很差", "complaint"),
    ("电费太高了 我要投诉", "complaint"),  # complaint ranks above billing
    ("我要头诉", "complaint"),  # homophone
    ("我要举报", "report"),
    ("我要举报有人偷电", "report"),
    ("隔壁私拉电线", "report"),
    ("有人窃电", "report"),
    ("我想给你们提个建议", "suggestion"),
    ("提点意见", "suggestion"),
    ("表扬一下你们的师傅", "praise"),
    ("想给你们师傅送锦旗", "praise"),
    ("你们服务态度很好 我要表扬", "praise"),
    # ticket status
    ("我想查一下工单进度", "ticket_status"),
    ("报修进度怎么样了", "ticket_status"),  # 报修进度 holds 报修
    ("查一下我的工单处理到哪了", "ticket_status"),
    ("催办一下", "ticket_status"),
    # agent
    ("转人工", "agent"),
    ("转 人 工", "agent"),
    ("我要人工服务", "agent"),
    ("给我找个人工客服", "agent"),
    ("转人公", "agent"),  # homophone
]


@pytest.mark.parametrize(("text", "intent"), UTTERANCES)
def test_menu_intent(text: str, intent: str) -> None:
    result = classify(text, only=MENU if intent != "praise" else None)
    assert result.intent == intent, result.ranked[:3]
    assert not result.unsure


def test_intents_said_together_are_ranked_by_priority() -> None:
    # 锦旗 for the 抢修 crew: both said; the fault's priority is higher, praise still listed.
    praise = classify("想给抢修师傅送锦旗")
    assert [s.intent for s in praise.sure] == ["fault", "praise"]
    # A repair reported days ago: a fault again (a person takes it), the status also heard.
    again = classify("我昨天报修了 怎么还没人来")
    assert [s.intent for s in again.sure] == ["fault", "ticket_status"]


def test_a_near_antonym_does_not_pass_for_the_phrase() -> None:
    result = classify("你们服务态度很差")
    assert result.intent == "complaint"
    assert result.score("praise") < 85


CONFIRMATIONS: list[tuple[str, str]] = [
    ("对", "yes"),
    ("对的", "yes"),
    ("是的", "yes"),
    ("嗯 是的", "yes"),
    ("对对对", "yes"),
    ("没错", "yes"),
    ("正确", "yes"),
    ("确认", "yes"),
    ("好的", "yes"),
    ("可以", "yes"),
    ("没问题", "yes"),
    ("不对", "no"),
    ("不是", "no"),
    ("不对不对", "no"),
    ("错了", "no"),
    ("你说错了", "no"),
    ("不是这个地址", "no"),
    ("不正确", "no"),
    ("重说", "no"),
    ("我重新说", "no"),
    ("再说一遍", "repeat"),
    ("没听清", "repeat"),
    ("你说啥", "repeat"),
    ("啊 没听见", "repeat"),
    ("听不清楚", "repeat"),
]


@pytest.mark.parametrize(("text", "intent"), CONFIRMATIONS)
def test_confirmation_intent(text: str, intent: str) -> None:
    assert classify(text, only=CONFIRM).intent == intent


# Unrelated speech, fillers and near-misses: unsure, never a guess.
UNRELATED = [
    "",
    "   ",
    "嗯",
    "嗯 那个 就是",
    "喂 你好",
    "今天天气怎么样",
    "我想订个外卖",
    "天天",
    "田电了",  # too far from 停电 to guess
    "我听见了",  # 听见 is not 停电, and not 听不见 either
    "电话",
    "电视没信号",
    "查电",  # not 触电
    "西安",
    "hello 123",
    "一二三四五",
    "我家住在历下区经十路八十八号",  # an address alone is no intent
]


@pytest.mark.parametrize("text", UNRELATED)
def test_unrelated_speech_is_unsure(text: str) -> None:
    result = classify(text, only=MENU)
    assert result.unsure, result.ranked[:3]
    assert result.intent is None
    assert result.best is None


@pytest.mark.parametrize("text", ["我家对面电线杆倒了", "表扬一下你们的师傅", "我说的是十号"])
def test_one_character_phrases_need_their_own_character(text: str) -> None:
    # 是 must not match 师 or 十; 对 in 对面 is the character itself, so only a yes/no
    # question (which leaves out the menu intents) may take it.
    result = classify(text, only=("yes",))
    said = [s.said for s in result.sure]
    assert all(word in ("对", "是") for word in said)


def test_one_character_homophone_is_not_sure() -> None:
    assert classify("师", only=("yes",)).unsure
    assert classify("队", only=("yes",)).unsure
    assert classify("是", only=("yes",)).intent == "yes"


def test_longer_phrase_of_another_intent_wins_over_the_one_inside_it() -> None:
    no = classify("不对", only=CONFIRM)
    assert [s.intent for s in no.sure] == ["no"]
    billing = classify("欠费停电了")
    assert billing.intent == "billing"
    assert billing.score("fault") < 85


def test_hazard_wins_by_priority_even_when_said_last() -> None:
    result = classify("家里停电了 电费也没交 外面电线还冒火")
    assert [s.intent for s in result.sure][:3] == ["hazard", "fault", "billing"]


def test_ranked_result_says_what_matched_and_where() -> None:
    result = classify("嗯，那个，我家亭电了")
    assert result.cleaned == "我家亭电了"
    best = result.best
    assert best is not None
    assert (best.intent, best.phrase, best.said, best.score) == ("fault", "停电", "亭电", 100.0)
    assert result.cleaned[best.start : best.end] == "亭电"


def test_near_miss_is_listed_but_not_chosen() -> None:
    result = classify("田电了", only=MENU)
    assert result.unsure
    assert 70 <= result.score("fault") < 85


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("嗯 那个，我家就是停电了", "我家停电了"),
        ("喂喂 你好 是这样的 我想问一下电费", "电费"),
        ("呃……啊，请问一下", ""),
        ("Hello, 世界", "hello世界"),
    ],
)
def test_strip_fillers(text: str, cleaned: str) -> None:
    assert strip_fillers(text) == cleaned


def test_shipped_table_has_the_intents_the_flow_needs() -> None:
    names = set(shipped_intents().names())
    assert set(MENU) | set(CONFIRM) <= names
    priorities = {i.name: i.priority for i in shipped_intents().intents}
    assert priorities["hazard"] == max(priorities.values())
    assert priorities["fault"] > priorities["billing"] > priorities["agent"] > priorities["yes"]


def test_an_operator_table_replaces_the_shipped_one(tmp_path: Path) -> None:
    path = tmp_path / "intents.toml"
    path.write_text(
        'sure_score = 90\nfillers = ["嗯"]\n'
        '[intents.outage]\npriority = 5\nphrases = ["停电", "没电"]\n'
        '[intents.meter]\npriority = 1\nphrases = ["电表"]\n',
        encoding="utf-8",
    )
    table = IntentTable.load(path)
    assert table.sure_score == 90
    assert classify("嗯 电表坏了 没电", table).intent == "outage"
    assert classify("电费", table).unsure


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ("", "no [intents"),
        ("[intents.x]\npriority = 1\n", "no phrases"),
        ('[intents.x]\nphrases = [""]\n', "empty phrase"),
        ('[intents.x]\nphrases = "停电"\n', "list of strings"),
        ('[intents.x]\npriority = "high"\nphrases = ["停电"]\n', "priority"),
        ('[intents.x]\nphrase = ["停电"]\n', "unknown keys"),
        ('fillers = ["那个"]\n[intents.x]\nphrases = ["那个人"]\n', "contains a filler"),
        ('sure_score = 0\n[intents.x]\nphrases = ["a"]\n', "sure_score"),
        ("[intents", "intents.toml"),
    ],
)
def test_bad_tables_are_refused_with_a_reason(tmp_path: Path, toml: str, problem: str) -> None:
    path = tmp_path / "intents.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(IntentTableError, match=problem.replace("[", r"\[")):
        IntentTable.load(path)


def test_missing_table_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(IntentTableError, match="missing"):
        IntentTable.load(tmp_path / "missing.toml")


# No deadline: the first call loads pypinyin's phrase dictionary, which may take longer than
# hypothesis's 200 ms on a busy machine.
@settings(deadline=None)
@given(st.text(max_size=40))
def test_never_crashes_and_ranks_consistently(text: str) -> None:
    result = classify(text)
    scores = [s.score for s in result.ranked]
    assert all(0 <= s <= 100 for s in scores)
    sure = result.sure
    assert list(sure) == list(result.ranked[: len(sure)])
    assert [s.priority for s in sure] == sorted((s.priority for s in sure), reverse=True)
    if result.best is not None:
        assert result.best.score >= result.sure_score
