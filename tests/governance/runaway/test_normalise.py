"""The fast paths of the normalisation give what the plain passes give (issue 17, item 1).

``normalise_text`` skips its five volatile-token passes for text with no digit and no dash, and NFKC
for ASCII text; ``stable_arguments`` remembers which argument names are volatile. The reference
below is the plain algorithm, every pass on every text: on random text (digits, dashes, hex, dates,
UUIDs, full-width and superscript digits that NFKC turns into ASCII ones) both must agree exactly.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from autonomic.core.canonical import canonical_json
from autonomic.governance.runaway import normalise
from autonomic.governance.runaway.normalise import normalise_text, stable_arguments


def reference_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    for pattern, placeholder in (
        (normalise._UUID, "<id>"),
        (normalise._DATETIME, "<ts>"),
        (normalise._TIME, "<ts>"),
        (normalise._HEX, "<id>"),
        (normalise._NUMBER, "<n>"),
    ):
        text = pattern.sub(placeholder, text)
    return re.sub(r"\s+", " ", text).strip()


def _reference_value(value: Any, key: str) -> Any:
    if key and normalise.VOLATILE_KEYS.search(key):
        return "<v>"
    if isinstance(value, Mapping):
        return {str(k): _reference_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_reference_value(v, "") for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return "<ts>" if 1_000_000_000 <= abs(value) < 10_000_000_000_000 else value
    if isinstance(value, str):
        if value.count(" ") >= 2:
            return reference_text(value)
        for pattern, placeholder in (
            (normalise._UUID, "<id>"),
            (normalise._DATETIME, "<ts>"),
            (normalise._TIME, "<ts>"),
            (normalise._HEX, "<id>"),
        ):
            value = pattern.sub(placeholder, value)
        return value
    return str(value)


def reference_arguments(arguments: Mapping[str, Any]) -> str:
    return canonical_json(_reference_value(arguments, ""))


PIECES = st.sampled_from(
    [
        "retry", "the ledger", "abcdefab-abcd-abcd-abcd-abcdefabcdef", "2026-12-04T19:20:00Z",
        "12:30", "deadbeef1", "deadbeef", "-", "42", "3.14", "\uff11\uff12", "\u00b2", "\u216b", "\ufb01le", " ", "\u00a0",
        "\t", "ÄÖ", "İ", "x-y", "--", "0x1f", "1,000.5",
    ]
)  # fmt: skip
TEXTS = st.one_of(
    st.text(max_size=60),
    st.lists(st.one_of(PIECES, st.text(max_size=4)), max_size=12).map("".join),
)


@settings(max_examples=600, deadline=None)
@given(TEXTS)
def test_normalised_text_is_the_plain_passes(text: str) -> None:
    assert normalise_text(text) == reference_text(text)


KEYS = st.sampled_from(["attempt", "account", "run", "amount", "request_id", "name", "at", "x_ts"])
VALUES = st.recursive(
    st.one_of(TEXTS, st.integers(), st.floats(allow_nan=False), st.booleans(), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.one_of(KEYS, st.text(max_size=8)), VALUES, max_size=5))
def test_stable_arguments_are_the_plain_passes(arguments: dict[str, Any]) -> None:
    assert stable_arguments(arguments) == reference_arguments(arguments)
    assert stable_arguments(arguments) == reference_arguments(arguments)  # names remembered
