"""Fan-out: a coordinator's independent subtasks over a fleet of worker processes.

A ``lead`` coordinator (``core/coordination.py``, template graph, no planning call) hands ``N``
independent subtasks of the ``bench.work`` capability to child runs. Each subtask is one agent
turn of a ``hand`` agent: a fake model step that calls ``hold`` (an async tool that waits
``--hold`` seconds: the subtask's length), then a fake answer. Three worker processes (``Worker``,
4 slots each, as ``autonomic worker --concurrency 4`` would) drive everything; the benchmark's
own process only starts the coordinator and watches the store.

Measured per round, in alternation (the machine's drift cancels), the wall-clock seconds from the
coordinator's start to its completion:

* **one**: ``N = 1``; **ten**: ``N = 10``. Target: ten within 1.5x of one (the fan-out runs in
  parallel, so ten equal subtasks take about as long as one);
* with ``--hold 0``, the coordinator's **overhead per subtask**: ``(ten - one) / 9``.

    .venv/bin/python benchmarks/fanout_bench.py --store sqlite --rounds 5
    .venv/bin/python benchmarks/fanout_bench.py --store postgres \\
        --pg-url postgresql://postgres@127.0.0.1:5432/test --rounds 5

LangGraph's ``Send`` fan-out on the same workload: ``benchmarks/peers/langgraph_fanout.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.bootstrap import build_store
from autonomic.core.coordination import Coordination
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.engine.worker import Worker
from autonomic.governance.runaway.gate import Runaway
from autonomic.tools.capability import Capability
from autonomic.tools.contract import tool

WORK = "bench.work"
WORKERS = 3
SLOTS = 4


def _graph(n: int) -> dict[str, Any]:
    return {"nodes": [{"id": f"t{i}", "uses": WORK, "inputs": {"n": i}} for i in range(n)]}


def _hand(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    if any(m.role is Role.TOOL for m in messages):
        return ModelResponse('{"done": true}')
    return ModelResponse(None, (ToolCall("h", "hold", "{}"),))


def engine(store: Any, seconds: float) -> Engine:
    @tool(idempotent=True)
    async def hold() -> dict[str, bool]:
        """Wait as long as a subtask takes."""
        await asyncio.sleep(seconds)
        return {"held": True}

    work = Capability(WORK, input_schema={"type": "object"}, latency=seconds)
    agents = [
        Agent(
            f"lead{n}",
            "coordinate",
            model="fn:lead",
            coordination=Coordination(template=_graph(n), plan=False),
            delegates_to=[WORK],
        )
        for n in (1, 10)
    ] + [Agent("hand", "work", tools=(hold,), model="fn:hand", capabilities=[work])]
    return Engine(
        store,
        AgentRegistry(agents),
        lambda spec: FunctionModel(
            _hand if spec == "fn:hand" else (lambda m, t: ModelResponse("{}")), name=spec
        ),
        runaway=Runaway(enabled=False),
    )


async def _serve(url: str, hold: float) -> None:
    store = build_store(url)
    eng = engine(store, hold)
    worker = Worker(eng, concurrency=SLOTS, poll_interval=0.005)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stop)
    await worker.run()
    await store.close()


async def _one(store: Any, eng: Engine, n: int) -> float:
    started = time.perf_counter()
    run = await eng.start(f"lead{n}", {"n": n})
    while True:
        current = await store.get_run(run.id)
        if current.status.terminal:
            break
        await asyncio.sleep(0.002)
    took = time.perf_counter() - started
    if current.status is not RunStatus.COMPLETED:
        raise SystemExit(f"lead{n} ended {current.status.value}: {current.status_reason}")
    return took


async def _measure(url: str, hold: float, rounds: int) -> dict[str, float]:
    store = build_store(url)
    await store.migrate()
    eng = engine(store, hold)
    times: dict[int, list[float]] = {1: [], 10: []}
    try:
        await _one(store, eng, 10)  # warm-up: every worker has claimed and driven something
        for _ in range(rounds):
            for n in (1, 10):
                times[n].append(await _one(store, eng, n))
    finally:
        await store.close()
    return {"one": statistics.median(times[1]), "ten": statistics.median(times[10])}


def _fleet(url: str, hold: float) -> list[subprocess.Popen[bytes]]:
    argv = [sys.executable, __file__, "--serve", "--db", url, "--hold", str(hold)]
    return [subprocess.Popen(argv) for _ in range(WORKERS)]


def run(url: str, hold: float, rounds: int) -> dict[str, float]:
    asyncio.run(_migrate(url))
    fleet = _fleet(url, hold)
    try:
        return asyncio.run(_measure(url, hold, rounds))
    finally:
        for proc in fleet:
            proc.terminate()
        for proc in fleet:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)


async def _migrate(url: str) -> None:
    store = build_store(url)
    await store.migrate()
    await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--db", default=None, help="(internal) the worker's database")
    parser.add_argument("--hold", type=float, default=0.5, help="seconds a subtask takes")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", action="store_true", help="(internal) be a worker")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.db, args.hold))
        return
    url = f"sqlite:///{tempfile.mkdtemp()}/fanout.db" if args.store == "sqlite" else args.pg_url
    load = os.getloadavg()[0]
    held = run(url, args.hold, args.rounds)
    bare = run(url, 0.0, args.rounds)
    print(
        json.dumps(
            {
                "system": "autonomic",
                "store": args.store,
                "workload": "fanout",
                "workers": WORKERS,
                "hold_s": args.hold,
                "one_s": round(held["one"], 4),
                "ten_s": round(held["ten"], 4),
                "ratio": round(held["ten"] / held["one"], 3),
                "overhead_per_subtask_ms": round((bare["ten"] - bare["one"]) / 9 * 1000, 2),
                "one_hold0_s": round(bare["one"], 4),
                "ten_hold0_s": round(bare["ten"], 4),
                "load_1m": round(load, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
