"""The cost of a delegation against a plain tool step.

Three workloads on the same store, fake models (``FunctionModel``), a trivial tool, runaway guards
off, driven by one in-process ``Worker`` (claim, drive, release) exactly as a deployment does:

* **base**: a run that answers at once (creation, claim, one model turn, completion);
* **tool**: the same run with one tool step before its answer;
* **delegate**: the same run handing one subtask to another agent, which answers at once: the
  hand-off journaled, the child created, claimed, driven and completed, the parent reopened,
  claimed again and given the child's result.

Reported per workload: median milliseconds per run over alternating rounds (base, tool, delegate,
base, ...; the machine's drift cancels), then the marginal cost of one tool step (tool - base)
and of one delegation (delegate - base), and their ratio. The target is a delegation costing at
most 5x a tool step; ``delegate / tool`` (whole runs) is printed too.

    .venv/bin/python benchmarks/delegation_bench.py --store sqlite --runs 20 --rounds 5
    .venv/bin/python benchmarks/delegation_bench.py --store postgres \\
        --pg-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from autonomic.bootstrap import build_store
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.engine.worker import Worker
from autonomic.governance.runaway.gate import Runaway
from autonomic.testing.delegation import answering, calling, delegating, resolver
from autonomic.tools.contract import tool


@tool(idempotent=True)
def noop(n: int) -> dict[str, int]:
    """Do nothing (the trivial tool)."""
    return {"n": n}


def _engine(store: Any) -> Engine:
    agents = [
        Agent("base", "answer", model="fn:base"),
        Agent("tool", "call", tools=(noop,), model="fn:tool"),
        Agent("delegate", "hand off", model="fn:delegate", delegates_to=["child"]),
        Agent("child", "answer", model="fn:child"),
    ]
    policies = {
        "base": answering("done"),
        "tool": calling("noop", {"n": 1}, "done"),
        "delegate": delegating("child", "do it"),
        "child": answering("done"),
    }
    return Engine(store, AgentRegistry(agents), resolver(policies), runaway=Runaway(enabled=False))


async def _round(engine: Engine, agent: str, runs: int) -> float:
    """Milliseconds per run of ``agent``: ``runs`` started, then one worker drains them."""
    for i in range(runs):
        await engine.start(agent, f"task {i}")
    started = time.perf_counter()
    await Worker(engine, concurrency=1, poll_interval=0.001).run(until_idle=True)
    engine.stopping.clear()
    return (time.perf_counter() - started) * 1000 / runs


async def main(url: str, runs: int, rounds: int) -> dict[str, Any]:
    store = build_store(url)
    await store.migrate()
    try:
        engine = _engine(store)
        times: dict[str, list[float]] = {"base": [], "tool": [], "delegate": []}
        await _round(engine, "base", 3)  # warm up
        for _ in range(rounds):
            for agent in times:
                times[agent].append(await _round(engine, agent, runs))
    finally:
        await store.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    step = med["tool"] - med["base"]
    delegation = med["delegate"] - med["base"]
    return {
        "store": url.split(":", 1)[0],
        "runs_per_round": runs,
        "rounds": rounds,
        "ms_per_run": {k: round(v, 2) for k, v in med.items()},
        "tool_step_ms": round(step, 2),
        "delegation_ms": round(delegation, 2),
        "delegation_over_tool_step": round(delegation / step, 2) if step > 0 else None,
        "delegate_run_over_tool_run": round(med["delegate"] / med["tool"], 2),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.store == "sqlite":
        target = f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    else:
        target = args.pg_url
    print(json.dumps(asyncio.run(main(target, args.runs, args.rounds)), indent=2))
