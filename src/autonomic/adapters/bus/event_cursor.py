"""The page cursor of ``Bus.list_events``: opaque to callers, checked when it comes back.

A cursor is ``base64url(zlib(JSON))`` of ``{"v": 1, "q": <the filters' fingerprint>, ...}``
plus what the adapter needs to resume (a ``seq`` on the embedded bus, per-partition offsets on
Kafka). The fingerprint ties it to the filters it was made for: a cursor brought back with other
filters (or another tenant's scope) would resume at the wrong places, so it is refused like a
garbled one - ``InvalidInput`` with what to do, never a traceback. A forged cursor that passes
these checks can only move the reading position: the tenant filter is applied to every event
read, whatever the cursor says.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import zlib
from typing import Any

from autonomic.errors import InvalidInput
from autonomic.ports.bus import CURSOR_MAX_CHARS

VERSION = 1


def fingerprint(
    tenant: str | None, event_type: str | None, correlation: str | None, since: float | None
) -> str:
    """What a cursor is bound to: the listing's filters."""
    text = json.dumps([tenant, event_type, correlation, since], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make(query: str, state: dict[str, Any]) -> str:
    """A cursor for the filters ``query`` (a ``fingerprint``) resuming at ``state``."""
    body = json.dumps({"v": VERSION, "q": query, **state}, separators=(",", ":"))
    cursor = base64.urlsafe_b64encode(zlib.compress(body.encode(), 6)).decode().rstrip("=")
    if len(cursor) > CURSOR_MAX_CHARS:  # thousands of partitions left to read: never given out
        raise InvalidInput(
            "this listing spans too many partitions to page through",
            hint="filter by type (one topic), or narrow it with since",
        )
    return cursor


def read(cursor: str, query: str) -> dict[str, Any]:
    """The state ``make`` put in ``cursor``; ``InvalidInput`` when it is not a cursor given out
    for ``query``."""
    try:
        if len(cursor) > CURSOR_MAX_CHARS:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        body = json.loads(zlib.decompressobj().decompress(raw, 1_000_000))
        if not isinstance(body, dict) or body.get("v") != VERSION:
            raise ValueError("not a cursor")
    except (ValueError, TypeError, binascii.Error, zlib.error, UnicodeDecodeError):
        raise bad() from None
    if body.get("q") != query:
        raise InvalidInput(
            "the cursor was given out for other filters",
            hint="pass next_cursor with the same type, correlation and since, or leave it out",
        )
    return body


def bad() -> InvalidInput:
    return InvalidInput(
        "the cursor is not one this service gave out",
        hint="pass next_cursor from the previous page unchanged, or leave it out",
    )
