"""One utterance understood: what the caller wants, where, and how sure we are of the address.

"我家停电了 历下区经十路 88 号" gives the intent (fault), the address (山东省 济南市 历下区 经十路
88号) and a confidence that decides whether the address is read back before a ticket is made.
Everything runs on the recognizer's text, whatever engine produced it:

1. Fillers go (`speech.intent.strip_fillers`), intents are ranked (`speech.intent.classify`).
2. The words of the sure intents cut the utterance into pieces; the piece with the most address
   in it is parsed by `speech.address.parse_address` with the hotline's region.
3. The street is matched against the operator's street list (`speech.streets`), by pinyin: a
   homophone street (京十路) is corrected to the list's name, a district the caller left out is
   filled in when the street lies in one district only, a district said with the wrong
   characters (立夏区) is recognised among the list's districts, and a house number said without
   号 after the street (经十路 88) is kept.
4. The confidence is the weaker of two scores (both documented in
   docs/decisions/0011-understanding-text.md):

   - the division: as `parse_address` rates it (1.0 said in full, 0.9 without its suffix, 0.8
     the city from the hotline's region, 0.5 ambiguous), 0.9 when the district comes from a
     street of the list that lies in one district, 0.75 when it was recognised as a homophone,
     0.6 when the city comes only from the street list;
   - the street: 1.0 said as the list spells it, 0.85 said without its 路 right before the
     number, 0.75 a homophone, 0.75 × score/100 when only close, at most 0.7 when another street
     of the list sounds nearly the same or the named district does not have it, 0.6 a street
     the list should have but does not, 0.8 when no list covers the city (unchecked), 0.5 when
     no street was said.

   Below `CONFIRM_BELOW` (0.8) the address is read back and confirmed: every correction, every
   guess from the list alone, every unknown street of the service area. An address said as the
   list has it is not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property

import cn2an

from speech.address import ParsedAddress, parse_address
from speech.intent import IntentResult, IntentTable, classify, shipped_intents
from speech.numbers import digit_runs, spoken_digits
from speech.streets import DistrictMatch, StreetList, StreetMatch

CONFIRM_BELOW = 0.8
"""An address whose confidence is below this is read back for the caller to confirm."""

MIN_ACCOUNT_DIGITS = 5
"""Numbers this long are accounts, phones or tickets (`Understanding.numbers`); shorter ones
are house numbers and the numerals of street names (经十路)."""

# Confidence of the division, when not parse_address's own (see the module docstring).
_FROM_STREET = 0.9
_HOMOPHONE_DISTRICT = 0.75
_CITY_FROM_LIST = 0.6
# Confidence of the street.
_STREET_EXACT = 1.0
_STREET_STEM = 0.85
_STREET_SOUNDS = 0.75
_STREET_DOUBT = 0.7
_STREET_UNKNOWN = 0.6
_STREET_UNCHECKED = 0.8
_NO_STREET = 0.5

# What is left right after an intent's words are cut out (停电|了|历下区): never the start of
# an address. Nothing else is stripped: 和 or 都 may begin a street name (和平路).
_AFTER_CUT = "了啦"
# Words that make what follows a street a place worth keeping (a 小区, a building, a village).
_PLACE_AFTER_STREET = re.compile(
    r"小区|花园|家园|苑|公寓|大厦|广场|社区|新村|村|院|宿舍|楼|城|庄|府|里|巷|胡同|厂|学校|医院|市场|中心"
)
# How the name of a street, a village or a housing estate ends (not a bare 道: 知道, 味道).
_PLACE_ENDING = re.compile(
    r"(?:路|街|街道|大道|巷|弄|胡同|村|组|屯|庄|里|小区|花园|家园|苑|公寓|大厦|广场|社区|新村)$"
)
_NUMBER_AFTER_STREET = re.compile(r"([0-9零〇一二两三四五六七八九十百千幺洞]+)(号)?")
_SPOKEN_DIGIT_BY_DIGIT = ("室", "户")


@dataclass(frozen=True)
class Understanding:
    """What one utterance says: intents, an address with its confidence, numbers."""

    text: str
    """The utterance as given."""
    intents: IntentResult
    """Every intent found, best first (`intents.intent` is None when unsure)."""
    address: ParsedAddress | None = None
    """The address, corrected against the street list; None when nothing like an address was
    said. `address.confidence` is the combined confidence, `address.raw` the caller's words."""
    street: StreetMatch | None = None
    """The street of the list that was matched, if any."""
    corrections: tuple[str, ...] = ()
    """What was changed from the caller's words: "京十路→经十路", "立夏区→历下区"."""
    confidence: float = 0.0
    """How sure the address is, 0-1 (0 without an address)."""
    needs_confirmation: bool = False
    """Read the address back and ask: confidence below `CONFIRM_BELOW`."""
    numbers: tuple[str, ...] = ()
    """Numbers of `MIN_ACCOUNT_DIGITS` digits or more (an account, a phone number), as digit
    strings in the order said."""

    @property
    def intent(self) -> str | None:
        """The chosen intent; None when unsure."""
        return self.intents.intent

    @property
    def readback(self) -> str:
        """The address as it is read back: city, district, street and number, numbers in words
        ("济南市历下区经十路八十八号"); "" without an address."""
        return spoken_address(self.address) if self.address is not None else ""


def spoken_address(address: ParsedAddress) -> str:
    """City (or province when no city is known), district, street and number, with the house
    number in words for text-to-speech: 128号 is 一百二十八号, room 302室 is 三零二室."""
    place = address.city or address.province
    return f"{place}{address.district}{address.street}{_number_in_words(address.number)}"


def _number_in_words(number: str) -> str:
    def say(match: re.Match[str]) -> str:
        digits, unit = match.group(1), match.group(2)
        mode = "direct" if unit in _SPOKEN_DIGIT_BY_DIGIT or len(digits) > 4 else "low"
        return f"{cn2an.an2cn(digits, mode)}{unit}"

    return re.sub(r"([0-9]+)(\D*)", say, number)


@dataclass(frozen=True)
class Understander:
    """`understand` with a hotline's region, street list and intent table bound to it.

    Pure and immutable: a dialog may hold one and call it for every utterance.
    """

    province: str = ""
    """The hotline's province (fills what a caller leaves out)."""
    city: str = ""
    """The hotline's city."""
    streets: StreetList = field(default_factory=StreetList.empty)
    """The service area's streets."""
    intents: IntentTable | None = None
    """The intent table; None = the shipped one."""

    def __post_init__(self) -> None:
        # An unknown region is a configuration error: raise it now, not on a caller's words.
        parse_address("", default_province=self.province, default_city=self.city)

    def classify(self, text: str) -> IntentResult:
        """Only the intents of `text` (cheaper than the whole understanding)."""
        return classify(text, self.intents)

    def phrases(self, intents: Iterable[str]) -> tuple[str, ...]:
        """The phrases of these intents, for a recognizer's grammar (each once, in order)."""
        table = self.intents or shipped_intents()
        wanted = set(intents)
        seen: dict[str, None] = {}
        for intent in table.intents:
            if intent.name in wanted:
                seen.update(dict.fromkeys(intent.phrases))
        return tuple(seen)

    def __call__(self, text: str) -> Understanding:
        """What `text` says."""
        return understand(
            text,
            province=self.province,
            city=self.city,
            streets=self.streets,
            intents=self.intents,
        )


def understand(
    text: str,
    *,
    province: str = "",
    city: str = "",
    streets: StreetList | None = None,
    intents: IntentTable | None = None,
) -> Understanding:
    """Intents, address and numbers in `text` (see the module docstring).

    `province`/`city` are the hotline's region (`parse_address`'s defaults); `streets` the
    service area's street list (none: no street is checked or corrected). Raises
    `speech.address.UnknownRegionError` for a region that names no division; nothing in
    `text` makes it raise.
    """
    streets = streets if streets is not None else StreetList.empty()
    result = classify(text, intents)
    pieces = _pieces(result)
    found = _best_address(pieces, province, city, streets)
    numbers = tuple(n for n in digit_runs(result.cleaned) if len(n) >= MIN_ACCOUNT_DIGITS)
    if found is None:
        return Understanding(text, result, numbers=numbers)
    index, parsed, street = found
    address, corrections, confidence = _corrected(pieces[index], parsed, street, streets)
    return Understanding(
        text=text,
        intents=result,
        address=replace(address, raw=text, confidence=confidence),
        street=street,
        corrections=corrections,
        confidence=confidence,
        needs_confirmation=confidence < CONFIRM_BELOW,
        numbers=numbers,
    )


def _pieces(result: IntentResult) -> list[str]:
    """The cleaned text without the words of the sure intents, cut where they were."""
    cuts = sorted((s.start, s.end) for s in result.sure)
    pieces: list[str] = []
    position = 0
    for start, end in cuts:
        if start >= position:
            pieces.append(result.cleaned[position:start])
        position = max(position, end)
    pieces.append(result.cleaned[position:])
    trimmed = [pieces[0], *(p.lstrip(_AFTER_CUT) for p in pieces[1:])]
    return [p for p in trimmed if p]


@dataclass
class _Candidate:
    index: int
    parsed: ParsedAddress
    street: StreetMatch | None

    @cached_property
    def evidence(self) -> int:
        parsed = self.parsed
        return (
            2 * bool(parsed.number)
            + 2 * bool(parsed.district)
            + bool(parsed.street)
            + 2 * (self.street is not None)
        )


def _best_address(
    pieces: list[str], province: str, city: str, streets: StreetList
) -> tuple[int, ParsedAddress, StreetMatch | None] | None:
    """The piece that says the most address, parsed, with its street of the list."""
    best: _Candidate | None = None
    for index, piece in enumerate(pieces):
        parsed = parse_address(piece, default_province=province, default_city=city)
        street = _street(piece, parsed, streets)
        if street is None and not _like_an_address(piece, parsed):
            continue  # nothing like an address here
        candidate = _Candidate(index, parsed, street)
        if best is None or candidate.evidence >= best.evidence:
            best = candidate  # later pieces win ties: the address usually follows the problem
    if best is None:
        return None
    return best.index, best.parsed, best.street


def _like_an_address(piece: str, parsed: ParsedAddress) -> bool:
    """A house number, a place named by the caller, or words ending like a street or a 小区.

    parse_address takes any 道 or 村 for a street; in speech "我也不知道" is no address.
    """
    if parsed == ParsedAddress(raw=piece):
        return False
    if parsed.number:
        return True
    said = parse_address(piece)  # without the region: did the caller name a place?
    if said.province or said.city or said.district:
        return True
    return bool(_PLACE_ENDING.search(parsed.street))


def _street(piece: str, parsed: ParsedAddress, streets: StreetList) -> StreetMatch | None:
    """The list's street said in `piece`, where the list covers the place said."""
    if parsed.city and not streets.covers(city=parsed.city):
        return None  # another city: the list has nothing to say about it
    if not parsed.city and parsed.province and not streets.covers(province=parsed.province):
        return None
    return streets.match(
        piece, district=parsed.district, city=parsed.city, province=parsed.province
    )


def _corrected(
    piece: str, parsed: ParsedAddress, street: StreetMatch | None, streets: StreetList
) -> tuple[ParsedAddress, tuple[str, ...], float]:
    """The parsed address completed and corrected from the street list, with its confidence."""
    corrections: list[str] = []
    province, city, district = parsed.province, parsed.city, parsed.district
    division = parsed.confidence
    covered = streets.covers(city=city) if city else bool(streets)
    if covered and not district:
        heard = _district_heard(piece, street, streets, city, province)
        if heard is not None:
            district = heard.name
            province, city = province or heard.province, city or heard.city
            division = _HOMOPHONE_DISTRICT if not heard.exact else max(division, _FROM_STREET)
            if heard.said != heard.name:
                corrections.append(f"{heard.said}→{heard.name}")

    name, number = parsed.street, parsed.number
    if street is None and not name:
        street_score = _NO_STREET
    elif street is None:
        street_score = _STREET_UNKNOWN if covered else _STREET_UNCHECKED
    else:
        if not city:
            province, city = street.province, street.city
            division = _CITY_FROM_LIST
        if not district and street.district:
            district = street.district
            division = max(division, _FROM_STREET) if division >= CONFIRM_BELOW else division
        # The list's name for what was said; a place after it (阳光小区) stays, other words
        # (a bare house number, 有) do not.
        said_at = name.find(street.said)
        rest = name[said_at + len(street.said) :] if said_at >= 0 else ""
        name = street.name + (rest if _PLACE_AFTER_STREET.search(rest) else "")
        if street.said != street.name:
            corrections.append(f"{street.said}→{street.name}")
        if street.exact:
            street_score = _STREET_EXACT
        elif street.stem:
            street_score = _STREET_STEM
        else:
            street_score = _STREET_SOUNDS * street.score / 100
        if street.ambiguous:
            street_score = min(street_score, _STREET_DOUBT)
        if parsed.district and parsed.district not in street.districts:
            street_score = min(street_score, _STREET_DOUBT)  # 市中区泉城路: which is wrong?
        # The number is read after the street: in 经十八十八号 (经十 for 经十路) the parser
        # cannot tell where the street's numeral ends.
        number = _number_after(piece, street.end) or number

    adcode, complete = parsed.adcode, parsed.complete
    if (province, city, district) != (parsed.province, parsed.city, parsed.district):
        divisions = parse_address(f"{province}{'' if city == province else city}{district}")
        adcode = divisions.adcode
        complete = bool(district) and divisions.district == district and bool(name and number)
    elif (name, number) != (parsed.street, parsed.number):
        complete = bool(adcode) and bool(district) and bool(name and number)
    address = replace(
        parsed,
        province=province,
        city=city,
        district=district,
        street=name,
        number=number,
        adcode=adcode,
        complete=complete,
    )
    return address, tuple(corrections), round(min(division, street_score), 3)


def _district_heard(
    piece: str, street: StreetMatch | None, streets: StreetList, city: str, province: str
) -> DistrictMatch | None:
    """A district of the list said with the wrong characters: right before the street it has
    (立夏区经十路, 立夏的经十路), or said with its 区 when no street of the list was said."""
    before = piece[: street.start] if street is not None else piece
    heard = streets.match_district(before, city=city, province=province)
    if heard is None:
        return None
    if street is None:
        return heard if heard.said.endswith(heard.name[-1]) else None
    between = piece[heard.end : street.start]
    return heard if heard.name in street.districts and between in ("", "的") else None


def _number_after(piece: str, end: int) -> str:
    """The house number said right after the street: with its units (八十八号三栋), or a bare
    numeral taken as the 号 (经十路 88)."""
    with_units = parse_address(piece[end:]).number
    if with_units:
        return with_units
    said = _NUMBER_AFTER_STREET.fullmatch(piece, end)
    if said is None:
        return ""
    digits = spoken_digits(said.group(1))
    return f"{digits}号" if digits else ""
