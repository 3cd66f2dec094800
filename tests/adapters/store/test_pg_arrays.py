"""The commit's typed column arrays read back as psycopg's own arrays of the same values."""

from __future__ import annotations

import math

import psycopg
import pytest

from autonomic.adapters.store.pg_arrays import BigintArray, ByteaArray, Float8Array, TextArray

pytestmark = pytest.mark.postgres

QUERY = (
    "SELECT {t}::text[], {b}::bytea[], {i}::bigint[], {f}::double precision[], "
    "pg_typeof({t}), cardinality({t})"
)

VALUES = [
    (
        ["x", 'say "hi", {x} \\ \\"', "", "déjà ✓ \u2028", "NULL", " spaced "],
        [bytes(range(32)), b"", b'\\x00"{,}'],
        [1, 2**62, -(2**63), 0, 40_000],
        [0.1, 1e300, -0.0, 3.0, math.inf, 5e-324],
    ),
    ([], [], [], []),
]


@pytest.mark.parametrize("values", VALUES, ids=["values", "empty"])
def test_typed_arrays_are_read_as_the_lists_psycopg_sends(pg_url, values):
    text, blobs, ints, floats = values
    typed = {
        "t": TextArray(text),
        "b": ByteaArray(blobs),
        "i": BigintArray(ints),
        "f": Float8Array(floats),
    }
    plain = {"t": list(text), "b": list(blobs), "i": list(ints), "f": list(floats)}
    with psycopg.connect(pg_url) as conn:
        ours = conn.execute(QUERY.format(t="%(t)b", b="%(b)b", i="%(i)b", f="%(f)b"), typed)
        theirs = conn.execute(QUERY.format(t="%(t)s", b="%(b)s", i="%(i)s", f="%(f)s"), plain)
        got, expected = ours.fetchone(), theirs.fetchone()
    assert got == expected
    assert got is not None
    assert got[:4] == (text, blobs, ints, floats)
    assert [math.copysign(1, f) for f in got[3]] == [math.copysign(1, f) for f in floats]


def test_typed_arrays_stay_lists():
    assert TextArray(["a"]) == ["a"]
    assert isinstance(BigintArray(), list)
