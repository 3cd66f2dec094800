"""Coordinator test kit: a graph of subtasks over worker agents whose one tool writes to a shared
ledger, worker processes to drive it, and the checks the crash tests make.

``python -m autonomic.testing.coordination --db URL --ledger PATH --until RUN`` is one worker
process of the fleet: it drives runs of the kit's agents until run ``RUN`` has ended (or
``--deadline`` seconds pass), optionally SIGKILLing itself at a fault point (``--crash
point:count``). The ledger is the outside world the subtasks change: a JSON-lines file every
process appends to under an exclusive lock, that - like any system an idempotent tool calls -
applies a write once per idempotency key and counts the repeats it refused. "Every subtask's
effect exactly once" is then a statement about the ledger alone.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.bootstrap import build_store
from autonomic.core.coordination import Coordination, OnFailure
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.delegation import child_run_id
from autonomic.engine.executor import Engine
from autonomic.engine.faults import CrashAt, Faults, NoFaults
from autonomic.engine.worker import Worker
from autonomic.errors import ModelError
from autonomic.governance.runaway.gate import Runaway
from autonomic.ports.store import Store
from autonomic.tools.capability import Capability
from autonomic.tools.contract import ToolContext, tool

STEP = "work.step"
"""The capability every subtask of the kit's graph asks for."""
UNDO = "work.undo"
"""The capability that undoes a ``work.step`` (for the compensation tests)."""
HANDS = ("hand-a", "hand-b", "hand-c")
"""The worker agents declaring ``work.step``."""

_N = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def layered_graph(layers: int = 4, width: int = 5) -> dict[str, Any]:
    """A graph of ``layers * width`` subtasks: each node of a layer waits for two of the layer
    before (its own column and the next), so the width runs in parallel and the layers in order."""
    nodes: list[dict[str, Any]] = []
    for layer in range(layers):
        for i in range(width):
            after = (
                sorted({f"s{layer - 1}_{i}", f"s{layer - 1}_{(i + 1) % width}"}) if layer else []
            )
            nodes.append(
                {
                    "id": f"s{layer}_{i}",
                    "uses": STEP,
                    "inputs": {"n": layer * width + i},
                    "after": after,
                }
            )
    return {"nodes": nodes}


# -- the ledger -----------------------------------------------------------------------------------


class Ledger:
    """The outside world: writes applied once per key (see the module docstring)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def write(self, key: str, record: dict[str, Any]) -> bool:
        """Apply ``record`` under ``key`` unless a write with that key was applied; whether it
        was applied now."""
        with open(self.path, "a+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            seen = {json.loads(line).get("key") for line in f if line.strip()}
            applied = key not in seen
            line = {**record, "key": key} if applied else {"repeat": key}
            f.seek(0, os.SEEK_END)
            f.write(json.dumps(line) + "\n")
            f.flush()
            return applied

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def repeats(self) -> int:
        """Writes refused because their key had been applied (a replayed idempotent call)."""
        return sum(1 for r in self.records() if "repeat" in r)

    def applied(self, kind: str = "do") -> list[int]:
        """The subtask numbers whose ``kind`` write was applied, in order."""
        return [int(r["n"]) for r in self.records() if r.get("kind") == kind and "n" in r]


# -- the agents -----------------------------------------------------------------------------------


def _task(messages: Sequence[Message]) -> Any:
    text = next((m.content for m in messages if m.role is Role.USER), "") or ""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _seen(messages: Sequence[Message]) -> list[Any]:
    out = []
    for m in messages:
        if m.role is Role.TOOL:
            try:
                out.append(json.loads(m.content or ""))
            except json.JSONDecodeError:
                out.append(m.content)
    return out


def hand_policy(
    tool_name: str,
    *,
    garbage: bool = False,
    failing: frozenset[int] = frozenset(),
    refuse_while: Path | None = None,
) -> Any:
    """A worker agent's model: call ``tool_name`` with the task's ``n``, then answer ``{"n": n}``
    (``garbage``: answer text that fits no schema; ``failing``: the subtasks whose ``n`` it
    refuses at once, before any effect - the child run fails)."""

    def policy(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
        task = _task(messages)
        n = int(task["n"]) if isinstance(task, dict) and "n" in task else -1
        if n in failing or (refuse_while is not None and refuse_while.exists()):
            raise ModelError(f"subtask {n} is refused by this model", retryable=False)
        if not _seen(messages):
            return ModelResponse(None, (ToolCall("c1", tool_name, json.dumps({"n": n})),))
        if garbage:
            return ModelResponse("I could not be bothered to answer in JSON.")
        return ModelResponse(json.dumps({"n": n}))

    return policy


def kit_agents(
    ledger: Path | str,
    *,
    graph: dict[str, Any] | None = None,
    on_failure: OnFailure | None = None,
    garbage: Sequence[str] = (),
    hands: Sequence[str] = HANDS,
    output_schema: dict[str, Any] | None = None,
    failing: frozenset[int] = frozenset(),
    plan: str | None = None,
    undo_refused_while: Path | None = None,
) -> tuple[list[Agent], dict[str, Any]]:
    """A ``lead`` coordinator following ``graph`` (default: ``layered_graph()``) over
    ``work.step``, the ``hands`` doing it by writing to ``ledger`` (those in ``garbage`` answer
    garbage), and an ``undoer`` declaring ``work.undo`` (which voids a step in the ledger); with
    their model policies by name for ``resolver``. ``failing``: subtask numbers every hand
    refuses; ``plan``: what the lead's model answers when asked for a graph (``None``: the lead
    does not plan, it follows the template); ``undo_refused_while``: the undoer fails while
    that file exists."""
    book = Ledger(ledger)

    @tool(idempotent=True)
    def effect(n: int, ctx: ToolContext) -> dict[str, Any]:
        """Change the world for subtask ``n`` (once per idempotency key)."""
        book.write(ctx.idempotency_key, {"kind": "do", "n": n, "run": ctx.run_id})
        return {"n": n}

    @tool(idempotent=True)
    def void(n: int, ctx: ToolContext) -> dict[str, Any]:
        """Undo subtask ``n``'s change (once per idempotency key)."""
        book.write(ctx.idempotency_key, {"kind": "undo", "n": n, "run": ctx.run_id})
        return {"n": n}

    step = Capability(
        STEP,
        input_schema=_N,
        output_schema=_N,
        cost=0.001,
        latency=0.01,
        compensation=UNDO,
        description="do one step of the work",
    )
    undo = Capability(UNDO, input_schema=_N, output_schema=_N, description="undo one step")
    coordination = Coordination(
        template=graph if graph is not None else layered_graph(),
        plan=plan is not None,
        on_failure=on_failure if on_failure is not None else OnFailure(),
        output_schema=output_schema,
    )
    lead = Agent(
        "lead",
        "coordinate the work",
        model="fn:lead",
        coordination=coordination,
        delegates_to=[STEP],
        max_turns=5,
    )
    agents = [lead]
    answer = plan or "{}"
    policies: dict[str, Any] = {"lead": lambda m, t: ModelResponse(answer)}
    for name in hands:
        agents.append(
            Agent(
                name,
                "do the step",
                tools=(effect,),
                model=f"fn:{name}",
                capabilities=[step],
            )
        )
        policies[name] = hand_policy("effect", garbage=name in garbage, failing=failing)
    agents.append(
        Agent("undoer", "undo the step", tools=(void,), model="fn:undoer", capabilities=[undo])
    )
    policies["undoer"] = hand_policy("void", refuse_while=undo_refused_while)
    return agents, policies


def kit_engine(
    store: Store,
    ledger: Path | str,
    *,
    faults: Faults | None = None,
    lease_ttl: float = 2.0,
    **kw: Any,
) -> Engine:
    agents, policies = kit_agents(ledger, **kw)
    return Engine(
        store,
        AgentRegistry(agents),
        lambda spec: FunctionModel(policies[spec.partition(":")[2]], name=spec),
        runaway=Runaway(enabled=False),
        lease_ttl=lease_ttl,
        faults=faults or NoFaults(),
    )


# -- the checks -----------------------------------------------------------------------------------


async def orphans(store: Store, parent_id: str) -> list[str]:
    """Problems with a coordinator's children: a child no hand-off of the parent's journal
    names, a hand-off without its child, a child still at work under an ended parent."""
    from autonomic.engine.delegation import handoffs

    parent = await store.get_run(parent_id)
    named = {child_run_id(parent_id, k) for k in handoffs(await store.load_journal(parent_id))}
    children = {c.id: c for c in await store.children(parent_id)}
    problems = [f"child {c} is named by no hand-off" for c in sorted(set(children) - named)]
    problems += [f"hand-off to {c} has no child run" for c in sorted(named - set(children))]
    if parent.status.terminal:
        problems += [
            f"child {c.id} is {c.status.value} under a {parent.status.value} parent"
            for c in children.values()
            if not (c.status.terminal or c.status is RunStatus.SUSPENDED)
        ]
    return problems


# -- a worker process -----------------------------------------------------------------------------


async def _work(db: str, ledger: str, until: str, deadline: float, crash: str | None) -> None:
    store = build_store(db)
    faults: Faults = CrashAt.parse(crash) if crash else NoFaults()
    engine = kit_engine(store, ledger, faults=faults)
    try:
        while time.monotonic() < deadline:
            await Worker(engine, concurrency=4, poll_interval=0.02).run(until_idle=True)
            if (await store.get_run(until)).status.terminal:
                return
            await asyncio.sleep(0.05)  # idle: the runs left are leased by a dead worker
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", required=True)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--until", required=True, help="run id to drive to its end")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds")
    parser.add_argument("--crash", default=None, help="point:count to SIGKILL at")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.deadline
    asyncio.run(_work(args.db, args.ledger, args.until, deadline, args.crash))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
