"""Replay speed: a 100-step recorded run replayed, against re-running it.

The workload: an agent that takes ``--steps`` tool steps, one tool call per model turn, then
answers (so 2 x steps + 1 journaled steps: turns and calls), on SQLite. Its model is a fake
(``FunctionModel``) that answers after ``--model-ms`` (a fast hosted model answers in a few hundred
milliseconds; 100 ms is the conservative default), its tool a fake that returns after
``--tool-ms`` (an API call).

1. **Re-run**: the run driven from its task with that model and tool: what checking a change by
   running the agent again costs (and what the recording cost).
2. **Replay**: ``autonomic.testing.replay.replay`` of the recorded case with the same agent: no
   model is asked and no tool runs; the engine still takes every step, on a throw-away database.

Reported: the median seconds of each over ``--rounds`` and the ratio replay / re-run (target
<= 0.05 for 100 steps).

    .venv/bin/python benchmarks/replay_bench.py --steps 100 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.bootstrap import build_store
from autonomic.core.case import Case
from autonomic.core.messages import Message, ModelResponse, ToolCall, ToolSpec
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.governance.runaway.gate import Runaway
from autonomic.testing.replay import replay
from autonomic.tools.contract import tool


def workload(steps: int, model_ms: float, tool_ms: float) -> tuple[Agent, Any]:
    @tool(idempotent=True)
    async def lookup(n: int) -> dict[str, int]:
        """Look a number up (a remote API)."""
        await asyncio.sleep(tool_ms / 1000)
        return {"n": n, "square": n * n}

    def brain(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
        done = sum(1 for m in messages if m.role == "tool")
        if done >= steps:
            return ModelResponse(content=f"looked up {done} numbers")
        call = ToolCall(f"c{done}", "lookup", json.dumps({"n": done}))
        return ModelResponse(None, (call,))

    class SlowModel(FunctionModel):
        async def complete(
            self, messages: Sequence[Message], tools: Sequence[ToolSpec]
        ) -> ModelResponse:
            await asyncio.sleep(model_ms / 1000)
            return await super().complete(messages, tools)

    agent = Agent(
        name="bench-lookup",
        instructions="Look up every number.",
        tools=(lookup,),
        model="function:bench",
        max_turns=steps + 2,
        read_only=frozenset({"lookup"}),
    )
    return agent, SlowModel(brain, name="function:bench")


async def rerun(agent: Agent, model: Any, directory: Path, steps: int) -> tuple[float, Case]:
    store = build_store(f"sqlite:///{directory / 'run.db'}")
    await store.migrate()
    try:
        engine = Engine(
            store, AgentRegistry([agent]), lambda _: model, runaway=Runaway(enabled=False)
        )
        started = time.perf_counter()
        run = await engine.run(agent.name, f"look up {steps} numbers")
        seconds = time.perf_counter() - started
        assert run.status.value == "COMPLETED", run.status_reason
        return seconds, Case.of(run, await store.load_journal(run.id))
    finally:
        await store.close()


async def main(steps: int, rounds: int, model_ms: float, tool_ms: float) -> dict[str, Any]:
    agent, model = workload(steps, model_ms, tool_ms)
    runs: list[float] = []
    replays: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            directory = Path(tmp) / str(i)
            directory.mkdir()
            seconds, case = await rerun(agent, model, directory, steps)
            runs.append(seconds)
            started = time.perf_counter()
            report = await replay(case, agent, workdir=directory)
            replays.append(time.perf_counter() - started)
            assert report.ok, report.render()
            assert len(report.recorded) >= 3 * steps
    run_s, replay_s = statistics.median(runs), statistics.median(replays)
    return {
        "steps": steps,
        "model_ms": model_ms,
        "tool_ms": tool_ms,
        "rounds": rounds,
        "rerun_s": round(run_s, 3),
        "replay_s": round(replay_s, 3),
        "ratio": round(replay_s / run_s, 4),
        "target": 0.05,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model-ms", type=float, default=100.0)
    parser.add_argument("--tool-ms", type=float, default=20.0)
    args = parser.parse_args()
    result = asyncio.run(main(args.steps, args.rounds, args.model_ms, args.tool_ms))
    print(json.dumps(result, indent=2))
