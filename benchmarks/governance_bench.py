"""What guarded execution costs: the same workload with and without the pre-action seam.

Workload: the peers' ReAct run of 10 tool steps (fake model, trivial idempotent tool), run side by
side in one invocation on one store:

* ``ungoverned``: no gates (the engine journals no decision);
* ``governed``: a risk policy of 10 YAML rules (one with an expression) that classifies every step
  LOW, so each step adds a journaled ``decision`` entry to the same commit;
* ``workflow``: the governed agent inside a two-state workflow (allow-list + an invariant checked at
  the one transition).

Then the approval path: runs whose one action is MEDIUM, measured from "the run is waiting" to "the
approved action's result is durable": the desk's decision transaction, a claim, the replay, the
execution. Reported per action, with the bare decision (``RiskPolicy.classify``) in microseconds.

Usage: ``.venv/bin/python benchmarks/governance_bench.py --store sqlite|postgres [--runs 200]``;
prints one markdown table row per mode. Ratios are to ``ungoverned`` measured in the same process.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from typing import Any

from autonomic import Agent, AgentRegistry, Engine, FunctionModel, build_store, tool
from autonomic.core.canonical import canonical_json
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec
from autonomic.core.run import RunStatus
from autonomic.core.state import RunState
from autonomic.governance.action import ProposedAction
from autonomic.governance.approvals import ApprovalDesk
from autonomic.governance.policy.risk import parse_policy_text
from autonomic.governance.policy.workflow import Workflow

STEPS = 10
RULES = (
    "\n".join(f"  - {{name: r{i}, tool: other{i}, risk: medium}}" for i in range(9))
    + "\n  - {name: big, tool: add_one, when: 'args.arg > 1000000', risk: medium}\n"
)
POLICY = parse_policy_text("approval: {expires_after: 1h}\nrules:\n" + RULES)
MEDIUM = parse_policy_text("rules:\n  - {name: all, tool: add_one, risk: medium}\n")
FLOW = Workflow.from_text(
    "workflow: w\nstart: first\nstates:\n  first:\n    tools: [add_one]\n    exits:\n"
    "      - {to: rest, when: 'calls.add_one >= 1'}\n  rest:\n    tools: [add_one, add_two]\n"
    "    final: true\ninvariants:\n  - {name: sane, check: 'calls.add_one < 100'}\n"
)


@tool(idempotent=True)
async def add_one(arg: int) -> dict[str, int]:
    """The trivial tool."""
    return {"value": arg + 1}


@tool(idempotent=True)
async def add_two(arg: int) -> dict[str, int]:
    """The tool of the workflow's second state."""
    return {"value": arg + 2}


def fake_model(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    done = sum(1 for m in messages if m.role is Role.TOOL)
    if done < STEPS:
        name = "add_one" if done < 1 or done % 2 else "add_two"
        call = ToolCall(f"c{done + 1}", name, canonical_json({"arg": done + 1}))
        return ModelResponse(content=None, tool_calls=(call,), model="fake")
    return ModelResponse(content=f"done after {done} steps", model="fake")


def one_step_model(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    if any(m.role is Role.TOOL for m in messages):
        return ModelResponse(content="done", model="fake")
    return ModelResponse(
        content=None, tool_calls=(ToolCall("c1", "add_one", '{"arg": 1}'),), model="fake"
    )


MODEL = FunctionModel(fake_model, name="fake")
ONE = FunctionModel(one_step_model, name="one")


def _engine(store: Any, mode: str) -> Engine:
    if mode == "approval":
        agent = Agent(name="b", instructions="", tools=(add_one,), gates=(MEDIUM.risk.gate(),))
        return Engine(store, AgentRegistry([agent]), lambda s: ONE)
    tools = (add_one, add_two)
    gates = () if mode == "ungoverned" else (POLICY.risk.gate(),)
    workflow = FLOW if mode == "workflow" else None
    agent = Agent(
        name="b", instructions="", tools=tools, max_turns=STEPS + 1, gates=gates, workflow=workflow
    )
    return Engine(store, AgentRegistry([agent]), lambda s: MODEL)


async def steps(url: str, mode: str, runs: int) -> float:
    """Milliseconds per tool step."""
    store = build_store(url)
    await store.migrate()
    engine = _engine(store, mode)
    await engine.run("b", "count")
    start = time.perf_counter()
    for _ in range(runs):
        final = await engine.run("b", "count")
        assert final.status is RunStatus.COMPLETED, final.status_reason
    elapsed = time.perf_counter() - start
    await store.close()
    return elapsed * 1000 / (runs * STEPS)


async def approvals(url: str, runs: int) -> float:
    """Milliseconds from 'waiting' to 'approved action durable', per action."""
    store = build_store(url)
    await store.migrate()
    engine = _engine(store, "approval")
    desk = ApprovalDesk(store)
    times: list[float] = []
    for _ in range(runs):
        run = await engine.run("b", "go", requester="r")
        assert run.status is RunStatus.WAITING_FOR_HUMAN
        [approval] = await store.list_approvals(run_id=run.id)
        start = time.perf_counter()
        await desk.approve(approval.id, by="a")
        final = await engine.run_to_end(run.id)
        times.append(time.perf_counter() - start)
        assert final.status is RunStatus.COMPLETED
    await store.close()
    return statistics.median(times) * 1000


def classify_us(n: int = 20_000) -> float:
    from autonomic.core.run import Lease, Run

    run = Run("run_" + "0" * 32, "b", "1", "m", RunStatus.RUNNING, 1, Lease(None, 0, 0), 0, 0)
    action = ProposedAction.tool_call(
        run, RunState(run.id), add_one, {"arg": 5}, call_id="c1", step=3
    )
    start = time.perf_counter()
    for _ in range(n):
        POLICY.risk.classify(action)
    return (time.perf_counter() - start) * 1e6 / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--sqlite-sync",
        choices=("full", "normal"),
        default="full",
        help="normal: no fsync per commit, to see the CPU cost alone",
    )
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="govbench-")
    schemas: list[str] = []

    def fresh() -> str:
        if args.store == "sqlite":
            return f"sqlite:///{tmp}/{uuid.uuid4().hex}.db?synchronous={args.sqlite_sync}"
        import psycopg

        schema = f"b_{uuid.uuid4().hex}"
        with psycopg.connect(args.pg_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        schemas.append(schema)
        return f"{args.pg_url}?options=-csearch_path%3D{schema}"

    results: dict[str, list[float]] = {"ungoverned": [], "governed": [], "workflow": []}
    for _ in range(args.rounds):  # interleaved, so machine noise hits every mode alike
        for mode in results:
            results[mode].append(asyncio.run(steps(fresh(), mode, args.runs)))
    approval_ms = asyncio.run(approvals(fresh(), max(20, args.runs // 4)))
    base = statistics.median(results["ungoverned"])
    label = args.store
    if args.store == "sqlite" and args.sqlite_sync == "normal":
        label += " (no fsync)"
    for mode, values in results.items():
        ms = statistics.median(values)
        print(f"| {label} | {mode} | {ms:.3f} | x{ms / base:.2f} | {(ms - base) * 1000:+.0f} |")
    print(f"| {label} | approval round trip | {approval_ms:.3f} | | |")
    print(f"| - | decision (10 rules, in memory) | {classify_us() / 1000:.4f} | | |")
    if schemas:
        import psycopg

        with psycopg.connect(args.pg_url, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    main()
