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
    if not text.isascii():  # NFKC changes no ASCII character
        text = unicodedata.normalize("NFKC", text)
    text = text.lower()
    if _VOLATILE_SHAPE.search(text) is not None:
        text = _UUID.sub("<id>", text)
        text = _DATETIME.sub("<ts>", text)
        text = _TIME.sub("<ts>", text)
        text = _HEX.sub("<id>", text)
        text = _NUMBER.sub("<n>", text)
    return _SPACE.sub(" ", text).strip()


def _volatile_string(value: str) -> str:
    if _VOLATILE_SHAPE.search(value) is None:
        return value
    value = _UUID.sub("<id>", value)
    value = _DATETIME.sub("<ts>", value)
    value = _TIME.sub("<ts>", value)
    return _HEX.sub("<id>", value)


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
    if key and _volatile_key(key):
        return "<v>"
    if isinstance(value, Mapping):
        return {str(k): _strip(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strip(v, "") for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return "<ts>" if _EPOCH[0] <= abs(value) < _EPOCH[1] else value
    if isinstance(value, str):
        if value.count(" ") >= 2:  # free text inside an argument: a reason, a message, a query
            return normalise_text(value)
        return _volatile_string(value)
    return str(value)


def stable_arguments(arguments: Mapping[str, Any]) -> str:
    """Canonical JSON of the arguments with volatile values replaced: the action's identity."""
    return canonical_json(_strip(arguments, ""))
