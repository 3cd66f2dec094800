"""Replay a recorded run against the current code, and fail at the first divergence.

A recorded run (a ``Case``: ``autonomic export RUN > case.json``, or a run read from the store)
is driven again from its task by the current agent definition and the current engine, on a
throw-away SQLite database (the original run, and its store, are never written), with:

* every model answer served from the journal, in order (``ReplayModel``: no model is called;
  a planner's answer too);
* every tool result served from the journal (``ReplayHook`` wraps each tool's effect and never
  calls it: no tool runs, nothing outside is touched);
* the humans' acts replayed where the recording has them: approvals given or refused, a
  suspended run reopened (with the budget or metadata the operator gave).

What the current code decides is then compared with what the recorded run did, as two *paths*
(``path_of``): the plan, the model's turns, each gate decision, each tool call (tool and
arguments), each result (ok, failed, refused), each workflow move and each change of status out
of RUNNING. The first step where they differ is the divergence - another tool, other arguments,
another order, another gate decision, another outcome - shown side by side (``Divergence``).
Not compared: timings, costs, ids, tool versions (shown, not compared), the wording of reasons.

The input check (``Agent.check``) is not run: it looks at systems the replay does not touch.
Use it from pytest with ``assert_replays(case_path, agent)``; from the shell, ``autonomic
replay RUN|CASE.json [--agent module:attr]``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autonomic.bootstrap import build_store
from autonomic.core.canonical import canonical_json
from autonomic.core.case import Case, mask
from autonomic.core.entries import (
    ApprovalEvent,
    Body,
    DecisionRecord,
    ModelTurn,
    PlanOutcome,
    RunStarted,
    ToolIntent,
    ToolResult,
    Transition,
    WorkflowMove,
)
from autonomic.core.messages import Message, ModelResponse, ToolSpec
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.engine.step import Effect, Hook, StepProtocol
from autonomic.errors import InvalidInput, ModelError
from autonomic.governance.approvals import ApprovalDesk
from autonomic.governance.gate import Gate
from autonomic.tools.contract import Tool

REPLAY_MODEL = "replay:"
"""The model spec a replayed run records (the model answers come from the recording)."""
CONTEXT = 3
"""Steps shown before the divergence."""
_CELL = 58


@dataclass(frozen=True, slots=True)
class PathStep:
    """One step of a run's execution path: what is compared, and how it reads."""

    key: tuple[Any, ...]
    text: str


def path_of(bodies: Sequence[Body]) -> list[PathStep]:
    """A run's execution path, from its journal: what a replay must reproduce."""
    steps: list[PathStep] = []
    open_intents: dict[str, int] = {}
    for body in bodies:
        if isinstance(body, PlanOutcome) and body.steps is not None:
            steps.append(PathStep(("plan", body.steps), f"plan: {'; '.join(body.steps)}"))
        elif isinstance(body, ModelTurn):
            calls = ", ".join(c.name for c in body.tool_calls) or "no tool call"
            steps.append(PathStep(("model", body.turn), f"model turn {body.turn}: {calls}"))
        elif isinstance(body, DecisionRecord):
            key = ("decision", body.tool, body.verdict)
            steps.append(PathStep(key, f"decision {body.tool}: {body.verdict} ({body.gate})"))
        elif isinstance(body, ToolIntent):
            args = canonical_json(mask(body.arguments))
            if body.call_id in open_intents:  # a new attempt of a call settled "not executed"
                del steps[open_intents.pop(body.call_id)]
            open_intents[body.call_id] = len(steps)
            steps.append(
                PathStep(("call", body.tool, args), f"call {body.tool}@{body.version} {args}")
            )
        elif isinstance(body, ToolResult):
            open_intents.pop(body.call_id, None)
            if body.refused:
                outcome = "refused"
            elif body.ok:
                outcome = "ok"
            else:
                outcome = f"failed {(body.error or {}).get('code', '')}".rstrip()
            steps.append(PathStep(("result", body.tool, outcome), f"result {body.tool}: {outcome}"))
        elif isinstance(body, WorkflowMove):
            move = ("workflow", body.source, body.target)
            steps.append(PathStep(move, f"workflow {body.source} -> {body.target}"))
        elif isinstance(body, Transition):
            if body.target == RunStatus.RUNNING.value or body.in_doubt is not None:
                continue  # claims, reopenings and crashes are not the agent's path
            output = canonical_json(body.output) if body.target == "COMPLETED" else None
            text = f"status {body.target}: {body.reason}"
            steps.append(PathStep(("status", body.target, output), text))
    return steps


@dataclass(frozen=True, slots=True)
class Divergence:
    """Where the replayed path first left the recorded one (``index`` into both paths)."""

    index: int
    recorded: list[PathStep]
    replayed: list[PathStep]

    def render(self) -> str:
        """Both paths side by side around the divergence, the diverging row marked ``>``."""

        def cell(steps: list[PathStep], i: int) -> str:
            if i >= len(steps):
                return "(nothing: the run ended)" if i == len(steps) else ""
            text = steps[i].text
            return text if len(text) <= _CELL else text[: _CELL - 1] + "…"

        lines = [f"  {'step':>4}  {'recorded':<{_CELL}}  replayed"]
        end = min(max(len(self.recorded), len(self.replayed)), self.index + 2)
        for i in range(max(0, self.index - CONTEXT), end):
            mark = ">" if i == self.index else " "
            left, right = cell(self.recorded, i), cell(self.replayed, i)
            lines.append(f"{mark} {i + 1:>4}  {left:<{_CELL}}  {right}".rstrip())
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What a replay found: the divergence, or ``None`` when the run replayed clean."""

    run_id: str
    agent: str
    recorded_version: str
    replayed_version: str
    recorded: list[PathStep]
    replayed: list[PathStep]
    divergence: Divergence | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.divergence is None

    def render(self) -> str:
        head = (
            f"replay of {self.run_id} ({self.agent}@{self.recorded_version} recorded, "
            f"@{self.replayed_version} replayed)"
        )
        if self.divergence is None:
            return f"{head}: {len(self.recorded)} steps, no divergence ({self.seconds:.3f}s)"
        i = self.divergence.index
        return (
            f"{head}: DIVERGED at step {i + 1} of {len(self.recorded)}\n" + self.divergence.render()
        )


class ReplayModel:
    """Serves a recording's model answers in order; a planner's call gets the recorded plan."""

    def __init__(self, turns: Sequence[ModelTurn], plans: Sequence[PlanOutcome]) -> None:
        self._turns = deque(turns)
        self._plans = deque(p for p in plans if p.steps is not None)
        self.asked = 0

    @property
    def name(self) -> str:
        return REPLAY_MODEL

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> ModelResponse:
        self.asked += 1
        if not tools and self._plans:
            plan = self._plans.popleft()
            return ModelResponse(content=canonical_json({"steps": list(plan.steps or ())}))
        if not self._turns:
            raise ModelError(
                "replay: the recording has no more model answers (the replayed run asked the "
                "model once more than the recorded one did)",
                retryable=False,
            )
        turn = self._turns.popleft()
        return ModelResponse(
            content=turn.content,
            tool_calls=turn.tool_calls,
            model=turn.model or REPLAY_MODEL,
            usage=turn.call.usage,
            finish_reason=turn.finish_reason,
        )


class ReplayHook(Hook):
    """Serves each tool call's recorded result instead of running the tool: by call id, in
    the order the recording has them. A call the recording does not have fails with
    ``replay_unrecorded`` (the path shows where)."""

    def __init__(self, results: Sequence[ToolResult]) -> None:
        self._results: dict[str, deque[ToolResult]] = {}
        for result in results:
            self._results.setdefault(result.call_id, deque()).append(result)
        self.served = 0

    async def around_tool_effect(
        self, step: StepProtocol, tool: Tool, call: Any, effect: Effect
    ) -> tuple[ToolResult, bool]:
        queue = self._results.get(call.id)
        if not queue or queue[0].tool != tool.name:
            return (
                ToolResult.failed(
                    call.id,
                    tool.name,
                    "replay_unrecorded",
                    f"replay: the recording has no result of a {tool.name} call {call.id}",
                ),
                False,
            )
        self.served += 1
        recorded = queue.popleft()
        return recorded._replace(screen=None, settled=None, circuit=None), False


def _acts(bodies: Sequence[Body]) -> deque[Body]:
    """The humans' acts a replay repeats when its run stops for them: approval votes and
    decisions, and operators reopening a suspended run."""
    acts: deque[Body] = deque()
    for body in bodies:
        if (isinstance(body, ApprovalEvent) and body.event != "escalated") or (
            isinstance(body, Transition)
            and body.source == RunStatus.SUSPENDED.value
            and body.target == RunStatus.RUNNING.value
        ):
            acts.append(body)
    return acts


async def _apply(engine: Engine, run_id: str, act: Body, voted: set[tuple[str, str]]) -> bool:
    """Repeat one recorded act on the replayed run; ``False`` if it does not fit its state."""
    run = await engine.store.get_run(run_id)
    if isinstance(act, Transition):
        if run.status is not RunStatus.SUSPENDED:
            return False
        await engine.reopen(
            run_id, act.reason or "reopened (replay)", budget=act.budget, metadata=act.metadata
        )
        return True
    assert isinstance(act, ApprovalEvent)
    if run.status is not RunStatus.WAITING_FOR_HUMAN:
        return False
    desk = ApprovalDesk(engine.store, clock=engine.clock)
    pending = [a for a in await engine.store.list_approvals(run_id=run_id) if not a.status.final]
    if not pending:
        return False
    approval = pending[0]
    if act.event in ("denied", "expired"):
        by = act.by[-1] if act.by else "replay"
        await desk.deny(approval.id, by=by, reason=act.reason or act.event)
        return True
    for by in act.by or ("replay",):
        if (approval.id, by) not in voted:
            voted.add((approval.id, by))
            await desk.approve(approval.id, by=by, reason=act.reason or "approved")
    return True


def _for_replay(agent: Agent) -> Agent:
    """The agent as a replay drives it: no input check (the replay touches no system), and
    model specs that the replay answers."""
    planning = agent.planning
    if planning is not None and planning.model is not None:
        planning = dataclasses.replace(planning, model=REPLAY_MODEL + "planner")
    return dataclasses.replace(
        agent, check=None, model=REPLAY_MODEL, planning=planning, version=agent.key[1]
    )


async def replay(
    case: Case,
    agent: Agent,
    *,
    gates: Sequence[Gate] = (),
    workdir: str | Path | None = None,
) -> ReplayReport:
    """Replay ``case`` with ``agent`` (the current definition) and compare the paths.

    ``gates``: the engine's gates beside the agent's own (an operator's ``--policy``)."""
    started_at = time.perf_counter()
    bodies = [e.body for e in case.entries]
    started = bodies[0]
    if not isinstance(started, RunStarted):
        raise InvalidInput(f"case {case.run_id}: the journal does not begin with run.started")
    if agent.name != started.agent:
        raise InvalidInput(
            f"case {case.run_id} is a run of agent {started.agent!r}, not {agent.name!r}",
            hint=f"give the module:attribute of the {started.agent} agent with --agent",
        )
    model = ReplayModel(
        [b for b in bodies if isinstance(b, ModelTurn)],
        [b for b in bodies if isinstance(b, PlanOutcome)],
    )
    served = ReplayHook([b for b in bodies if isinstance(b, ToolResult)])
    replayed_agent = _for_replay(agent)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="autonomic-replay-") as tmp:
        store = build_store(f"sqlite:///{Path(tmp) / 'replay.db'}?synchronous=normal")
        try:
            await store.migrate()
            engine = Engine(
                store,
                AgentRegistry([replayed_agent]),
                lambda _spec: model,
                gates=list(gates),
                hooks=[served],
                plan_cache=None,
                lease_ttl=3600.0,
            )
            run = await engine.run(
                replayed_agent,
                started.task,
                max_turns=started.max_turns,
                tenant=started.tenant,
                metadata=dict(case.run.get("metadata") or {}),
                run_id=case.run_id,
                requester=started.requester,
            )
            acts, voted = _acts(bodies), set[tuple[str, str]]()
            while not run.status.terminal and acts:
                if not await _apply(engine, run.id, acts.popleft(), voted):
                    continue
                current = await store.get_run(run.id)
                if current.status is RunStatus.RUNNING:
                    run = await engine.run_to_end(run.id)
            journal = await store.load_journal(run.id)
            await engine.aclose()
        finally:
            await store.close()
    recorded, again = path_of(bodies), path_of([e.body for e in journal])
    index = next(
        (i for i, (a, b) in enumerate(zip(recorded, again, strict=False)) if a.key != b.key),
        None,
    )
    if index is None and len(recorded) != len(again):
        index = min(len(recorded), len(again))
    return ReplayReport(
        run_id=case.run_id,
        agent=started.agent,
        recorded_version=started.agent_version,
        replayed_version=agent.key[1],
        recorded=recorded,
        replayed=again,
        divergence=Divergence(index, recorded, again) if index is not None else None,
        seconds=time.perf_counter() - started_at,
    )


def replay_sync(case: Case, agent: Agent, **options: Any) -> ReplayReport:
    """``replay`` from synchronous code (a test, a script)."""
    return asyncio.run(replay(case, agent, **options))


def assert_replays(
    case_path: str | Path,
    agent: Agent | Callable[[], Agent] | None = None,
    **options: Any,
) -> ReplayReport:
    """A regression test from a recorded run: replay the case file at ``case_path`` with
    ``agent`` (an ``Agent``, a function that builds one, or ``None``: the agent of that name
    the composition root loads - the demos and ``AUTONOMIC_AGENTS``) and fail with both paths
    side by side at the first divergence. Returns the report when it replays clean::

        from autonomic.testing.replay import assert_replays

        def test_the_refund_run_still_replays():
            assert_replays("tests/cases/refund.json", refund_agent)
    """
    case = Case.load(case_path)
    if agent is None:
        from autonomic.bootstrap import build_agents

        chosen = build_agents().get(str(case.run["agent"]))
    elif isinstance(agent, Agent):
        chosen = agent
    else:
        chosen = agent()
    report = replay_sync(case, chosen, **options)
    if not report.ok:
        raise AssertionError(report.render())
    return report
