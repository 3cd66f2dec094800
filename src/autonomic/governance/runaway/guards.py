"""The runaway guards together: ``Guards.check(action, history) -> Decision``.

A runaway guard is not a gate of its own: it is one pure check of the runaway gate
(``autonomic.governance.runaway.gate``), with a ``name`` and ``check(action, history) ->
list[Finding]`` over the run's ``GuardState``. ``Guards`` runs them all (no short-circuit, so the
timeline shows every objection) and folds the findings into one ``Decision``
(``Decision.of_findings``): order does not matter, severity does. Library users (and the guard
benchmarks) call it directly; the engine reaches it through the runaway gate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from autonomic.governance.action import ProposedAction
from autonomic.governance.decision import Decision, Finding
from autonomic.governance.runaway.budget import Budget, BudgetGuard
from autonomic.governance.runaway.delegation import DelegationGuard, DelegationPolicy
from autonomic.governance.runaway.loops import LoopGuard, LoopPolicy
from autonomic.governance.runaway.state import GuardState
from autonomic.governance.runaway.taint import TaintGuard


class Guard(Protocol):
    """One check. Pure: reads the action and the state, changes neither, does no I/O."""

    @property
    def name(self) -> str: ...

    def check(self, action: ProposedAction, state: GuardState) -> list[Finding]: ...


class Guards:
    """A composition of guards; ``check`` is the whole pre-action decision."""

    def __init__(self, guards: Sequence[Guard]) -> None:
        self.guards = tuple(guards)

    @classmethod
    def default(
        cls,
        *,
        budget: Budget | None = None,
        loops: LoopPolicy | None = None,
        delegation: DelegationPolicy | None = None,
    ) -> Guards:
        """Budgets, loop detection, delegation limits and the taint rule, with their defaults."""
        return cls(
            [
                BudgetGuard(budget or Budget()),
                LoopGuard(loops),
                DelegationGuard(delegation),
                TaintGuard(),
            ]
        )

    def check(self, action: ProposedAction, state: GuardState) -> Decision:
        """Every guard's findings combined: the most severe verdict, the highest risk asked."""
        findings: list[Finding] = []
        for guard in self.guards:
            findings.extend(guard.check(action, state))
        return Decision.of_findings(findings, risk=action.risk)
