"""Runs started from events, on both stores: one run per event however often it is delivered, in
the event's conversation; two agents talking over the embedded bus end to end."""

from __future__ import annotations

import asyncio

from autonomic.adapters.bus.sql import SqlBus
from autonomic.bootstrap import build_agents, build_model
from autonomic.core.envelope import new_event
from autonomic.core.event_types import EventTypes
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent
from autonomic.engine.executor import Engine
from autonomic.engine.inbox import EventStarter, run_id_for
from autonomic.engine.outbox import OutboxHook
from autonomic.engine.worker import Worker
from autonomic.examples.bus import agent as demo
from autonomic.ports.bus import RetryPolicy
from autonomic.ports.store import Processed
from autonomic.testing.bus_conformance import collect


def engine_on(store, *, hooks=None, extra=()) -> Engine:
    registry = build_agents()
    for agent in (*demo.agents(), *extra):
        registry.add(agent)
    return Engine(store, registry, build_model, hooks=[OutboxHook()] if hooks is None else hooks)


REQUEST = {"path": "src/app.py", "findings": [{"rule": "weak-hash", "line": 3}]}


def test_a_redelivered_event_never_starts_a_second_run(store_url, make_store):
    async def go() -> None:
        store = await make_store(store_url)
        bus = SqlBus(store, lease_ttl=60.0)
        try:
            engine = engine_on(store)
            starter = EventStarter(engine, bus, group="g")
            event = new_event(
                demo.AUDIT_REQUESTED.name, REQUEST, source="t", correlation_id="conv-1"
            )
            await bus.publish([event])
            first = bus.consumer("g", starter.types, name="a")
            (delivery,) = await collect(first, 1, deadline=2.0)
            runs = await starter.handle(delivery)
            assert len(runs) == 1
            await first.close()  # "crashed" before the ack: the event comes again
            second = bus.consumer("g", starter.types, name="b")
            (again,) = await collect(second, 1, deadline=2.0)
            assert again.event.id == event.id
            assert await starter.handle(again) == [], "a redelivery started a second run"
            await second.ack(again)
            run_id = run_id_for("g", "security-auditor", event.id)
            run = await store.get_run(run_id)
            assert run.correlation_id == "conv-1", "the run continues the event's conversation"
            assert run.metadata["event"]["id"] == event.id
            assert await store.was_processed(Processed("g/security-auditor", event.id))
            assert not await store.was_processed(Processed("g/security-auditor", "other"))
            all_runs = await store.list_runs()
            assert [r.id for r in all_runs] == [run_id]
            await second.close()
        finally:
            await bus.aclose()
            await store.close()

    asyncio.run(go())


def test_an_event_that_cannot_start_a_run_is_dead_lettered_with_the_reason(store_url, make_store):
    types = EventTypes.default()
    types.declare("com.acme.broken.requested")
    broken = Agent(
        name="broken",
        instructions="-",
        model="nonexistent:x",
        handles=["com.acme.broken.requested"],
    )

    async def go() -> None:
        store = await make_store(store_url)
        bus = SqlBus(store)
        try:
            engine = engine_on(store, extra=[broken])
            starter = EventStarter(engine, bus, group="g", retry=RetryPolicy(max_attempts=1))
            await bus.publish([new_event("com.acme.broken.requested", {"x": 1}, source="t")])
            consumer = bus.consumer(
                "g", ["com.acme.broken.requested"], name="m", retry=starter.retry
            )
            assert await starter.step(consumer, wait=1.0) == 0
            (letter,) = await bus.dead_letters(group="g")
            assert "nonexistent" in letter.error
            assert letter.attempts == 1
            assert await store.list_runs() == []
            await consumer.close()
        finally:
            await bus.aclose()
            await store.close()

    asyncio.run(go())


def test_two_agents_talk_over_the_embedded_bus(store_url, make_store):
    """The code analyzer emits an audit request; a worker on the bus starts the security auditor
    from it, in the analyzer's conversation; both complete, each once."""

    async def go() -> None:
        store = await make_store(store_url)
        bus = SqlBus(store)
        try:
            engine = engine_on(store, hooks=[])
            worker = Worker(engine, bus=bus)
            analyzer = await engine.start("code-analyzer", "src/payments/api.py")
            finished = await worker.run(until_idle=True)
            by_agent = {r.agent: r for r in await store.list_runs()}
            assert set(by_agent) == {"code-analyzer", "security-auditor"}
            assert all(r.status is RunStatus.COMPLETED for r in by_agent.values())
            auditor = by_agent["security-auditor"]
            assert auditor.correlation_id == analyzer.id
            assert str(auditor.output).startswith("audit of src/payments/api.py: high")
            assert len(finished) == 2
            assert await store.outbox_pending() == [], "the worker relayed everything"
            letters = await bus.dead_letters()
            assert letters == []
        finally:
            await bus.aclose()
            await store.close()

    asyncio.run(go())
