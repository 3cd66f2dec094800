"""The guards' fast paths give exactly what the plain code gave (issue 17, item 1).

Each fast path below is compared with a verbatim copy of the code it replaced, on random inputs
built to hit its edges: the n-gram buckets found by byte translation against one CRC-32 call per
n-gram (every dimension, n-gram length and word weight the embedder accepts), normalisation that
skips a pattern whose characters are absent against running every pattern, the arguments'
signature that reuses their canonical JSON against encoding the stripped copy, and the budget
check that skips the guard when no limit is set against asking it.
"""

from __future__ import annotations

import asyncio
import math
import operator
import re
import zlib
from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from autonomic.core.canonical import canonical_json
from autonomic.core.messages import Message, Role
from autonomic.core.state import RunState
from autonomic.governance.action import ActionKind, ProposedAction
from autonomic.governance.decision import Decision
from autonomic.governance.runaway import GuardState
from autonomic.governance.runaway import normalise as N
from autonomic.governance.runaway.budget import BudgetGuard, run_budget
from autonomic.governance.runaway.hashed import HashedNgramEmbedder, SparseVector
from autonomic.governance.runaway.model_budget import ModelBudget

# -- the embedder -------------------------------------------------------------------------------

_WORD = re.compile(r"\w+")


def loop_embed(text: str, dim: int, n: int, weight: float) -> SparseVector:
    """``HashedNgramEmbedder.embed_one`` before the byte translation: a CRC call per n-gram."""
    mask = dim - 1
    data = f" {text} ".encode()
    counts: dict[int, float] = {}
    get = counts.get
    for h in map(zlib.crc32, [data[i : i + n] for i in range(len(data) - n + 1)]):
        k = h & mask
        counts[k] = get(k, 0.0) + (1.0 if h & 0x80000000 else -1.0)
    for word in _WORD.findall(text):
        h = zlib.crc32(word.encode(), 0x5BD1E995)
        k = h & mask
        counts[k] = get(k, 0.0) + (weight if h & 0x80000000 else -weight)
    ordered = sorted(k for k, v in counts.items() if v)
    values = list(map(counts.__getitem__, ordered))
    integral = float(weight).is_integer() and abs(weight) < 2**20
    norm = math.sqrt(
        sum(map(operator.mul, values, values)) if integral else sum(v * v for v in values)
    )
    if norm == 0.0:
        return SparseVector({}, dim)
    inv = 1.0 / norm
    return SparseVector(dict(zip(ordered, [v * inv for v in values], strict=True)), dim)


def _bits(vector: SparseVector) -> list[tuple[int, str]]:
    return [(k, v.hex()) for k, v in vector.entries.items()]


_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(list('abc xyz_-|{}":,.0123456789\n\t')),
        st.characters(codec="utf-8"),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(
    _TEXT,
    st.sampled_from([16, 64, 512, 1024, 1 << 15, 1 << 16]),
    st.integers(1, 8),
    st.sampled_from([2.0, 1.0, 0.0, -3.0, 0.5, 3.3]),
)
def test_embedding_equals_a_crc_call_per_ngram_bit_for_bit(
    text: str, dim: int, n: int, weight: float
) -> None:
    got = HashedNgramEmbedder(dim=dim, n=n, word_weight=weight).embed_one(text)
    assert _bits(got) == _bits(loop_embed(text, dim, n, weight))


def test_embedding_of_texts_shorter_than_an_ngram() -> None:
    for n in range(1, 9):
        embedder = HashedNgramEmbedder(n=n)
        for text in ("", "a", "ab", "é"):
            assert _bits(embedder.embed_one(text)) == _bits(loop_embed(text, 512, n, 2.0))


# -- normalisation ------------------------------------------------------------------------------

# the patterns are the module's (the change did not touch them): only their use is copied
_UUID, _DATETIME, _TIME, _HEX, _NUMBER = N._UUID, N._DATETIME, N._TIME, N._HEX, N._NUMBER


def plain_normalise_text(text: str) -> str:
    """``normalise_text`` before it skipped patterns: every one, in order."""
    import unicodedata

    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    text = text.lower()
    if re.search(r"[\d-]", text) is not None:
        text = _UUID.sub("<id>", text)
        text = _DATETIME.sub("<ts>", text)
        text = _TIME.sub("<ts>", text)
        text = _HEX.sub("<id>", text)
        text = _NUMBER.sub("<n>", text)
    return re.sub(r"\s+", " ", text).strip()


def plain_volatile_string(value: str) -> str:
    if re.search(r"[\d-]", value) is None:
        return value
    value = _UUID.sub("<id>", value)
    value = _DATETIME.sub("<ts>", value)
    value = _TIME.sub("<ts>", value)
    return _HEX.sub("<id>", value)


def plain_strip(value: Any, key: str) -> Any:
    if key and N.VOLATILE_KEYS.search(key) is not None:
        return "<v>"
    if isinstance(value, Mapping):
        return {str(k): plain_strip(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_strip(v, "") for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return "<ts>" if 1_000_000_000 <= abs(value) < 10_000_000_000_000 else value
    if isinstance(value, str):
        if value.count(" ") >= 2:
            return plain_normalise_text(value)
        return plain_volatile_string(value)
    return str(value)


_PIECES = st.one_of(
    st.sampled_from(
        [
            "2026-11-21",
            "2026-11-21T10:03Z",
            "10:03",
            "7:05:09.5",
            "deadbeef01",
            "DEADBEEFCAFE",
            "abcdefab",
            "123e4567-e89b-12d3-a456-426614174000",
            "abcdefab-abcd-abcd-abcd-abcdefabcdef",
            "-",
            ":",
            " ",
            "+1,5",
            "٣",
            "job-7",
            "attempt 3",
            "Ⅻ",
        ]
    ),
    st.text(alphabet="0123456789abcdefxyz-:+., T", max_size=6),
)
_FREE_TEXT = st.lists(_PIECES, max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(_FREE_TEXT)
def test_normalise_text_equals_running_every_pattern(text: str) -> None:
    assert N.normalise_text(text) == plain_normalise_text(text)
    assert N._volatile_string(text) == plain_volatile_string(text)


_KEYS = st.sampled_from(["account", "ts", "memo", "attempt", "job_id", "request_id", "n", "at"])
_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**14), 10**14),
    st.sampled_from([1_700_000_000, 1_700_000_000_123, 2477.68, 0.0, -1.5]),
    st.floats(allow_nan=False),
    _FREE_TEXT,
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(_KEYS, inner, max_size=4),
        st.dictionaries(st.integers(0, 3), inner, max_size=2),
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES, max_size=5))
def test_the_signature_equals_encoding_the_stripped_copy(arguments: dict[str, Any]) -> None:
    expected = canonical_json(plain_strip(arguments, ""))
    assert N.stable_arguments(arguments) == expected
    action = ProposedAction(ActionKind.TOOL_CALL, "a", tool="t", arguments=arguments)
    feats = GuardState().features(action)
    assert feats.signature == expected
    assert feats.args_key == canonical_json(arguments)


def test_nothing_volatile_is_the_same_object_and_anything_volatile_is_a_copy() -> None:
    plain = {"account": "1001", "memo": "rent", "lines": [1, 2.5, None, True]}
    assert N.stable_value(plain) is plain
    for volatile in ({"ts": 5}, {"a": 1_700_000_000}, {"a": ["2026-01-01"]}, {"a": (1,)}, {1: 2}):
        assert N.stable_value(volatile) is not volatile


# -- the budget check ---------------------------------------------------------------------------


def test_a_model_call_without_limits_gets_what_the_budget_guard_answers() -> None:
    state = RunState(run_id="r")
    state.messages.extend([Message(Role.SYSTEM, "s"), Message(Role.USER, "task " * 40)])
    decision, action = asyncio.run(
        ModelBudget().check(agent="a", tenant="t", state=state, tools=(), now=1.0)
    )
    guarded = Decision.of_findings(BudgetGuard(run_budget(state)).check(action, GuardState()))
    assert decision == guarded
    assert action.estimate.tokens > 0  # the estimate is still made: the ledger settles by it
