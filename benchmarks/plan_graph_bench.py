"""Graph planning and Tree-of-Thoughts overhead: what validating a graph costs, and what a run
pays for a graph plan or for N scored candidates against a flat list plan.

1. ``validate``: ``parse_graph`` + ``validate`` of random DAGs of 10 and 50 nodes against a
   catalog with schemas (microseconds per graph, this process's CPU).
2. Runs on SQLite, fake models (answer at once), trivial tools, no plan cache, interleaved round
   by round so the machine's drift hits all alike; median wall time per run of:
   ``list`` (one planning call, a 3-step list), ``graph`` (one call, the same steps as a graph),
   ``tot3`` (3 candidates + a scoring function: 3 planning calls, 3 committed candidates, 3
   committed scores). Reported as ratios to ``list``: each candidate costs a commit (so a resumed
   run never redoes it), which is what ToT adds besides its model calls.

Usage: .venv/bin/python benchmarks/plan_graph_bench.py [--rounds 15] [--graphs 2000]
Prints JSON lines and a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.bootstrap import build_store
from autonomic.core.graph import Graph, Node, Ref, Signature, parse_graph, validate
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.engine.planning import GRAPH_PLANNING_INSTRUCTIONS, Planning
from autonomic.tools.contract import tool

OBJ = {"type": "object", "properties": {"v": {"type": "integer"}}, "required": ["v"]}


def random_graph(rng: random.Random, n: int) -> dict[str, Any]:
    nodes = []
    for i in range(n):
        deps = rng.sample(range(i), min(i, rng.randint(0, 3)))
        inputs = {"x": Ref(f"n{deps[0]}", ("v",))} if deps else {"x": 1}
        after = tuple(f"n{d}" for d in deps[1:])
        nodes.append(Node(f"n{i}", uses="step", inputs=inputs, after=after))
    return Graph(tuple(nodes)).to_json()


def bench_validate(graphs: int) -> list[dict[str, Any]]:
    catalog = {
        "step": Signature("step", {"type": "object", "properties": {"x": {"type": "integer"}}}, OBJ)
    }
    rng = random.Random(7)
    out = []
    for n in (10, 50):
        raws = [random_graph(rng, n) for _ in range(200)]
        started = time.process_time()
        for i in range(graphs):
            validate(parse_graph(raws[i % len(raws)], max_nodes=50), catalog, max_nodes=50)
        us = (time.process_time() - started) / graphs * 1e6
        out.append({"bench": "validate", "nodes": n, "us_per_graph": round(us, 1)})
    return out


@tool(idempotent=True)
def fetch(item: str) -> str:
    """Fetch."""
    return item


@tool(idempotent=True)
def write(item: str) -> str:
    """Write."""
    return item


LIST = {"steps": ["Fetch a with fetch", "Fetch b with fetch", "Write with write"]}
GRAPH = {
    "steps": [
        {"id": "a", "do": "Fetch a", "tool": "fetch"},
        {"id": "b", "do": "Fetch b", "tool": "fetch"},
        {"id": "w", "do": "Write", "tool": "write", "after": ["a", "b"]},
    ]
}


def actor(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    done = sum(1 for m in messages if m.role is Role.TOOL)
    calls = [("fetch", "a"), ("fetch", "b"), ("write", "w")]
    if done >= len(calls):
        return ModelResponse(content="done", model="a")
    name, item = calls[done]
    return ModelResponse(
        content=None,
        tool_calls=(ToolCall(f"c{done}", name, json.dumps({"item": item})),),
        model="a",
    )


def agent(name: str, answer: dict[str, Any], **planning: Any) -> tuple[Agent, FunctionModel]:
    planner = FunctionModel(
        lambda m, t: ModelResponse(content=json.dumps(answer), model="p"),
        name=f"function:{name}-planner",
    )
    return (
        Agent(
            name=name,
            instructions="Do it.",
            tools=(fetch, write),
            model="function:actor",
            read_only=frozenset({"fetch", "write"}),
            planning=Planning(
                model=planner.name,
                cache_ttl=None,
                instructions=GRAPH_PLANNING_INSTRUCTIONS,
                **planning,
            ),
        ),
        planner,
    )


async def bench_runs(rounds: int) -> dict[str, Any]:
    variants = {
        "list": agent("list", LIST),
        "graph": agent("graph", GRAPH),
        "tot3": agent("tot3", GRAPH, candidates=3, scorer=lambda steps, graph: float(len(steps))),
    }
    models: dict[str, Any] = {"function:actor": FunctionModel(actor, name="function:actor")}
    models.update({p.name: p for _, p in variants.values()})
    with tempfile.TemporaryDirectory() as tmp:
        store = build_store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        await store.migrate()
        try:
            engine = Engine(
                store, AgentRegistry([a for a, _ in variants.values()]), models.__getitem__
            )
            times: dict[str, list[float]] = {k: [] for k in variants}
            for _ in range(2):  # warm-up
                for name in variants:
                    await engine.run(name, "task 1")
            for i in range(rounds):
                for name in variants:
                    started = time.perf_counter()
                    await engine.run(name, f"task {i}")
                    times[name].append(time.perf_counter() - started)
        finally:
            await store.close()
    median = {k: statistics.median(v) * 1000 for k, v in times.items()}
    return {
        "bench": "runs",
        "rounds": rounds,
        "median_ms": {k: round(v, 2) for k, v in median.items()},
        "ratio_to_list": {k: round(v / median["list"], 2) for k, v in median.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--graphs", type=int, default=2000)
    args = parser.parse_args()
    rows = bench_validate(args.graphs)
    for row in rows:
        print(json.dumps(row))
    runs = asyncio.run(bench_runs(args.rounds))
    print(json.dumps(runs))
    print("\n| measure | value |\n| --- | --- |")
    for row in rows:
        print(f"| validate, {row['nodes']} nodes | {row['us_per_graph']} us/graph |")
    for name, ratio in runs["ratio_to_list"].items():
        print(f"| run with a {name} plan | {ratio}x a list plan ({runs['median_ms'][name]} ms) |")


if __name__ == "__main__":
    main()
