"""The listing's cursor: opaque, bound to its filters, and refused - never a traceback - when it
was not given out for them."""

import base64
import random
import zlib

import pytest

from autonomic.adapters.bus import event_cursor
from autonomic.errors import InvalidInput
from autonomic.ports.bus import CURSOR_MAX_CHARS


def test_a_cursor_comes_back_with_its_state_for_its_filters_only():
    mine = event_cursor.fingerprint("acme", None, "c1", None)
    cursor = event_cursor.make(mine, {"before": 42})
    assert event_cursor.read(cursor, mine)["before"] == 42
    for other in (
        event_cursor.fingerprint("globex", None, "c1", None),
        event_cursor.fingerprint("acme", "t", "c1", None),
        event_cursor.fingerprint("acme", None, "c1", 1.0),
    ):
        with pytest.raises(InvalidInput, match="other filters"):
            event_cursor.read(cursor, other)


def _pack(raw: bytes) -> str:
    return base64.urlsafe_b64encode(zlib.compress(raw)).decode()


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "x",
        "%%%",
        "A" * (CURSOR_MAX_CHARS + 1),
        _pack(b"not json"),
        _pack(b"[1, 2]"),
        _pack(b'{"v": 2, "q": "x"}'),
        _pack(b"\0" * 5_000_000),  # a compressed bomb is cut off at 1 MB, unread
        base64.urlsafe_b64encode(b"plain, not compressed").decode(),
    ],
)
def test_garbage_is_refused_as_invalid_input(garbage):
    with pytest.raises(InvalidInput, match="not one this service gave out"):
        event_cursor.read(garbage, event_cursor.fingerprint(None, None, None, None))


def test_a_cursor_too_long_to_come_back_is_never_given_out():
    rng = random.Random(7)
    state = {"at": {f"topic.{i}": [rng.randrange(10**9) for _ in range(3)] for i in range(2000)}}
    with pytest.raises(InvalidInput, match="too many partitions"):
        event_cursor.make("q", state)
