"""The injection classifier port: a local model that scores how much a text reads like an injected
instruction - one more signal for the screen, never the defence.

Optional. The screen's patterns and the provenance gate work without it; a classifier only adds
taint (so the next action needs approval) when it is confident. Its score is journaled with the
tool result (the ``screen`` block), so a replay never asks it again. No adapter ships: the
classifiers we found (DeBERTa and ModernBERT prompt-injection models) are downloaded from a model
hub at run time, which this product does not do; wrap one you have installed offline.
"""

from __future__ import annotations

from typing import Protocol


class InjectionClassifier(Protocol):
    """Scores text: 0.0 (data) to 1.0 (an injected instruction)."""

    name: str

    def score(self, text: str) -> float: ...
