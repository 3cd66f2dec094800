"""The embedder port: text in, unit-length vectors out, so guards can measure similarity.

Loop detection compares what an agent is about to do with what it just did. Exact matching misses
the loop that rewords itself each turn; a vector per text and a cosine between vectors catches it.
The port is synchronous and pure on purpose: guards run between "fold the journal" and "record the
intent" on every step, hold no I/O, and must stay well under a millisecond with the default
adapter (hashed character n-grams, no model download). A semantic adapter (all-MiniLM-L6-v2) plugs
in behind the same two members when the ``semantic`` extra is installed.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

Vector = Sequence[float]
"""A vector of length ``Embedder.dim`` with Euclidean norm 1 (or all zeros for empty text). It
reads as dense; an adapter may keep it sparse and give it a ``dot`` method (see ``dot``)."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit vectors; equal texts always give equal vectors."""

    @property
    def name(self) -> str:
        """A stable name for evidence and the timeline (``hashed-ngram-512``, ``all-MiniLM-L6-v2``)."""
        ...

    @property
    def dim(self) -> int:
        """The length of every vector this embedder returns."""
        ...

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One unit vector per text, in order."""
        ...


def dot(a: Vector, b: Vector) -> float:
    """The dot product of two vectors of the same embedder.

    Guards take one on every compared step: when both vectors are of one type that computes its
    own (a sparse vector over its few non-zero entries), that is used, else the dense sum.
    """
    own = getattr(a, "dot", None)
    if own is not None and type(a) is type(b):
        return float(own(b))
    return float(sum(map(operator.mul, a, b)))


def cosine(a: Vector, b: Vector) -> float:
    """Cosine similarity of two unit vectors (their dot product), clamped to [-1, 1]."""
    if len(a) != len(b):
        raise ValueError(f"vectors of different lengths: {len(a)} and {len(b)}")
    return max(-1.0, min(1.0, dot(a, b)))
