"""The event bus, side by side in one invocation: the embedded SQL bus and Kafka.

Measures, on a SQLite file (the runs' store, the outbox, the embedded bus all in it):

1. **staging**: the added cost of staging events in a step's commit - the same one-turn runs with
   and without the outbox hook (rounds alternate), divided by the events staged (two per run:
   ``run.started`` and ``run.completed``); target <= 0.05 ms per event;
2. **end-to-end latency**: from a run's last step's commit (``run_to_end`` returning: its
   ``run.completed`` is in the outbox and the outbox hook has woken the relay) to the consuming
   agent's run created by that event (``EventStarter``: the consuming run's first journaled
   step), one event at a time, through the relay; targets P50 <= 5 ms / P99 <= 20 ms on the
   embedded bus, P50 <= 10 ms on Kafka;
3. **relay throughput** against a bare producer loop of the same client on the same broker (the
   bus's ``publish`` in batches of the relay's size; and for Kafka also aiokafka's own producer);
   target >= 0.5x;
4. **events/s with 3 consumers** of one group (in this process), each acknowledging at once.

Usage: .venv/bin/python benchmarks/bus_bench.py [--kafka kafka://127.0.0.1:9092] [--quick]
(``--kafka`` defaults to ``AUTONOMIC_TEST_KAFKA_URL``; ``scripts/lib/kafka.sh``'s ``ensure_kafka``
starts Tansu and sets it.) Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from autonomic.adapters.model.scripted import ScriptedModel
from autonomic.bootstrap import build_store, open_bus
from autonomic.core import event_types as et
from autonomic.core.envelope import encode, new_event
from autonomic.core.event_types import EventTypes
from autonomic.core.run import Run
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.engine.inbox import EventStarter
from autonomic.engine.outbox import OutboxHook, Relay
from autonomic.governance.runaway.gate import Runaway
from autonomic.ports.bus import Bus

BENCH = "bench.item"


def _types() -> EventTypes:
    types = EventTypes()
    types.declare(BENCH)
    return types


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _engine(store: Any, agents: list[Agent], hooks: list[Any]) -> Engine:
    model = ScriptedModel([{"content": "done"}] * 20_000)
    return Engine(
        store, AgentRegistry(agents), lambda spec: model, runaway=Runaway(enabled=False),
        hooks=hooks,
    )  # fmt: skip


class _Capture(OutboxHook):
    """The outbox hook, keeping the last (run, entries) it staged events for."""

    last: tuple[Any, Any] | None = None

    def stage_events(self, run: Any, entries: Any) -> Any:
        events = super().stage_events(run, entries)
        if events:
            self.last = (run, entries)
        return events


async def staging(db: Path, runs: int, rounds: int) -> dict[str, float]:
    """The added cost of staging events in a step's commit, two ways.

    ``ms_per_event``: (median run with the hook - without) / events per run, runs alternating
    one by one - the whole cost, commit included, but within the noise of an fsync per commit.
    ``cpu_ms_per_event``: the hook's staging (building and checking the events) plus the store's
    encoding of their outbox rows, timed alone - the CPU a commit pays per event; the rows ride
    in the commit's own transaction (no extra fsync)."""
    from autonomic.adapters.store.sql import SqlStore

    store = build_store(f"sqlite:///{db}")
    await store.migrate()
    agent = Agent(name="a", instructions="answer")
    capture = _Capture()
    plain, hooked = _engine(store, [agent], []), _engine(store, [agent], [capture])
    per_run: dict[str, list[float]] = {"plain": [], "hooked": []}
    for _ in range(runs * rounds):  # alternate run by run: a busy machine slows both alike
        for name, engine in (("plain", plain), ("hooked", hooked)):
            began = time.perf_counter()
            run = await engine.start("a", "go")
            await engine.run_to_end(run.id)
            per_run[name].append((time.perf_counter() - began) * 1000)
    pending = len(await store.outbox_pending(limit=1_000_000))
    await store.close()
    assert capture.last is not None
    run, entries = capture.last
    staged = 0
    began = time.perf_counter()
    for _ in range(2000):
        events = capture.stage_events(run, entries)
        SqlStore._outbox_rows(run.id, events, time.time())
        staged += len(events)
    cpu = (time.perf_counter() - began) * 1000 / staged
    plain_ms, hooked_ms = statistics.median(per_run["plain"]), statistics.median(per_run["hooked"])
    events_per_run = pending / (runs * rounds)
    return {
        "run_ms_plain": plain_ms,
        "run_ms_hooked": hooked_ms,
        "events_per_run": events_per_run,
        "ms_per_event": (hooked_ms - plain_ms) / events_per_run,
        "cpu_ms_per_event": cpu,
    }


async def latency(db: Path, bus_url: str, pings: int) -> dict[str, float]:
    """ms from a producing run's commit to the consuming run's creation, one at a time."""
    store = build_store(f"sqlite:///{db}")
    await store.migrate()
    bus: Bus = open_bus(bus_url, store)
    relay = Relay(store, bus)
    producer = _engine(
        store, [Agent(name="a", instructions="answer")], [OutboxHook(committed=relay.wake)]
    )
    consumer_agent = Agent(name="b", instructions="follow", handles=[et.RUN_COMPLETED])
    consumer = _engine(store, [consumer_agent], [])
    arrived: dict[str, float] = {}
    signal = asyncio.Event()

    def started(run: Run) -> None:
        arrived[str(run.correlation_id)] = time.perf_counter()  # the producing run's id
        signal.set()

    group = f"bench-{uuid.uuid4().hex[:8]}"
    starter = EventStarter(consumer, bus, group=group, name="b1", started=started)
    stopping = asyncio.Event()
    tasks = [asyncio.create_task(relay.run(stopping)), asyncio.create_task(starter.run(stopping))]
    samples: list[float] = []
    warm = 5
    for i in range(pings + warm):
        signal.clear()
        run = await producer.start("a", "go")
        await producer.run_to_end(run.id)  # its last step's commit stages run.completed
        committed = time.perf_counter()
        while run.id not in arrived:
            await asyncio.wait_for(signal.wait(), 60)
            signal.clear()
        if i >= warm:
            samples.append((arrived[run.id] - committed) * 1000)
    stopping.set()
    relay.wake()
    await asyncio.gather(*tasks)
    await bus.aclose()
    await store.close()
    return {"p50": _pct(samples, 0.5), "p99": _pct(samples, 0.99)}


async def relay_vs_bare(db: Path, bus_url: str, count: int) -> dict[str, float]:
    """events/s: the relay draining ``count`` outbox events vs the bus's publish in a loop."""
    store = build_store(f"sqlite:///{db}")
    await store.migrate()
    types = _types()
    bus: Bus = open_bus(bus_url, store, types=types)
    events = [
        new_event(BENCH, {"n": n}, source="autonomic://bench", correlation_id=f"k{n % 64}")
        for n in range(count)
    ]
    began = time.perf_counter()
    for start in range(0, count, 100):
        await bus.publish(events[start : start + 100])
    bare = count / (time.perf_counter() - began)
    out = {"bare_eps": bare}
    if bus_url.startswith("kafka://"):
        out["aiokafka_eps"] = await _aiokafka_loop(bus_url, events)
    staged = [
        new_event(BENCH, {"n": n}, source="autonomic://bench", correlation_id=f"k{n % 64}")
        for n in range(count)
    ]
    await _fill_outbox(store, staged)
    relay = Relay(store, bus, batch=100)
    began = time.perf_counter()
    sent = await relay.drain()
    out["relay_eps"] = sent / (time.perf_counter() - began)
    await bus.aclose()
    await store.close()
    return out


async def _fill_outbox(store: Any, events: list[Any]) -> None:
    """Stage events as a run's commit would: create runs whose creation carries them."""
    agent = Agent(name="a", instructions="answer")
    engine = _engine(store, [agent], [])
    for start in range(0, len(events), 100):
        batch = events[start : start + 100]

        class Stage(OutboxHook):
            def stage_events(self, run: Any, entries: Any, batch: Any = batch) -> Any:
                return batch

        engine.hooks[:] = [Stage()]
        await engine.start("a", "go")


async def _aiokafka_loop(bus_url: str, events: list[Any]) -> float:
    from aiokafka import AIOKafkaProducer

    from autonomic.adapters.bus.kafka import KafkaSettings

    settings = KafkaSettings.from_url(bus_url)
    topic = settings.prefix + BENCH
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=1)
    await producer.start()
    values = [(e.correlation_id.encode(), encode(e)) for e in events]
    began = time.perf_counter()
    for start in range(0, len(values), 100):
        futures = [
            await producer.send(topic, value=v, key=k) for k, v in values[start : start + 100]
        ]
        await asyncio.gather(*futures)
    eps = len(values) / (time.perf_counter() - began)
    await producer.stop()
    return eps


async def three_consumers(db: Path, bus_url: str, count: int) -> float:
    """events/s through 3 members of one group, from publish to the last ack."""
    store = build_store(f"sqlite:///{db}")
    await store.migrate()
    bus: Bus = open_bus(bus_url, store, types=_types())
    group = f"bench3-{uuid.uuid4().hex[:8]}"
    members = [bus.consumer(group, [BENCH], name=f"m{i}") for i in range(3)]
    done = 0
    target = asyncio.Event()

    async def pump(member: Any) -> None:
        nonlocal done
        while not target.is_set():
            for d in await member.poll(max_events=200, wait=0.1):
                await member.ack(d)
                done += 1
                if done >= count:
                    target.set()

    warm = [asyncio.create_task(pump(m)) for m in members]
    await asyncio.sleep(6.0)  # let a Kafka group settle its three members before timing
    events = [
        new_event(BENCH, {"n": n}, source="autonomic://bench", correlation_id=f"k{n % 64}")
        for n in range(count)
    ]
    began = time.perf_counter()
    for start in range(0, count, 100):
        await bus.publish(events[start : start + 100])
    await asyncio.wait_for(target.wait(), 600)
    eps = count / (time.perf_counter() - began)
    await asyncio.gather(*warm)
    for m in members:
        await m.close()
    await bus.aclose()
    await store.close()
    return eps


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kafka", default=os.environ.get("AUTONOMIC_TEST_KAFKA_URL"))
    parser.add_argument(
        "--fetch-wait", type=int, default=5, help="fetch_max_wait_ms of the Kafka consumers"
    )
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    args = parser.parse_args()
    runs, rounds, pings, count = (50, 3, 50, 1000) if args.quick else (200, 5, 200, 5000)
    buses = [("embedded (sql)", "sql")]
    if args.kafka:
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        sep = "&" if "?" in args.kafka else "?"
        url = f"{args.kafka}{sep}prefix={prefix}&fetch_max_wait_ms={args.fetch_wait}"
        buses.append(("kafka (Tansu)", url))
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        st = await staging(base / "staging.db", runs, rounds)
        rows.append(
            f"| staging in a step's commit (CPU: build, check, encode) | sqlite | "
            f"{st['cpu_ms_per_event']:.4f} ms/event | <= 0.05 ms/event |"
        )
        rows.append(
            f"| staging in a step's commit (whole runs, median, with - without) | sqlite | "
            f"{st['ms_per_event']:.4f} ms/event (run {st['run_ms_plain']:.3f} -> "
            f"{st['run_ms_hooked']:.3f} ms, {st['events_per_run']:.0f} events/run) | "
            "<= 0.05 ms/event |"
        )
        for label, url in buses:
            tag = uuid.uuid4().hex[:6]
            lat = await latency(base / f"lat-{tag}.db", url, pings)
            target = "P50 <= 5, P99 <= 20 ms" if url == "sql" else "P50 <= 10 ms"
            rows.append(
                f"| commit -> consuming run's first step | {label} | P50 {lat['p50']:.2f} ms, "
                f"P99 {lat['p99']:.2f} ms | {target} |"
            )
            rb = await relay_vs_bare(base / f"relay-{tag}.db", url, count)
            extra = (
                f"; aiokafka's own loop {rb['aiokafka_eps']:.0f}/s, relay x"
                f"{rb['relay_eps'] / rb['aiokafka_eps']:.2f} of it"
                if "aiokafka_eps" in rb
                else ""
            )
            rows.append(
                f"| relay vs bare publish loop | {label} | relay {rb['relay_eps']:.0f} ev/s, "
                f"bare {rb['bare_eps']:.0f} ev/s: x{rb['relay_eps'] / rb['bare_eps']:.2f}"
                f"{extra} | >= x0.5 |"
            )
            eps = await three_consumers(base / f"three-{tag}.db", url, count)
            rows.append(f"| 3 consumers, one group | {label} | {eps:.0f} events/s | - |")
    print("| measure | bus | result | target |")
    print("| --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    asyncio.run(main())
