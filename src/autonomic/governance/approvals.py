"""The approval desk: list, approve, deny, and let the clock expire or escalate approvals.

Every decision is one transaction: the approval row (written only if it is still at the version
that was read), an ``approval`` journal entry on the run, and - when the approval is decided - the
run's move from WAITING_FOR_HUMAN back to RUNNING, so any worker can take it. Two approvers racing
cannot both decide (``ApprovalConflict``, retried once the loser has reloaded, then refused because
the approval is final), and no decision exists without its journal entry.

Expiry is a safe default: an approval nobody decided by ``expires_at`` is denied and recorded as
``timeout`` - distinct from a human ``rejected`` in the table, the journal and ``autonomic show``.
``sweep()`` applies expiries and escalations that are due; workers and the CLI call it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from autonomic.core.approval import Approval, ApprovalStatus
from autonomic.core.audit import AuditAct, AuditNote
from autonomic.core.entries import ApprovalEvent, Transition
from autonomic.core.journal import record
from autonomic.core.run import RunChanges, RunStatus
from autonomic.core.state import fold
from autonomic.errors import ApprovalConflict, ApprovalRefused, StaleVersion
from autonomic.ports.store import Store

_ATTEMPTS = 20


class ApprovalDesk:
    """The Python API behind ``autonomic approvals``, ``approve`` and ``deny``."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    async def pending(self, *, tenant: str | None = None, limit: int = 100) -> list[Approval]:
        """Pending approvals, oldest first (after applying whatever expiry is due)."""
        await self.sweep(tenant=tenant)
        return await self.store.list_approvals(
            status=ApprovalStatus.PENDING, tenant=tenant, limit=limit
        )

    async def get(self, approval_id: str) -> Approval:
        return await self.store.get_approval(approval_id)

    async def approve(
        self, approval_id: str, *, by: str, reason: str = "", binding: str | None = None
    ) -> Approval:
        """Vote yes as ``by``. With a quorum above one the approval stays pending until reached.

        ``binding``: the hash the approver was shown; a mismatch is refused (the arguments are not
        the ones being decided on)."""
        return await self._apply(
            approval_id,
            lambda a, now: a.vote(
                by, approve=True, reason=reason or "approved", now=now, binding=binding
            ),
            act=AuditAct("approval.approve", by, {"approval": approval_id, "reason": reason}),
        )

    async def deny(self, approval_id: str, *, by: str, reason: str) -> Approval:
        """Reject as ``by``; the action is refused, and the run goes on without it."""
        return await self._apply(
            approval_id,
            lambda a, now: a.vote(by, approve=False, reason=reason, now=now),
            act=AuditAct("approval.deny", by, {"approval": approval_id, "reason": reason}),
        )

    async def sweep(self, *, tenant: str | None = None) -> list[Approval]:
        """Expire (deny as *timeout*) and escalate the pending approvals that are due now."""
        now = self.clock()
        changed: list[Approval] = []
        for approval in await self.store.list_approvals(
            status=ApprovalStatus.PENDING, tenant=tenant, limit=10_000
        ):
            if approval.due(now) is None:
                continue
            try:
                changed.append(await self._apply(approval.id, _due_change, quiet=True))
            except _NothingDue:
                continue
        return changed

    async def _apply(
        self,
        approval_id: str,
        change: Callable[[Approval, float], Approval],
        *,
        quiet: bool = False,
        act: AuditAct | None = None,
    ) -> Approval:
        """``act``: the person's vote, for the audit log (a sweep's changes are the system's)."""
        for _ in range(_ATTEMPTS):
            approval = await self.store.get_approval(approval_id)
            now = self.clock()
            if quiet and approval.due(now) is None:
                raise _NothingDue
            run = await self.store.get_run(approval.run_id)
            if approval.status.final:
                change(approval, now)  # raises ApprovalRefused: "already approved/rejected/..."
            if run.status.terminal and not quiet:
                raise ApprovalRefused(
                    f"run {run.id} is {run.status.value}: approval {approval.id} no longer matters",
                    hint="nothing will execute; `autonomic approvals` lists live ones",
                )
            updated = change(approval, now)
            note = AuditNote(
                act=act
                or AuditAct(f"approval.{updated.status.value}", "system", {"approval": approval.id})
            )
            if run.status.terminal:  # expire it quietly: a finished run's journal stays closed
                try:
                    await self.store.commit(
                        run.id,
                        expected_version=run.version,
                        fence=None,
                        entries=[],
                        changes=RunChanges(),
                        now=now,
                        approvals=[updated],
                        audit=note,
                    )
                except (StaleVersion, ApprovalConflict):
                    continue
                return updated
            state = fold(run.id, await self.store.load_journal(run.id))
            entries = [
                record(
                    run.id,
                    state.last_seq + 1,
                    _event(approval, updated),
                    prev_hash=state.last_hash,
                    created_at=now,
                )
            ]
            changes = RunChanges()
            if updated.status.final and run.status is RunStatus.WAITING_FOR_HUMAN:
                reason = f"approval {approval.id} {updated.status.value}"
                entries.append(
                    record(
                        run.id,
                        state.last_seq + 2,
                        Transition(
                            run.status.value, RunStatus.RUNNING.value, reason, by="approvals"
                        ),
                        prev_hash=entries[0].entry.hash,
                        created_at=now,
                    )
                )
                changes = RunChanges(status=RunStatus.RUNNING, status_reason=reason)
            try:
                await self.store.commit(
                    run.id,
                    expected_version=run.version,
                    fence=None,
                    entries=entries,
                    changes=changes,
                    now=now,
                    approvals=[updated],
                    audit=note,
                )
            except (StaleVersion, ApprovalConflict):
                continue
            return updated
        raise ApprovalConflict(f"approval {approval_id} kept changing; try again")


class _NothingDue(Exception):
    pass


def _due_change(approval: Approval, now: float) -> Approval:
    return approval.expire(now) if approval.due(now) == "expire" else approval.escalate()


def _event(before: Approval, after: Approval) -> ApprovalEvent:
    """The ``approval`` journal entry for the change ``before -> after``."""
    new_votes = after.votes[len(before.votes) :]
    if after.status.final:
        event = after.status.value
        by = list(after.decided_by)
        reason = after.reason
    elif after.escalated and not before.escalated:
        event, by, reason = "escalated", [], None
    else:
        event = "vote"
        by = [v.by for v in new_votes]
        reason = new_votes[-1].reason if new_votes else None
    return ApprovalEvent(
        approval_id=after.id,
        call_id=after.call_id,
        event=event,
        status=after.status.value,
        binding=after.binding,
        tool=after.tool,
        by=tuple(by),
        reason=reason,
        votes=sum(1 for v in after.votes if v.approve),
        quorum=after.quorum,
        group=after.current_group(),
    )
