"""Listing published events (``Bus.list_events``, the service's ``GET /events``), side by side in
one invocation: the embedded SQL bus (a SQLite file) and Kafka (a reader of no group reading the
event-type topics back, ``adapters/bus/kafka_listing.py``).

The same events on both: ``--events`` (3,000) over 5 types and 50 correlation ids, 60 % of
tenant ``acme``, 39 % ``globex``, 1 % ``rare``. Each case is timed alternately on the two buses,
``--rounds`` times, and reported as the median:

* **first page**: ``acme``'s newest 100;
* **third page**: ``acme``'s page after two cursors (only the third call timed);
* **one type**: ``acme``'s newest 100 of one type (one topic on Kafka);
* **rare tenant**: ``rare``'s newest 20 - a tenant with few events, so a listing reads most of
  the topics to fill a page (on Kafka up to its time budget, ``list_budget_ms``; the case reports
  how many events the page held, and whether a cursor was left).

Usage: .venv/bin/python benchmarks/event_listing_bench.py [--kafka kafka://127.0.0.1:9092]
[--events 3000] [--rounds 15]. ``--kafka`` defaults to ``AUTONOMIC_TEST_KAFKA_URL``. Prints a
markdown table and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from autonomic.adapters.bus.kafka import KafkaBus
from autonomic.adapters.bus.sql import SqlBus
from autonomic.bootstrap import build_store
from autonomic.core.envelope import new_event
from autonomic.core.event_types import EventTypes
from autonomic.ports.bus import Bus, EventPage

TYPES = [f"bench.listing.t{i}" for i in range(5)]


def _types() -> EventTypes:
    types = EventTypes()
    for name in TYPES:
        types.declare(name)
    return types


def _tenant(n: int) -> str:
    return "rare" if n % 100 == 0 else ("acme" if n % 100 < 61 else "globex")


async def _fill(bus: Bus, count: int) -> None:
    events = [
        new_event(
            TYPES[n % len(TYPES)],
            {"n": n, "pad": "x" * 200},
            source="autonomic://bench",
            correlation_id=f"k{n % 50}",
            tenant=_tenant(n),
        )
        for n in range(count)
    ]
    for start in range(0, count, 100):
        await bus.publish(events[start : start + 100])


Case = Callable[[Bus], Awaitable[EventPage]]


async def _first(bus: Bus) -> EventPage:
    return await bus.list_events(tenant="acme", limit=100)


async def _third(bus: Bus) -> EventPage:
    cursor = None
    for _ in range(2):
        cursor = (await bus.list_events(tenant="acme", limit=100, cursor=cursor)).cursor
    start = time.perf_counter()
    page = await bus.list_events(tenant="acme", limit=100, cursor=cursor)
    _third.elapsed = time.perf_counter() - start  # type: ignore[attr-defined]
    return page


async def _typed(bus: Bus) -> EventPage:
    return await bus.list_events(tenant="acme", event_type=TYPES[2], limit=100)


async def _rare(bus: Bus) -> EventPage:
    return await bus.list_events(tenant="rare", limit=20)


CASES: list[tuple[str, Case]] = [
    ("first page (100)", _first),
    ("third page (100)", _third),
    ("one type (100)", _typed),
    ("rare tenant (20)", _rare),
]


async def _time(case: Case, bus: Bus) -> tuple[float, EventPage]:
    start = time.perf_counter()
    page = await case(bus)
    elapsed = time.perf_counter() - start
    if case is _third:
        elapsed = _third.elapsed  # type: ignore[attr-defined]
    return elapsed * 1000, page


async def main(kafka_url: str, count: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = build_store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        await store.migrate()
        sql = SqlBus(store, types=_types())  # type: ignore[arg-type]
        sep = "&" if "?" in kafka_url else "?"
        kafka = KafkaBus(f"{kafka_url}{sep}prefix=b{uuid.uuid4().hex[:8]}.", types=_types())
        try:
            await _fill(sql, count)
            await _fill(kafka, count)
            print(f"{count} events, {rounds} rounds, load average {os.getloadavg()}")
            print("| case | embedded (SQLite) ms | Kafka ms | Kafka / embedded | Kafka page |")
            print("| --- | --- | --- | --- | --- |")
            for name, case in CASES:
                times: dict[str, list[float]] = {"sql": [], "kafka": []}
                shown = ""
                for _ in range(rounds):
                    for label, bus in (("sql", sql), ("kafka", kafka)):
                        ms, page = await _time(case, bus)
                        times[label].append(ms)
                        if label == "kafka":
                            more = "cursor" if page.cursor else "end"
                            shown = f"{len(page.events)} events, {more}"
                a, b = statistics.median(times["sql"]), statistics.median(times["kafka"])
                print(f"| {name} | {a:.1f} | {b:.1f} | {b / a:.1f}x | {shown} |")
            print(f"load average after: {os.getloadavg()}")
        finally:
            await kafka.aclose()
            await sql.aclose()
            await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kafka", default=os.environ.get("AUTONOMIC_TEST_KAFKA_URL"))
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    if not args.kafka:
        raise SystemExit("give --kafka kafka://host:port (or set AUTONOMIC_TEST_KAFKA_URL)")
    asyncio.run(main(args.kafka, args.events, args.rounds))
