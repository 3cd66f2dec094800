"""The crash harness's test agent and its side channels.

``CrashKit`` is the agent (a ``PLAN`` of ``keyed_write`` and ``blind_write`` calls, then a final
answer), the deterministic model that follows the plan (``plan_policy``) and the helpers that start
its runs. ``TrialFiles`` names a run's effect sink and model-call log, JSON-lines files written with
one ``O_APPEND`` write per record (``append_jsonl``), so what a killed process did is still there.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autonomic.adapters.model.scripted import FunctionModel, assistant_turn
from autonomic.core.canonical import canonical_json
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec
from autonomic.core.run import Run
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.errors import ModelError
from autonomic.ports.model import Model
from autonomic.ports.store import Store
from autonomic.tools.contract import Tool, ToolContext, tool

KEYED = "keyed_write"
"""The idempotent tool: applies an operation once per idempotency key."""
BLIND = "blind_write"
"""The non-idempotent tool: applies every call."""
AGENT_NAME = "crash-harness"
MODEL_SPEC = "function:crash-harness"


@dataclass(frozen=True, slots=True)
class Step:
    """One tool call of the plan: which tool, which operation (unique in the plan), what value."""

    tool: str
    op: str
    value: int


PLAN: tuple[tuple[Step, ...], ...] = (
    (Step(KEYED, "k1", 3),),
    (Step(BLIND, "b1", 5),),
    (Step(KEYED, "k2", 7), Step(KEYED, "k3", 11)),
    (Step(BLIND, "b2", 13), Step(KEYED, "k4", 17)),
    (Step(KEYED, "k5", 19), Step(BLIND, "b3", 23)),
    (Step(KEYED, "k6", 29),),
    (Step(BLIND, "b4", 31),),
    (Step(KEYED, "k7", 37), Step(KEYED, "k8", 41)),
    (Step(BLIND, "b5", 43), Step(BLIND, "b6", 47)),
)
"""The default plan: 14 tool steps in 9 turns (one tool call per turn, or two, mixed both ways,
and two non-idempotent calls in one turn, whose first result rides with the second's intent),
then a final answer. Operations are unique so a duplicated effect shows whatever key it used."""


# -- files ---------------------------------------------------------------------------------------


def append_jsonl(path: Path, *records: dict[str, Any]) -> None:
    """Append ``records`` as JSON lines with one ``write`` on an ``O_APPEND`` descriptor.

    The bytes are in the kernel when this returns, so they survive a SIGKILL of the writer.
    """
    data = "".join(canonical_json(r) + "\n" for r in records).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; ``[]`` if it does not exist yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass(frozen=True, slots=True)
class TrialFiles:
    """Where one run's side channels live: the effect sink and the model-call log."""

    directory: Path

    @property
    def sink(self) -> Path:
        return self.directory / "effects.jsonl"

    @property
    def model_log(self) -> Path:
        return self.directory / "model-calls.jsonl"

    @classmethod
    def create(cls, directory: Path) -> TrialFiles:
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory)

    def effects(self) -> list[dict[str, Any]]:
        """The sink's records: ``event`` is ``attempt`` (every call) or ``applied`` (an effect)."""
        return read_jsonl(self.sink)

    def model_calls(self, run_id: str) -> Counter[int]:
        """How many times the model was asked for each turn of ``run_id``."""
        return Counter(int(r["turn"]) for r in read_jsonl(self.model_log) if r["run_id"] == run_id)


# -- the test agent ------------------------------------------------------------------------------


def _sink_of(ctx: ToolContext) -> Path:
    return Path(str(ctx.metadata["sink"]))


def _record(ctx: ToolContext, tool_name: str, op: str, value: int, event: str) -> dict[str, Any]:
    return {
        "event": event,
        "tool": tool_name,
        "op": op,
        "value": value,
        "key": ctx.idempotency_key,
        "run_id": ctx.run_id,
        "call_id": ctx.call_id,
        "pid": os.getpid(),
    }


async def _keyed_write(op: str, value: int, ctx: ToolContext) -> dict[str, Any]:
    """Apply an operation; safe to repeat: an idempotency key already seen applies nothing."""
    sink = _sink_of(ctx)
    seen = any(
        r["event"] == "applied" and r["key"] == ctx.idempotency_key for r in read_jsonl(sink)
    )
    records = [_record(ctx, KEYED, op, value, "attempt")]
    if not seen:
        records.append(_record(ctx, KEYED, op, value, "applied"))
    append_jsonl(sink, *records)
    return {"op": op, "value": value}


async def _blind_write(op: str, value: int, ctx: ToolContext) -> dict[str, Any]:
    """Apply an operation; every call applies it again (not idempotent)."""
    append_jsonl(
        _sink_of(ctx),
        _record(ctx, BLIND, op, value, "attempt"),
        _record(ctx, BLIND, op, value, "applied"),
    )
    return {"op": op, "value": value}


keyed_write: Tool = tool(name=KEYED, idempotent=True)(_keyed_write)
blind_write: Tool = tool(name=BLIND, idempotent=False)(_blind_write)


def _task_of(messages: Sequence[Message]) -> dict[str, Any]:
    for message in messages:
        if message.role is Role.USER and message.content:
            task: dict[str, Any] = json.loads(message.content)
            return task
    raise ModelError("the crash harness model found no task in the conversation")


def plan_policy(
    plan: Sequence[Sequence[Step]],
) -> Callable[[Sequence[Message], Sequence[ToolSpec]], ModelResponse]:
    """A stateless model policy: the turn comes from the conversation, the calls from ``plan``.

    Every call is logged (run id, turn) to the ``model_log`` named in the task.
    """

    def decide(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
        task = _task_of(messages)
        turn = assistant_turn(messages) + 1
        append_jsonl(
            Path(task["model_log"]), {"run_id": task["run_id"], "turn": turn, "pid": os.getpid()}
        )
        if turn <= len(plan):
            calls = tuple(
                ToolCall(
                    id=f"call_{turn}_{i}",
                    name=step.tool,
                    arguments=canonical_json({"op": step.op, "value": step.value}),
                )
                for i, step in enumerate(plan[turn - 1], start=1)
            )
            return ModelResponse(content=None, tool_calls=calls)
        if turn == len(plan) + 1:
            values = [_observed_value(m) for m in messages if m.role is Role.TOOL]
            return ModelResponse(
                content=f"applied {len(values)} operations, total {sum(values)}", tool_calls=()
            )
        raise ModelError(f"the plan has {len(plan) + 1} turns and turn {turn} was asked for")

    return decide


def _observed_value(message: Message) -> int:
    try:
        output = json.loads(message.content or "")
    except json.JSONDecodeError:
        return 0
    return int(output.get("value", 0)) if isinstance(output, dict) else 0


@dataclass(frozen=True)
class CrashKit:
    """The test agent, its model and helpers to start and drive its runs."""

    plan: tuple[tuple[Step, ...], ...] = PLAN
    agent: Agent = field(init=False)
    model: Model = field(init=False)

    def __post_init__(self) -> None:
        agent = Agent(
            name=AGENT_NAME,
            instructions="Apply every operation of the plan, then report the total.",
            tools=(keyed_write, blind_write),
            model=MODEL_SPEC,
            max_turns=len(self.plan) + 3,
        )
        object.__setattr__(self, "agent", agent)
        object.__setattr__(self, "model", FunctionModel(plan_policy(self.plan), name=MODEL_SPEC))

    @property
    def steps(self) -> list[Step]:
        """The plan's tool steps in execution order."""
        return [step for turn in self.plan for step in turn]

    def resolve(self, spec: str) -> Model:
        return self.model

    def engine(self, store: Store, **options: Any) -> Engine:
        """An ``Engine`` on ``store`` that knows the test agent (``options`` go to ``Engine``),
        with the tracing and metrics the environment turns on (``build_telemetry``), so the
        trials can prove they still hold with both on."""
        if "hooks" not in options:
            from autonomic.bootstrap import build_telemetry

            options["hooks"] = build_telemetry()
        return Engine(store, AgentRegistry([self.agent]), self.resolve, **options)

    async def start(self, engine: Engine, run_id: str, files: TrialFiles) -> Run:
        """Create the run ``run_id``, wired to ``files``."""
        task = {"goal": "apply the plan", "run_id": run_id, "model_log": str(files.model_log)}
        return await engine.start(
            AGENT_NAME, task, run_id=run_id, metadata={"sink": str(files.sink)}
        )
