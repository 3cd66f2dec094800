"""Runaway guards: budgets, loop detection, delegation limits, injection screening.

The engine calls ``Guards.check(action, state)`` before each action (a pure, synchronous call that
costs well under a millisecond), ``TenantLedger.reserve(action)`` for the shared per-tenant daily
budget, and ``screen(text, provenance)`` on every piece of untrusted content before a model sees it.
See docs/guards.md.
"""

from autonomic.governance.action import ActionKind, Estimate, Hop, ProposedAction
from autonomic.governance.decision import Finding, Outcome, RiskTier, Verdict
from autonomic.governance.injection import Flag, Screened, screen
from autonomic.governance.provenance import Provenance, Source
from autonomic.governance.runaway.budget import Budget, BudgetGuard
from autonomic.governance.runaway.delegation import DelegationGuard, DelegationPolicy
from autonomic.governance.runaway.guards import Guard, Guards
from autonomic.governance.runaway.loops import LoopGuard, LoopPolicy
from autonomic.governance.runaway.state import GuardState
from autonomic.governance.runaway.taint import TaintGuard
from autonomic.governance.runaway.tenant import TenantBudget, TenantLedger

__all__ = [
    "ActionKind",
    "Budget",
    "BudgetGuard",
    "DelegationGuard",
    "DelegationPolicy",
    "Estimate",
    "Finding",
    "Flag",
    "Guard",
    "GuardState",
    "Guards",
    "Hop",
    "LoopGuard",
    "LoopPolicy",
    "Outcome",
    "ProposedAction",
    "Provenance",
    "RiskTier",
    "Screened",
    "Source",
    "TaintGuard",
    "TenantBudget",
    "TenantLedger",
    "Verdict",
    "screen",
]
