"""LangGraph peer for the multi-agent fan-out benchmark (issue 18, "Performance").

Workload (the same as autonomic's `benchmarks/fanout_bench.py`): a coordinator
receives a task and fans out N independent subtasks of equal length; each
subtask is one agent turn (a fake model step that calls the `hold` tool, the
tool, which awaits `asyncio.sleep(--hold)`, then a fake model answer); the
coordinator aggregates the N results, a dict by subtask id, and finishes.

Mapping, LangGraph's documented map-reduce pattern: a `dispatch` node (the
coordinator) plans the subtask ids, a conditional edge out of it returns
`[Send("subtask", {...}) for each id]`, the async `subtask` node runs the agent
turn and returns `{"results": {id: result}}`, merged by a dict reducer, and
`subtask -> aggregate` runs once every Send of the superstep has finished.
Compiled with AsyncSqliteSaver (one aiosqlite connection) or AsyncPostgresSaver
(an AsyncConnectionPool as large as the widest fan-out, so parallel subtasks
never queue for a connection) and invoked with `durability="sync"`.

Measured per store, in alternation (N=1 then N=10, so the machine's drift
cancels), after one untimed warm-up of each: the median wall-clock seconds of
one run, with `--hold` and again with hold 0; the hold-0 pair gives the
coordinator's overhead per subtask, (ten - one) / 9.

    benchmarks/.venv-peers/bin/python benchmarks/peers/langgraph_fanout.py --store sqlite
    benchmarks/.venv-peers/bin/python benchmarks/peers/langgraph_fanout.py --store postgres \\
        --pg-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypedDict

import peer_common as pc
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Send
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

SYSTEM = "langgraph"
SYSTEM_DB = "langgraph_fanout"  # -> database peer_langgraph_fanout_<pid>
WIDTHS = (1, 10)
Graph = CompiledStateGraph[Any, Any, Any, Any]
SubtaskResult = dict[str, Any]


def merge_results(
    left: dict[str, SubtaskResult], right: dict[str, SubtaskResult]
) -> dict[str, SubtaskResult]:
    """Reducer: each subtask contributes its own key; a repeat is a bug."""
    clash = left.keys() & right.keys()
    if clash:
        raise ValueError(f"subtask results written twice: {sorted(clash)}")
    return {**left, **right}


class FanoutState(TypedDict):
    """The coordinator's state: the task, the plan and the collected results."""

    run_id: str
    n: int
    hold_s: float
    subtask_ids: list[str]
    results: Annotated[dict[str, SubtaskResult], merge_results]
    answer: str | None


class SubtaskState(TypedDict):
    """What each Send carries: one subtask's private input."""

    run_id: str
    subtask_id: str
    arg: int
    hold_s: float


# --------------------------------------------------------------------------- #
# The agent turn: fake model -> hold tool -> fake model (as fanout_bench.py).
# --------------------------------------------------------------------------- #


def fake_model(tool_result: dict[str, Any] | None) -> pc.Decision:
    """No latency: call `hold` first, answer once its result is there."""
    if tool_result is None:
        return {"action": "tool", "tool": "hold", "args": {}}
    return {"action": "final", "answer": {"done": True, "held": tool_result["held"]}}


async def hold(seconds: float) -> dict[str, bool]:
    """The tool: as long as a subtask takes, and nothing else."""
    await asyncio.sleep(seconds)
    return {"held": True}


def expected_result(subtask_id: str, arg: int) -> SubtaskResult:
    """What every finished subtask must have reported."""
    return {"subtask_id": subtask_id, "arg": arg, "answer": {"done": True, "held": True}}


# --------------------------------------------------------------------------- #
# Graph.
# --------------------------------------------------------------------------- #


async def dispatch(state: FanoutState) -> dict[str, Any]:
    """Coordinator: split the task into N subtask ids (the plan)."""
    return {"subtask_ids": [f"t{i}" for i in range(state["n"])]}


def fan_out(state: FanoutState) -> list[Send]:
    """The map step: one Send per subtask, each with its own input."""
    return [
        Send(
            "subtask",
            {"run_id": state["run_id"], "subtask_id": sid, "arg": i, "hold_s": state["hold_s"]},
        )
        for i, sid in enumerate(state["subtask_ids"])
    ]


async def subtask(state: SubtaskState) -> dict[str, Any]:
    """One agent turn; its result lands in the coordinator's dict by id."""
    decision = fake_model(None)
    if decision["tool"] != "hold":
        raise RuntimeError(f"unexpected tool call {decision}")
    final = fake_model(await hold(state["hold_s"]))
    result = {"subtask_id": state["subtask_id"], "arg": state["arg"], "answer": final["answer"]}
    return {"results": {state["subtask_id"]: result}}


async def aggregate(state: FanoutState) -> dict[str, Any]:
    """The reduce step: check every subtask reported, then finish."""
    verify(state["run_id"], state["n"], state["results"])
    return {"answer": f"aggregated {len(state['results'])} subtasks"}


def build_graph(checkpointer: BaseCheckpointSaver[Any]) -> Graph:
    """dispatch -(Send x N)-> subtask -> aggregate -> END, with the checkpointer."""
    builder = StateGraph(FanoutState)
    builder.add_node("dispatch", dispatch)
    builder.add_node("subtask", subtask)
    builder.add_node("aggregate", aggregate)
    builder.add_edge(START, "dispatch")
    builder.add_conditional_edges("dispatch", fan_out, ["subtask"])
    builder.add_edge("subtask", "aggregate")
    builder.add_edge("aggregate", END)
    return builder.compile(checkpointer=checkpointer)


def verify(run_id: str, n: int, results: dict[str, SubtaskResult]) -> None:
    """All N subtask results present and correct, nothing else."""
    expected = {f"t{i}": expected_result(f"t{i}", i) for i in range(n)}
    if results != expected:
        raise RuntimeError(f"{run_id}: wrong fan-out results {results}")


def run_config(run_id: str) -> RunnableConfig:
    """One thread per run, so each run has its own checkpoint history."""
    return {"configurable": {"thread_id": run_id}}


async def run_once(graph: Graph, n: int, hold_s: float) -> float:
    """One coordinator run of width n; returns its wall-clock seconds."""
    (run_id,) = pc.new_run_ids(f"fan{n}", 1)
    state: FanoutState = {
        "run_id": run_id,
        "n": n,
        "hold_s": hold_s,
        "subtask_ids": [],
        "results": {},
        "answer": None,
    }
    start = time.perf_counter()
    final = await graph.ainvoke(state, run_config(run_id), durability="sync")
    took = time.perf_counter() - start
    verify(run_id, n, final["results"])
    if final["answer"] != f"aggregated {n} subtasks":
        raise RuntimeError(f"{run_id}: coordinator did not finish: {final['answer']!r}")
    return took


async def measure(graph: Graph, hold_s: float, rounds: int, label: str) -> dict[int, float]:
    """Warm up each width once, then alternate N=1 / N=10 for `rounds` rounds."""
    for n in WIDTHS:
        await run_once(graph, n, hold_s)
    samples: dict[int, list[float]] = {n: [] for n in WIDTHS}
    for index in range(rounds):
        for n in WIDTHS:
            samples[n].append(await run_once(graph, n, hold_s))
        pc.log(
            f"[{label} hold={hold_s}] round {index + 1}/{rounds}: "
            f"one {samples[1][-1]:.4f}s ten {samples[10][-1]:.4f}s"
        )
    return {n: statistics.median(s) for n, s in samples.items()}


async def checkpoints_per_run(
    graph: Graph, saver: BaseCheckpointSaver[Any], n: int
) -> tuple[int, int]:
    """(checkpoints, task writes) one run of width n leaves in the store."""
    (run_id,) = pc.new_run_ids(f"count{n}", 1)
    state = {"run_id": run_id, "n": n, "hold_s": 0.0, "subtask_ids": [], "results": {}}
    await graph.ainvoke({**state, "answer": None}, run_config(run_id), durability="sync")
    checkpoints = writes = 0
    async for item in saver.alist(run_config(run_id)):
        checkpoints += 1
        writes += len(item.pending_writes or [])
    return checkpoints, writes


# --------------------------------------------------------------------------- #
# Stores.
# --------------------------------------------------------------------------- #


@asynccontextmanager
async def saver_for(store: str, target: str) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """The documented async saver for the store, set up and ready."""
    if store == "sqlite":
        async with AsyncSqliteSaver.from_conn_string(target) as sqlite_saver:
            await sqlite_saver.setup()
            yield sqlite_saver
        return
    kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    size = max(WIDTHS)
    async with AsyncConnectionPool(
        target, min_size=size, max_size=size, kwargs=kwargs, open=False
    ) as pool:
        pg_saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
        await pg_saver.setup()
        yield pg_saver


async def durability_of(saver: BaseCheckpointSaver[Any], target: str) -> tuple[bool, str]:
    """Read the settings in effect on the saver's own connection/server."""
    if isinstance(saver, AsyncSqliteSaver):
        async with saver.conn.execute("PRAGMA journal_mode") as cursor:
            mode = str((await cursor.fetchone() or ["?"])[0])
        async with saver.conn.execute("PRAGMA synchronous") as cursor:
            sync = int((await cursor.fetchone() or [-1])[0])
        fsync, note = pc.sqlite_durability(mode, sync)
    else:
        fsync, note = pc.pg_durability(target)
    return fsync, note + '; durability="sync"'


async def benchmark(args: argparse.Namespace, target: str) -> dict[str, Any]:
    """Both measurement pairs plus the checkpoint count, on one fresh store."""
    label = f"{SYSTEM}/{args.store} fanout"
    async with saver_for(args.store, target) as saver:
        graph = build_graph(saver)
        durability = await durability_of(saver, target)
        counts = {n: await checkpoints_per_run(graph, saver, n) for n in WIDTHS}
        load = os.getloadavg()[0]
        held = await measure(graph, args.hold, args.rounds, label)
        bare = await measure(graph, 0.0, args.rounds, label)
    return {
        "system": SYSTEM,
        "store": args.store,
        "workload": "fanout",
        "hold_s": args.hold,
        "rounds": args.rounds,
        "one_s": round(held[1], 4),
        "ten_s": round(held[10], 4),
        "ratio": round(held[10] / held[1], 3),
        "overhead_per_subtask_ms": round((bare[10] - bare[1]) / 9 * 1000, 2),
        "one_hold0_s": round(bare[1], 4),
        "ten_hold0_s": round(bare[10], 4),
        "checkpoints_one": counts[1][0],
        "writes_one": counts[1][1],
        "checkpoints_ten": counts[10][0],
        "writes_ten": counts[10][1],
        "load_1m": round(load, 2),
        "fsync": durability[0],
        "durability_note": durability[1],
    }


def parse_args() -> argparse.Namespace:
    """The fan-out peer's CLI (a subset of peer_common's, plus --hold)."""
    parser = argparse.ArgumentParser(description=(__doc__ or SYSTEM).split("\n\n")[0])
    parser.add_argument("--store", choices=["sqlite", "postgres"], required=True)
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--hold", type=float, default=0.5, help="seconds a subtask takes")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("benchmarks/.work"))
    parser.add_argument("--timeout-s", type=float, default=900.0)
    args = parser.parse_args()
    if args.hold < 0 or args.rounds < 1:
        parser.error("--hold must be >= 0 seconds and --rounds >= 1")
    return args


def main() -> None:
    """CLI entry point: one JSON line per invocation (one store)."""
    args = parse_args()
    pc.install_deadline(args.timeout_s)
    if args.store == "sqlite":
        path = pc.fresh_sqlite_path(args.workdir, SYSTEM_DB)
        try:
            row = asyncio.run(benchmark(args, str(path)))
        finally:
            pc.remove_sqlite(path)
    else:
        with pc.fresh_pg_database(args.pg_url, SYSTEM_DB) as url:
            row = asyncio.run(benchmark(args, url))
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
