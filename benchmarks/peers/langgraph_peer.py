"""LangGraph peer: a StateGraph agent -> tools loop with a durable checkpointer.

Mapping: the "agent" node is the fake model (it decides the next tool call or
the final answer) and the "tools" node runs the tool; a conditional edge loops
agent -> tools -> agent until the model answers.  Each node is one LangGraph
superstep and, with durability="sync", each superstep's checkpoint is written
before the next one starts, so a step (model + tool) costs two checkpoints.

Sequential and resume use the sync savers (SqliteSaver / PostgresSaver);
concurrent uses the async savers (AsyncSqliteSaver over aiosqlite,
AsyncPostgresSaver over an AsyncConnectionPool) with asyncio tasks.  Resume is
`invoke(None, ...)` on the crashed run's thread_id.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any, TypedDict

import peer_common as pc
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

SYSTEM = "langgraph"
RECURSION_LIMIT = 100  # 10 steps = 21 supersteps; LangGraph's default is 25


class RunState(TypedDict):
    """Graph state: tool results accumulate, `pending` is the model's call."""

    run_id: str
    results: Annotated[list[pc.ToolResult], operator.add]
    pending: pc.Decision | None
    answer: str | None


# --------------------------------------------------------------------------- #
# Nodes (sync for invoke, async twins so ainvoke needs no thread hop).
# --------------------------------------------------------------------------- #


def agent(state: RunState) -> dict[str, Any]:
    """Fake model node.  Entering it proves the previous tools checkpoint is
    durable (durability="sync"), so this is where a step counts as done."""
    completed = len(state["results"])
    pc.PROBE.step_durable(state["run_id"], completed)
    decision = pc.fake_model(completed)
    if decision["action"] == "final":
        return {"pending": None, "answer": decision["answer"]}
    return {"pending": decision}


def tools(state: RunState) -> dict[str, Any]:
    """Tool node: executes the pending call and appends its result."""
    pending = state["pending"]
    assert pending is not None
    pc.PROBE.tool_called(state["run_id"])
    return {"results": [pc.add_one(int(pending["arg"]))], "pending": None}


async def aagent(state: RunState) -> dict[str, Any]:
    """Async twin of `agent`."""
    return agent(state)


async def atools(state: RunState) -> dict[str, Any]:
    """Async twin of `tools`."""
    return tools(state)


def route(state: RunState) -> str:
    """Loop to the tool node while the model asks for a tool."""
    return "tools" if state["pending"] else END


def build_graph(
    checkpointer: BaseCheckpointSaver[Any], use_async: bool
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """agent -> tools -> agent ... -> END, compiled with the checkpointer."""
    builder = StateGraph(RunState)
    builder.add_node("agent", aagent if use_async else agent)
    builder.add_node("tools", atools if use_async else tools)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", route, ["tools", END])
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=checkpointer)


def run_config(run_id: str) -> RunnableConfig:
    """One thread per run, so each run has its own checkpoint history."""
    return {"configurable": {"thread_id": run_id}, "recursion_limit": RECURSION_LIMIT}


def initial_state(run_id: str) -> RunState:
    """Fresh input for a new run."""
    return {"run_id": run_id, "results": [], "pending": None, "answer": None}


# --------------------------------------------------------------------------- #
# Checkpointers.
# --------------------------------------------------------------------------- #


@contextmanager
def sync_saver(store: str, target: str) -> Iterator[SqliteSaver | PostgresSaver]:
    """The documented sync saver for the store, set up and ready."""
    if store == "sqlite":
        conn = sqlite3.connect(target, check_same_thread=False)
        try:
            saver = SqliteSaver(conn)
            saver.setup()
            yield saver
        finally:
            conn.close()
        return
    with PostgresSaver.from_conn_string(target) as pg_saver:
        pg_saver.setup()
        yield pg_saver


@asynccontextmanager
async def async_saver(
    store: str, target: str, pool_size: int
) -> AsyncIterator[AsyncSqliteSaver | AsyncPostgresSaver]:
    """The documented async saver; PG gets a pool sized to the concurrency."""
    if store == "sqlite":
        async with AsyncSqliteSaver.from_conn_string(target) as sqlite_saver:
            await sqlite_saver.setup()
            yield sqlite_saver
        return
    kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    async with AsyncConnectionPool(
        target, min_size=pool_size, max_size=pool_size, kwargs=kwargs, open=False
    ) as pool:
        pg_saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
        await pg_saver.setup()
        yield pg_saver


def saver_durability(
    saver: SqliteSaver | PostgresSaver, store: str, target: str
) -> tuple[bool, str]:
    """Read the settings in effect on the saver's own connection/server."""
    if isinstance(saver, SqliteSaver):
        mode = str(saver.conn.execute("PRAGMA journal_mode").fetchone()[0])
        sync = int(saver.conn.execute("PRAGMA synchronous").fetchone()[0])
        fsync, note = pc.sqlite_durability(mode, sync)
    else:
        fsync, note = pc.pg_durability(target)
    return fsync, note + '; durability="sync", 2 checkpoints per step'


# --------------------------------------------------------------------------- #
# Modes.
# --------------------------------------------------------------------------- #


def run_one(graph: CompiledStateGraph[Any, Any, Any, Any], run_id: str) -> None:
    """One full ReAct run with synchronous durability."""
    final = graph.invoke(initial_state(run_id), run_config(run_id), durability="sync")
    pc.verify_run(run_id, final["results"])


def sequential_round(graph: CompiledStateGraph[Any, Any, Any, Any], runs: int) -> None:
    """`runs` runs one after another."""
    for run_id in pc.new_run_ids("seq", runs):
        run_one(graph, run_id)


async def concurrent_round(
    graph: CompiledStateGraph[Any, Any, Any, Any], runs: int, concurrency: int
) -> float:
    """`runs` runs as asyncio tasks with at most `concurrency` in flight."""
    gate = asyncio.Semaphore(concurrency)

    async def one(run_id: str) -> None:
        async with gate:
            final = await graph.ainvoke(
                initial_state(run_id), run_config(run_id), durability="sync"
            )
        pc.verify_run(run_id, final["results"])

    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(one(r) for r in pc.new_run_ids("conc", runs)))
    return loop.time() - start


async def concurrent_samples(args: argparse.Namespace, target: str) -> list[float]:
    """Warm up once, then time each round on the async saver."""
    async with async_saver(args.store, target, args.concurrency) as saver:
        graph = build_graph(saver, use_async=True)
        await concurrent_round(graph, args.concurrency, args.concurrency)
        samples = []
        for index in range(args.rounds):
            samples.append(await concurrent_round(graph, args.runs, args.concurrency))
            pc.log(f"[{SYSTEM}/{args.store} concurrent] round {index + 1}: {samples[-1]:.3f}s")
        return samples


def resume(graph: CompiledStateGraph[Any, Any, Any, Any], run_id: str) -> list[pc.ToolResult]:
    """LangGraph's resume: invoke with None input on the same thread_id."""
    final = graph.invoke(None, run_config(run_id), durability="sync")
    return list(final["results"])


def crash_child(args: argparse.Namespace) -> None:
    """Subprocess entry: start a run and get SIGKILLed after step 5."""
    pc.PROBE.crash_child = True
    with sync_saver(args.store, args.target) as saver:
        run_one(build_graph(saver, use_async=False), args.crash_child)
    raise RuntimeError("crash child survived past step 5")


def fresh_resume(args: argparse.Namespace) -> None:
    """Subprocess entry: a fresh process resumes a crashed run (``fresh_resume_bench.py``).

    Prints one JSON object of ``time.perf_counter()`` instants (CLOCK_MONOTONIC, comparable
    with the parent's): imports done, saver open (``from_conn_string`` + ``setup()``, as the
    documentation opens it), step 6 durable, run finished.
    """
    imported = time.perf_counter()
    with sync_saver(args.store, args.target) as saver:
        opened = time.perf_counter()
        graph = build_graph(saver, use_async=False)
        pc.PROBE.watch(args.fresh_resume)
        start = time.perf_counter()
        results = resume(graph, args.fresh_resume)
        done = time.perf_counter()
    pc.verify_resumed(args.fresh_resume, results)
    times = {"imported": imported, "opened": opened, "resume": start}
    times |= {"first_step": pc.PROBE.first_step_at[args.fresh_resume], "done": done}
    print(json.dumps(times), flush=True)


def emit_mode(
    mode: pc.Mode,
    args: argparse.Namespace,
    target: str,
    graph: CompiledStateGraph[Any, Any, Any, Any],
    durability: tuple[bool, str],
) -> None:
    """Measure one mode and print its JSON line."""
    label = f"{SYSTEM}/{args.store} {mode}"
    if mode == "resume":
        first, complete = pc.measure_resume(
            label=label,
            trials=args.resume_runs,
            crash=lambda r: pc.spawn_crash_child(__file__, args.store, target, r),
            resume=lambda r: resume(graph, r),
        )
        pc.emit(
            pc.resume_row(
                system=SYSTEM,
                store=args.store,
                first_step_s=first,
                complete_s=complete,
                durability=durability,
            )
        )
        return
    if mode == "sequential":
        samples = pc.measure_rounds(
            label,
            args.rounds,
            lambda i: sequential_round(graph, pc.WARMUP_RUNS if i < 0 else args.runs),
        )
    else:
        samples = asyncio.run(concurrent_samples(args, target))
    pc.emit(
        pc.throughput_row(
            system=SYSTEM,
            store=args.store,
            mode=mode,
            runs=args.runs,
            samples=samples,
            durability=durability,
        )
    )


def run_benchmark(args: argparse.Namespace, target: str) -> None:
    """Run the requested modes against an already-fresh store."""
    with sync_saver(args.store, target) as saver:
        graph = build_graph(saver, use_async=False)
        durability = saver_durability(saver, args.store, target)
        for mode in pc.selected_modes(args):
            emit_mode(mode, args, target, graph, durability)


def main() -> None:
    """CLI entry point."""
    args = pc.parse_args(__doc__ or SYSTEM)
    if args.crash_child:
        crash_child(args)
        return
    if args.fresh_resume:
        fresh_resume(args)
        return
    pc.install_deadline(args.timeout_s)
    if args.store == "sqlite":
        path = pc.fresh_sqlite_path(args.workdir, SYSTEM)
        try:
            run_benchmark(args, str(path))
        finally:
            pc.remove_sqlite(path)
    else:
        with pc.fresh_pg_database(args.pg_url, SYSTEM) as url:
            run_benchmark(args, url)


if __name__ == "__main__":
    main()
