"""Canonical JSON and content hashes: the same value always gives the same bytes and digest."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """Serialise ``value`` with sorted keys and no spaces, so equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(data: bytes) -> str:
    """The content address of ``data``: ``sha256:`` followed by the hex digest."""
    return "sha256:" + hashlib.sha256(data).hexdigest()
