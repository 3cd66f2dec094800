"""Runaway guards: budgets, loop detection, delegation limits, injection screening.

The engine calls ``Guards.check(action, state)`` before each action (a pure, synchronous call that
costs well under a millisecond), ``TenantLedger.reserve(action)`` for the shared per-tenant daily
budget, and ``screen(text, provenance)`` on every piece of untrusted content before a model sees it.
See docs/guards.md.
"""

from autonomic.guards.action import ActionKind, Estimate, Hop, ProposedAction
from autonomic.guards.budget import Budget, BudgetGuard
from autonomic.guards.delegation import DelegationGuard, DelegationPolicy
from autonomic.guards.guard import Guard, Guards
from autonomic.guards.injection import Flag, Screened, screen
from autonomic.guards.loops import LoopGuard, LoopPolicy
from autonomic.guards.provenance import Provenance, Source
from autonomic.guards.state import GuardState
from autonomic.guards.taint import TaintGuard
from autonomic.guards.tenant import TenantBudget, TenantLedger
from autonomic.guards.verdict import Finding, Outcome, RiskTier, Verdict

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
