"""The fenced sink: a write with a lower fence than one it has accepted is refused."""

import pytest

from autonomic.testing.fenced_sink import FencedSink, StaleFence


def test_a_lower_fence_than_one_accepted_is_refused(tmp_path):
    sink = FencedSink(tmp_path / "sink.jsonl")
    sink.write(1, {"n": 1})
    sink.write(2, {"n": 2})
    sink.write(2, {"n": 3})  # the same holder again
    with pytest.raises(StaleFence, match="fence 1 is older than fence 2"):
        sink.write(1, {"n": 4})
    assert [(r["n"], r["accepted"]) for r in sink.records()] == [
        (1, True),
        (2, True),
        (3, True),
        (4, False),
    ]
    assert sink.highest_fence() == 2
    assert [r["n"] for r in sink.accepted()] == [1, 2, 3]


def test_a_refused_write_does_not_raise_the_fence(tmp_path):
    sink = FencedSink(tmp_path / "sink.jsonl")
    sink.write(3, {})
    with pytest.raises(StaleFence):
        sink.write(2, {})
    assert sink.highest_fence() == 3
