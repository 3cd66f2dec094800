"""The hot state cache port: where a worker leaves a run's folded state (a snapshot, bytes made by
``autonomic.core.snapshot``) for whichever worker drives the run next.

The cache is never the truth. ``autonomic.engine.hot_state`` uses a snapshot only after the store
shows that the journal entry at the snapshot's head has the snapshot's hash (then only the newer
entries are read and folded on top); anything else folds the journal. So an adapter may lose,
evict or return stale values at will; what it must not do is fail or stall a run: ``get`` and
``put`` never raise and give up after a short timeout.

``RedisStateCache`` (``autonomic.adapters.redis.state_cache``) is the one adapter.
"""

from __future__ import annotations

from typing import Protocol

from autonomic.core.run import Run


class StateCache(Protocol):
    """Snapshots of runs' folded state, one per run, keyed by tenant and run."""

    min_version: int
    """Runs with fewer commits than this (``Run.version``) are neither looked up nor kept: their
    journal folds faster than a snapshot round trip would pay back (see benchmarks/README.md)."""

    async def get(self, run: Run) -> bytes | None:
        """The snapshot last put for ``run``, or ``None`` (none, expired, or the cache did not
        answer in time). Never raises."""
        ...

    async def put(self, run: Run, snapshot: bytes) -> None:
        """Keep ``snapshot`` as ``run``'s (replacing the previous one) for the cache's TTL. Never
        raises: a snapshot that cannot be kept is only a later fold."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
