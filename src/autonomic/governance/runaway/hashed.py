"""The default embedder: signed hashed character n-grams, pure Python, no download, no numpy.

Why this and not a model: loop detection runs before every action and has to cost well under a
millisecond; a reworded copy of the same step shares most of its character trigrams with the
original, so trigram vectors already separate "the same thing again" from "something else". Word
tokens are hashed too, so two texts that differ only in one identifier (``acct 1001`` / ``acct
1002``) are kept further apart than their shared trigrams alone would put them.

The hash is CRC-32 (deterministic across processes, unlike ``hash()``), and each feature adds +1 or
-1 by one bit of its hash, so unrelated texts that collide in a bucket cancel instead of piling up.
"""

from __future__ import annotations

import math
import operator
import re
import zlib
from collections.abc import Sequence

from autonomic.errors import ConfigError
from autonomic.ports.embedder import Vector

_WORD = re.compile(r"\w+")


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

    @property
    def name(self) -> str:
        return f"hashed-ngram{self._n}-{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        return [self.embed_one(text) for text in texts]

    def embed_one(self, text: str) -> list[float]:
        """The vector of one text."""
        vec = [0.0] * self._dim
        mask = self._mask
        crc = zlib.crc32
        data = f" {text} ".encode()
        n = self._n
        for i in range(len(data) - n + 1):
            h = crc(data[i : i + n])
            vec[h & mask] += 1.0 if h & 0x80000000 else -1.0
        weight = self._word_weight
        for word in _WORD.findall(text):
            h = crc(word.encode(), 0x5BD1E995)
            vec[h & mask] += weight if h & 0x80000000 else -weight
        # the entries are sums of +-1 and +-word_weight: with an integral weight the squares are
        # exact, so summing them in C gives the same norm as the loop did (order cannot matter)
        norm = math.sqrt(
            sum(map(operator.mul, vec, vec)) if self._integral else sum(v * v for v in vec)
        )
        if norm == 0.0:
            return vec
        inv = 1.0 / norm
        return [v * inv for v in vec]
