"""Optimistic locking under real contention: 16 writers x 500 read-modify-write updates of one run.

Each writer reads the run, adds one to ``metadata["n"]`` and commits with the version it read
(``fence=None``: these writers hold no lease), reloading and retrying on ``StaleVersion``. With the
version check the counter ends at exactly 16 x 500; with it switched off (``_check_version = False``)
updates are lost and it ends lower, which proves the test can tell the two apart.

Writers are separate store instances, so separate connections, each on a thread of its own with its
own event loop: a SQLite store's calls block, so coroutines sharing one loop would never interleave,
and on PostgreSQL coroutines sharing one loop move in lock-step and retry about twice as often,
which only makes the test slower.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from autonomic.bootstrap import build_store
from autonomic.core.run import RunChanges
from autonomic.errors import StaleVersion
from autonomic.testing.store_conformance import T0, make_run

WRITERS = 16
UPDATES = 500


async def _writer(url: str, run_id: str, *, check_version: bool) -> int:
    """Apply ``UPDATES`` increments; return how many commits were refused as stale."""
    store = build_store(url)
    store._check_version = check_version  # type: ignore[attr-defined]
    stale = 0
    try:
        for _ in range(UPDATES):
            while True:
                run = await store.get_run(run_id)
                try:
                    await store.commit(
                        run_id,
                        expected_version=run.version,
                        fence=None,
                        entries=[],
                        changes=RunChanges(metadata={"n": run.metadata["n"] + 1}),
                        now=T0 + 1,
                    )
                    break
                except StaleVersion:
                    stale += 1
    finally:
        await store.close()
    return stale


async def _create(url: str, make_store) -> str:
    store = await make_store(url)
    try:
        run = make_run(metadata={"n": 0})
        await store.create_run(run, [])
        return run.id
    finally:
        await store.close()


async def _final(url: str, run_id: str) -> tuple[int, int]:
    store = build_store(url)
    try:
        run = await store.get_run(run_id)
        return run.metadata["n"], run.version
    finally:
        await store.close()


def _hammer(url: str, run_id: str, *, check_version: bool) -> int:
    """Run the writers at once, each on its own thread; return the refused commits."""
    stale: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(WRITERS)

    def worker() -> None:
        try:
            start.wait()
            stale.append(asyncio.run(_writer(url, run_id, check_version=check_version)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(stale) == WRITERS
    return sum(stale)


@pytest.fixture
def contended_url(store_url: str) -> str:
    """The store's URL with durability relaxed: 8000 commits each waiting for a disk flush would
    dominate the run time, and the locking under test is the same either way (SQLite
    ``synchronous=normal``; PostgreSQL ``synchronous_commit=off``, still crash-consistent)."""
    if store_url.startswith("sqlite"):
        return f"{store_url}?synchronous=normal"
    assert "options=" in store_url  # the per-test search_path; add to the same libpq options
    return f"{store_url}%20-csynchronous_commit%3Doff"


def test_version_check_prevents_lost_updates(contended_url, make_store):
    run_id = asyncio.run(_create(contended_url, make_store))
    stale = _hammer(contended_url, run_id, check_version=True)
    n, version = asyncio.run(_final(contended_url, run_id))
    assert n == WRITERS * UPDATES
    assert version == 1 + WRITERS * UPDATES
    assert stale > 0, "the writers never collided, so this run proved nothing"


def test_without_the_version_check_updates_are_lost(contended_url, make_store):
    run_id = asyncio.run(_create(contended_url, make_store))
    stale = _hammer(contended_url, run_id, check_version=False)
    n, version = asyncio.run(_final(contended_url, run_id))
    assert stale == 0
    assert version == 1 + WRITERS * UPDATES, "every commit applied"
    assert n < WRITERS * UPDATES, "no update was lost: the check-free run proves nothing"
