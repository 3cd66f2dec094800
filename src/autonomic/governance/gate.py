"""The pre-action seam: every proposed tool call passes an ordered chain of action gates.

"The agent proposes, the guard disposes." Before a tool call executes - before even its intent is
journaled - the engine asks each gate about the ``ProposedAction`` (the tool's contract, the
validated arguments, the run's folded state, tenant and workflow state). A gate answers with a
``Decision``: ``ALLOW``, ``APPROVE`` (a human must approve first), ``BLOCK`` (refused; the model is
told why) or ``SUSPEND`` (refused, and the run stops for a human), each with a human-readable
explanation and evidence - or ``None`` when it has no opinion (the vocabulary is
``autonomic.governance.decision``).

The chain's verdict is the most severe one (``SUSPEND`` > ``BLOCK`` > ``APPROVE`` > ``ALLOW``;
the first gate wins a tie) and is journaled as one ``decision`` entry, committed before any
effect. On resume the journaled decision is replayed, never re-asked: a gate whose rules changed
since cannot flip a decision a human already acted on.

Risk classification (``policy.risk``), workflow allow-lists (``policy.workflow``), the circuit
breakers (``circuits``) and the runaway guards (``runaway.gate``: loops, budgets, taint) are gates;
the engine asks the chain in one place (``autonomic.engine.gatekeeper``) and journals the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from autonomic.governance.action import ProposedAction
from autonomic.governance.decision import Decision, Risk, Verdict


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
        risk: Risk | None = None
        for gate in (*extra, *self.gates):
            answer = await gate.check(action)
            if answer is None:
                continue
            if not answer.gate:
                answer = answer.with_gate(gate.name)
            answers.append(
                {
                    "gate": answer.gate,
                    "verdict": answer.verdict.value,
                    "explanation": answer.explanation,
                }
            )
            workflow_to = workflow_to or answer.workflow_to
            if risk is None and answer.risk is not None:
                risk = answer.risk  # the first classification sticks; later gates
                action = action._replace(risk=risk)  # (runaway's taint) see it
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
            risk=chosen.risk if chosen.risk is not None else risk,
            evidence=evidence,
            approval=chosen.approval,
            workflow_to=workflow_to,
            findings=chosen.findings,
        )
