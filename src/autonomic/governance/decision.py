"""What the guards answer: allow, raise the risk tier, or suspend — with the reason and evidence.

A guard never fails a run. Runaway behaviour is a question for a human, so the strongest answer is
``SUSPEND`` (the run stops, keeps its journal, and can be resumed once someone extended a budget or
confirmed the repeat is wanted). ``RAISE_TIER`` lifts the action's risk tier so the approval policy
asks a human before it executes. Every non-allow answer is a ``Finding`` with a stable ``code``, a
one-line ``reason`` a person can act on, and ``evidence`` (plain JSON) for the run's timeline.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Outcome(enum.IntEnum):
    """Ordered by severity, so combining findings is ``max``."""

    ALLOW = 0
    RAISE_TIER = 1
    SUSPEND = 2


class RiskTier(enum.IntEnum):
    """The governance tiers: LOW executes, MEDIUM needs approval, HIGH is blocked pending review."""

    LOW = 0
    MEDIUM = 1
    HIGH = 2

    def raised(self) -> RiskTier:
        """One tier up (HIGH stays HIGH)."""
        return RiskTier(min(self.value + 1, RiskTier.HIGH.value))


@dataclass(frozen=True, slots=True)
class Finding:
    """One guard's objection.

    Args:
        guard: which guard (``budget``, ``loop``, ``delegation``, ``taint``).
        code: stable machine code, e.g. ``loop.near_repeat`` or ``budget.tokens``.
        outcome: what the guard asks for.
        reason: one line for a human: what happened and what to do about it.
        evidence: JSON-ready details (limits and usage, the similar steps with seq and similarity).
        tier: for ``RAISE_TIER``, the tier the action must at least have.
    """

    guard: str
    code: str
    outcome: Outcome
    reason: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    tier: RiskTier | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "guard": self.guard,
            "code": self.code,
            "outcome": self.outcome.name.lower(),
            "reason": self.reason,
            "evidence": dict(self.evidence),
            "tier": self.tier.name if self.tier is not None else None,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """The combined answer for one proposed action.

    ``outcome`` is the most severe finding's; ``tier`` is the tier the action must run at (the
    proposed tier, raised by any ``RAISE_TIER`` finding). ``findings`` keeps every objection, most
    severe first, so the timeline shows all of them even when one suspends.
    """

    outcome: Outcome
    tier: RiskTier
    findings: tuple[Finding, ...] = ()

    @property
    def allowed(self) -> bool:
        """The action may proceed (possibly at a raised tier: check ``tier``)."""
        return self.outcome is not Outcome.SUSPEND

    @property
    def code(self) -> str:
        return self.findings[0].code if self.findings else "allow"

    @property
    def reason(self) -> str:
        return self.findings[0].reason if self.findings else "no guard objected"

    @staticmethod
    def combine(proposed: RiskTier, findings: list[Finding]) -> Verdict:
        """Most severe outcome wins; the tier is the highest any finding asks for."""
        if not findings:
            return Verdict(Outcome.ALLOW, proposed)
        ordered = tuple(sorted(findings, key=lambda f: f.outcome, reverse=True))
        tier = max([proposed, *(f.tier for f in findings if f.tier is not None)])
        return Verdict(ordered[0].outcome, tier, ordered)

    def to_dict(self) -> dict[str, Any]:
        """The journal payload: what the lead's ``decision``/``loop``/``budget`` entry records."""
        return {
            "outcome": self.outcome.name.lower(),
            "tier": self.tier.name,
            "code": self.code,
            "reason": self.reason,
            "findings": [f.to_dict() for f in self.findings],
        }
