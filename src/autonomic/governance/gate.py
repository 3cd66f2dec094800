"""The pre-action seam: every proposed tool call passes an ordered chain of action gates.

"The agent proposes, the guard disposes." Before a tool call executes - before even its intent is
journaled - the engine asks each gate about the ``ProposedAction`` (the tool's contract, the
validated arguments, the run's folded state, tenant and workflow state). A gate answers with a
``Decision``: ``ALLOW``, ``APPROVE`` (a human must approve first), ``BLOCK`` (refused; the model is
told why) or ``SUSPEND`` (refused, and the run stops for a human), each with a human-readable
explanation and evidence - or ``None`` when it has no opinion.

The chain's verdict is the most severe one (``SUSPEND`` > ``BLOCK`` > ``APPROVE`` > ``ALLOW``;
the first gate wins a tie) and is journaled as one ``decision`` entry, committed before any
effect. On resume the journaled decision is replayed, never re-asked: a gate whose rules changed
since cannot flip a decision a human already acted on.

Risk classification (``autonomic.governance.policy.risk``) and workflow allow-lists
(``autonomic.governance.policy.workflow``) are gates; budgets, loop detection and injection taint plug in
the same way.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from autonomic.core.run import Run
from autonomic.core.state import RunState
from autonomic.tools.contract import Tool


class Verdict(enum.StrEnum):
    ALLOW = "allow"
    APPROVE = "needs_approval"
    BLOCK = "blocked"
    SUSPEND = "suspend"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Verdict.ALLOW: 0, Verdict.APPROVE: 1, Verdict.BLOCK: 2, Verdict.SUSPEND: 3}


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    """How an approval for a MEDIUM action is requested: who decides, how many, how long."""

    group: str = "approvers"
    approvers: tuple[str, ...] | None = None
    quorum: int = 1
    expires_after: float = 24 * 3600.0
    escalate_after: float | None = None
    escalation_group: str | None = None
    escalation_approvers: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "approvers": list(self.approvers) if self.approvers is not None else None,
            "quorum": self.quorum,
            "expires_after": self.expires_after,
            "escalate_after": self.escalate_after,
            "escalation_group": self.escalation_group,
            "escalation_approvers": (
                list(self.escalation_approvers) if self.escalation_approvers is not None else None
            ),
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> ApprovalRule:
        def names(value: Any) -> tuple[str, ...] | None:
            return tuple(value) if value is not None else None

        return ApprovalRule(
            group=str(data.get("group", "approvers")),
            approvers=names(data.get("approvers")),
            quorum=int(data.get("quorum", 1)),
            expires_after=float(data.get("expires_after", 24 * 3600.0)),
            escalate_after=data.get("escalate_after"),
            escalation_group=data.get("escalation_group"),
            escalation_approvers=names(data.get("escalation_approvers")),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """A gate's answer about one proposed action."""

    verdict: Verdict
    explanation: str
    gate: str = ""
    risk: str | None = None
    """LOW / MEDIUM / HIGH when the gate classifies risk."""
    evidence: dict[str, Any] = field(default_factory=dict)
    approval: ApprovalRule | None = None
    """For ``APPROVE``: how to ask."""
    workflow_to: str | None = None
    """For a call that moves the workflow: the state it enters once the call is allowed."""


@dataclass(frozen=True, slots=True)
class ProposedAction:
    """What a gate sees: everything deterministic about the call and the run so far."""

    run: Run
    state: RunState
    tool: Tool
    arguments: dict[str, Any]
    call_id: str
    step: int
    """The seq the decision entry gets: the step an approval is bound to."""
    read_only: bool = False
    """The agent declared the tool read-only (``Agent(read_only=...)``): reads may repeat more."""
    risk: str | None = None
    """The risk an earlier gate in the chain gave the action (``low``/``medium``/``high``)."""

    @property
    def tenant(self) -> str:
        return self.run.tenant

    @property
    def workflow_state(self) -> str | None:
        return self.state.workflow

    def context(self) -> dict[str, Any]:
        """The names rule expressions read (``args.x``, ``tool.data_class``, ``calls.t`` ...)."""
        return {
            "args": self.arguments,
            "tool": self.tool.metadata(),
            "tenant": self.tenant,
            "state": self.state.workflow,
            "calls": dict(self.state.calls),
            "outputs": dict(self.state.outputs),
            "turns": self.state.turns,
            "metadata": dict(self.run.metadata),
        }


class Gate(Protocol):
    """One check before an action. Must be deterministic given the action (decisions replay)."""

    name: str

    async def check(self, action: ProposedAction) -> Decision | None: ...


class GateChain:
    """The ordered gates of an engine; ``decide`` folds their answers into one decision."""

    def __init__(self, gates: Sequence[Gate] = ()) -> None:
        self.gates = list(gates)

    def add(self, gate: Gate) -> None:
        self.gates.append(gate)

    async def decide(self, action: ProposedAction, extra: Sequence[Gate] = ()) -> Decision:
        chosen: Decision | None = None
        answers: list[dict[str, Any]] = []
        workflow_to: str | None = None
        risk: str | None = None
        for gate in (*extra, *self.gates):
            answer = await gate.check(action)
            if answer is None:
                continue
            if not answer.gate:
                answer = _with_gate(answer, gate.name)
            answers.append(
                {
                    "gate": answer.gate,
                    "verdict": answer.verdict.value,
                    "explanation": answer.explanation,
                }
            )
            workflow_to = workflow_to or answer.workflow_to
            risk = risk or answer.risk
            if risk is not None and action.risk is None:
                action = replace(action, risk=risk)  # later gates (runaway's taint) see it
            if chosen is None or answer.verdict.severity > chosen.verdict.severity:
                chosen = answer
            if answer.verdict is Verdict.SUSPEND:
                break
        if chosen is None:
            return Decision(Verdict.ALLOW, "no gate objected", gate="default")
        evidence = dict(chosen.evidence)
        if len(answers) > 1:
            evidence["gates"] = answers
        return Decision(
            verdict=chosen.verdict,
            explanation=chosen.explanation,
            gate=chosen.gate,
            risk=chosen.risk or risk,
            evidence=evidence,
            approval=chosen.approval,
            workflow_to=workflow_to,
        )


def _with_gate(decision: Decision, name: str) -> Decision:
    return Decision(
        verdict=decision.verdict,
        explanation=decision.explanation,
        gate=name,
        risk=decision.risk,
        evidence=decision.evidence,
        approval=decision.approval,
        workflow_to=decision.workflow_to,
    )
