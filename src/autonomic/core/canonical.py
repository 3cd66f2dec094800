"""Canonical JSON and content hashes: the same value always gives the same bytes and digest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, Final


def compact_json(*, sort_keys: bool) -> Callable[[Any], str]:
    """A function writing a value as JSON with no spaces and no ASCII escaping, keys sorted or
    as they come: ``json.dumps`` with those options, without its cost per call.

    ``JSONEncoder.encode`` builds a new C encoder for every value: half the time of encoding a
    small dict, and every journal entry, hash and guard key is one. This builds it once, without the circular-reference check
    (its record of the containers being written is the encoder's, and would outlive a failed
    call): a value that contains itself, like one nested too deep, raises ``ValueError`` when
    the encoder runs out of recursion. Falls back to ``options.encode`` where the C
    accelerator is missing."""
    options = json.JSONEncoder(sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has _json
        return options.encode
    one_shot = make(
        None,
        options.default,
        json.encoder.encode_basestring,  # ensure_ascii=False
        None,
        options.key_separator,
        options.item_separator,
        sort_keys,
        options.skipkeys,
        options.allow_nan,
    )
    join = "".join

    def encode(value: Any) -> str:
        try:
            return join(one_shot(value, 0))
        except RecursionError:
            raise ValueError(
                "a value nested too deep to write as JSON, or one that contains itself"
            ) from None

    return encode


canonical_json: Final[Callable[[Any], str]] = compact_json(sort_keys=True)
"""Serialise a value with sorted keys and no spaces, so equal values give equal text (what
``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` gives)."""


def digest(data: bytes) -> str:
    """The content address of ``data``: ``sha256:`` followed by the hex digest."""
    return "sha256:" + hashlib.sha256(data).hexdigest()
