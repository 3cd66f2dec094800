"""Governance's one answer about a proposed action: a ``Decision``.

"The agent proposes, the guard disposes." Every check in this package - the risk policy, a
workflow's allow-list, the circuit breakers, the runaway guards, the code gate - answers in the same
words:

* ``Verdict``: ``ALLOW``, ``APPROVE`` (a human must approve first), ``BLOCK`` (refused; the model is
  told why) or ``SUSPEND`` (refused, and the run stops for a human), ordered by severity;
* ``Risk``: the governance tiers ``LOW`` (runs), ``MEDIUM`` (needs approval), ``HIGH`` (blocked
  pending review) - each tier's default verdict is ``Risk.verdict``;
* ``Finding``: one check's objection, with a stable ``code``, a one-line ``reason`` a person can act
  on, the verdict it asks for, and JSON ``evidence`` for the timeline;
* ``Decision``: the verdict with its explanation, the gate that gave it, the risk, the evidence,
  the findings behind it, and for ``APPROVE`` how to ask (``ApprovalRule``).

``Decision.of_findings`` folds findings into one decision (the most severe verdict, the highest
risk asked for), so a check that finds several problems reports all of them. Runaway behaviour is a
question for a human, so no check ever fails a run: the strongest answer is ``SUSPEND``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from autonomic.core.entries import EMPTY


class Verdict(enum.StrEnum):
    """What happens to the action. The values are the journal's words."""

    ALLOW = "allow"
    APPROVE = "needs_approval"
    BLOCK = "blocked"
    SUSPEND = "suspend"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Verdict.ALLOW: 0, Verdict.APPROVE: 1, Verdict.BLOCK: 2, Verdict.SUSPEND: 3}


class Risk(enum.IntEnum):
    """The governance tiers, ordered: LOW executes, MEDIUM needs approval, HIGH is blocked pending
    review. Journaled and written in policies by name (``"MEDIUM"``, ``medium``)."""

    LOW = 0
    MEDIUM = 1
    HIGH = 2

    @property
    def verdict(self) -> Verdict:
        """What an action of this risk gets when nothing else objects."""
        return (Verdict.ALLOW, Verdict.APPROVE, Verdict.BLOCK)[self]

    def raised(self) -> Risk:
        """One tier up (HIGH stays HIGH)."""
        return Risk(min(self + 1, Risk.HIGH))

    @staticmethod
    def parse(text: str) -> Risk:
        """``low`` / ``MEDIUM`` / ... ; ``ValueError`` for anything else."""
        try:
            return Risk[str(text).strip().upper()]
        except KeyError:
            raise ValueError(f"unknown risk {text!r}") from None


def risk_name(risk: Risk | None) -> str | None:
    """How the journal writes a risk (``"MEDIUM"``), ``None`` when unclassified."""
    return risk.name if risk is not None else None


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's objection.

    Args:
        check: which check (``budget``, ``loop``, ``delegation``, ``taint``, ``code`` ...).
        code: stable machine code, e.g. ``loop.near_repeat``, ``budget.tokens``, ``AUT003``.
        verdict: what the check asks for: ``SUSPEND``, the verdict of a raised ``risk``, or
            ``ALLOW`` for a note that blocks nothing (a code-gate warning).
        reason: one line for a human: what happened and what to do about it.
        evidence: JSON-ready details (limits and usage, the similar steps with seq and similarity,
            the line of code).
        risk: the risk the action must at least have (a raise), or how severe the finding is.
    """

    check: str
    code: str
    verdict: Verdict
    reason: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    risk: Risk | None = None

    @staticmethod
    def raising(
        check: str, code: str, to: Risk, reason: str, evidence: Mapping[str, Any]
    ) -> Finding:
        """A finding that lifts the action to ``to``: a human approves it (or it is blocked)."""
        return Finding(check, code, to.verdict, reason, evidence, risk=to)

    def to_dict(self) -> dict[str, Any]:
        """The journal's form (as 0.1 wrote it: ``guard``, ``outcome``, ``tier``)."""
        return {
            "guard": self.check,
            "code": self.code,
            "outcome": _outcome(self.verdict),
            "reason": self.reason,
            "evidence": dict(self.evidence),
            "tier": risk_name(self.risk),
        }


def _outcome(verdict: Verdict) -> str:
    if verdict is Verdict.ALLOW:
        return "allow"
    return "suspend" if verdict is Verdict.SUSPEND else "raise_tier"


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


class Decision(NamedTuple):
    """The answer about one proposed action.

    Args:
        verdict: what happens to the action.
        explanation: one line for a human (the most severe finding's reason, when there are).
        gate: which gate decided (``risk``, ``workflow``, ``breaker``, ``runaway``, ``code`` ...).
        risk: the action's risk tier, when a check classified it.
        evidence: JSON-ready details for the timeline.
        approval: for ``APPROVE``, how to ask.
        workflow_to: for a call that moves the workflow, the state it enters once allowed.
        findings: every objection behind the verdict, most severe first.
    """

    verdict: Verdict
    explanation: str
    gate: str = ""
    risk: Risk | None = None
    evidence: Mapping[str, Any] = EMPTY
    approval: ApprovalRule | None = None
    workflow_to: str | None = None
    findings: tuple[Finding, ...] = ()

    @property
    def allowed(self) -> bool:
        """The action goes ahead as it is, no human asked."""
        return self.verdict is Verdict.ALLOW

    @property
    def code(self) -> str:
        """The leading finding's code (``allow`` when nothing objected)."""
        return self.findings[0].code if self.findings else "allow"

    @staticmethod
    def of_findings(
        findings: Iterable[Finding], *, risk: Risk = Risk.LOW, gate: str = ""
    ) -> Decision:
        """Findings folded into one decision: the most severe verdict wins (the first finding on a
        tie), the risk is the highest any finding asks for (at least ``risk``, the action's)."""
        ordered = tuple(sorted(findings, key=lambda f: f.verdict.severity, reverse=True))
        if not ordered:
            return Decision(Verdict.ALLOW, "no guard objected", gate=gate, risk=risk)
        highest = max([risk, *(f.risk for f in ordered if f.risk is not None)])
        return Decision(
            ordered[0].verdict, ordered[0].reason, gate=gate, risk=highest, findings=ordered
        )

    def with_gate(self, gate: str) -> Decision:
        """The same decision, credited to ``gate``."""
        return self._replace(gate=gate)

    def findings_record(self) -> dict[str, Any]:
        """The findings as the journal records them (a runaway decision's ``guards`` evidence, a
        budget suspension's ``guard``): the 0.1 shape, so old and new journals read alike."""
        return {
            "outcome": _outcome(self.verdict),
            "tier": (self.risk or Risk.LOW).name,
            "code": self.code,
            "reason": self.explanation,
            "findings": [f.to_dict() for f in self.findings],
        }
