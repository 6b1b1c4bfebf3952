"""Structured addresses from what callers say."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from speech.address import ParsedAddress, UnknownRegionError, parse_address, preload

# The hotline's own region in these tests: a 南京 node of the 江苏 hotline.
NANJING = {"default_province": "江苏省", "default_city": "南京市"}
REGIONS: dict[str, dict[str, str]] = {"": {}, "南京": NANJING}

# (what the caller said, hotline region, "province|city|district|street|number").
# A plain literal: docs/decisions/0007 scores candidate libraries on the same cases.
ADDRESSES: list[tuple[str, str, str]] = [
    # The hotline's own city, with and without the levels above the district.
    ("南京市鼓楼区中山北路一百号", "南京", "江苏省|南京市|鼓楼区|中山北路|100号"),
    ("鼓楼区中山北路100号3栋", "南京", "江苏省|南京市|鼓楼区|中山北路|100号3栋"),
    ("江苏南京玄武区孝陵卫街道", "南京", "江苏省|南京市|玄武区|孝陵卫街道|"),
    ("江宁区东山街道上元大街三百五十号", "南京", "江苏省|南京市|江宁区|东山街道上元大街|350号"),
    (
        "南京江宁区秣陵街道天元中路一百二十八号二栋一单元三零二室",
        "南京",
        "江苏省|南京市|江宁区|秣陵街道天元中路|128号2栋1单元302室",
    ),
    ("玄武区 孝陵卫 街道 中山门大街 5 号", "南京", "江苏省|南京市|玄武区|孝陵卫街道中山门大街|5号"),
    ("南京市栖霞区仙林大道一六三号", "南京", "江苏省|南京市|栖霞区|仙林大道|163号"),
    ("我家住在建邺区江东中路两百号", "南京", "江苏省|南京市|建邺区|江东中路|200号"),
    ("溧水区永阳街道", "南京", "江苏省|南京市|溧水区|永阳街道|"),
    ("南京市玄武区北京东路四十一号", "南京", "江苏省|南京市|玄武区|北京东路|41号"),
    ("南京 鼓楼 中山北路 一百 号", "", "江苏省|南京市|鼓楼区|中山北路|100号"),
    ("江宁东山街道", "南京", "江苏省|南京市|江宁区|东山街道|"),
    # Only the street: the region fills province and city; streets named after places stay streets.
    ("中山北路一百号", "南京", "江苏省|南京市||中山北路|100号"),
    ("北京西路二十号", "南京", "江苏省|南京市||北京西路|20号"),
    ("湖南路十号", "南京", "江苏省|南京市||湖南路|10号"),
    ("上海路五十号", "南京", "江苏省|南京市||上海路|50号"),
    ("中山门大街一号", "南京", "江苏省|南京市||中山门大街|1号"),
    ("中山北路一百号", "", "|||中山北路|100号"),
    # Elsewhere in the province, and places outside the region named in full.
    ("江苏省苏州市昆山市前进中路二百号", "", "江苏省|苏州市|昆山市|前进中路|200号"),
    ("昆山前进中路200号", "南京", "江苏省|苏州市|昆山市|前进中路|200号"),
    ("徐州市鼓楼区", "南京", "江苏省|徐州市|鼓楼区||"),
    ("海淀区中关村大街二十七号", "南京", "北京市|北京市|海淀区|中关村大街|27号"),
    # A district name found in several cities: never a guessed province.
    ("鼓楼区中山北路100号", "", "||鼓楼区|中山北路|100号"),
    ("朝阳区建国路八十八号", "南京", "||朝阳区|建国路|88号"),
    # 直辖市: the city is the municipality itself.
    ("上海市浦东新区世纪大道一百号", "南京", "上海市|上海市|浦东新区|世纪大道|100号"),
    ("上海市黄浦区南京东路一百号", "", "上海市|上海市|黄浦区|南京东路|100号"),
    ("北京朝阳区建国路八十八号", "", "北京市|北京市|朝阳区|建国路|88号"),
    ("重庆市渝中区民族路一百号", "", "重庆市|重庆市|渝中区|民族路|100号"),
    ("重庆城口县葛城街道", "", "重庆市|重庆市|城口县|葛城街道|"),
    ("天津滨海新区", "", "天津市|天津市|滨海新区||"),
    # Province left out, city said.
    ("杭州市西湖区文三路一百号", "", "浙江省|杭州市|西湖区|文三路|100号"),
    ("广州天河区天河路三百八十五号", "", "广东省|广州市|天河区|天河路|385号"),
    ("广州市越秀区中山五路二十号", "", "广东省|广州市|越秀区|中山五路|20号"),
    ("成都市武侯区人民南路四段十号", "", "四川省|成都市|武侯区|人民南路四段|10号"),
    ("福州鼓楼区五四路", "", "福建省|福州市|鼓楼区|五四路|"),
    # City left out, province said.
    ("浙江省萧山区市心中路", "", "浙江省|杭州市|萧山区|市心中路|"),
    # 自治区, 自治州 (also as callers shorten them), a city named like its province.
    (
        "湖北省恩施土家族苗族自治州恩施市舞阳大道一百号",
        "",
        "湖北省|恩施土家族苗族自治州|恩施市|舞阳大道|100号",
    ),
    ("恩施州利川市", "", "湖北省|恩施土家族苗族自治州|利川市||"),
    ("吉林省延边朝鲜族自治州延吉市", "", "吉林省|延边朝鲜族自治州|延吉市||"),
    ("黔东南州凯里市", "", "贵州省|黔东南苗族侗族自治州|凯里市||"),
    ("海南州共和县", "", "青海省|海南藏族自治州|共和县||"),
    ("海南省海口市美兰区", "", "海南省|海口市|美兰区||"),
    ("广西南宁市青秀区民族大道一百号", "", "广西壮族自治区|南宁市|青秀区|民族大道|100号"),
    ("新疆乌鲁木齐市天山区", "", "新疆维吾尔自治区|乌鲁木齐市|天山区||"),
    ("内蒙古呼和浩特市赛罕区", "", "内蒙古自治区|呼和浩特市|赛罕区||"),
    ("吉林市船营区", "", "吉林省|吉林市|船营区||"),
    ("吉林省吉林市丰满区", "", "吉林省|吉林市|丰满区||"),
    # A county-level city under the province, a prefecture-level city without counties.
    ("河南省济源市", "", "河南省||济源市||"),
    ("广东省东莞市南城街道", "", "广东省|东莞市||南城街道|"),
]


@pytest.fixture(scope="module", autouse=True)
def _index() -> None:
    preload()


def fields(parsed: ParsedAddress) -> str:
    return "|".join((parsed.province, parsed.city, parsed.district, parsed.street, parsed.number))


@pytest.mark.parametrize(("text", "region", "expected"), ADDRESSES)
def test_address(text: str, region: str, expected: str) -> None:
    parsed = parse_address(text, **REGIONS[region])
    assert fields(parsed) == expected
    assert parsed.raw == text


def test_division_codes_and_flags() -> None:
    full = parse_address("南京市鼓楼区中山北路一百号")
    assert (full.adcode, full.confidence, full.complete) == ("320106", 1.0, True)
    municipality = parse_address("上海市浦东新区世纪大道一百号")
    assert (municipality.adcode, municipality.complete) == ("310115", True)
    # The deepest level known for sure: a city without counties, a province only.
    assert parse_address("广东省东莞市南城街道五号").adcode == "441900"
    assert parse_address("广东省东莞市南城街道五号").complete
    assert parse_address("江苏省中山北路一百号").adcode == "320000"


def test_street_and_number_need_the_whole_division_to_be_complete() -> None:
    assert not parse_address("南京市鼓楼区中山北路").complete  # no number
    assert not parse_address("南京市鼓楼区一百号").complete  # no street
    assert not parse_address("中山北路一百号", **NANJING).complete  # no district
    assert parse_address("河南省济源市沁园路十号").complete  # 济源 has no level below


def test_confidence_says_where_the_division_came_from() -> None:
    said = parse_address("江苏省南京市鼓楼区中山北路一百号", **NANJING)
    confirmed = parse_address("南京鼓楼中山北路一百号")  # short names that confirm each other
    lone_short = parse_address("江宁东山街道", **NANJING)  # 江宁 alone, vouched for by the region
    from_region = parse_address("中山北路一百号", **NANJING)
    province_said = parse_address("江苏省中山北路一百号", **NANJING)
    ambiguous_in_province = parse_address(
        "鼓楼区中山北路一百号", default_province="江苏省"
    )  # 南京 or 徐州
    assert said.confidence == confirmed.confidence == 1.0
    assert lone_short.confidence == pytest.approx(0.9)
    assert from_region.confidence == province_said.confidence == pytest.approx(0.8)
    assert fields(ambiguous_in_province) == "江苏省||鼓楼区|中山北路|100号"
    assert ambiguous_in_province.adcode == "320000"
    assert ambiguous_in_province.confidence == pytest.approx(0.5)
    assert parse_address("鼓楼区中山北路100号").confidence == 0.0  # which province?


def test_region_fills_only_what_the_caller_left_out() -> None:
    # The caller named a city of the province: the region's city does not override it.
    assert fields(parse_address("苏州市前进路八号", **NANJING)) == "江苏省|苏州市||前进路|8号"
    # A city elsewhere named in full: the region fills nothing.
    assert fields(parse_address("杭州市文三路一百号", **NANJING)) == "浙江省|杭州市||文三路|100号"
    # A place outside the region said without its suffix may be part of a name (广州路 is
    # a 南京 street): neither 广州 nor the region is assumed.
    assert fields(parse_address("广州天河路一号", **NANJING)) == "|||广州天河路|1号"
    assert fields(parse_address("广州路一号", **NANJING)) == "江苏省|南京市||广州路|1号"


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("中山北路一百号", "100号"),
        ("中山北路100号", "100号"),
        ("中山北路１００号", "100号"),  # full-width digits from some recognizers
        ("中山北路幺零零号", "100号"),
        ("中山北路两百零五号", "205号"),
        ("中山北路3号院2号楼", "3号院2号楼"),
        ("中山北路十号三栋二单元五零一室", "10号3栋2单元501室"),
        ("金陵小区五栋二单元三零一室", "5栋2单元301室"),
        ("中山北路一百号附近", "100号"),
    ],
)
def test_house_numbers(text: str, number: str) -> None:
    assert parse_address(text, **NANJING).number == number


def test_words_before_the_address_are_not_the_street() -> None:
    for said in ("我家住在中山北路一百号", "嗯 我家在中山北路一百号", "地址是中山北路一百号"):
        assert parse_address(said, **NANJING).street == "中山北路"
    assert parse_address("南京市鼓楼区的中山北路一百号").street == "中山北路"


@pytest.mark.parametrize(
    "text", ["", "   ", "你好", "我要报修", "嗯。。。", "一二三四五", "停电了怎么办", "hello 123"]
)
def test_nothing_like_an_address_is_empty(text: str) -> None:
    for region in REGIONS.values():
        assert parse_address(text, **region) == ParsedAddress(raw=text)


def test_two_character_words_that_are_also_districts_are_not_guessed() -> None:
    # 郊区 and 城区 are districts of several cities, and everyday words.
    assert fields(parse_address("我住在郊区中山北路一百号", **NANJING)).startswith("江苏省|南京市|")
    assert parse_address("东方红小区五栋", **NANJING).province == "江苏省"  # not 海南's 东方市


def test_unknown_region_is_a_configuration_error() -> None:
    with pytest.raises(UnknownRegionError, match="火星"):
        parse_address("中山北路一百号", default_province="火星省")
    with pytest.raises(UnknownRegionError, match="ambiguous"):
        parse_address("中山北路一百号", default_city="吉林")  # 吉林省 or 吉林市
    with pytest.raises(UnknownRegionError):
        parse_address("中山北路一百号", default_province="浙江省", default_city="南京市")


def test_region_names_may_be_short_and_municipalities_are_their_own_city() -> None:
    short = parse_address("中山北路一百号", default_province="江苏", default_city="南京")
    assert fields(short) == "江苏省|南京市||中山北路|100号"
    shanghai = parse_address("世纪大道一百号", default_province="上海", default_city="上海市")
    assert (fields(shanghai), shanghai.adcode) == ("上海市|上海市||世纪大道|100号", "310000")
    assert parse_address("浦东新区世纪大道一百号", default_city="上海").district == "浦东新区"


@given(text=st.text(max_size=60), with_region=st.booleans())
def test_never_raises_and_keeps_the_raw_text(text: str, with_region: bool) -> None:
    parsed = parse_address(text, **(NANJING if with_region else {}))
    assert parsed.raw == text
    assert 0.0 <= parsed.confidence <= 1.0


# Pieces of what a 南京 caller says: places of the region, streets and gates named after other
# places, names found in several provinces, everyday words that are also districts.
NANJING_PIECES = [
    *("南京市", "南京", "江苏", "鼓楼区", "鼓楼", "江宁", "玄武区", "建邺"),
    *("中山北路", "北京西路", "北京东路", "上海路", "湖南路", "广州路", "汉中路", "中山门"),
    *("朝阳区", "长安", "郊区", "城区", "东方红小区", "新华"),
    *("一百号", "3栋", "二单元", "的", " ", "我家在"),
]


@given(pieces=st.lists(st.sampled_from(NANJING_PIECES), max_size=8))
def test_place_names_in_streets_never_give_another_province(pieces: list[str]) -> None:
    parsed = parse_address("".join(pieces), **NANJING)
    assert parsed.province in {"江苏省", ""}


def test_a_short_name_before_a_district_that_starts_like_a_road_is_kept() -> None:
    # 路南区 and 桥西区 start like 路 and 桥: the short city name is still the city.
    assert fields(parse_address("唐山路南区")) == "河北省|唐山市|路南区||"
    assert fields(parse_address("石家庄桥西区")) == "河北省|石家庄市|桥西区||"
