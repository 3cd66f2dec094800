"""``Guards``: the one call the engine makes before each action.

Guards are small objects with a ``name`` and ``check(action, state) -> list[Finding]``; ``Guards``
runs them all (no short-circuit, so the timeline shows every objection) and combines the findings
into one ``Verdict``. Order does not matter; severity does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from autonomic.governance.action import ProposedAction
from autonomic.governance.decision import Finding, Verdict
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

    def check(self, action: ProposedAction, state: GuardState) -> Verdict:
        """Every guard's findings combined: the most severe outcome, the highest tier asked."""
        findings: list[Finding] = []
        for guard in self.guards:
            findings.extend(guard.check(action, state))
        return Verdict.combine(action.tier, findings)
