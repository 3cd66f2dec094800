"""Runaway guards: budgets, loop detection, delegation limits, and the taint rule.

``Guards.check(action, history)`` is the whole runaway decision (a pure, synchronous call that
costs well under a millisecond); ``TenantLedger.reserve(action)`` the shared per-tenant daily
budget; in the engine both sit behind the runaway gate (``runaway.gate``). The names below are the
library's API, with governance's vocabulary (``ProposedAction``, ``Decision``, ``Finding``,
``Verdict``, ``Risk``) and the injection screen re-exported for convenience. See docs/guards.md.
"""

from autonomic.governance.action import ActionKind, Estimate, Hop, ProposedAction
from autonomic.governance.decision import Decision, Finding, Risk, Verdict
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
    "Decision",
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
    "ProposedAction",
    "Provenance",
    "Risk",
    "Screened",
    "Source",
    "TaintGuard",
    "TenantBudget",
    "TenantLedger",
    "Verdict",
    "screen",
]
