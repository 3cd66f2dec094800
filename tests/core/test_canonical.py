"""Canonical JSON: the C encoder built once (``compact_json``) writes what ``json.dumps`` with
the same options writes, and a value it cannot write raises what callers catch."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autonomic.core.canonical import canonical_json, compact_json

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(_JSON)
def test_canonical_json_is_json_dumps_with_sorted_keys(value: Any) -> None:
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(value) == expected


@given(_JSON)
def test_unsorted_keeps_the_order_it_is_given(value: Any) -> None:
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert compact_json(sort_keys=False)(value) == expected


def test_a_value_that_contains_itself_is_a_value_error() -> None:
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(ValueError, match="contains itself"):
        canonical_json({"a": looped})
    assert canonical_json({"a": [1]}) == '{"a":[1]}'  # the encoder is not left in a bad state


def test_a_value_nested_too_deep_is_a_value_error() -> None:
    deep: dict[str, Any] = {}
    for _ in range(100_000):
        deep = {"x": deep}
    with pytest.raises(ValueError, match="too deep"):
        canonical_json(deep)


def test_what_json_cannot_write_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        canonical_json({"when": object()})
