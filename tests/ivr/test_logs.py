"""Logging: call ids bound per call, JSON lines off a terminal, phone numbers masked everywhere."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from ivr.logs import PHONE_KEYS, bind_call, configure_logging, mask_phone, mask_phone_numbers

MOBILE = re.compile(r"1[3-9][0-9]{9}")
# capture_logs() drops the configured processors; the context ones are what is under test.
WITH_CONTEXT = [structlog.contextvars.merge_contextvars]


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back after each test."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    structlog.contextvars.clear_contextvars()


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# --- bind_call --------------------------------------------------------------------------------


def test_bind_call_adds_call_id_only_inside_the_block() -> None:
    log = structlog.get_logger()
    with capture_logs(WITH_CONTEXT) as logs:
        log.info("before")
        with bind_call("call-1", channel="sim"):
            log.info("inside")
        log.info("after")
    assert [e["event"] for e in logs] == ["before", "inside", "after"]
    assert "call_id" not in logs[0]
    assert logs[1]["call_id"] == "call-1"
    assert logs[1]["channel"] == "sim"
    assert "call_id" not in logs[2]
    assert "channel" not in logs[2]


def test_bind_call_nests_and_restores_the_outer_call() -> None:
    log = structlog.get_logger()
    with capture_logs(WITH_CONTEXT) as logs, bind_call("outer"):
        with bind_call("inner"):
            log.info("in inner")
        log.info("back in outer")
    assert [e["call_id"] for e in logs] == ["inner", "outer"]


def test_json_lines_carry_call_id_inside_bind_call_and_not_after() -> None:
    stream = io.StringIO()
    configure_logging("info", "auto", stream)  # StringIO is not a TTY: JSON
    log = structlog.get_logger("test")
    with bind_call("c-42"):
        log.info("call answered", caller="13812345678")
    log.info("idle")
    first, second = json_lines(stream)
    assert first["call_id"] == "c-42"
    assert first["event"] == "call answered"
    assert first["level"] == "info"
    assert first["caller"] == "138****5678"
    assert isinstance(first["timestamp"], str)
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", first["timestamp"])
    assert "call_id" not in second


def test_stdlib_logging_goes_to_the_same_stream_masked() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    with bind_call("c-7"):
        logging.getLogger("aiohttp.access").info("GET /?from=%s 200", "13912345678")
    (line,) = json_lines(stream)
    assert line["logger"] == "aiohttp.access"
    assert line["event"] == "GET /?from=139****5678 200"
    assert line["call_id"] == "c-7"


def test_level_filters_both_structlog_and_stdlib() -> None:
    stream = io.StringIO()
    configure_logging("warning", "json", stream)
    structlog.get_logger().info("quiet")
    logging.getLogger("aiohttp.server").info("quiet too")
    structlog.get_logger().warning("loud")
    assert [line["event"] for line in json_lines(stream)] == ["loud"]


def test_exception_text_is_masked_in_json() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    try:
        raise ValueError("no account for 13812345678")
    except ValueError:
        structlog.get_logger().exception("lookup failed")
    (line,) = json_lines(stream)
    assert "ValueError: no account for 138****5678" in str(line["exception"])


def test_console_format_is_not_json() -> None:
    stream = io.StringIO()
    configure_logging("info", "console", stream)
    structlog.get_logger().info("hello", caller="13812345678")
    text = stream.getvalue()
    assert "hello" in text
    assert "138****5678" in text
    assert not text.startswith("{")


def test_reconfiguring_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "json", first)
    configure_logging("info", "json", second)
    structlog.get_logger().info("once")
    assert first.getvalue() == ""
    assert len(json_lines(second)) == 1


def test_bad_level_or_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="log level"):
        configure_logging("loud")
    with pytest.raises(ValueError, match="log format"):
        configure_logging("info", "xml")


# --- masking ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("13812345678", "138****5678"),
        ("来电 13812345678 报修", "来电 138****5678 报修"),
        ("a=13812345678,b=19987654321", "a=138****5678,b=199****4321"),
        ("+86 138 1234 5678", "+86 138 **** 5678"),
        ("138-1234-5678", "138-****-5678"),
        ("+8613812345678", "+861******5678"),
        ("拨打95598", "拨打95598"),
        ("95598 and 12345678901", "95598 and 12345678901"),  # 12… is not a mobile prefix
        ("account 0012345678", "account 0012345678"),
        ("", ""),
    ],
)
def test_mask_phone(text: str, masked: str) -> None:
    assert mask_phone(text) == masked


def test_processor_masks_event_and_nested_values_without_mutating_them() -> None:
    nested = {"ticket": {"callback_number": "021-62345678", "note": "回拨 13812345678"}}
    items = ["13912345678", ("13712345678",)]
    event = {
        "event": "ticket created for 13812345678",
        "ani": "02162345678",
        "caller": 13812345678,
        "context": nested,
        "items": items,
        "dialed": "95598",
        "exc_info": True,
    }
    out = mask_phone_numbers(None, "info", event)
    assert out["event"] == "ticket created for 138****5678"
    assert out["ani"] == "021****5678"
    assert out["caller"] == "138****5678"
    assert out["context"] == {
        "ticket": {"callback_number": "021-62****78", "note": "回拨 138****5678"}
    }
    assert out["items"] == ["139****5678", ("137****5678",)]
    assert out["dialed"] == "95598"
    assert out["exc_info"] is True
    # The caller's own objects are left as they were.
    assert nested["ticket"]["note"] == "回拨 13812345678"
    assert items[0] == "13912345678"


def test_phone_keys_mask_every_long_digit_run() -> None:
    out = mask_phone_numbers(
        None,
        "info",
        {key: "tel 62345678 ext 12" for key in PHONE_KEYS} | {"other": "tel 62345678 ext 12"},
    )
    for key in PHONE_KEYS:
        assert "62345678" not in str(out[key]), key
        assert str(out[key]).endswith("ext 12")  # short runs stay readable
    assert out["other"] == "tel 62345678 ext 12"


def test_phone_key_seven_digit_number_is_partly_hidden() -> None:
    out = mask_phone_numbers(None, "info", {"number": "6234567"})
    assert out["number"].count("*") >= 4


def test_short_service_numbers_are_never_masked() -> None:
    out = mask_phone_numbers(None, "info", {"callee": "95598", "number": 95598, "event": "95598"})
    assert out == {"callee": "95598", "number": 95598, "event": "95598"}


def test_objects_whose_repr_shows_a_number_are_masked() -> None:
    class Call:
        def __repr__(self) -> str:
            return "Call(ani='13812345678')"

    out = mask_phone_numbers(None, "info", {"call": Call()})
    assert out["call"] == "Call(ani='138****5678')"


mobiles = st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True)


@given(st.text(), mobiles, st.text(), st.sampled_from(["", " ", "-", "86", "+86", "7"]))
def test_no_mobile_survives_mask_phone(before: str, mobile: str, after: str, glue: str) -> None:
    masked = mask_phone(before + glue + mobile + after)
    assert not MOBILE.search(masked)
    assert mask_phone(masked) == masked  # masking twice changes nothing


@given(
    st.recursive(
        st.text() | mobiles,
        lambda kids: st.lists(kids) | st.dictionaries(st.text() | mobiles, kids),
    )
)
def test_no_mobile_survives_in_nested_values(value: object) -> None:
    out = mask_phone_numbers(None, "info", {"payload": value})
    assert not MOBILE.search(json.dumps(out, ensure_ascii=False))


def test_a_mobile_as_a_key_is_masked_and_no_entry_is_lost() -> None:
    out = mask_phone_numbers(
        None,
        "info",
        {
            "waiting": {"13812345678": 3, "13800005678": 4, "95598": 1},
            "by_caller": {13912345678: "A1"},
            **{"13700001111": "field named by a number"},
        },
    )
    assert out["waiting"] == {"138****5678": 3, "138****5678#1": 4, "95598": 1}
    assert out["by_caller"] == {"139****5678": "A1"}
    assert out["137****1111"] == "field named by a number"
    assert not MOBILE.search(json.dumps(out, ensure_ascii=False))
