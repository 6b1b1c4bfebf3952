"""The operator's service-area street list, and what a caller said matched against it by pinyin.

The recognizer writes a street it does not know with the right sounds and the wrong characters
(京十路 or 经实路 for 经十路), drops a character (经十 for 经十路) or writes digits (经10路).
`StreetList.match` compares tone-less pinyin windows of the utterance with every street name
and alias of the list (`speech.matching.best_window`, digits read as numerals), and returns the
best street with its district, a score, and whether the match was the street's own characters,
a homophone or only close.

The list is the operator's (a CSV file: province, city, district, street, aliases; one row per
district a street runs through). The shipped sample covers central 济南; `HOTLINE_SERVICE_STREETS`
names the operator's own. A street in several districts leaves the district open unless the
caller named one of them: a guessed district sends a crew to the wrong end of 经十路.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import cn2an

from speech.matching import EXACT_SCORE, Syllables, Window, best_window, normalise

SHIPPED_STREETS = "data/streets-jinan.csv"
"""The sample street list shipped in the `speech` package (central 济南)."""

MATCH_SCORE = 85.0
"""Below this pinyin score (0-100) a street is not matched at all: one syllable of three wrong
already scores 80-90 (建国路 against 济泺路 scores 80)."""

STEM_SCORE = 90.0
"""A street said without its 路/街 right before the house number (经十 八十八号) scores this."""

AMBIGUITY_MARGIN = 6.0
"""A street that is not said as it is, with another within this many points, is ambiguous
(经似路: 经四路 at 100, 经十路 at 95)."""

DISTRICT_SCORE = 100.0
"""District names are matched only by their own characters or identical pinyin (立夏区 for
历下区): a merely similar district name is another district."""

_COLUMNS = ("province", "city", "district", "street", "aliases")
_DISTRICT_SUFFIXES = ("区", "县", "市")
_ROAD_SUFFIXES = ("大街", "大道", "路", "街", "巷")
# What may follow a street said without its suffix: the house number (digits or numerals).
_NUMBER_START = frozenset("0123456789零〇一二两三四五六七八九十百幺洞")


class StreetListError(ValueError):
    """A street list file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Street:
    """One street of the list in one district."""

    province: str
    """Province as the division data spells it (山东省)."""
    city: str
    """Prefecture-level city (济南市)."""
    district: str
    """County-level district (历下区)."""
    name: str
    """The street's name (经十路)."""
    aliases: tuple[str, ...] = ()
    """Other names callers use (东二环 for 二环东路)."""


@dataclass(frozen=True)
class StreetMatch:
    """The street of the list a caller most likely said."""

    name: str
    """The street's name as the list spells it."""
    said: str
    """The words of the utterance that matched (经实路)."""
    score: float
    """0-100: 100 for the street's own characters or identical pinyin."""
    exact: bool
    """The caller's words are the street's name or an alias, character for character."""
    province: str
    """The street's province."""
    city: str
    """The street's city."""
    district: str
    """The street's district: the one asked for when the street lies there, else its only
    district; "" when it runs through several and none was asked for."""
    districts: tuple[str, ...]
    """Every district of the list the street runs through."""
    ambiguous: bool
    """Another street of the list scored nearly as well, and this one was not said exactly."""
    stem: bool
    """Said without its 路/街, right before the house number (经十 八十八号)."""
    start: int
    """Where `said` starts in the normalised text (`speech.matching.normalise`)."""
    end: int
    """Where `said` ends in the normalised text."""

    @property
    def homophone(self) -> bool:
        """Same sounds, other characters (京十路 for 经十路)."""
        return not self.exact and self.score >= EXACT_SCORE


@dataclass(frozen=True)
class DistrictMatch:
    """A district of the list said with the wrong characters (立夏区 for 历下区)."""

    name: str
    """The district's name (历下区)."""
    said: str
    """The words that matched."""
    exact: bool
    """Said with the district's own characters."""
    province: str
    """Its province."""
    city: str
    """Its city."""
    start: int
    """Where `said` starts in the normalised text."""
    end: int
    """Where `said` ends in the normalised text."""


@dataclass(frozen=True)
class _Form:
    """One name of a street (its name or an alias) with its syllables."""

    key: tuple[str, str, str]
    """(province, city, street name) of the street it names."""
    text: str
    syllables: Syllables
    stem: bool = False
    """The name without its 路/街: matches only by its sounds, right before a house number."""


@dataclass(frozen=True)
class StreetList:
    """The streets the hotline serves, by district."""

    streets: tuple[Street, ...]
    source: str = "street list"
    """Where it was read from (for logs and errors)."""
    _forms: tuple[_Form, ...] = field(init=False, repr=False, compare=False)
    _districts: dict[tuple[str, str, str], tuple[str, ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        districts: dict[tuple[str, str, str], list[str]] = {}
        forms: list[_Form] = []
        for street in self.streets:
            key = (street.province, street.city, street.name)
            if key not in districts:
                districts[key] = []
                names = dict.fromkeys((street.name, *street.aliases))
                forms.extend(_Form(key, n, _readable(Syllables.of(n))) for n in names)
                stem = _stem(street.name)
                if stem:
                    forms.append(_Form(key, street.name, _readable(Syllables.of(stem)), stem=True))
            if street.district not in districts[key]:
                districts[key].append(street.district)
        object.__setattr__(self, "_forms", tuple(forms))
        object.__setattr__(self, "_districts", {k: tuple(v) for k, v in districts.items()})

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, path: Path) -> StreetList:
        """Read a street list CSV file; StreetListError names the file and line."""
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise StreetListError(f"{path}: cannot read the street list: {exc}") from None
        return cls.parse(text, source=str(path))

    @classmethod
    def parse(cls, text: str, *, source: str = "street list") -> StreetList:
        """A street list from CSV text (header: province,city,district,street,aliases)."""
        lines = [
            (number, line)
            for number, line in enumerate(text.splitlines(), start=1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
        if not lines:
            raise StreetListError(f"{source}: no header and no streets")
        header_no, header = lines[0]
        columns = tuple(c.strip() for c in next(csv.reader(io.StringIO(header))))
        if columns[:4] != _COLUMNS[:4] or not set(columns) <= set(_COLUMNS):
            raise StreetListError(
                f"{source}:{header_no}: the header must be {','.join(_COLUMNS)}, "
                f"got {','.join(columns)}"
            )
        streets: list[Street] = []
        for number, line in lines[1:]:
            cells = [c.strip() for c in next(csv.reader(io.StringIO(line)))]
            if len(cells) > len(columns):
                raise StreetListError(f"{source}:{number}: more cells than columns")
            row = dict(zip(columns, cells + [""] * (len(columns) - len(cells)), strict=True))
            missing = [c for c in _COLUMNS[:4] if not row[c]]
            if missing:
                raise StreetListError(f"{source}:{number}: empty {', '.join(missing)}")
            if not normalise(row["street"]):
                raise StreetListError(f"{source}:{number}: the street name has no letters")
            aliases = tuple(a.strip() for a in row.get("aliases", "").split("|") if a.strip())
            streets.append(
                Street(row["province"], row["city"], row["district"], row["street"], aliases)
            )
        return cls(tuple(streets), source)

    @classmethod
    def shipped(cls) -> StreetList:
        """The sample list shipped in the package (central 济南)."""
        return _shipped()

    @classmethod
    def empty(cls) -> StreetList:
        """No streets: nothing is matched, nothing is corrected."""
        return cls((), "no street list")

    # ------------------------------------------------------------------ questions

    def __len__(self) -> int:
        return len(self.streets)

    def cities(self) -> tuple[tuple[str, str], ...]:
        """(province, city) of every city the list covers."""
        return tuple(dict.fromkeys((s.province, s.city) for s in self.streets))

    def covers(self, *, province: str = "", city: str = "") -> bool:
        """Whether the list has streets in this city (or province, when only that is given)."""
        return any(
            (not province or s.province == province) and (not city or s.city == city)
            for s in self.streets
        )

    def districts(self, *, province: str = "", city: str = "") -> tuple[str, ...]:
        """The districts that have streets in the list, in order of first appearance."""
        return tuple(
            dict.fromkeys(
                s.district
                for s in self.streets
                if (not province or s.province == province) and (not city or s.city == city)
            )
        )

    def match(
        self,
        text: str,
        *,
        district: str = "",
        city: str = "",
        province: str = "",
        threshold: float = MATCH_SCORE,
    ) -> StreetMatch | None:
        """The street of the list said in `text`, if any scores at least `threshold`.

        `city`/`province` limit the candidates to that place. `district` (the one the caller
        named) is preferred: the best street that runs through it wins, unless another street
        was said with its own characters and this one was not.
        """
        said = _readable(Syllables.of(text))
        scored: dict[tuple[str, str, str], tuple[Window, _Form]] = {}
        for form in self._forms:
            if (province and form.key[0] != province) or (city and form.key[1] != city):
                continue
            if form.stem:
                window = _stem_window(said, form.syllables)
            else:
                # One added character is tolerated (经十大路); a dropped one is not: 中山北路
                # without 中 would be 山大北路 without 大.
                window = best_window(said, form.syllables, wider=1)
            if window is None or window.score < threshold:
                continue
            if not window.exact and not _same_ending(said, window, form):
                continue  # 解放军, 和平里: the 路 is what makes it this street
            held = scored.get(form.key)
            if held is None or _rank(window, form) > _rank(*held):
                scored[form.key] = (window, form)
        if not scored:
            return None
        ranking = sorted(scored.items(), key=lambda kv: _rank(*kv[1]), reverse=True)
        chosen = ranking[0]
        if district:
            here = [kv for kv in ranking if district in self._districts[kv[0]]]
            if here and (here[0][1][0].exact or not chosen[1][0].exact):
                chosen = here[0]
        key, (window, form) = chosen
        start = said.offset(window.start)
        words = said.text(window.start, window.end)
        # 经10路 is 经十路 said as it is, only written with digits.
        exact = window.exact or _digits_as_numerals(words) in self._names(key)
        rivals = [w.score for k, (w, _) in ranking if k != key]
        ambiguous = not exact and bool(rivals) and max(rivals) >= window.score - AMBIGUITY_MARGIN
        districts = self._districts[key]
        where = district if district in districts else ""
        if not where and len(districts) == 1:
            where = districts[0]
        return StreetMatch(
            name=key[2],
            said=words,
            score=round(window.score, 1),
            exact=exact,
            province=key[0],
            city=key[1],
            district=where,
            districts=districts,
            ambiguous=ambiguous,
            stem=form.stem,
            start=start,
            end=start + len(words),
        )

    def match_district(
        self, text: str, *, city: str = "", province: str = ""
    ) -> DistrictMatch | None:
        """A district of the list said in `text` by its characters or identical pinyin, with
        or without its suffix (立夏区, 立夏 for 历下区); the one said last wins (it is the one
        next to what follows, such as the street)."""
        said = _readable(Syllables.of(text))
        found: DistrictMatch | None = None
        for (prov, town), names in self._district_names(province, city).items():
            for name in names:
                for form in _district_forms(name):
                    window = best_window(said, Syllables.of(form))
                    if window is None or window.score < DISTRICT_SCORE:
                        continue
                    start = said.offset(window.start)
                    words = said.text(window.start, window.end)
                    if found is not None and found.start + len(found.said) >= start + len(words):
                        continue
                    found = DistrictMatch(
                        name=name,
                        said=words,
                        exact=window.exact,
                        province=prov,
                        city=town,
                        start=start,
                        end=start + len(words),
                    )
        return found

    def _names(self, key: tuple[str, str, str]) -> tuple[str, ...]:
        return tuple(f.text for f in self._forms if f.key == key and not f.stem)

    def _district_names(self, province: str, city: str) -> dict[tuple[str, str], list[str]]:
        names: dict[tuple[str, str], list[str]] = {}
        for s in self.streets:
            if (province and s.province != province) or (city and s.city != city):
                continue
            held = names.setdefault((s.province, s.city), [])
            if s.district not in held:
                held.append(s.district)
        return names


def _rank(window: Window, form: _Form) -> tuple[float, bool, int]:
    """Better score; then said as it is; then the longer name (纬十二路 over 纬二路)."""
    return (window.score, window.exact, len(form.text))


def _stem(name: str) -> str:
    """经十路 -> 经十; "" when what is left is shorter than two characters."""
    for suffix in _ROAD_SUFFIXES:
        if name.endswith(suffix) and len(name) - len(suffix) >= 2:
            return name[: -len(suffix)]
    return ""


def _stem_window(said: Syllables, stem: Syllables) -> Window | None:
    """The stem said with its own sounds right before a house number (经十 八十八号); alone, 和平
    or 文化 is an everyday word."""
    width = len(stem)
    for start in range(len(said) - width):
        end = start + width
        if said.sounds[start:end] == stem.sounds and said.surface[end][:1] in _NUMBER_START:
            return Window(STEM_SCORE, start, end, exact=False)
    return None


def _same_ending(said: Syllables, window: Window, form: _Form) -> bool:
    """The window ends with the sounds of the name's 路/街/大街 (陆 for 路 is fine)."""
    suffix = next((x for x in _ROAD_SUFFIXES if form.text.endswith(x)), "")
    if not suffix:
        return True  # an alias such as 东二环 has no suffix to check
    size = len(suffix)
    return said.sounds[window.end - size : window.end] == form.syllables.sounds[-size:]


def _district_forms(name: str) -> Iterable[str]:
    """历下区 -> 历下区, 历下 (a stem of two characters or more)."""
    yield name
    for suffix in _DISTRICT_SUFFIXES:
        if name.endswith(suffix) and len(name) - len(suffix) >= 2:
            yield name[: -len(suffix)]
            return


def _digits_as_numerals(text: str) -> str:
    return re.sub(r"[0-9]+", lambda m: str(cn2an.an2cn(m.group())), text)


def _readable(syllables: Syllables) -> Syllables:
    """Digits read as numerals, one item per syllable: the recognizer may write 经10路 for 经十路
    and 纬12路 for 纬十二路. (A number's characters stay on its first syllable's item, so
    offsets into the text are unchanged.)"""
    surface: list[str] = []
    sounds: list[str] = []
    for item, sound in zip(syllables.surface, syllables.sounds, strict=True):
        if item.isascii() and item.isdigit():
            reading = _numeral_sounds(item)
            surface.extend([item, *[""] * (len(reading) - 1)])
            sounds.extend(reading)
        else:
            surface.append(item)
            sounds.append(sound)
    return Syllables(tuple(surface), tuple(sounds))


@cache
def _numeral_sounds(digits: str) -> tuple[str, ...]:
    # A number with more than four digits is a house or phone number, read digit by digit.
    reading = cn2an.an2cn(digits) if len(digits) <= 4 else cn2an.an2cn(digits, "direct")
    return Syllables.of(str(reading)).sounds


@cache
def _shipped() -> StreetList:
    text = resources.files("speech").joinpath(SHIPPED_STREETS).read_text(encoding="utf-8")
    return StreetList.parse(text, source=SHIPPED_STREETS)


def match_street(
    text: str, district: str = "", *, streets: StreetList | None = None
) -> StreetMatch | None:
    """The street said in `text`, from `streets` (the shipped sample list by default)."""
    street_list = streets if streets is not None else StreetList.shipped()
    return street_list.match(text, district=district)
