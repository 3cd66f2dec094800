"""Claim-to-first-step of a long run, with and without the hot state cache (issue 17, item 5).

The workload: a run of ``--steps`` tool steps (one idempotent, read-only tool call per model turn,
a fake model with no latency, the engine's defaults: runaway guards and provenance on) that its
worker let go while RUNNING (a graceful stop: the worker's ``stopping`` event), so that another
worker claims it and goes on. Measured, for each store and run length, on the same run:

* **fold**: a worker without a state cache claims the run, reads its whole journal, folds it and
  takes one step (the tool's result committed), then lets the run go again;
* **cache**: a worker with ``RedisStateCache`` does the same, reading the snapshot the previous
  worker kept and only the journal entries from the snapshot's head on.

Rounds alternate A B B A, so half of the cache's reads find the snapshot one step behind (the
previous worker had no cache: it is extended with that step's entries from the journal) and half
exact. Each resume adds a step, so runs of up to 100 steps are built anew for each round (the
long ones grow by ``2 x rounds`` steps, under 1 %). One resume of each kind before the rounds is
not measured (first imports and statements). Reported: the median claim-to-first-step of each, the ratio cache / fold, what the cache
found (hit, extended), the snapshot's size and the median time to write it when the worker lets
the run go (encode + SET, paid once per hand-over, not per step).

    .venv/bin/python benchmarks/hot_state_bench.py --steps 10 500 5000 --rounds 4 \\
        --pg-url postgresql://postgres@127.0.0.1:5432/test --redis-url redis://127.0.0.1:6379/15
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.adapters.redis.state_cache import RedisStateCache
from autonomic.bootstrap import build_store
from autonomic.core.messages import Message, ModelResponse, ToolCall, ToolSpec
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.engine.hot_state import HotState
from autonomic.ports.store import Store
from autonomic.tools.contract import tool


class Box:
    """What the tool and the faults hook see of the worker being measured."""

    engine: Engine | None = None
    stop_after = 0
    calls = 0
    first_step: float | None = None


BOX = Box()


@tool(idempotent=True)
def lookup(n: int) -> dict[str, int]:
    """Look a number up."""
    BOX.calls += 1
    if BOX.calls >= BOX.stop_after and BOX.engine is not None:
        BOX.engine.stopping.set()  # the worker lets the run go after this step
    return {"n": n, "square": n * n}


class FirstStep:
    """Faults hook that notes when the first tool step's result is committed."""

    def at(self, point: str) -> None:
        if point == "step_done" and BOX.first_step is None:
            BOX.first_step = time.perf_counter()


def brain(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    turn = sum(1 for m in messages if m.role == "assistant")
    return ModelResponse(None, (ToolCall(f"c{turn}", "lookup", json.dumps({"n": turn})),))


AGENT = Agent(
    name="bench-long",
    instructions="Look up every number.",
    tools=(lookup,),
    model="function:bench",
    max_turns=1_000_000,
    read_only=frozenset({"lookup"}),
)
MODEL = FunctionModel(brain, name="function:bench")


class TimedHotState(HotState):
    """Times each snapshot write (what a worker pays when it lets a run go)."""

    writes: list[float] = []

    async def remember(self, run: Any, state: Any) -> None:
        began = time.perf_counter()
        await super().remember(run, state)
        TimedHotState.writes.append(time.perf_counter() - began)


def engine(store: Store, cache: RedisStateCache | None) -> Engine:
    built = Engine(store, AgentRegistry([AGENT]), lambda _: MODEL, faults=FirstStep())
    if cache is not None:
        built.hot_state = TimedHotState(cache)
    return built


async def build(store: Store, cache: RedisStateCache, steps: int) -> str:
    """A RUNNING, unleased run of ``steps`` tool steps whose snapshot the cache holds."""
    worker = engine(store, cache)
    BOX.engine, BOX.stop_after, BOX.calls = worker, steps, 0
    run = await worker.start(AGENT, "look up the numbers")
    claimed = await worker.claim(run.id)
    assert claimed is not None
    done = await worker.drive(claimed)
    assert done.status is RunStatus.RUNNING, done.status
    return run.id


async def resume(store: Store, cache: RedisStateCache | None, run_id: str) -> float:
    """Seconds from claim to the first step's commit, by a new worker."""
    worker = engine(store, cache)
    BOX.engine, BOX.stop_after, BOX.calls, BOX.first_step = worker, 1, 0, None
    began = time.perf_counter()
    claimed = await worker.claim(run_id)
    assert claimed is not None
    await worker.drive(claimed)
    first_step = noted()
    assert first_step is not None
    if worker.hot_state is not None:
        hot = worker.hot_state
        FOUND["hit"] += hot.hits
        FOUND["extended"] += hot.extended
        FOUND["other"] += hot.misses + hot.ignored
        FOUND["skipped"] += int(hot.hits + hot.extended + hot.misses + hot.ignored == 0)
    return first_step - began


def noted() -> float | None:
    """When the first step was committed (set by ``FirstStep`` during the drive)."""
    return BOX.first_step


SHORT = 100
"""Runs of at most this many steps are built anew for each round."""

FOUND = {"hit": 0, "extended": 0, "other": 0, "skipped": 0}


async def measure(
    store_name: str, url: str, redis_url: str, steps: int, rounds: int, min_version: int
) -> dict[str, Any]:
    store = build_store(url)
    await store.migrate()
    prefix = f"autonomic-bench:{uuid.uuid4().hex}"
    cache = RedisStateCache(redis_url, prefix=prefix, socket_timeout=2.0, min_version=min_version)
    try:
        building = time.perf_counter()
        run_id = await build(store, cache, steps)
        built = time.perf_counter() - building
        for mode in ("fold", "cache"):  # warm up (first imports, first statements): unmeasured
            await resume(store, cache if mode == "cache" else None, run_id)
        if steps <= SHORT:
            run_id = await build(store, cache, steps)
        times: dict[str, list[float]] = {"fold": [], "cache": []}
        for k in FOUND:
            FOUND[k] = 0
        TimedHotState.writes = []
        for r in range(rounds):
            if r and steps <= SHORT:  # a new run each round: the last rounds' steps would
                run_id = await build(store, cache, steps)  # have made it a longer one
            order = ("fold", "cache") if r % 2 == 0 else ("cache", "fold")
            for mode in order:
                seconds = await resume(store, cache if mode == "cache" else None, run_id)
                times[mode].append(seconds)
        run = await store.get_run(run_id)
        size = len(await cache.get(run) or b"")
        journal = len(await store.load_journal(run_id))
        async for key in cache._redis.scan_iter(match=f"{prefix}:*"):  # every run's, not only
            await cache._redis.delete(key)  # the last one's
    finally:
        await cache.aclose()
        await store.close()
    fold_ms = statistics.median(times["fold"]) * 1000
    cache_ms = statistics.median(times["cache"]) * 1000
    return {
        "store": store_name,
        "steps": steps,
        "journal_entries": journal,
        "fold_ms": round(fold_ms, 2),
        "cache_ms": round(cache_ms, 2),
        "ratio": round(cache_ms / fold_ms, 2),
        "found": dict(FOUND),
        "snapshot_kb": round(size / 1024, 1),
        "write_ms": (
            round(statistics.median(TimedHotState.writes) * 1000, 2)
            if TimedHotState.writes
            else None
        ),
        "build_s": round(built, 1),
    }


def _default_min_version() -> int:
    import inspect

    default = inspect.signature(RedisStateCache).parameters["min_version"].default
    return int(default)


def pg_schema_url(base: str) -> tuple[str, str]:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return schema, f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"


def drop_schema(base: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 500, 5000])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument(
        "--min-version",
        type=int,
        default=None,
        help="the cache's min_version (default: the adapter's; 0 uses it for every run)",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "AUTONOMIC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("AUTONOMIC_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
    )
    args = parser.parse_args()
    min_version = args.min_version if args.min_version is not None else _default_min_version()
    print(f"load average at start: {os.getloadavg()}; min_version {min_version}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for steps in args.steps:
            for name in args.stores:
                if name == "sqlite":
                    url = f"sqlite:///{Path(tmp) / f'hot-{steps}.db'}"
                    rows.append(
                        await measure(name, url, args.redis_url, steps, args.rounds, min_version)
                    )
                else:
                    schema, url = pg_schema_url(args.pg_url)
                    try:
                        rows.append(
                            await measure(
                                name, url, args.redis_url, steps, args.rounds, min_version
                            )
                        )
                    finally:
                        drop_schema(args.pg_url, schema)
                print(json.dumps(rows[-1]), flush=True)
    print(f"load average at end: {os.getloadavg()}")
    print()
    print(
        "| store | steps | journal entries | fold: claim to first step (ms) | cache (ms) "
        "| cache / fold | cache found (hit / extended / skipped) | snapshot (KB) "
        "| snapshot write (ms) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for r in rows:
        found = r["found"]
        print(
            f"| {r['store']} | {r['steps']} | {r['journal_entries']} | {r['fold_ms']} "
            f"| {r['cache_ms']} | x{r['ratio']} "
            f"| {found['hit']} / {found['extended']} / {found['skipped']} "
            f"| {r['snapshot_kb']} | {r['write_ms']} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
