"""The flow model's structural validation, and a fuzz test: the checker never raises."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.flow.check import CheckReport, check_file
from ivr.flow.model import FlowLoadError, load_flow, parse_flow, read_flow_data
from sounds.catalog import Catalog

HERE = Path(__file__).parent
SHIPPED = Path(str(resources.files("ivr").joinpath("flows/95598.toml")))

Loc = tuple[str | int, ...]


def flow_with(nodes: dict[str, Any], **head: Any) -> dict[str, Any]:
    header = {"name": "t", "start": "main", "escalate": "main", **head}
    return {"flow": header, "nodes": nodes}


PROMPT_ITEM = 'a prompt item is a prompt id or a readback such as { digits = "slot" }'


def errors_of(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    with pytest.raises(FlowLoadError) as info:
        parse_flow(data)
    assert str(info.value) == f"{len(info.value.errors)} error(s) in the flow's structure"
    return info.value.errors


def menu(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "menu",
        "prompts": ["main_menu"],
        "choices": [{"key": "1", "goto": "main"}],
    }
    return {**base, **fields}


# --------------------------------------------------------------------------- valid flows


def test_shipped_flow_loads() -> None:
    flow = load_flow(SHIPPED)
    assert flow.flow.start in flow.nodes
    assert flow.flow.escalate in flow.nodes


def test_minimal_fixture_template_loads() -> None:
    flow = load_flow(HERE / "minimal_ok.toml")
    assert list(flow.nodes) == ["main_menu", "fault_queue", "agent", "goodbye"]


def test_readback_kind_and_slot() -> None:
    flow = parse_flow(flow_with({"main": menu(prompts=["you_entered", {"digits": "account"}])}))
    item = flow.node("main").prompts[1]  # type: ignore[union-attr]
    assert not isinstance(item, str)
    assert (item.kind, item.slot) == ("digits", "account")


# --------------------------------------------------------------------------- locations


def test_error_inside_a_readback_has_a_clean_location() -> None:
    """No node-type tag ("menu") and no union-member tag ("function-after[...]") in the loc."""
    data = flow_with({"main": menu(prompts=["you_entered", {"digit": "account"}])})
    assert errors_of(data) == [
        (
            ("nodes", "main", "prompts", 1, "digit"),
            "unknown field 'digit' (did you mean 'digits'?)",
        ),
    ]


def test_wrong_type_of_prompt_item_points_at_the_item() -> None:
    """One message for both members of ``str | Readback``, at the item."""
    assert errors_of(flow_with({"main": menu(prompts=["main_menu", 5])})) == [
        (("nodes", "main", "prompts", 1), PROMPT_ITEM),
    ]


@pytest.mark.parametrize("field", ["prompts", "hold_prompts", "position_prompts"])
@pytest.mark.parametrize("item", [5, ["main_menu"], True])
def test_wrong_prompt_item_in_every_prompt_list(field: str, item: Any) -> None:
    node = {"type": "enqueue", "skill": "s", "priority": 1, "on_exit": "main", field: [item]}
    assert errors_of(flow_with({"main": node})) == [(("nodes", "main", field, 0), PROMPT_ITEM)]


def test_readback_naming_two_kinds_is_one_error() -> None:
    data = flow_with({"main": menu(prompts=["x", {"digits": "account", "number": "account"}])})
    assert errors_of(data) == [
        (
            ("nodes", "main", "prompts", 1),
            "a readback names exactly one of digits, number, amount, date, minutes, text",
        ),
    ]


def test_bad_choice_key_has_no_follow_on_error_at_the_list() -> None:
    choices = [{"key": "1", "goto": "main"}, {"key": "A", "goto": "main"}, {"goto": "main"}]
    assert errors_of(flow_with({"main": menu(choices=choices)})) == [
        (
            ("nodes", "main", "choices", 1, "key"),
            "key 'A' is not a phone key (0-9, *, #)",
        ),
        (
            ("nodes", "main", "choices", 2),
            "a choice needs a key, phrases to say or intents",
        ),
    ]


def test_empty_choices() -> None:
    errors = errors_of(flow_with({"main": menu(choices=[])}))
    assert [loc for loc, _ in errors] == [("nodes", "main", "choices")]
    assert "at least 1 item" in errors[0][1]


@pytest.mark.parametrize(
    ("node", "loc", "text"),
    [
        (
            {"prompts": ["x"], "next": "main"},
            ("nodes", "main"),
            'the node has no type (type = "menu", "play", ...)',
        ),
        (
            {"type": "mneu", "prompts": ["x"]},
            ("nodes", "main"),
            "unknown node type 'mneu' (one of branch, callback, capture, digits, end, enqueue, "
            "lookup, menu, play, survey, ticket)",
        ),
        (
            menu(promtps=["x"]),
            ("nodes", "main", "promtps"),
            "unknown field 'promtps' (did you mean 'prompts'?)",
        ),
        (menu(input="keys"), ("nodes", "main", "input"), "'dtmf', 'speech' or 'both'"),
        (menu(timeout=0), ("nodes", "main", "timeout"), "greater than 0"),
        (
            {"type": "play", "prompts": "welcome", "next": "main"},
            ("nodes", "main", "prompts"),
            "should be a list, e.g. prompts = [...]",
        ),
        (
            {
                "type": "digits",
                "prompts": ["x"],
                "slot": "s",
                "min_digits": 5,
                "max_digits": 3,
                "next": "main",
            },
            ("nodes", "main"),
            "min_digits is larger than max_digits",
        ),
        (
            {
                "type": "digits",
                "prompts": ["x"],
                "slot": "s",
                "min_digits": 1,
                "max_digits": 3,
                "terminator": "1",
                "next": "main",
            },
            ("nodes", "main"),
            "the terminator cannot be a digit",
        ),
        (
            {
                "type": "digits",
                "prompts": ["x"],
                "slot": "s",
                "min_digits": 1,
                "max_digits": 3,
                "pattern": "[0-9",
                "next": "main",
            },
            ("nodes", "main", "pattern"),
            "pattern is not a valid regular expression",
        ),
        (
            {"type": "branch", "when": [{"slot": "s", "goto": "main"}], "otherwise": "main"},
            ("nodes", "main", "when", 0),
            "a condition has exactly one of equals, one_of, present",
        ),
        (
            {"type": "enqueue", "skill": "s", "priority": 1, "callback_key": "9", "on_exit": "m"},
            ("nodes", "main"),
            "callback_key and on_callback go together",
        ),
        (
            {"type": "end", "outcome": "done"},
            ("nodes", "main", "outcome"),
            "'self_service' or 'hangup'",
        ),
        (
            {"type": "survey", "prompts": ["survey"], "scale": 10, "next": "main"},
            ("nodes", "main", "scale"),
            "less than or equal to 9",
        ),
    ],
)
def test_bad_node_shapes(node: dict[str, Any], loc: Loc, text: str) -> None:
    errors = errors_of(flow_with({"main": node}))
    assert [e for e in errors if e[0] == loc and text in e[1]], errors
    # Node-type tags never leak into a location.
    assert all(
        len(e[0]) < 3 or e[0][2] not in {"menu", "play", "digits", "end", "survey"} for e in errors
    )


def test_header_errors() -> None:
    data = flow_with({"main": menu()}, repeat_key="x", global_choices=[{"goto": "main"}])
    assert errors_of(data) == [
        (("flow", "repeat_key"), "key 'x' is not a phone key (0-9, *, #)"),
        (("flow", "global_choices", 0), "a choice needs a key, phrases to say or intents"),
    ]


def test_missing_sections() -> None:
    assert errors_of({}) == [
        (("flow",), "missing field 'flow'"),
        (("nodes",), "missing field 'nodes'"),
    ]


def test_missing_field_in_a_choice() -> None:
    assert errors_of(flow_with({"main": menu(choices=[{"key": "1"}])})) == [
        (("nodes", "main", "choices", 0, "goto"), "missing field 'goto'"),
    ]


def test_no_value_error_prefix_anywhere() -> None:
    data = flow_with(
        {"main": menu(choices=[{"key": "A", "goto": "main"}], prompts=[{}])}, repeat_key="x"
    )
    assert all(not msg.startswith("Value error") for _, msg in errors_of(data))


# --------------------------------------------------------------------------- did you mean


def test_typo_of_a_required_field_is_missing_and_unknown_with_a_hint() -> None:
    node = menu()
    node["promtps"] = node.pop("prompts")
    assert errors_of(flow_with({"main": node})) == [
        (("nodes", "main", "prompts"), "missing field 'prompts'"),
        (("nodes", "main", "promtps"), "unknown field 'promtps' (did you mean 'prompts'?)"),
    ]


@pytest.mark.parametrize(
    ("typo", "loc", "hint"),
    [
        ("barge_inn", ("nodes", "main", "barge_in"), "barge_in"),
        ("no_input_promt", ("nodes", "main", "no_input_promt"), "no_input_prompt"),
        ("start_node", ("flow", "start_node"), "start"),
    ],
)
def test_unknown_field_hint(typo: str, loc: Loc, hint: str) -> None:
    if loc[0] == "flow":
        data = flow_with({"main": menu()}, **{typo: "main"})
    else:
        data = flow_with({"main": menu(**{typo: "x"})})
    assert errors_of(data) == [
        ((*loc[:-1], typo), f"unknown field {typo!r} (did you mean {hint!r}?)")
    ]


def test_unknown_field_without_a_close_name_has_no_hint() -> None:
    assert errors_of(flow_with({"main": menu(colour="red")})) == [
        (("nodes", "main", "colour"), "unknown field 'colour'"),
    ]


@pytest.mark.parametrize(
    ("node", "field", "wrong_hint"),
    [
        (menu(next="main"), "next", "next"),
        ({"type": "end", "outcome": "hangup", "next": "main"}, "next", "next"),
        (menu(terminator="#"), "terminator", "terminator"),
        (menu(slto="x"), "slto", "slot"),
    ],
)
def test_hint_names_only_fields_of_the_node_type(
    node: dict[str, Any], field: str, wrong_hint: str
) -> None:
    [(loc, msg)] = errors_of(flow_with({"main": node}))
    assert loc == ("nodes", "main", field)
    assert msg.startswith((f"unknown field {field!r}", f"{field!r} is not a field of a"))
    assert f"did you mean {wrong_hint!r}" not in msg


# --------------------------------------------------------------------------- empty key = none


def test_empty_string_switches_a_key_off() -> None:
    """TOML has no null: ``""`` is "no key" for terminator, skip_key, repeat_key, callback_key."""
    nodes = {
        "main": menu(),
        "acct": {
            "type": "digits",
            "prompts": ["x"],
            "slot": "account",
            "min_digits": 1,
            "max_digits": 3,
            "terminator": "",
            "next": "main",
        },
        "addr": {
            "type": "capture",
            "prompts": ["x"],
            "slot": "address",
            "next": "main",
            "fallback": "main",
            "skip_key": "",
        },
        "queue": {
            "type": "enqueue",
            "skill": "s",
            "priority": 1,
            "callback_key": "",
            "on_exit": "main",
        },
    }
    flow = parse_flow(flow_with(nodes, repeat_key=""))
    assert flow.flow.repeat_key is None
    assert flow.node("acct").terminator is None  # type: ignore[union-attr]
    assert flow.node("addr").skip_key is None  # type: ignore[union-attr]
    assert flow.node("queue").callback_key is None  # type: ignore[union-attr]


def test_empty_callback_key_with_on_callback_is_still_a_pair_error() -> None:
    node = {
        "type": "enqueue",
        "skill": "s",
        "priority": 1,
        "callback_key": "",
        "on_callback": "main",
        "on_exit": "main",
    }
    assert errors_of(flow_with({"main": node})) == [
        (("nodes", "main"), "callback_key and on_callback go together"),
    ]


def test_a_space_is_not_an_empty_key() -> None:
    assert errors_of(flow_with({"main": menu()}, repeat_key=" ")) == [
        (("flow", "repeat_key"), "key ' ' is not a phone key (0-9, *, #)"),
    ]


# --------------------------------------------------------------------------- reading the file


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(FlowLoadError) as info:
        read_flow_data(path)
    assert str(info.value) == f"{path}: cannot read the flow file: No such file or directory"
    assert info.value.detail == "cannot read the flow file: No such file or directory"
    assert info.value.line is None


def test_bad_toml_names_the_file_and_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[flow]\nname = "x\n', encoding="utf-8")
    with pytest.raises(
        FlowLoadError, match=r"bad\.toml: not valid TOML: .*\(at line 2, column"
    ) as info:
        read_flow_data(path)
    assert info.value.line == 2
    assert info.value.detail.startswith("not valid TOML: ")
    assert str(path) not in info.value.detail


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "gbk.toml"
    path.write_bytes(b"# \xb5\xe7\n[flow]\n")  # "电" in GBK, at byte 2
    with pytest.raises(FlowLoadError) as info:
        read_flow_data(path)
    assert info.value.detail == "not UTF-8 text (byte 2); save the flow file as UTF-8"
    assert str(info.value) == f"{path}: {info.value.detail}"


# ------------------------------------------------------------------- check_file never raises

_CORPUS = [
    line
    for path in [SHIPPED, HERE / "minimal_ok.toml", *sorted((HERE / "broken").glob("*.toml"))]
    for line in path.read_text("utf-8").split("\n")
]

_KEYS = [
    "type", "prompts", "next", "goto", "key", "say", "choices", "slot", "min_digits",
    "max_digits", "terminator", "pattern", "on_skip", "service", "params", "save", "on_found",
    "on_not_found", "on_error", "when", "otherwise", "scale", "start", "escalate", "repeat_key",
    "globals", "on_failure", "no_input_prompt", "set", "outcome", "priority", "skill", "on_exit",
]  # fmt: skip
_VALUES = [
    '"menu"', '"play"', '"digits"', '"end"', '"survey"', '"lookup"', '"branch"', '"enqueue"',
    '"mneu"', '"main_menu"', '"goodbye"', '"agent"', '"*"', '"#"', '""', '"1"', "1", "0", "-1",
    "13", "true", "3.5", "nan", "inf", '["main_menu"]', '["x", { digits = "account" }]',
    '[{ digits = "a", number = "b" }]', "[]", "{}", '{ intent = "x" }', "'[0-9'",
    '"hangup"', '"ticket_status"', '"\\u0000"', '"电费"', '[1, "a"]',
]  # fmt: skip
_HEADERS = [
    "[flow]", "[nodes.main_menu]", "[nodes.goodbye]", "[nodes.agent]", "[nodes.x]",
    "[[nodes.main_menu.choices]]", "[[flow.global_choices]]", "[nodes.survey.say]",
    "[[nodes.x.when]]", "[nodes]", "[[nodes.main_menu]]", "[nodes.main_menu.choices]",
]  # fmt: skip

_NODE_IDS = sorted(
    {
        line[len("[nodes.") : -1]
        for line in _CORPUS
        if line.startswith("[nodes.") and "." not in line[7:]
    }
)
_KEY_VALUE = re.compile(r"^(\w+) = ")

_line = st.one_of(
    st.sampled_from(_CORPUS),
    st.sampled_from(_HEADERS),
    st.builds(
        "{} = {}".format,
        st.one_of(st.sampled_from(_KEYS), st.sampled_from(['"0"', '"9"', "a.b", "'q'"])),
        st.sampled_from(_VALUES),
    ),
    st.text(max_size=30),
)


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    """A real flow with a few values or targets changed, or lines deleted, duplicated, added."""
    base = draw(st.sampled_from([SHIPPED, HERE / "minimal_ok.toml"])).read_text("utf-8")
    lines = base.split("\n")
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(
            st.sampled_from(["revalue", "retarget", "delete", "duplicate", "replace", "insert"])
        )
        m = _KEY_VALUE.match(lines[i])
        if op == "revalue" and m:
            lines[i] = f"{m[1]} = {draw(st.sampled_from(_VALUES))}"
        elif op == "retarget" and m:
            lines[i] = f'{m[1]} = "{draw(st.sampled_from(_NODE_IDS))}"'
        elif op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "replace":
            lines[i] = draw(_line)
        elif op == "insert":
            lines.insert(i, draw(_line))
        if not lines:
            lines = [""]
    return "\n".join(lines)


_toml_ish = st.one_of(
    st.text(),
    st.lists(_line, max_size=40).map("\n".join),
    _mutated(),
)


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "flow.toml"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.shipped()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(text=_toml_ish)
def test_check_file_never_raises(text: str, fuzz_file: Path, catalog: Catalog) -> None:
    fuzz_file.write_text(text, encoding="utf-8")
    report = check_file(fuzz_file, catalog)
    assert isinstance(report, CheckReport)
    assert report.ok == (not report.errors)
    if report.flow is None:
        assert report.errors, "a file that did not load must say why"
    # Bounded by the lines as tomllib and SourceMap count them: only "\n" ends a line (the
    # file is read with universal newlines, as check_file reads it).
    n_lines = len(fuzz_file.read_text("utf-8").split("\n"))
    assert all(1 <= line <= n_lines for line in report.lines.values())
    rendered = report.render()
    assert len(rendered) == len(report.problems)
    assert all(line.startswith(f"{fuzz_file}") for line in rendered)


def test_check_file_reports_a_non_utf8_file(tmp_path: Path, catalog: Catalog) -> None:
    path = tmp_path / "gbk.toml"
    path.write_bytes((HERE / "minimal_ok.toml").read_text("utf-8").encode("gbk"))
    with pytest.raises(UnicodeDecodeError) as bad:
        path.read_bytes().decode("utf-8")
    report = check_file(path, catalog)
    assert not report.ok
    assert report.render() == [
        f"{path}: error: not UTF-8 text (byte {bad.value.start}); save the flow file as UTF-8"
    ]


def test_check_file_survives_absurd_nesting(tmp_path: Path, catalog: Catalog) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    report = check_file(path, catalog)
    assert not report.ok
    assert report.render() == [f"{path}: error: not valid TOML: nested too deeply"]
