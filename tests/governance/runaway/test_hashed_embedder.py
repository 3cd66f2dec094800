"""The default embedder: deterministic, unit-length, and separates repeats from other work."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from autonomic.errors import ConfigError
from autonomic.governance.runaway.hashed import HashedNgramEmbedder
from autonomic.governance.runaway.normalise import normalise_text
from autonomic.ports.embedder import Embedder, cosine


def test_is_an_embedder_with_unit_vectors():
    embedder = HashedNgramEmbedder()
    assert isinstance(embedder, Embedder)
    vectors = embedder.embed(["delete stale records", "", "read the ledger"])
    assert [len(v) for v in vectors] == [512, 512, 512]
    assert math.isclose(math.sqrt(sum(x * x for x in vectors[0])), 1.0)
    assert not any(vectors[1])


def test_same_text_same_vector_across_processes():
    """CRC-32, not hash(): a rebuilt GuardState in another worker gets the same similarities."""
    code = (
        "from autonomic.governance.runaway.hashed import HashedNgramEmbedder;"
        "print(repr(HashedNgramEmbedder().embed(['purge stale rows'])[0][:40]))"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(runs) == 1


def test_rewordings_of_the_same_step_are_closer_than_other_steps():
    embedder = HashedNgramEmbedder()
    base, reworded, other = (
        normalise_text(t)
        for t in (
            "Cleanup attempt #3: delete stale reconciliation records older than 2026-11-21T10:03Z",
            "Cleanup attempt #4: delete stale reconciliation records older than 2026-11-21T10:09Z",
            "Read page 4 of the bank statement to compare balances",
        )
    )
    a, b, c = embedder.embed([base, reworded, other])
    assert cosine(a, b) >= 0.99
    assert cosine(a, c) < 0.5


def test_rejects_bad_dimensions():
    with pytest.raises(ConfigError, match="power of two"):
        HashedNgramEmbedder(dim=300)
    with pytest.raises(ConfigError, match="n must be"):
        HashedNgramEmbedder(n=0)
    with pytest.raises(ValueError, match="different lengths"):
        cosine([1.0], [1.0, 0.0])
