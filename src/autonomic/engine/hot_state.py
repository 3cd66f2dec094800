"""Read a run's state at claim: from the hot state cache when it holds a usable snapshot, else by
folding the journal. The database stays the truth; the cache only saves the read and the fold.

A snapshot is used only after the store shows it lies on the run's journal: the entry at the
snapshot's head (``last_seq``) is read back, and its hash must be the snapshot's ``last_hash``.
Entries chain their hashes (``core/journal.py``), so that one equal hash vouches for every entry
before it; the entries after it (a human's approval, the steps a crashed worker committed after
its last snapshot) are read in the same query and folded on top. A snapshot whose head is not on
the journal (another database, a restored backup, a write that never committed) or ahead of it,
that does not decode, or that another fold wrote (``fold_fingerprint``: a worker of other code
may fold the same journal differently) is ignored, and the journal is folded as without a cache.

Snapshots are written when a worker lets a run go (it waits, suspends, loses or gives up its
lease) and, for the worker that crashes mid-run, by the heartbeat when the state moved on since
the last one; never for a run that ended (nobody resumes it; a reopened run folds or uses an
older snapshot). ``encode`` is pure CPU proportional to the state, so it is not done per step.
A short run (fewer commits than the cache's ``min_version``) is neither looked up nor kept: its
journal folds as fast as a snapshot loads, and it pays no Redis round trip.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from functools import cache
from pathlib import Path

from autonomic.core import calls, entries, graph, journal, messages, run, snapshot, state
from autonomic.core.run import Run
from autonomic.core.state import RunState, fold
from autonomic.ports.state_cache import StateCache
from autonomic.ports.store import Store

log = logging.getLogger("autonomic.engine")

_FOLD_MODULES = (state, entries, messages, calls, journal, run, graph, snapshot)


@cache
def fold_fingerprint() -> str:
    """A digest of the code that folds a journal and encodes snapshots (its source files), so a
    worker never uses a snapshot another version of the fold made; the installed package's
    version where a source file cannot be read."""
    h = hashlib.sha256()
    for module in _FOLD_MODULES:
        try:
            h.update(Path(module.__file__ or "").read_bytes())
        except OSError:
            from importlib import metadata  # only here: it costs milliseconds to import

            try:
                return f"version:{metadata.version('autonomic')}"
            except metadata.PackageNotFoundError:  # nothing to tell folds apart by: this
                return f"process:{uuid.uuid4().hex}"  # process uses its own snapshots only
    return h.hexdigest()[:16]


class HotState:
    """The engine's reader and writer of snapshots through ``cache``; counts what it found."""

    def __init__(self, cache: StateCache) -> None:
        self.cache = cache
        self.fold = fold_fingerprint()
        self.hits = 0
        """Snapshots used as they were (the journal had nothing newer)."""
        self.extended = 0
        """Snapshots used with the newer entries folded on top."""
        self.misses = 0
        """No snapshot (none kept, expired, or the cache did not answer)."""
        self.ignored = 0
        """Snapshots not used: corrupt, another run's or fold's, or not on the journal."""

    async def read(self, store: Store, run: Run) -> RunState:
        """``run``'s state as a fold of its stored journal would give it."""
        if run.version < self.cache.min_version:
            return fold(run.id, await store.load_journal(run.id))
        data = await self.cache.get(run)
        if data is None:
            self.misses += 1
            return fold(run.id, await store.load_journal(run.id))
        try:
            cached = snapshot.decode(data, run_id=run.id, tenant=run.tenant, fold=self.fold)
        except snapshot.SnapshotError as exc:
            self.ignored += 1
            log.info("run %s: hot state snapshot ignored: %s", run.id, exc)
            return fold(run.id, await store.load_journal(run.id))
        if cached.last_seq >= 1:
            tail = await store.load_journal(run.id, after_seq=cached.last_seq - 1)
            if tail and tail[0].seq == cached.last_seq and tail[0].hash == cached.last_hash:
                try:
                    for entry in tail[1:]:
                        cached.apply(entry)
                except Exception as exc:  # an entry this state cannot take: fold from scratch
                    log.info("run %s: hot state snapshot does not extend: %s", run.id, exc)
                else:
                    if len(tail) > 1:
                        self.extended += 1
                    else:
                        self.hits += 1
                    return cached
        self.ignored += 1
        log.info(
            "run %s: hot state snapshot at seq %d is not on the stored journal; folding it",
            run.id,
            cached.last_seq,
        )
        return fold(run.id, await store.load_journal(run.id))

    async def remember(self, run: Run, state: RunState) -> None:
        """Keep ``state`` (committed: nothing staged) for the next worker that drives ``run``."""
        if state.status.terminal or state.last_seq < 1 or run.version < self.cache.min_version:
            return
        try:
            data = snapshot.encode(state, tenant=run.tenant, fold=self.fold)
            await self.cache.put(run, data)
        except Exception as exc:  # never let the cache stop a run: the next claim folds
            log.warning("run %s: its state was not kept as a snapshot: %s", run.id, exc)
