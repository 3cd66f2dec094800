"""The transactional outbox, on both stores: a committed step has its events, an aborted one none,
and a crash between commit and publish publishes them later, once."""

from __future__ import annotations

import asyncio

import pytest

from autonomic.adapters.bus.sql import SqlBus
from autonomic.bootstrap import build_agents, build_model
from autonomic.core import event_types as et
from autonomic.core.envelope import new_event
from autonomic.core.run import RunChanges
from autonomic.engine.executor import Engine
from autonomic.engine.outbox import OutboxHook, Relay
from autonomic.errors import EventRejected, LeaseLost, StoreUnavailable
from autonomic.examples.bus import agent as demo
from autonomic.testing.bus_conformance import collect


class FailAt:
    """The store fails at ``point`` (after passing it ``after`` times): the commit there never
    happens, and the engine leaves the run for recovery."""

    def __init__(self, point: str, after: int = 0) -> None:
        self.point = point
        self.after = after

    def at(self, point: str) -> None:
        if point == self.point:
            if self.after == 0:
                raise StoreUnavailable(f"the disk went away at {point}")
            self.after -= 1


def engine_on(store, **kwargs) -> Engine:
    registry = build_agents()
    for agent in demo.agents():
        registry.add(agent)
    hooks = kwargs.pop("hooks", [OutboxHook()])
    return Engine(store, registry, build_model, hooks=hooks, **kwargs)


def test_a_committed_run_has_its_events_in_order_with_its_correlation(store_url, make_store):
    async def go() -> None:
        store = await make_store(store_url)
        try:
            engine = engine_on(store)
            run = await engine.run("code-analyzer", "src/payments/api.py")
            assert run.correlation_id == run.id, "a run started by hand is its own conversation"
            stored = await store.get_run(run.id)
            assert stored.correlation_id == run.id, "runs.correlation_id is written"
            items = await store.outbox_pending()
            kinds = [i.event.type for i in items]
            assert kinds == [et.RUN_STARTED, demo.AUDIT_REQUESTED.name, et.RUN_COMPLETED]
            assert {i.event.correlation_id for i in items} == {run.id}
            assert all(i.event.source == f"autonomic://run/{run.id}" for i in items)
            audit = items[1].event
            assert audit.data["path"] == "src/payments/api.py"
            assert items[2].event.data["output"] == run.output
            started = await engine.start("code-analyzer", "x.py", correlation_id="conv-7")
            assert (await store.get_run(started.id)).correlation_id == "conv-7"
        finally:
            await store.close()

    asyncio.run(go())


def test_an_aborted_step_leaves_no_event(store_url, make_store):
    """The emit's commit is aborted before it reaches the store: no audit request exists; the
    refused commit of a stale writer writes no event either."""

    async def go() -> None:
        store = await make_store(store_url)
        try:
            engine = engine_on(store, faults=FailAt("before_commit", after=1))
            with pytest.raises(StoreUnavailable):
                await engine.run("code-analyzer", "src/payments/api.py", run_id="r-aborted")
            kinds = [i.event.type for i in await store.outbox_pending()]
            assert kinds == [et.RUN_STARTED], "an event of an aborted step, or none of the start"
            run = await store.get_run("r-aborted")
            assert run.status.value == "RUNNING", "left for recovery"
            stale = new_event(et.RUN_FAILED, {"run_id": run.id, "agent": "a"}, source="s")
            current = await store.get_run(run.id)
            with pytest.raises(LeaseLost):
                await store.commit(
                    run.id,
                    expected_version=current.version,
                    fence=current.lease.fence + 5,
                    entries=[],
                    changes=RunChanges(),
                    now=current.updated_at,
                    outbox=[stale],
                )
            assert stale.id not in {i.event.id for i in await store.outbox_pending()}
        finally:
            await store.close()

    asyncio.run(go())


def test_an_event_the_bus_refuses_is_skipped_and_the_rest_flow(store_url, make_store):
    async def go() -> None:
        store = await make_store(store_url)
        bus = SqlBus(store)
        try:
            run = await engine_on(store).run("code-analyzer", "a.py")
            bad = new_event(et.RUN_COMPLETED, {"run_id": run.id}, source="s", id="bad-1")
            good = new_event(et.RUN_COMPLETED, {"run_id": "r", "agent": "a"}, source="s", id="ok-1")
            await store.create_run(run.replace(id="other"), [], outbox=[bad, good])
            with pytest.raises(EventRejected, match="'agent' is a required property"):
                await bus.publish([bad])
            relay = Relay(store, bus)
            assert await relay.drain() == 5, "three of the run, the bad one skipped, the good one"
            assert await store.outbox_pending() == []
            consumer = bus.consumer("g", [et.RUN_COMPLETED], name="m")
            ids = [d.event.id for d in await collect(consumer, 3, deadline=1.0, ack=True)]
            assert "ok-1" in ids
            assert "bad-1" not in ids
            await consumer.close()
        finally:
            await bus.aclose()
            await store.close()

    asyncio.run(go())


def test_a_crash_between_commit_and_publish_publishes_later_and_once(store_url, make_store):
    """Committed events wait in the outbox while no relay runs (the process died after the
    commit); a new relay publishes them. A relay that died after publishing and before marking
    them sent publishes them again: the bus keeps one of each."""

    async def go() -> None:
        store = await make_store(store_url)
        bus = SqlBus(store)
        try:
            run = await engine_on(store).run("code-analyzer", "src/payments/api.py")
            pending = await store.outbox_pending()
            assert len(pending) == 3, "committed events wait in the outbox"
            await bus.publish([i.event for i in pending])  # published, then "crashed" unmarked
            relay = Relay(store, bus)
            assert await relay.drain() == 3, "the next relay publishes what was never marked"
            assert await store.outbox_pending() == []
            assert await relay.drain() == 0
            consumer = bus.consumer("g", [demo.AUDIT_REQUESTED.name, et.RUN_COMPLETED], name="m")
            got = await collect(consumer, 3, deadline=1.0, ack=True)
            assert [d.event.type for d in got] == [demo.AUDIT_REQUESTED.name, et.RUN_COMPLETED]
            assert all(d.event.correlation_id == run.id for d in got)
            await consumer.close()
        finally:
            await bus.aclose()
            await store.close()

    asyncio.run(go())


def test_the_relay_keeps_events_while_the_bus_is_down(store_url, make_store):
    class DownBus(SqlBus):
        down = True

        async def publish(self, events):
            if self.down:
                raise OSError("connection refused")
            await super().publish(events)

    async def go() -> None:
        store = await make_store(store_url)
        bus = DownBus(store)
        try:
            await engine_on(store).run("code-analyzer", "src/payments/api.py")
            relay = Relay(store, bus)
            with pytest.raises(OSError, match="connection refused"):
                await relay.drain()
            assert len(await store.outbox_pending()) == 3, "the outbox keeps them"
            bus.down = False
            assert await relay.drain() == 3
        finally:
            await bus.aclose()
            await store.close()

    asyncio.run(go())
