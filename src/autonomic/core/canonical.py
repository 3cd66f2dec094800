"""Canonical JSON and content hashes: the same value always gives the same bytes and digest."""

from __future__ import annotations

import hashlib
import json
from typing import Any

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
"""One encoder for every call: ``json.dumps`` with these options builds a new one each time."""


def canonical_json(value: Any) -> str:
    """Serialise ``value`` with sorted keys and no spaces, so equal values give equal text."""
    return _ENCODER.encode(value)


def digest(data: bytes) -> str:
    """The content address of ``data``: ``sha256:`` followed by the hex digest."""
    return "sha256:" + hashlib.sha256(data).hexdigest()
