"""The seam between the engine and the guards: a ``ProposedAction`` is what is about to happen.

The engine builds one between "fold the journal" and "record the intent" — before each model call
(with the call's token and cost estimate) and before each tool call or delegation the model
proposed — and asks ``Guards.check(action, state)``. Everything a guard needs is in the action or in
the run's ``GuardState``; guards do no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autonomic.governance.decision import RiskTier
from autonomic.governance.provenance import Provenance


class ActionKind(enum.StrEnum):
    MODEL_CALL = "model_call"
    """Ask the model for the next turn; budgets apply (turns, tokens, cost, wall clock)."""
    TOOL_CALL = "tool_call"
    """Run a tool the model proposed; loop detection, per-tool budgets and taint apply."""
    DELEGATE = "delegate"
    """Hand a subtask to another agent; delegation depth, cycles and ping-pong apply."""


@dataclass(frozen=True, slots=True)
class Estimate:
    """What the action is expected to consume, from the gateway's pricing (plain numbers)."""

    tokens: int = 0
    cost: float = 0.0


@dataclass(frozen=True, slots=True)
class Hop:
    """One link of a delegation chain: which agent was asked to do what."""

    agent: str
    subject: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"agent": self.agent, "subject": self.subject}


@dataclass(frozen=True, slots=True)
class ProposedAction:
    """One action the run is about to take.

    Args:
        kind: model call, tool call or delegation.
        agent: the agent proposing it.
        tool: the tool's name (tool calls).
        arguments: the validated arguments (tool calls); canonicalised by the guards.
        thought: the model's reasoning that led to the action, as recorded in the timeline.
        plan: the plan text, only on the step where the model issued or revised its plan.
        target: the agent asked to do the work (delegations).
        subject: what the delegation is about (delegations).
        chain: the delegation chain from the root run to this agent, root first.
        tenant: whose budgets apply.
        provenance: labels of the untrusted content that entered the context since the last action.
        tier: the risk tier the policy classified the action at.
        read_only: the tool changes nothing (contract metadata); reads may repeat more (polling).
        estimate: tokens and cost the action is expected to consume.
        now: the engine's clock (seconds since the epoch), for the wall-clock budget.
    """

    kind: ActionKind
    agent: str
    tool: str = ""
    arguments: Mapping[str, Any] = field(default_factory=dict)
    thought: str = ""
    plan: str | None = None
    target: str | None = None
    subject: str = ""
    chain: tuple[Hop, ...] = ()
    tenant: str = "default"
    provenance: tuple[Provenance, ...] = ()
    tier: RiskTier = RiskTier.LOW
    read_only: bool = False
    estimate: Estimate = field(default_factory=Estimate)
    now: float = 0.0

    @property
    def tainted(self) -> bool:
        """Some content that led to this action was flagged by the injection screen."""
        return any(p.tainted for p in self.provenance)
