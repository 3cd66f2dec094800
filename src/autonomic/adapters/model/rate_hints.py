"""How long a model server asks us to wait before trying again, read from its response headers.

Servers say it in five ways, and a proxy may put any of them under its own prefix:

* ``Retry-After`` (RFC 9110): seconds, or an HTTP date;
* ``retry-after-ms``: milliseconds (OpenAI, Azure);
* ``x-ratelimit-reset-requests`` / ``x-ratelimit-reset-tokens``: when that budget is full again,
  as a Go duration (``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s``) - OpenAI sends them on every answer;
* ``llm_provider-<any of the above>``: a LiteLLM proxy forwards the upstream provider's headers
  under this prefix, and on a 429 it often sends *only* ``llm_provider-retry-after``.

``rate_hint`` takes the longest wait that applies: waiting less than any of them only earns
another 429. The ``x-ratelimit-reset-*`` pair speaks of budgets, not of this answer, so it is read
on a 429 only, and a budget the server says still has room (``x-ratelimit-remaining-requests``
above zero; tokens left while the requests are what ran out) is not waited for. Every value is
untrusted: one that does not parse, is negative or is not finite is ignored, never an error.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC
from typing import NamedTuple

PROXY_PREFIX = "llm_provider-"
"""LiteLLM's prefix for the headers of the provider behind the proxy."""

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


class RateHint(NamedTuple):
    """A wait a server asked for: ``seconds``, and the header and value that said so."""

    seconds: float
    header: str
    value: str

    def describe(self) -> str:
        """``asks to wait 60s (llm_provider-retry-after: 60)``, for error messages and logs."""
        return f"asks to wait {self.seconds:g}s ({self.header}: {self.value})"


def rate_hint(
    headers: Mapping[str, str], *, status: int | None = None, now: float | None = None
) -> RateHint | None:
    """The longest applicable wait among ``headers`` (any case), or None when none says one.

    ``status`` is the answer's HTTP status (the budget resets count on a 429 only; None: read
    them); ``now`` is the wall-clock time an HTTP date is measured from (default: now)."""
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    found: list[RateHint] = []
    for prefix in ("", PROXY_PREFIX):
        found += _hints(lowered, prefix, status, time.time() if now is None else now)
    return max(found, key=lambda h: h.seconds, default=None)


def _hints(
    headers: Mapping[str, str], prefix: str, status: int | None, now: float
) -> list[RateHint]:
    found: list[RateHint] = []

    def add(name: str, seconds: float | None) -> None:
        if seconds is not None:
            found.append(RateHint(seconds, prefix + name, headers[prefix + name].strip()))

    if prefix + "retry-after-ms" in headers:
        ms = _number(headers[prefix + "retry-after-ms"])
        add("retry-after-ms", None if ms is None else ms / 1000.0)
    if prefix + "retry-after" in headers:
        value = headers[prefix + "retry-after"]
        add("retry-after", _number(value) if _number(value) is not None else _date(value, now))
    if status is None or status == 429:
        requests_left = _number(headers.get(prefix + "x-ratelimit-remaining-requests", ""))
        tokens_left = _number(headers.get(prefix + "x-ratelimit-remaining-tokens", ""))
        requests_room = requests_left is not None and requests_left >= 1
        # a request needs an unknown number of tokens, so "tokens left" only rules the token
        # budget out when the request budget is what ran out
        tokens_room = tokens_left is not None and tokens_left >= 1 and requests_left == 0
        for name, room in (
            ("x-ratelimit-reset-requests", requests_room),
            ("x-ratelimit-reset-tokens", tokens_room),
        ):
            if prefix + name in headers and not room:
                add(name, duration_seconds(headers[prefix + name]))
    return found


def duration_seconds(value: str) -> float | None:
    """A Go duration (``6m0s``, ``20ms``, ``1h2m3.5s``) or plain seconds (``1.5``) in seconds;
    None for anything else."""
    text = value.strip()
    plain = _number(text)
    if plain is not None:
        return plain
    if not text or len(text) > 64:
        return None
    total = 0.0
    position = 0
    for part in _DURATION_PART.finditer(text):
        if part.start() != position:
            return None
        total += float(part.group(1)) * _UNIT_SECONDS[part.group(2)]
        position = part.end()
    if position != len(text) or not math.isfinite(total):
        return None
    return total


def _number(value: str) -> float | None:
    """A finite, non-negative decimal number; None for anything else (``nan``, ``-1``, ``1e999``,
    ``soon``)."""
    text = value.strip()
    if not text or len(text) > 32 or not all(c.isdigit() or c in ".eE+-" for c in text):
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return number


def _date(value: str, now: float) -> float | None:
    """Seconds from ``now`` to an HTTP date (0 when it has passed); None if it is not one."""
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=UTC)
    try:
        return max(0.0, when.timestamp() - now)
    except (OverflowError, OSError, ValueError):
        return None
