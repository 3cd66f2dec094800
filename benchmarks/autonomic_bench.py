"""autonomic on the peers' workload: a ReAct run of 10 tool steps, fake model, trivial tool.

Prints JSON Lines in the schema of ``peers/peer_common.py`` so ``report.py`` can put every system in
one table. Modes: sequential (runs one after another), concurrent (50 in flight), resume (a child
process SIGKILLs itself after step 5; with the engine up, time until step 6 is durable).

Three configurations: the default as shipped (``--guards --write-ahead``: runaway guards on and the
tool as ``@tool`` declares it by default, not idempotent, so each call's intent is made durable in
a commit of its own before the call), the guards with an idempotent tool (``--guards``), and lean
(no flag: guards off, an idempotent tool - the same work as the peers do).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autonomic import Agent, AgentRegistry, Engine, FunctionModel, Runaway, build_store, tool
from autonomic.core.canonical import canonical_json
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec
from autonomic.engine.faults import CrashAt

STEPS = 10
CRASH_AFTER = 5


@tool(idempotent=True)
async def add_one(arg: int) -> dict[str, int]:
    """The trivial tool."""
    return {"value": arg + 1}


def fake_model(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    done = sum(1 for m in messages if m.role is Role.TOOL)
    if done < STEPS:
        call = ToolCall(f"c{done + 1}", "add_one", canonical_json({"arg": done + 1}))
        return ModelResponse(content=None, tool_calls=(call,), model="fake")
    return ModelResponse(content=f"done after {done} steps", model="fake")


@tool(name="add_one")  # the model proposes the same call
async def add_one_write_ahead(arg: int) -> dict[str, int]:
    """The trivial tool as ``@tool`` declares it by default: not idempotent (write-ahead)."""
    return {"value": arg + 1}


MODEL = FunctionModel(fake_model, name="fake")
AGENT = Agent(name="bench", instructions="", tools=(add_one,), max_turns=STEPS + 1)
AGENT_WRITE_AHEAD = Agent(
    name="bench", instructions="", tools=(add_one_write_ahead,), max_turns=STEPS + 1
)


GUARDS = False
"""The peers do no loop detection, budgets or injection screening: by default the engine is measured
doing the same work as they do (``Runaway(enabled=False)``); ``--guards`` measures it with the
runaway guards on, reported as the system ``autonomic+guards``."""

WRITE_AHEAD = False
"""``--write-ahead``: the tool is not idempotent (the ``@tool`` default), so every call costs an
intent commit before it; with ``--guards`` this is the default configuration, reported as
``autonomic default``."""


def system_name() -> str:
    if WRITE_AHEAD:
        return "autonomic default" if GUARDS else "autonomic+write-ahead"
    return "autonomic+guards" if GUARDS else "autonomic"


def engine_for(store: Any, **kwargs: Any) -> Engine:
    if not GUARDS:
        kwargs.setdefault("runaway", Runaway(enabled=False))
    agent = AGENT_WRITE_AHEAD if WRITE_AHEAD else AGENT
    return Engine(store, AgentRegistry([agent]), lambda spec: MODEL, **kwargs)


async def one_run(engine: Engine) -> None:
    final = await engine.run("bench", "count")  # create leased + drive: the in-process path
    assert final.status.value == "COMPLETED", final.status_reason


async def sequential(url: str, runs: int) -> float:
    store = build_store(url)
    engine = engine_for(store)
    await one_run(engine)  # warm-up: connections, caches
    start = time.perf_counter()
    for _ in range(runs):
        await one_run(engine)
    elapsed = time.perf_counter() - start
    await store.close()
    return elapsed


async def concurrent(url: str, runs: int, in_flight: int) -> float:
    store = build_store(url)
    engine = engine_for(store)
    await one_run(engine)
    gate = asyncio.Semaphore(in_flight)

    async def bounded() -> None:
        async with gate:
            await one_run(engine)

    start = time.perf_counter()
    await asyncio.gather(*(bounded() for _ in range(runs)))
    elapsed = time.perf_counter() - start
    await store.close()
    return elapsed


def _crash_child(url: str, run_id: str) -> None:
    async def go() -> None:
        store = build_store(url)
        engine = engine_for(store, faults=CrashAt("step_done", CRASH_AFTER))
        await engine.run_to_end(run_id)

    asyncio.run(go())


class FirstStep:
    """A fault hook that timestamps the first durable step instead of crashing."""

    def __init__(self) -> None:
        self.at_time: float | None = None

    def at(self, point: str) -> None:
        if point == "step_done" and self.at_time is None:
            self.at_time = time.perf_counter()


async def resume(url: str, crashes: int) -> tuple[list[float], list[float]]:
    store = build_store(url)
    first: list[float] = []
    total: list[float] = []
    ctx = multiprocessing.get_context("fork")
    for _ in range(crashes):
        run = await engine_for(store).start("bench", "count")
        child = ctx.Process(target=_crash_child, args=(url, run.id))
        child.start()
        child.join()
        assert child.exitcode == -9, child.exitcode
        probe = FirstStep()
        engine = engine_for(store, faults=probe)  # the worker is up
        start = time.perf_counter()
        final = await engine.run_to_end(run.id)
        end = time.perf_counter()
        assert final.status.value == "COMPLETED", final.status_reason
        assert probe.at_time is not None
        first.append(probe.at_time - start)
        total.append(end - start)
    await store.close()
    return first, total


def durability(url: str) -> tuple[bool, str]:
    if url.startswith("sqlite"):
        mode = "NORMAL" if "synchronous=normal" in url else "FULL"
        return mode == "FULL", f"SQLite journal_mode=wal synchronous={mode}: " + (
            "each COMMIT fsyncs"
            if mode == "FULL"
            else "no fsync per commit (crash-safe, not power-safe)"
        )
    import psycopg

    with psycopg.connect(url) as conn:
        fsync = conn.execute("SHOW fsync").fetchone()
        sync = conn.execute("SHOW synchronous_commit").fetchone()
    on = bool(fsync and sync and fsync[0] == "on" and sync[0] != "off")
    return (
        on,
        f"PostgreSQL fsync={fsync[0] if fsync else '?'} synchronous_commit={sync[0] if sync else '?'}",
    )


def row(
    store: str,
    mode: str,
    runs: int,
    rounds: int,
    seconds: float,
    dur: tuple[bool, str],
    first_ms: float | None = None,
    resumed_steps: int = STEPS,
) -> dict[str, Any]:
    return {
        "system": system_name(),
        "store": store,
        "mode": mode,
        "runs": runs,
        "steps_per_run": STEPS,
        "rounds": rounds,
        "seconds": round(seconds, 4),
        "per_step_ms": round(seconds * 1000 / (runs * resumed_steps), 4),
        "runs_per_s": round(runs / seconds, 2) if mode != "resume" else None,
        "resume_first_step_ms": first_ms,
        "fsync": dur[0],
        "durability_note": dur[1],
    }


def fresh_url(store: str, workdir: Path, pg_url: str) -> str:
    if store == "sqlite":
        path = workdir / f"autonomic-{uuid.uuid4().hex[:8]}.db"
        return f"sqlite:///{path}"
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in pg_url else "?"
    return f"{pg_url}{sep}options=-csearch_path%3D{schema}"


async def migrate(url: str) -> None:
    store = build_store(url)
    await store.migrate()
    await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", choices=["sqlite", "postgres"], required=True)
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--crashes", type=int, default=5, help="resume trials (0: none)")
    parser.add_argument("--workdir", type=Path, default=Path("benchmarks/.work"))
    parser.add_argument("--guards", action="store_true", help="runaway guards on (default: off)")
    parser.add_argument(
        "--write-ahead",
        action="store_true",
        help="the tool as @tool declares it by default: not idempotent (default: idempotent)",
    )
    args = parser.parse_args()
    global GUARDS, WRITE_AHEAD
    GUARDS = args.guards
    WRITE_AHEAD = args.write_ahead
    args.workdir.mkdir(parents=True, exist_ok=True)
    urls: list[str] = []

    def url() -> str:
        u = fresh_url(args.store, args.workdir.resolve(), args.pg_url)
        asyncio.run(migrate(u))
        urls.append(u)
        return u

    dur = durability(url())
    seq = [asyncio.run(sequential(url(), args.runs)) for _ in range(args.rounds)]
    print(
        json.dumps(
            row(args.store, "sequential", args.runs, args.rounds, statistics.median(seq), dur)
        ),
        flush=True,
    )
    conc = [asyncio.run(concurrent(url(), args.runs, args.concurrency)) for _ in range(args.rounds)]
    print(
        json.dumps(
            row(args.store, "concurrent", args.runs, args.rounds, statistics.median(conc), dur)
        ),
        flush=True,
    )
    if args.crashes > 0:  # --crashes 0: no resume row
        first, total = asyncio.run(resume(url(), args.crashes))
        print(
            json.dumps(
                row(
                    args.store,
                    "resume",
                    len(total),
                    1,
                    statistics.median(total),
                    dur,
                    first_ms=round(statistics.median(first) * 1000, 3),
                    resumed_steps=STEPS - CRASH_AFTER,
                )
            ),
            flush=True,
        )
    for u in urls:
        if u.startswith("sqlite"):
            path = Path(u.removeprefix("sqlite:///"))
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
    if args.store == "postgres":
        import psycopg

        with psycopg.connect(args.pg_url, autocommit=True) as conn:
            for u in urls:
                schema = u.rsplit("%3D", 1)[1]
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
    os.sync()


if __name__ == "__main__":
    main()
