"""The default embedder: signed hashed character n-grams, pure Python, no download, no numpy.

Why this and not a model: loop detection runs before every action and has to cost well under a
millisecond; a reworded copy of the same step shares most of its character trigrams with the
original, so trigram vectors already separate "the same thing again" from "something else". Word
tokens are hashed too, so two texts that differ only in one identifier (``acct 1001`` / ``acct
1002``) are kept further apart than their shared trigrams alone would put them.

The hash is CRC-32 (deterministic across processes, unlike ``hash()``), and each feature adds +1 or
-1 by one bit of its hash, so unrelated texts that collide in a bucket cancel instead of piling up.

A step's text has a few hundred n-grams at most, so at most that many of the 512 buckets are not
zero: vectors are kept sparse (``SparseVector``, still a ``Sequence[float]`` of length ``dim`` for
any caller that reads it densely), and the dot product of two walks only the buckets both use -
the same sum as the dense loop, in the same order, without the zeros (which cannot change it).
"""

from __future__ import annotations

import math
import operator
import re
import sys
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from itertools import compress
from typing import overload

from autonomic.errors import ConfigError
from autonomic.ports.embedder import Vector

_WORD = re.compile(r"\w+")
_TOP = 0x80000000
_WORD_SEED = 0x5BD1E995


_MAX_LANE_DIM = 1 << 15
"""Up to this dimension an n-gram's bucket and sign fit in 16 bits (``_gram_keys``)."""
_LANE_SIGN = 0x8000


def _lane_tables(n: int, mask: int) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """Per position ``k`` of an n-gram, what byte ``x`` there adds to the two bytes of its key
    (``_gram_keys``): the low byte of its bucket, and the rest of its bucket with its sign in
    the top bit. CRC-32 over messages of one length is affine over GF(2), so the CRC of an n-gram
    is the XOR of the CRCs of the n one-byte-set n-grams (an odd number of constants cancels to
    one), and so is any choice of its bits."""
    low: list[bytes] = []
    high: list[bytes] = []
    for k in range(n):
        lo, hi = bytearray(256), bytearray(256)
        for x in range(256):
            gram = bytearray(n)
            gram[k] = x
            h = zlib.crc32(gram)
            lo[x] = h & mask & 0xFF
            hi[x] = (h & mask) >> 8 | (0x80 if h & _TOP else 0)
        low.append(bytes(lo))
        high.append(bytes(hi))
    if n % 2 == 0:  # an even number of constants cancels to none: put one back (position 0)
        zero = zlib.crc32(bytes(n))
        low[0] = bytes(b ^ (zero & mask & 0xFF) for b in low[0])
        high[0] = bytes(b ^ ((zero & mask) >> 8 | (0x80 if zero & _TOP else 0)) for b in high[0])
    return tuple(low), tuple(high)


def _gram_keys(
    data: bytes, n: int, lanes: tuple[tuple[bytes, ...], tuple[bytes, ...]]
) -> Counter[int]:
    """How often each key (bucket, plus ``_LANE_SIGN`` when the CRC's top bit is set) occurs
    among the n-grams of ``data``: what ``crc32(data[i:i+n])`` gives at each ``i``, computed for
    every ``i`` at once with byte translations and big-integer XORs instead of a call each."""
    count = len(data) - n + 1
    if count <= 0:
        return Counter()
    low, high = 0, 0
    for k in range(n):
        window = data[k : k + count]
        low ^= int.from_bytes(window.translate(lanes[0][k]), "little")
        high ^= int.from_bytes(window.translate(lanes[1][k]), "little")
    keys = bytearray(2 * count)
    first, second = (0, 1) if sys.byteorder == "little" else (1, 0)
    keys[first::2] = low.to_bytes(count, "little")
    keys[second::2] = high.to_bytes(count, "little")
    return Counter(memoryview(keys).cast("H"))


class SparseVector(Sequence[float]):
    """A vector whose non-zero entries are few, kept as ``{index: value}``.

    Reads like the dense list it stands for (``len`` is the dimension, indexing and iteration
    give zeros for the missing entries), so the port's contract holds; ``dot`` is the fast path
    ``autonomic.ports.embedder.dot`` takes when both sides are sparse.
    """

    __slots__ = ("_dim", "entries")

    def __init__(self, entries: dict[int, float], dim: int) -> None:
        self.entries = entries
        self._dim = dim

    def __len__(self) -> int:
        return self._dim

    @overload
    def __getitem__(self, index: int) -> float: ...
    @overload
    def __getitem__(self, index: slice) -> list[float]: ...
    def __getitem__(self, index: int | slice) -> float | list[float]:
        if isinstance(index, slice):
            return [self.entries.get(i, 0.0) for i in range(self._dim)[index]]
        if not -self._dim <= index < self._dim:
            raise IndexError("vector index out of range")
        return self.entries.get(index % self._dim, 0.0)

    def __iter__(self) -> Iterator[float]:
        get = self.entries.get
        return (get(i, 0.0) for i in range(self._dim))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SparseVector):
            return self._dim == other._dim and self.entries == other.entries
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable entries, like the list it stands for

    def __repr__(self) -> str:
        return f"SparseVector({len(self.entries)} of {self._dim})"

    def dot(self, other: SparseVector) -> float:
        """The dot product: the dense loop's sum over the shared buckets, in index order."""
        a, b = self.entries, other.entries
        shared = sorted(a.keys() & b.keys())
        return float(sum(map(operator.mul, map(a.__getitem__, shared), map(b.__getitem__, shared))))


class HashedNgramEmbedder:
    """Character n-grams and words hashed into ``dim`` signed buckets, then L2-normalised.

    Args:
        dim: the vector length; 512 keeps collisions rare for step-sized texts (a few hundred
            characters) and a cosine under ten microseconds.
        n: the character n-gram length.
        word_weight: how much a whole word counts against one n-gram.
    """

    def __init__(self, *, dim: int = 512, n: int = 3, word_weight: float = 2.0) -> None:
        if dim < 16 or dim & (dim - 1):
            raise ConfigError(
                f"hashed embedder: dim must be a power of two >= 16, got {dim}",
                hint="use 256, 512 or 1024",
            )
        if not 1 <= n <= 8:
            raise ConfigError(f"hashed embedder: n must be 1..8, got {n}", hint="use 3")
        self._dim = dim
        self._mask = dim - 1
        self._n = n
        self._word_weight = word_weight
        self._integral = float(word_weight).is_integer() and abs(word_weight) < 2**20
        self._lanes = _lane_tables(n, self._mask) if dim <= _MAX_LANE_DIM else None

    @property
    def name(self) -> str:
        return f"hashed-ngram{self._n}-{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        return [self.embed_one(text) for text in texts]

    def embed_one(self, text: str) -> SparseVector:
        """The vector of one text."""
        mask = self._mask
        crc = zlib.crc32
        data = f" {text} ".encode()
        n = self._n
        counts: dict[int, float] = {}
        get = counts.get
        if self._lanes is not None:
            # the n-grams' signed buckets all at once (``_gram_keys``); a bucket's n-gram terms
            # are +-1, so its partial sum is an exact integer in any order, as the loop's was
            for key, times in _gram_keys(data, n, self._lanes).items():
                k = key & mask
                counts[k] = get(k, 0.0) + (times if key & _LANE_SIGN else -times)
        else:
            for h in map(crc, [data[i : i + n] for i in range(len(data) - n + 1)]):
                k = h & mask
                counts[k] = get(k, 0.0) + (1.0 if h & _TOP else -1.0)
        weight = self._word_weight
        for word in _WORD.findall(text):
            h = crc(word.encode(), _WORD_SEED)
            k = h & mask
            counts[k] = get(k, 0.0) + (weight if h & _TOP else -weight)
        # the dense loop added the same terms bucket by bucket: with an integral weight every
        # partial sum is exact, so the order of the terms cannot change a bucket; the norm sums
        # the squares in index order as the dense loop did (its zeros add nothing)
        ordered = sorted(compress(counts, counts.values()))  # the buckets whose sum is not 0
        values = list(map(counts.__getitem__, ordered))
        norm = math.sqrt(
            sum(map(operator.mul, values, values)) if self._integral else sum(v * v for v in values)
        )
        if norm == 0.0:
            return SparseVector({}, self._dim)
        inv = 1.0 / norm
        return SparseVector(dict(zip(ordered, [v * inv for v in values], strict=True)), self._dim)
