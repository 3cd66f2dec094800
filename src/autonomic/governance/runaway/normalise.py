"""Take the volatile parts out of a step before comparing it with earlier ones.

A runaway loop rarely repeats itself byte for byte: each turn carries a fresh timestamp, an
incremented attempt counter, a new request UUID. Left in, those tokens make two copies of the same
step look different to an exact match and dilute their similarity. So free text (thoughts, plans,
subjects) loses every number, date, time, UUID and long hex string; arguments lose only what is
volatile by shape (timestamps, UUIDs, hex ids, epoch-like numbers) or by name (``attempt``,
``timestamp``, ``request_id``, ...), and keep the numbers that say *what* is acted on (an account,
an amount), so a legitimate batch of similar writes stays distinguishable.
"""

from __future__ import annotations

import operator
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from autonomic.core.canonical import canonical_json

_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
_DATETIME = re.compile(
    r"\b\d{4}-\d{2}-\d{2}(?:[t ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:z|[+-]\d{2}:?\d{2})?)?\b", re.I
)
_TIME = re.compile(r"\b\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\b")
_HEX = re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{8,}\b", re.I)
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)*")
_SPACE = re.compile(r"\s+")
_VOLATILE_SHAPE = re.compile(r"[\d-]")
"""Every volatile shape above has a digit, or (a UUID of letters only) a dash: text with neither
is left as it is by all of them, so it skips them (most thoughts and names)."""
_DIGIT = re.compile(r"\d")

VOLATILE_KEYS = re.compile(
    r"(?:^|_)(?:ts|time|timestamp|date|datetime|now|at|attempt|attempts|retry|retries|try|"
    r"iteration|iter|counter|count|nonce|request_id|req_id|trace_id|span_id|idempotency_key|"
    r"seq|run|round|pass|batch)$",
    re.I,
)
"""Argument names whose values are bookkeeping rather than the subject of the action."""

_EPOCH = (1_000_000_000, 10_000_000_000_000)
"""Integers in this range are Unix timestamps in seconds or milliseconds (2001 to 2286)."""


def normalise_text(text: str) -> str:
    """Free text with every volatile token replaced by a placeholder, lowercased, spaces folded."""
    if not text:
        return text
    if not text.isascii():  # NFKC changes no ASCII character
        text = unicodedata.normalize("NFKC", text)
    text = text.lower()
    if _VOLATILE_SHAPE.search(text) is not None:
        text = _shapes(text)
        if _DIGIT.search(text) is not None:
            text = _NUMBER.sub("<n>", text)
    return _SPACE.sub(" ", text).strip()


def _shapes(text: str) -> str:
    """UUIDs, dates and times, hex ids replaced (in this order), each only when the characters
    it needs are there: four literal ``-`` (a UUID), two (a date), a ``:`` (a time), a digit (a
    hex id)."""
    if text.count("-") >= 4:
        text = _UUID.sub("<id>", text)
    if text.count("-") >= 2:
        text = _DATETIME.sub("<ts>", text)
    if ":" in text:
        text = _TIME.sub("<ts>", text)
    if _DIGIT.search(text) is not None:
        text = _HEX.sub("<id>", text)
    return text


def _volatile_string(value: str) -> str:
    if _VOLATILE_SHAPE.search(value) is None:
        return value
    return _shapes(value)


_KEYS: dict[str, bool] = {}
"""Whether an argument name is volatile, by name: a run's tools use the same few names at every
step, and the pattern search was a fifth of the arguments' normalisation."""


def _volatile_key(key: str) -> bool:
    volatile = _KEYS.get(key)
    if volatile is None:
        volatile = VOLATILE_KEYS.search(key) is not None
        if len(_KEYS) >= 4096:
            _KEYS.clear()
        _KEYS[key] = volatile
    return volatile


def _strip(value: Any, key: str) -> Any:
    """``value`` with its volatile parts replaced; ``value`` itself (the same object) when it has
    none, so a caller can tell "nothing to replace" by identity."""
    if key and _volatile_key(key):
        return "<v>"
    kind = type(value)
    if kind is str:  # the exact types JSON arguments have first, each to its branch below
        return _strip_string(value)
    if kind is int or kind is float:
        return "<ts>" if _EPOCH[0] <= abs(value) < _EPOCH[1] else value
    if isinstance(value, Mapping):
        out = {str(k): _strip(v, str(k)) for k, v in value.items()}
        if type(value) is dict and all(type(k) is str and out[k] is v for k, v in value.items()):
            return value
        return out
    if isinstance(value, list | tuple):
        items = [_strip(v, "") for v in value]
        if type(value) is list and all(map(operator.is_, items, value)):
            return value
        return items
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return "<ts>" if _EPOCH[0] <= abs(value) < _EPOCH[1] else value
    if isinstance(value, str):
        return _strip_string(value)
    return str(value)


def _strip_string(value: str) -> str:
    # free text inside an argument (a reason, a message, a query) is normalised as text
    stripped = normalise_text(value) if value.count(" ") >= 2 else _volatile_string(value)
    return value if stripped == value else stripped


def stable_value(arguments: Mapping[str, Any]) -> Any:
    """The arguments with volatile values replaced (``stable_arguments`` before its encoding):
    ``arguments`` itself when none is, so its canonical JSON, if already made, is the answer."""
    return _strip(arguments, "")


def stable_arguments(arguments: Mapping[str, Any]) -> str:
    """Canonical JSON of the arguments with volatile values replaced: the action's identity."""
    return canonical_json(stable_value(arguments))
