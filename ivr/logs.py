"""Logging set-up: structlog configured once, call ids bound per call, phone numbers masked.

Every line — ours and the standard library's (aiohttp) — goes through one `logging` handler
whose `structlog.stdlib.ProcessorFormatter` masks phone numbers and renders JSON lines (not a
terminal) or console lines (a terminal). A caller's number must never reach a log in full.
"""

from __future__ import annotations

import logging
import re
import sys
import unicodedata
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

PHONE_KEYS = frozenset(
    {
        "caller",
        "callee",
        "phone",
        "ani",
        "dnis_caller",
        "callback_number",
        "from_number",
        "to_number",
        "number",
    }
)
"""Event keys whose values are phone numbers: every run of 7+ digits in them is masked."""

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
FORMATS = ("auto", "json", "console")

# Keys a renderer needs untouched: the live exception, and ProcessorFormatter's own metadata.
_UNMASKED_KEYS = frozenset({"exc_info", "stack_info"})

_DIGITS = re.compile(r"\d+")
_MOBILE = re.compile(r"1[3-9][0-9]{9}")
# 138 1234 5678 / 138-1234-5678, as people write mobile numbers.
_GROUPED_MOBILE = re.compile(r"(?<!\d)(1[3-9]\d)([ -])\d{4}([ -])(\d{4})(?!\d)")
_PHONE_MIN_DIGITS = 7
_HIDDEN_MIN = 4

_handler: logging.Handler | None = None


def _ascii_digits(run: str) -> str:
    # \d also matches full-width and other Unicode digits; compare them as 0-9.
    return "".join(str(unicodedata.digit(ch)) for ch in run)


def _mask_run(run: str) -> str:
    """Hide the middle of a digit run: 3 first and 4 last digits stay, at least 4 are hidden."""
    n = len(run)
    hidden = max(n - 7, _HIDDEN_MIN)
    visible = max(n - hidden, 0)
    tail = min(4, (visible + 1) // 2)
    head = visible - tail
    return run[:head] + "*" * (n - head - tail) + run[n - tail :]


def _mask_text(text: str, *, phone: bool) -> str:
    def run(match: re.Match[str]) -> str:
        digits = match.group()
        if (phone and len(digits) >= _PHONE_MIN_DIGITS) or _MOBILE.search(_ascii_digits(digits)):
            return _mask_run(digits)
        return digits

    masked = _DIGITS.sub(run, text)
    return _GROUPED_MOBILE.sub(r"\1\2****\3\4", masked)


def mask_phone(value: str) -> str:
    """Mask every mainland mobile number in `value`: `13812345678` → `138****5678`.

    A digit run that contains a mobile number (`8613812345678`, an ID with one inside) is
    masked as a whole; short numbers such as 95598 are left alone.
    """
    return _mask_text(value, phone=False)


def _mask_value(value: object, *, phone: bool) -> object:
    if isinstance(value, str):
        return _mask_text(value, phone=phone)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        text = str(value)
        masked = _mask_text(text, phone=phone)
        return value if masked == text else masked
    if isinstance(value, Mapping):
        masked_map: dict[object, object] = {}
        for key, item in value.items():
            # A number can be a key too (calls by caller, say): masked like a value; two keys
            # masked alike both stay, the later one numbered.
            shown = _mask_value(key, phone=phone)
            if shown != key and shown in masked_map:
                shown = f"{shown}#{len(masked_map)}"
            masked_map[shown] = _mask_value(item, phone=phone or _is_phone_key(key))
        return masked_map
    if isinstance(value, list):
        return [_mask_value(item, phone=phone) for item in value]
    if isinstance(value, tuple):
        return tuple(_mask_value(item, phone=phone) for item in value)
    if isinstance(value, set | frozenset):
        return [_mask_value(item, phone=phone) for item in value]
    # Any other object is rendered by its repr: if that would show a number, log the masked repr.
    text = repr(value)
    masked = _mask_text(text, phone=phone)
    return value if masked == text else masked


def _is_phone_key(key: object) -> bool:
    return isinstance(key, str) and key.lower() in PHONE_KEYS


def mask_phone_numbers(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask phone numbers in every value, recursively, without mutating them.

    Mobile numbers are masked anywhere, in keys of nested mappings and field names too; under a
    key in `PHONE_KEYS` every 7+ digit run is.
    """
    for key, value in list(event_dict.items()):
        if key in _UNMASKED_KEYS or key.startswith("_"):
            continue
        masked = _mask_value(value, phone=_is_phone_key(key))
        shown = _mask_text(key, phone=False)
        if shown != key:  # a number passed as a field name (``**{number: ...}``)
            del event_dict[key]
            if shown in event_dict:
                shown = f"{shown}#{len(event_dict)}"
        event_dict[shown] = masked
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Send structlog and standard-library logging to `stream` (default stderr) at `level`.

    `fmt` is "json", "console" or "auto" (console on a terminal, JSON lines otherwise). Calling
    it again replaces the previous configuration.
    """
    global _handler  # noqa: PLW0603 — one process-wide handler, replaced on reconfiguration.
    if level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    out = sys.stderr if stream is None else stream
    numeric = LEVELS[level.lower()]
    is_tty = _isatty(out)
    as_json = fmt == "json" or (fmt == "auto" and not is_tty)

    renderer: list[Processor]
    if as_json:
        # Tracebacks are text before masking, so a number in an exception message is masked too.
        renderer = [
            structlog.processors.format_exc_info,
            mask_phone_numbers,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ]
    else:
        # ConsoleRenderer formats exc_info itself (and warns if it was formatted before).
        renderer = [mask_phone_numbers, structlog.dev.ConsoleRenderer(colors=is_tty)]

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(numeric)
    _handler = handler

    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        # Not cached: tests swap the configuration with structlog.testing.capture_logs().
        cache_logger_on_first_use=False,
    )


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or file-like without isatty
        return False


@contextmanager
def bind_call(call_id: str, **kw: Any) -> Iterator[None]:
    """Put `call_id` (and `kw`) on every log line inside the block; restore the previous values."""
    with structlog.contextvars.bound_contextvars(call_id=call_id, **kw):
        yield
