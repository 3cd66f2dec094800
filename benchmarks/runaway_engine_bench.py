"""What the runaway guards cost inside the engine: the same runs with the guards off and on.

Workload: legitimate varied runs of ``--steps`` tool steps (``autonomic.testing.runaway
.legitimate_run``: reads, writes, polling with backoff; a model turn before each step), on SQLite
without fsync per commit (``synchronous=normal``, so the CPU cost is not hidden under disk
flushes). Modes, interleaved in each round so machine noise hits them alike:

* ``off``: ``Runaway(enabled=False)``: no gate, no budget check, no screening;
* ``on``: the default: loop detection + taint gate before every tool call (history folded from the
  journal), the budget check before every model call, every tool result screened;
* ``on + budgets``: also a run budget and a per-tenant daily budget in the in-memory ledger.

Each mode runs at several history lengths (``--histories``: runs of 10, 500 and 2,000 tool steps,
about ``--total`` steps per measurement), because the guards' cost must not grow with the run. What
is measured is **CPU time** (``time.process_time``: every thread of the process), not wall time, so
other work on a shared machine does not show up as guard cost; the added CPU per step is ``on``
minus ``off`` at the same history length.

On a shared machine the difference ``on - off`` is noisier than the quantity measured, so the
guards' CPU is also **attributed**: in mode ``on`` the three entry points of the guards in the
engine (``RunawayGate.check``: loop detection, per-tool budgets, taint, the history it folds;
``ModelBudget.check`` before each model call; ``screen_tool_output`` on each tool result) are
wrapped to add up their own thread CPU time, divided by the steps.

Also the gate alone: ``RunawayGate.check`` on the 50th step of a run (50-step history), in memory.

Usage: ``.venv/bin/python benchmarks/runaway_engine_bench.py [--histories 10,500,2000] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from typing import Any

from autonomic import Agent, AgentRegistry, Engine, FunctionModel, build_store
from autonomic.adapters.counters.memory import MemoryCounters
from autonomic.core.canonical import canonical_json
from autonomic.core.messages import ModelResponse, Role, ToolCall
from autonomic.core.run import RunStatus
from autonomic.core.state import fold
from autonomic.governance.action import ActionKind, ProposedAction
from autonomic.governance.runaway.budget import Budget
from autonomic.governance.runaway.gate import Runaway
from autonomic.governance.runaway.tenant import TenantBudget, TenantLedger
from autonomic.testing.runaway import legitimate_run
from autonomic.tools.contract import Tool

TOOLS = (
    "read_ledger", "read_statement", "search_docs", "query_sql", "list_files", "get_job_status",
    "post_entry", "update_ticket", "write_file", "send_message",
)  # fmt: skip


def _echo(**arguments: Any) -> dict[str, Any]:
    return {"ok": True, "echo": arguments}


def agent(steps: int, budget: Budget | None) -> tuple[Agent, FunctionModel]:
    calls = [a for a in legitimate_run(1, steps=steps) if a.kind is ActionKind.TOOL_CALL]

    def brain(messages: Any, tools: Any) -> ModelResponse:
        # each done step added an assistant turn and a tool result after [system, user]; counting
        # by length keeps the fake model O(1), so long runs measure the engine, not the brain
        done = (len(messages) - 2) // 2
        assert done == 0 or messages[-2].role is Role.ASSISTANT
        if done >= len(calls):
            return ModelResponse(content="done")
        a = calls[done]
        call = ToolCall(id=f"c{done}", name=a.tool, arguments=canonical_json(dict(a.arguments)))
        return ModelResponse(content=a.thought, tool_calls=(call,))

    tools = tuple(
        Tool(name=n, fn=_echo, parameters={"type": "object"}, idempotent=True) for n in TOOLS
    )
    definition = Agent(
        name="legit", instructions="reconcile", tools=tools, model="function:legit",
        max_turns=len(calls) + 2, budget=budget, read_only=frozenset(TOOLS[:6]),
    )  # fmt: skip
    return definition, FunctionModel(brain, name="function:legit")


def runaway(mode: str) -> Runaway:
    if mode == "off":
        return Runaway(enabled=False)
    if mode == "on":
        return Runaway()
    ledger = TenantLedger(MemoryCounters(), {}, default=TenantBudget(tokens=10**12, turns=10**9))
    return Runaway(ledger=ledger)


async def per_step(url: str, mode: str, runs: int, steps: int) -> float:
    """Milliseconds of CPU per step (a model turn and a tool call)."""
    budget = Budget(tokens=10**12, turns=10**6) if mode == "on + budgets" else None
    definition, model = agent(steps, budget)
    store = build_store(url)
    await store.migrate()
    engine = Engine(store, AgentRegistry([definition]), lambda _: model, runaway=runaway(mode))
    await engine.run(definition, "warm up")
    start = time.process_time()
    for _ in range(runs):
        final = await engine.run(definition, "reconcile")
        assert final.status is RunStatus.COMPLETED, final.status_reason
    elapsed = time.process_time() - start
    await store.close()
    return elapsed * 1000 / (runs * steps)


class Attributed:
    """Adds up the thread CPU time spent inside the guards' entry points (see the module)."""

    def __init__(self) -> None:
        self.ns = 0
        self._undo: list[tuple[Any, str, Any]] = []

    def _wrap_async(self, owner: Any, name: str) -> None:
        original = getattr(owner, name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time_ns()
            try:
                return await original(*args, **kwargs)
            finally:
                self.ns += time.thread_time_ns() - started

        self._undo.append((owner, name, original))
        setattr(owner, name, timed)

    def _wrap(self, owner: Any, name: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time_ns()
            try:
                return original(*args, **kwargs)
            finally:
                self.ns += time.thread_time_ns() - started

        self._undo.append((owner, name, original))
        setattr(owner, name, timed)

    def __enter__(self) -> Attributed:
        from autonomic.engine import hooks
        from autonomic.governance.runaway.gate import RunawayGate
        from autonomic.governance.runaway.model_budget import ModelBudget

        self._wrap_async(RunawayGate, "check")
        self._wrap_async(ModelBudget, "check")
        self._wrap(hooks, "screen_tool_output")
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)


async def attributed_us(url: str, runs: int, steps: int) -> float:
    """Microseconds of thread CPU per step inside the guards' entry points (mode ``on``)."""
    definition, model = agent(steps, None)
    store = build_store(url)
    await store.migrate()
    engine = Engine(store, AgentRegistry([definition]), lambda _: model, runaway=runaway("on"))
    await engine.run(definition, "warm up")
    with Attributed() as spent:
        for _ in range(runs):
            final = await engine.run(definition, "reconcile")
            assert final.status is RunStatus.COMPLETED, final.status_reason
    await store.close()
    return spent.ns / 1000 / (runs * steps)


async def gate_check_ms(url: str, steps: int, n: int = 2000) -> tuple[float, float]:
    """P50 and P99 of ``RunawayGate.check`` on the last step of a finished run (in memory)."""
    definition, model = agent(steps, None)
    store = build_store(url)
    await store.migrate()
    engine = Engine(store, AgentRegistry([definition]), lambda _: model)
    run = await engine.run(definition, "go")
    state = fold(run.id, await store.load_journal(run.id))
    await store.close()
    gate = Runaway().gate()
    [tool] = [t for t in definition.tools if t.name == "post_entry"]
    times = []
    for i in range(n):
        action = ProposedAction.tool_call(
            run, state, tool, {"account": "1234", "amount": i}, call_id="c", step=999
        )
        start = time.thread_time()
        await gate.check(action)
        times.append((time.thread_time() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--histories", default="10,500,2000", help="tool steps per run")
    parser.add_argument("--total", type=int, default=2000, help="steps measured per mode")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    histories = [int(h) for h in args.histories.split(",")]
    modes = ("off", "on", "on + budgets")
    results: dict[tuple[str, int], list[float]] = {(m, h): [] for m in modes for h in histories}
    spent: dict[int, list[float]] = {h: [] for h in histories}
    with tempfile.TemporaryDirectory() as tmp:

        def url() -> str:
            return f"sqlite:///{tmp}/{uuid.uuid4().hex}.db?synchronous=normal"

        for _ in range(args.rounds):
            for steps in histories:
                runs = max(1, args.total // steps)
                for mode in modes:
                    ms = asyncio.run(per_step(url(), mode, runs, steps))
                    results[(mode, steps)].append(ms)
                spent[steps].append(asyncio.run(attributed_us(url(), runs, steps)))
        p50, p99 = asyncio.run(gate_check_ms(url(), 50))
    print(
        "| mode | history (tool steps per run) | CPU ms per step | ratio to off | added CPU µs per step |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for steps in histories:
        base = statistics.median(results[("off", steps)])
        for mode in modes:
            ms = statistics.median(results[(mode, steps)])
            print(f"| {mode} | {steps} | {ms:.3f} | x{ms / base:.2f} | +{(ms - base) * 1000:.0f} |")
    print(
        f"| RunawayGate.check alone (CPU), 50-step history | | P50 {p50:.3f} / P99 {p99:.3f} | | |"
    )
    print()
    print("| history (tool steps per run) | guards' own CPU per step, attributed (µs) |")
    print("| ---: | ---: |")
    for steps in histories:
        print(f"| {steps} | {statistics.median(spent[steps]):.0f} |")


if __name__ == "__main__":
    main()
