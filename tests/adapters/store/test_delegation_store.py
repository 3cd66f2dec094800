"""The store's side of delegation, on both stores: a queued child is never claimed until admitted;
admission fills a capability's free slots oldest first and never more; an ended or suspended child
frees its slot; a run's children and the parents ready to resume are found."""

from __future__ import annotations

import asyncio
from typing import Any

from autonomic.bootstrap import build_store
from autonomic.core.run import RunChanges, RunStatus
from autonomic.ports.store import Claim, Store
from autonomic.testing.store_conformance import T0, make_entries, make_run


async def _child(store: Store, parent: str, n: int, *, queued: bool = True) -> str:
    run = make_run(created_at=T0 + n, parent_run_id=parent, capability="cap", queued=queued)
    await store.create_run(run, make_entries(run.id, [{"n": n}]))
    return run.id


async def _end(store: Store, run_id: str, status: RunStatus) -> None:
    run = await store.get_run(run_id)
    await store.commit(
        run_id,
        expected_version=run.version,
        fence=None,
        entries=[],
        changes=RunChanges(status=status),
        now=T0 + 100,
    )


def _go(url: str, scenario: Any) -> Any:
    async def go() -> Any:
        store = build_store(url)
        await store.migrate()
        try:
            return await scenario(store)
        finally:
            await store.close()

    return asyncio.run(go())


def test_admission_fills_free_slots_oldest_first_and_never_more(store_url: str) -> None:
    async def scenario(store: Store) -> None:
        parent = make_run(status=RunStatus.WAITING_FOR_CHILD)
        await store.create_run(parent, make_entries(parent.id, [{"p": 1}]))
        kids = [await _child(store, parent.id, n) for n in range(4)]
        assert await store.parents_to_resume() == []  # no child has ended
        claim = Claim(owner="w", now=T0 + 50, ttl=30.0)
        assert await store.claim(claim) is None  # queued children are never claimed
        assert await store.admit("cap", 2) == 2
        assert await store.admit("cap", 2) == 0  # both slots are taken
        first = await store.claim(claim)
        assert first is not None
        assert first.id == kids[0]
        assert [r.id for r in await store.children(parent.id)] == kids
        await _end(store, kids[0], RunStatus.COMPLETED)
        assert await store.admit("cap", 2) == 1  # one slot freed: the oldest queued goes
        queued = [r.id for r in await store.children(parent.id) if r.queued]
        assert queued == [kids[3]]
        await _end(store, kids[1], RunStatus.SUSPENDED)  # a suspended child holds no slot
        assert await store.admit("cap", 2) == 1
        # children ended since it began to wait (a fan-out waits for several at once)
        assert [w.run_id for w in await store.parents_to_resume()] == [parent.id]
        await _end(store, kids[3], RunStatus.FAILED)
        assert [w.run_id for w in await store.parents_to_resume()] == [parent.id]
        # with its version and how many of its children have an outcome (the sweep's memo)
        (waiting,) = await store.parents_to_resume()
        assert (waiting.version, waiting.ended) == ((await store.get_run(parent.id)).version, 3)

    _go(store_url, scenario)
