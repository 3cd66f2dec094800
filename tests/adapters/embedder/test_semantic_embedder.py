"""The semantic embedder (all-MiniLM-L6-v2, ``semantic`` extra): paraphrases the n-grams miss.

Loading torch and the model takes 15-20 s on the CI machine, so this is marked slow: run it with
``--slow`` (or AUTONOMIC_SLOW=1).
"""

from __future__ import annotations

import os
import time

import pytest

from autonomic.governance.runaway.hashed import HashedNgramEmbedder
from autonomic.ports.embedder import Embedder, cosine

pytestmark = pytest.mark.slow


def test_semantic_embedder_catches_paraphrases(request, capsys):
    if not (request.config.getoption("--slow", default=False) or os.environ.get("AUTONOMIC_SLOW")):
        pytest.skip("loads torch and all-MiniLM-L6-v2 (15-20 s): run with --slow")
    from autonomic.adapters.embedder.semantic import SemanticEmbedder

    started = time.perf_counter()
    embedder = SemanticEmbedder()
    loaded = time.perf_counter() - started
    assert isinstance(embedder, Embedder)
    assert embedder.dim == 384
    texts = [
        "purge the stale reconciliation rows from the ledger table",
        "delete old reconciliation records from the ledger table",
        "what is the weather in Lisbon tomorrow",
    ]
    embedder.embed(texts)  # warm-up
    started = time.perf_counter()
    a, b, c = embedder.embed(texts)
    per_text = (time.perf_counter() - started) / 3
    with capsys.disabled():
        print(f"\nsemantic embedder: load {loaded:.1f} s, {per_text * 1000:.1f} ms per text")
    assert cosine(a, b) > 0.75 > cosine(a, c)
    h = HashedNgramEmbedder().embed(texts)
    assert cosine(a, b) - cosine(a, c) > cosine(h[0], h[1]) - cosine(h[0], h[2])
