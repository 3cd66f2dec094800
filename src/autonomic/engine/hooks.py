"""The capabilities the engine attaches to the step protocol's hooks.

Each is small, because governance decides and the protocol orders; a hook only connects the two:

* ``BudgetHook`` - before each model call, the run's and the tenant's budgets
  (``governance.runaway.model_budget``): a call that would pass one suspends the run *before* it
  is made; after the call, the tenant ledger's reservation is settled to what it really used.
* ``CompressionHook`` - before each model call, a model that can compress (``ManagedModel``)
  replaces a conversation near its window by a shorter one, journaled as a ``summary`` entry.
* ``CircuitHook`` - a new run of an agent (or workflow) whose circuit is open is suspended before
  its first step; each tool call runs inside its tool's breaker (``governance.circuits``).
* ``ScreeningHook`` - every tool result is screened for injected instructions before it is
  recorded and read by the model (``governance.injection``).
* ``CommitCallback`` - a function told about every committed entry (the CLI's live view).

The planning phase is a hook too (``engine/planning.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from autonomic.core.entries import ModelTurn, ToolResult
from autonomic.core.journal import Entry
from autonomic.core.messages import Message, ToolCall, ToolSpec
from autonomic.core.run import RunStatus
from autonomic.engine.session import RunSession
from autonomic.engine.step import Effect, Hook, StepProtocol
from autonomic.errors import ModelError
from autonomic.governance.action import Estimate, ProposedAction
from autonomic.governance.circuits import Circuits, refusal
from autonomic.governance.decision import Decision
from autonomic.governance.injection import screen_tool_output
from autonomic.governance.runaway.model_budget import ModelBudget
from autonomic.ports.injection_classifier import InjectionClassifier
from autonomic.ports.model import ManagedModel
from autonomic.tools.contract import Tool


async def suspend_for_budget(
    step: StepProtocol, decision: Decision, action: ProposedAction, *, call: str = ""
) -> None:
    """Suspend the run because the model call ``action`` would pass a budget: the findings and the
    call's estimate go in the transition (``call`` names a call other than a turn)."""
    await step.stop(
        RunStatus.SUSPENDED,
        f"budget: {decision.explanation}" + (f" ({call})" if call else ""),
        guard=decision.findings_record(),
        estimate={"tokens": action.estimate.tokens, "cost": action.estimate.cost},
    )


def exact_estimate(
    model: ManagedModel,
) -> Callable[[Sequence[Message], Sequence[ToolSpec]], Estimate]:
    """``ModelBudget.estimate`` for a model that counts exactly."""

    def estimate(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> Estimate:
        found = model.estimate_call(messages, tools)
        return Estimate(tokens=found.tokens, cost=found.cost)

    return estimate


class BudgetHook(Hook):
    """Budgets before each model call; the tenant ledger settled after it."""

    def __init__(self, budget: ModelBudget) -> None:
        self.budget = budget
        self._reserved: ProposedAction | None = None

    async def before_model_call(self, step: StepProtocol) -> bool:
        session = step.session
        decision, action = await self.budget.check(
            agent=step.agent.name,
            tenant=session.run.tenant,
            state=session.state,
            tools=step.specs,
            now=session.now(),
        )
        if not decision.allowed:
            await suspend_for_budget(step, decision, action)
            return False
        self._reserved = action
        return True

    async def after_model_call(self, step: StepProtocol, turn: ModelTurn) -> None:
        reserved, self._reserved = self._reserved, None
        if reserved is not None:
            usage = turn.call.usage
            await self.budget.settle(
                reserved, tokens=usage.input_tokens + usage.output_tokens, cost=turn.call.cost
            )


class CompressionHook(Hook):
    """At 75 % of the window, the conversation is compressed by the model that knows its window;
    the ``summary`` entry carries the new messages, so a replay folds the same prompt."""

    def __init__(self, model: ManagedModel) -> None:
        self.model = model

    async def before_model_call(self, step: StepProtocol) -> bool:
        try:
            summary = await self.model.compress(step.state.messages, step.specs)
        except ModelError as exc:
            target = RunStatus.SUSPENDED if exc.retryable else RunStatus.FAILED
            await step.stop(target, f"context compression: model error: {exc}", error=exc.to_dict())
            return False
        if summary is not None:
            step.session.stage(summary)
        return True


class CircuitHook(Hook):
    """The agent's and workflow's circuits around a new run (each tool's: ``ToolCircuitHook``)."""

    def __init__(self, circuits: Circuits) -> None:
        self.circuits = circuits

    async def around_run(self, step: StepProtocol, drive: Callable[[], Awaitable[None]]) -> None:
        state = step.state
        if state.turns > 0 or state.calls:  # resumed halfway: finished whatever the agent's health
            await drive()
            return
        agent = step.agent
        workflow = agent.workflow.name if agent.workflow is not None else None

        async def body() -> RunStatus:
            await drive()
            return step.state.status

        refused = await self.circuits.guard_run(agent.name, workflow, body)
        if refused is not None:
            reason, evidence = refusal(refused)
            await step.stop(RunStatus.SUSPENDED, reason, **evidence)


class ToolCircuitHook(Hook):
    """Each tool's circuit around its calls - attached only for an agent with a tool that has a
    breaker (``Tool.breaker``): wrapping an effect costs a step coroutines and closures even when
    the tool has no breaker to consult."""

    def __init__(self, circuits: Circuits) -> None:
        self.circuits = circuits

    async def around_tool_effect(
        self, step: StepProtocol, tool: Tool, call: ToolCall, effect: Effect
    ) -> tuple[ToolResult, bool]:
        return await self.circuits.call(tool, call.id, effect)


class ScreeningHook(Hook):
    """The injection screen on every tool result, before the model reads it (the screen's block
    is journaled with the result, so a replay reads what the run read). With a ``classifier``
    (``autonomic.ports.injection_classifier``), a score at or above ``threshold`` taints the
    result too; the score is journaled in the block."""

    def __init__(
        self, classifier: InjectionClassifier | None = None, *, threshold: float = 0.9
    ) -> None:
        self.classifier = classifier
        self.threshold = threshold

    def after_tool_result(self, step: StepProtocol, result: ToolResult) -> ToolResult:
        text = result.observation()
        block = screen_tool_output(text, result.tool)
        if self.classifier is not None and result.ok:
            try:
                score = float(self.classifier.score(text[:100_000]))
            except Exception:  # a failing classifier is a missing signal, not a failed run
                score = None
            if score is not None and score >= self.threshold:
                block = dict(block or {"score": 0.0, "flags": [], "provenance": {}})
                block["tainted"] = True
                block["classifier"] = {"name": self.classifier.name, "score": round(score, 3)}
                block["provenance"] = {
                    "source": "tool_output",
                    "name": result.tool,
                    "tainted": True,
                }
        return result if block is None else result._replace(screen=block)


class CommitCallback(Hook):
    """Tell ``callback`` about every committed entry (``Engine(on_commit=...)``)."""

    def __init__(self, callback: Callable[[Entry], None]) -> None:
        self.callback = callback

    def on_commit(self, session: RunSession, entries: Sequence[Entry]) -> None:
        for entry in entries:
            self.callback(entry)
