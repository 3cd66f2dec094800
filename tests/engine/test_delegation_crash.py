"""A worker SIGKILLed anywhere around a hand-off: the child run is created once, its outcome reaches
the parent once, and the parent completes - whichever worker picks the pieces up."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from autonomic.bootstrap import build_store
from autonomic.core.entries import EntryKind, Transition
from autonomic.core.journal import Entry
from autonomic.core.run import RunStatus
from autonomic.engine.faults import CrashAt
from autonomic.engine.worker import Worker
from autonomic.testing.crash import fork_child, wait_child
from autonomic.testing.delegation import fleet_engine


def _reopening(entry: Entry) -> bool:
    return isinstance(entry.body, Transition) and entry.body.source == "WAITING_FOR_CHILD"


TRIALS = [
    (point, count)
    for point in ("before_commit", "after_commit", "before_effect", "after_effect")
    for count in (1, 2, 3)
] + [("step_done", 1), ("step_done", 2)]
"""Every place the fleet's hand-off passes (the parent's and the child's commits and effects),
the first, second and third time: a kill in the parent's hand-off, in the child, and between the
child's end and the parent's reopening."""


@pytest.mark.parametrize(("point", "count"), TRIALS)
def test_a_worker_killed_around_a_hand_off_creates_the_child_once_and_resumes_the_parent_once(
    store_url: str, tmp_path: Path, point: str, count: int
) -> None:
    meter = tmp_path / "meter.json"

    async def enqueue() -> str:
        store = build_store(store_url)
        await store.migrate()
        try:
            return (await fleet_engine(store, meter, hold=0).start("boss", "one unit")).id
        finally:
            await store.close()

    parent_id = asyncio.run(enqueue())

    def doomed() -> int:
        async def work() -> None:
            store = build_store(store_url)
            engine = fleet_engine(store, meter, hold=0, faults=CrashAt(point, count))
            await Worker(engine, concurrency=1, poll_interval=0.01).run(until_idle=True)
            await store.close()

        asyncio.run(work())
        return 0

    ended = wait_child(fork_child(doomed))
    assert ended.killed, f"the worker was not killed at {point} #{count}: {ended}"

    async def recover() -> tuple[object, ...]:
        store = build_store(store_url)
        later = time.time() + 3600  # every lease the dead worker held has expired
        engine = fleet_engine(store, meter, hold=0, clock=lambda: later)
        try:
            await Worker(engine, concurrency=2, poll_interval=0.01).run(until_idle=True)
            parent = await store.get_run(parent_id)
            children = await store.children(parent_id)
            journal = await store.load_journal(parent_id)
            child_journal = await store.load_journal(children[0].id) if children else []
            return parent, children, journal, child_journal
        finally:
            await store.close()

    parent, children, journal, child_journal = asyncio.run(recover())
    assert parent.status is RunStatus.COMPLETED, parent.status_reason
    assert len(children) == 1
    assert children[0].status is RunStatus.COMPLETED
    kinds = [e.kind for e in journal]
    assert kinds.count(EntryKind.TOOL_INTENT) == 1  # one hand-off
    assert kinds.count(EntryKind.TOOL_RESULT) == 1  # its outcome recorded once
    reopened = [e for e in journal if _reopening(e)]
    assert len(reopened) <= 1  # resumed at most once (not at all if the child was done first)
    assert [e.kind for e in child_journal].count(EntryKind.TOOL_RESULT) == 1
