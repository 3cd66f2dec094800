"""An approval: a human's say on one proposed action, bound to exactly that action.

The binding is a hash of (tool@version, canonical arguments, run, step): an approval for one set
of arguments can never be spent on another, and a re-proposal with changed arguments is a new step
that needs a new approval. Expiry is a safe default - the action is denied - recorded as
``TIMEOUT``, never confused with a human ``REJECTED``. Decisions are pure functions here (a new
``Approval`` value with ``version + 1``); the store writes them under that version, atomically with
the run's journal entries, so two approvers racing cannot both win.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from dataclasses import dataclass, field
from typing import Any

from autonomic.core.canonical import canonical_json
from autonomic.core.principal import same_principal
from autonomic.errors import ApprovalRefused


class ApprovalStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    """A human said no."""
    TIMEOUT = "timeout"
    """Nobody decided in time: denied by default. Not a rejection."""

    @property
    def final(self) -> bool:
        return self is not ApprovalStatus.PENDING


@dataclass(frozen=True, slots=True)
class Vote:
    by: str
    approve: bool
    reason: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {"by": self.by, "approve": self.approve, "reason": self.reason, "at": self.at}


def binding_hash(tool_ref: str, arguments: dict[str, Any], run_id: str, step: int) -> str:
    """What an approval is bound to: this tool version, these arguments, this run, this step."""
    material = canonical_json(
        {"tool": tool_ref, "arguments": arguments, "run_id": run_id, "step": step}
    )
    return hashlib.sha256(material.encode()).hexdigest()


def approval_id(run_id: str, call_id: str, step: int) -> str:
    """Deterministic, so a step replayed after a crash finds the approval it asked for."""
    text = f"{run_id}\n{call_id}\n{step}".encode()
    return "apr_" + hashlib.sha256(text).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Approval:
    """One request for a human decision and its outcome. See the module docstring."""

    id: str
    run_id: str
    call_id: str
    step: int
    tenant: str
    tool: str
    """``name@version``."""
    arguments: dict[str, Any]
    binding: str
    explanation: str
    created_at: float
    expires_at: float
    requester: str | None = None
    group: str = "approvers"
    approvers: tuple[str, ...] | None = None
    """Who may decide (``None``: anyone but the requester)."""
    escalate_at: float | None = None
    escalation_group: str | None = None
    escalation_approvers: tuple[str, ...] | None = None
    escalated: bool = False
    quorum: int = 1
    status: ApprovalStatus = ApprovalStatus.PENDING
    votes: tuple[Vote, ...] = field(default_factory=tuple)
    reason: str | None = None
    decided_at: float | None = None
    decided_by: tuple[str, ...] = ()
    version: int = 1

    def _next(self, **changes: Any) -> Approval:
        return dataclasses.replace(self, version=self.version + 1, **changes)

    def vote(
        self, by: str, *, approve: bool, reason: str, now: float, binding: str | None = None
    ) -> Approval:
        """Record ``by``'s vote; the approval is decided when the quorum approves or anyone rejects.

        Raises ``ApprovalRefused`` when ``by`` may not vote, or when ``binding`` (the hash the
        approver was shown) is not the one this approval is bound to.
        """
        if self.status.final:
            raise ApprovalRefused(
                f"approval {self.id} is already {self.status.value}",
                hint="`autonomic approvals` lists the pending ones",
            )
        if not by:
            raise ApprovalRefused("an approver needs a name", hint="pass --as USER")
        if binding is not None and binding != self.binding:
            raise ApprovalRefused(
                f"approval {self.id} is bound to other arguments (hash {self.binding[:12]}..., "
                f"not {binding[:12]}...)",
                hint="look at the action again with `autonomic approvals` and decide on what it shows",
            )
        if self.requester is not None and same_principal(by, self.requester, self.tenant):
            raise ApprovalRefused(
                f"{by} requested run {self.run_id} and cannot approve its actions",
                hint="another person must decide (--as USER)",
            )
        allowed = self.current_approvers()
        if allowed is not None and not any(same_principal(by, a, self.tenant) for a in allowed):
            raise ApprovalRefused(
                f"{by} is not in approver group {self.current_group()!r} of approval {self.id}",
                hint="members: " + ", ".join(allowed),
            )
        if any(same_principal(v.by, by, self.tenant) for v in self.votes):
            raise ApprovalRefused(
                f"{by} has voted on approval {self.id} already",
                hint=f"it needs {self.quorum} different approvers",
            )
        votes = (*self.votes, Vote(by=by, approve=approve, reason=reason, at=now))
        if not approve:
            return self._next(
                votes=votes,
                status=ApprovalStatus.REJECTED,
                reason=reason,
                decided_at=now,
                decided_by=(by,),
            )
        yes = tuple(v.by for v in votes if v.approve)
        if len(yes) >= self.quorum:
            return self._next(
                votes=votes,
                status=ApprovalStatus.APPROVED,
                reason=reason,
                decided_at=now,
                decided_by=yes,
            )
        return self._next(votes=votes)

    def expire(self, now: float) -> Approval:
        """Deny by default: nobody decided before ``expires_at``."""
        return self._next(
            status=ApprovalStatus.TIMEOUT,
            reason=f"no decision within the approval window (expired at {self.expires_at:.0f})",
            decided_at=now,
            decided_by=(),
        )

    def escalate(self) -> Approval:
        """Hand the approval to the escalation group."""
        return self._next(escalated=True)

    def current_group(self) -> str:
        return self.escalation_group if self.escalated and self.escalation_group else self.group

    def current_approvers(self) -> tuple[str, ...] | None:
        if self.escalated and self.escalation_group:
            return self.escalation_approvers
        return self.approvers

    def due(self, now: float) -> str | None:
        """``"expire"`` or ``"escalate"`` when one is due at ``now``, else ``None``."""
        if self.status.final:
            return None
        if now >= self.expires_at:
            return "expire"
        if (
            not self.escalated
            and self.escalate_at is not None
            and self.escalation_group
            and now >= self.escalate_at
        ):
            return "escalate"
        return None

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["status"] = self.status.value
        data["votes"] = [v.to_dict() for v in self.votes]
        data["approvers"] = list(self.approvers) if self.approvers is not None else None
        data["escalation_approvers"] = (
            list(self.escalation_approvers) if self.escalation_approvers is not None else None
        )
        data["decided_by"] = list(self.decided_by)
        return data

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Approval:
        values = dict(data)
        values["status"] = ApprovalStatus(values["status"])
        values["votes"] = tuple(Vote(**v) for v in values.get("votes", ()))
        for key in ("approvers", "escalation_approvers"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        values["decided_by"] = tuple(values.get("decided_by", ()))
        return Approval(**values)
