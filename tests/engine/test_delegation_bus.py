"""On a bus, a hand-off and a child's result travel as events through the outbox: the child is
created by the consumer of ``autonomic.delegation.requested`` (recorded in the inbox in the same
transaction), the parent reopened by the consumer of ``autonomic.delegation.completed``. A forged
hand-off event creates nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from autonomic.adapters.bus.sql import SqlBus
from autonomic.bootstrap import build_store
from autonomic.core.entries import EntryKind
from autonomic.core.run import RunStatus
from autonomic.engine.inbox import GROUP
from autonomic.engine.worker import Worker
from autonomic.errors import EventRejected
from autonomic.ports.store import Processed
from autonomic.testing.delegation import fleet_engine


def test_hand_off_and_result_travel_as_events_on_a_bus(store_url: str, tmp_path: Path) -> None:
    async def go() -> None:
        store = build_store(store_url)
        await store.migrate()
        bus = SqlBus(store)
        try:
            engine = fleet_engine(store, tmp_path / "meter.json", hold=0)
            worker = Worker(engine, bus=bus, poll_interval=0.01)
            assert engine.delegation.via_bus
            parent = await engine.start("boss", "one unit")
            await worker.run(until_idle=True)
            done = await store.get_run(parent.id)
            assert done.status is RunStatus.COMPLETED, done.status_reason
            (child,) = await store.children(parent.id)
            assert child.status is RunStatus.COMPLETED
            journal = await store.load_journal(parent.id)
            intent = next(e for e in journal if e.kind is EntryKind.TOOL_INTENT)
            event_id = f"{parent.id}.{intent.seq}.0"  # the outbox's id for the hand-off
            assert await store.was_processed(Processed(f"{GROUP}/delegation", event_id))
            assert await store.outbox_pending() == []
            assert await bus.dead_letters() == []
            forged = {
                "parent_run_id": parent.id,
                "child_run_id": child.id,
                "key": f"{parent.id}:999",
                "agent": "unit",
            }
            with pytest.raises(EventRejected, match="no hand-off with key"):
                await engine.delegation.requested(forged, Processed("g", "forged"))
            assert len(await store.children(parent.id)) == 1
        finally:
            await bus.aclose()
            await store.close()

    asyncio.run(go())


def test_a_coordinators_subtasks_travel_as_events_on_a_bus(store_url: str, tmp_path: Path) -> None:
    from autonomic.core.entries import SubtaskStep
    from autonomic.testing.coordination import Ledger, kit_engine, orphans

    graph = {"nodes": [
        {"id": "a", "uses": "work.step", "inputs": {"n": 0}},
        {"id": "b", "uses": "work.step", "inputs": {"n": 1}},
        {"id": "c", "uses": "work.step", "inputs": {"n": 2}, "after": ["a", "b"]},
    ]}  # fmt: skip

    async def go() -> None:
        store = build_store(store_url)
        await store.migrate()
        bus = SqlBus(store)
        try:
            engine = kit_engine(store, tmp_path / "ledger", graph=graph)
            worker = Worker(engine, bus=bus, poll_interval=0.01)
            assert engine.delegation.via_bus
            lead = await engine.start("lead", "three steps")
            await worker.run(until_idle=True)
            done = await store.get_run(lead.id)
            assert done.status is RunStatus.COMPLETED, done.status_reason
            assert sorted(Ledger(tmp_path / "ledger").applied()) == [0, 1, 2]
            assert await orphans(store, lead.id) == []
            journal = await store.load_journal(lead.id)
            for entry in journal:  # each child was made by the consumer of its hand-off's event
                if isinstance(entry.body, SubtaskStep) and entry.body.phase == "dispatch":
                    processed = Processed(f"{GROUP}/delegation", f"{lead.id}.{entry.seq}.0")
                    assert await store.was_processed(processed)
            assert await bus.dead_letters() == []
        finally:
            await bus.aclose()
            await store.close()

    asyncio.run(go())
