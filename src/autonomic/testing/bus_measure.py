"""Measurements of the outbox and the embedded bus, for ``benchmarks/bus_bench.py``.

* ``staging_cost``: what staging events in a step's commit adds - the same commit (one journal
  entry) with and without ``events`` outbox rows, alternated so both see the same machine;
  reported per event.
* ``commit_to_run_latency``: from the start of a step's commit that causes an event to the
  moment the consuming run's first journal entry is durable: commit (with the outbox row) ->
  the relay (woken by the commit, as ``OutboxHook`` does) publishes -> the consumer (woken by the
  publish) takes it -> the run is created with the inbox row (``EventStarter``). One event at a
  time, so it is latency, not queueing. Generic over the bus URL.

Both return plain dicts of numbers (milliseconds), so a benchmark can print them side by side.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from autonomic.core.entries import Recovery
from autonomic.core.envelope import new_event
from autonomic.core.event_types import AGENT_MESSAGE
from autonomic.core.journal import GENESIS_HASH, record
from autonomic.core.run import Lease, Run, RunChanges, RunStatus
from autonomic.ports.store import Store


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _base_run(store: Store, run_id: str) -> Run:
    now = time.time()
    run = Run(
        id=run_id,
        agent="bench",
        agent_version="1",
        model="none",
        status=RunStatus.RUNNING,
        version=1,
        lease=Lease(owner=None, expires_at=0.0, fence=0),
        created_at=now,
        updated_at=now,
    )
    return await store.create_run(run, [])


def _message(i: int, run_id: str) -> Any:
    return new_event(
        AGENT_MESSAGE,
        {"from_agent": "bench", "to_agent": "bench-sink", "body": {"i": i}},
        source=f"autonomic://run/{run_id}",
        id=f"{run_id}.{i}",
        correlation_id=run_id,
    )


async def staging_cost(store: Store, *, commits: int = 400, events: int = 1) -> dict[str, float]:
    """Per-commit medians with and without ``events`` outbox rows, and the cost per event."""
    run = await _base_run(store, f"bench-stage-{time.time_ns()}")
    version, prev = run.version, GENESIS_HASH
    plain: list[float] = []
    staged: list[float] = []
    for i in range(commits * 2):
        seq = i + 1
        packed = record(
            run.id,
            seq,
            Recovery(worker="bench", fence=0, journal_seq=seq - 1, pending_calls=()),
            prev_hash=prev,
            created_at=time.time(),
        )
        prev = packed.entry.hash
        outbox = [_message(i * events + k, run.id) for k in range(events)] if i % 2 else []
        extra: dict[str, Any] = {"outbox": outbox} if outbox else {}
        started = time.perf_counter()
        version = await store.commit(
            run.id,
            expected_version=version,
            fence=None,
            entries=[packed],
            changes=RunChanges(),
            now=time.time(),
            **extra,
        )
        (staged if outbox else plain).append((time.perf_counter() - started) * 1000)
    pending = await store.outbox_pending(limit=commits * events + 10)
    await store.outbox_sent([item.seq for item in pending], now=time.time())  # not for a relay
    p50_plain, p50_staged = statistics.median(plain), statistics.median(staged)
    return {
        "commit_ms_p50": round(p50_plain, 4),
        "commit_with_events_ms_p50": round(p50_staged, 4),
        "events_per_commit": events,
        "added_ms_per_event": round((p50_staged - p50_plain) / events, 4),
    }


async def commit_to_run_latency(
    store: Store, bus_url: str = "sql", *, n: int = 200
) -> dict[str, float]:
    """P50/P99 milliseconds from a step's commit to the consuming run's first journal entry."""
    from autonomic.adapters.model.scripted import FunctionModel
    from autonomic.bootstrap import build_model, open_bus, register_function_model
    from autonomic.core.messages import ModelResponse
    from autonomic.engine.agent import Agent, AgentRegistry
    from autonomic.engine.executor import Engine
    from autonomic.engine.inbox import EventStarter
    from autonomic.engine.outbox import Relay

    bus = open_bus(bus_url, store)
    register_function_model(
        "bench-sink",
        lambda: FunctionModel(
            lambda _m, _t: ModelResponse(content="ok"), name="function:bench-sink"
        ),
    )
    sink = Agent(
        name="bench-sink", instructions="-", model="function:bench-sink", handles=[AGENT_MESSAGE]
    )
    engine = Engine(store, AgentRegistry([sink]), build_model)
    arrived: dict[str, float] = {}
    signal = asyncio.Event()

    def started(run: Run) -> None:
        arrived[run.metadata["event"]["id"]] = time.perf_counter()
        signal.set()

    starter = EventStarter(engine, bus, group=f"bench-{time.time_ns()}", started=started)
    relay = Relay(store, bus, interval=1.0)
    stopping = asyncio.Event()
    tasks = [asyncio.create_task(relay.run(stopping)), asyncio.create_task(starter.run(stopping))]
    run = await _base_run(store, f"bench-e2e-{time.time_ns()}")
    version, seq, prev = run.version, 0, GENESIS_HASH
    latencies: list[float] = []
    try:
        for i in range(n + 10):
            seq += 1
            packed = record(
                run.id,
                seq,
                Recovery(worker="bench", fence=0, journal_seq=seq - 1, pending_calls=()),
                prev_hash=prev,
                created_at=time.time(),
            )
            prev = packed.entry.hash
            event = _message(i, run.id)
            signal.clear()
            begun = time.perf_counter()
            version = await store.commit(
                run.id,
                expected_version=version,
                fence=None,
                entries=[packed],
                changes=RunChanges(),
                now=time.time(),
                outbox=[event],
            )
            relay.wake()  # what OutboxHook.on_commit does once the commit is durable
            while event.id not in arrived:
                await asyncio.wait_for(signal.wait(), 30.0)
                signal.clear()
            if i >= 10:  # the first few warm the connections and caches
                latencies.append((arrived[event.id] - begun) * 1000)
    finally:
        stopping.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bus.aclose()
    return {
        "events": float(len(latencies)),
        "p50_ms": round(_percentile(latencies, 0.5), 3),
        "p99_ms": round(_percentile(latencies, 0.99), 3),
        "max_ms": round(max(latencies), 3),
    }
