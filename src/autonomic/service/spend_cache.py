"""What a run's model calls cost, kept per run **version**, so a run page shown again does not
read and sum its calls again.

A run's journal only grows through ``Store.commit``, which raises the run's version in the same
transaction (its first entries are written with version 1): two reads of one run at one version
see the same model calls, so the same ``spend``. A finished run's version never moves again - its
cost is read once per process. A running run's entry is replaced at its next commit's first
view. The key is the run id and version, and the scope checks the run's tenant before asking, so
the cache never answers one tenant with another's numbers. Bounded (least recently used go), in
process: each service process keeps its own, and none can be stale.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

from autonomic.core.run import Run

SIZE = 4096
"""Runs whose cost is kept (a few hundred bytes each)."""


class SpendCache:
    """``spend`` by ``(run id, version)``; see the module docstring."""

    def __init__(self, size: int = SIZE) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, run: Run) -> dict[str, Any] | None:
        """A copy of the spend kept for ``run`` at its version (callers may change theirs)."""
        found = self._items.get((run.id, run.version))
        if found is None:
            self.misses += 1
            return None
        self._items.move_to_end((run.id, run.version))
        self.hits += 1
        return copy.deepcopy(found)

    def put(self, run: Run, spend: dict[str, Any]) -> None:
        self._items[run.id, run.version] = copy.deepcopy(spend)
        self._items.move_to_end((run.id, run.version))
        while len(self._items) > self.size:
            self._items.popitem(last=False)
