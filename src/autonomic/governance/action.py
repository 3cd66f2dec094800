"""What governance decides about: a ``ProposedAction`` is what a run is about to do.

The engine builds one between "fold the journal" and "record the intent" - before each model call
(with the call's token and cost estimate) and before each tool call or delegation the model
proposed - and asks the gates (``autonomic.governance.gate``). Everything a check needs is in the
action: what it is, who proposes it, its validated arguments, where its inputs came from
(provenance), and - when the engine proposes it inside a run - the run, its folded state and the
tool's contract, which the risk policy, workflows and breakers read. Checks do no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from autonomic.core.entries import EMPTY
from autonomic.governance.decision import Risk
from autonomic.governance.provenance import Provenance

if TYPE_CHECKING:
    from autonomic.core.run import Run
    from autonomic.core.state import RunState
    from autonomic.tools.contract import Tool


class ActionKind(enum.StrEnum):
    MODEL_CALL = "model_call"
    """Ask the model for the next turn; budgets apply (turns, tokens, cost, wall clock)."""
    TOOL_CALL = "tool_call"
    """Run a tool the model proposed; policy, workflow, breakers, loops, per-tool budgets and
    taint apply."""
    DELEGATE = "delegate"
    """Hand a subtask to another agent; delegation depth, cycles and ping-pong apply."""


class Estimate(NamedTuple):
    """What the action is expected to consume (plain numbers; the gateway prices them exactly)."""

    tokens: int = 0
    cost: float = 0.0


@dataclass(frozen=True, slots=True)
class Hop:
    """One link of a delegation chain: which agent was asked to do what."""

    agent: str
    subject: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"agent": self.agent, "subject": self.subject}


class ProposedAction(NamedTuple):
    """One action a run is about to take (immutable: a check reads it, never changes it).

    Args:
        kind: model call, tool call or delegation.
        agent: the agent proposing it.
        tool: the tool's name (tool calls).
        arguments: the validated arguments (tool calls).
        thought: the model's reasoning that led to the action, as recorded in the timeline.
        plan: the plan text, only on the step where the model issued or revised its plan.
        target: the agent asked to do the work (delegations).
        subject: what the delegation is about (delegations).
        chain: the delegation chain from the root run to this agent, root first.
        tenant: whose budgets and policies apply.
        provenance: labels of the untrusted content that entered the context since the last action.
        risk: the risk tier the action has so far (an earlier gate's classification; LOW until one
            classifies it).
        read_only: the tool changes nothing (the agent says so): reads may repeat more (polling).
        estimate: tokens and cost the action is expected to consume.
        now: the engine's clock (seconds since the epoch), for the wall-clock budget.
        run: the run, when the engine proposes the action inside one.
        state: the run's state folded from its journal, likewise.
        contract: the tool's contract (data class, reversibility, cost, breaker...), likewise.
        call_id: the model's id for the call (what the decision and approval are keyed by).
        step: the journal seq the decision entry gets: the step an approval is bound to.
        expected: the consequential tools the agent declared it expects to call
            (``Agent(expected_actions=...)``), ``None`` when it declared none.
        contracts: the agent's tool contracts by name (what their outputs' trust is read from).
    """

    kind: ActionKind
    agent: str
    tool: str = ""
    arguments: Mapping[str, Any] = EMPTY
    thought: str = ""
    plan: str | None = None
    target: str | None = None
    subject: str = ""
    chain: tuple[Hop, ...] = ()
    tenant: str = "default"
    provenance: tuple[Provenance, ...] = ()
    risk: Risk = Risk.LOW
    read_only: bool = False
    estimate: Estimate = Estimate()
    now: float = 0.0
    run: Run | None = None
    state: RunState | None = None
    contract: Tool | None = None
    call_id: str = ""
    step: int = 0
    expected: frozenset[str] | None = None
    contracts: Mapping[str, Tool] = EMPTY

    @staticmethod
    def tool_call(
        run: Run,
        state: RunState,
        contract: Tool,
        arguments: Mapping[str, Any],
        *,
        call_id: str = "",
        step: int = 0,
        thought: str = "",
        provenance: tuple[Provenance, ...] = (),
        read_only: bool = False,
        expected: frozenset[str] | None = None,
        contracts: Mapping[str, Tool] = EMPTY,
    ) -> ProposedAction:
        """A tool call proposed inside ``run``: the action the engine's gates see."""
        return ProposedAction(
            ActionKind.TOOL_CALL,
            agent=run.agent,
            tool=contract.name,
            arguments=arguments,
            thought=thought,
            tenant=run.tenant,
            provenance=provenance,
            read_only=read_only,
            estimate=Estimate(cost=contract.cost_estimate),
            # ``now`` stays unset: the wall-clock budget is checked before each model call
            run=run,
            state=state,
            contract=contract,
            call_id=call_id,
            step=step,
            expected=expected,
            contracts=contracts,
        )

    @property
    def tainted(self) -> bool:
        """Some content that led to this action was flagged by the injection screen."""
        return any(p.tainted for p in self.provenance)

    @property
    def workflow_state(self) -> str | None:
        return self.state.workflow if self.state is not None else None

    def in_run(self) -> tuple[Run, RunState, Tool]:
        """The run, its state and the tool's contract: what run-level gates read. Raises
        ``ValueError`` for an action proposed outside a run (a library call to the guards)."""
        if self.run is None or self.state is None or self.contract is None:
            raise ValueError(f"{self.kind} {self.tool!r} was not proposed inside a run")
        return self.run, self.state, self.contract

    def context(self) -> dict[str, Any]:
        """The names rule expressions read (``args.x``, ``tool.data_class``, ``calls.t`` ...)."""
        run, state, contract = self.in_run()
        return {
            "args": dict(self.arguments),
            "tool": contract.metadata(),
            "tenant": self.tenant,
            "state": state.workflow,
            "calls": dict(state.calls),
            "outputs": dict(state.outputs),
            "turns": state.turns,
            "metadata": dict(run.metadata),
        }
