"""A worker's hold on one run: its folded state, its lease, and the only path to the database.

The step protocol lives here. Entries are *staged* (applied to the in-memory state at once) and
*flushed* (committed atomically with a version and fencing check). Callers flush before a side
effect whose repetition would be unsafe, and after it; everything else rides in the next flush, so
a run pays one commit per step where that is all safety needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from autonomic.core.approval import Approval
from autonomic.core.journal import Entry, EntryKind, PackedEntry, pack
from autonomic.core.run import Lease, Run, RunChanges, RunStatus, check_transition
from autonomic.core.state import RunState
from autonomic.engine.faults import Faults
from autonomic.errors import LeaseLost, StaleVersion
from autonomic.governance.action import ProposedAction as GuardAction
from autonomic.governance.decision import Verdict as GuardVerdict
from autonomic.ports.store import Store


class RunInterrupted(Exception):
    """Someone else changed the run (cancelled it, say) while we held it: stop driving it."""

    def __init__(self, run: Run) -> None:
        super().__init__(f"run {run.id} changed under us: now {run.status}")
        self.run = run


class RunSession:
    """Stage entries, flush them under the run's version and the lease's fence."""

    def __init__(
        self,
        store: Store,
        run: Run,
        state: RunState,
        *,
        clock: Callable[[], float],
        faults: Faults,
        lease_ttl: float,
        on_commit: Callable[[Entry], None] | None = None,
    ) -> None:
        self.store = store
        self._on_commit = on_commit
        self.run = run
        self.state = state
        self._clock = clock
        self._faults = faults
        self._ttl = lease_ttl
        self._staged: list[PackedEntry] = []
        self._notes: list[tuple[EntryKind, dict[str, Any]]] = []

    @property
    def fence(self) -> int:
        return self.run.lease.fence

    def now(self) -> float:
        return self._clock()

    def stage(self, kind: EntryKind, payload: dict[str, Any]) -> Entry:
        """Add an entry to the next commit and fold it into the state now."""
        packed = pack(
            self.run.id,
            self.state.last_seq + 1,
            kind,
            payload,
            prev_hash=self.state.last_hash,
            created_at=self._clock(),
        )
        self.state.apply(packed.entry)
        self._staged.append(packed)
        return packed.entry

    def note(self, kind: EntryKind, payload: dict[str, Any]) -> None:
        """Journal an informational entry at the *end* of the next commit.

        Notes (a recovery, say) must not shift the ``seq`` of the work they precede: idempotency
        keys are ``run_id:seq``, and a step redone after a crash has to get the key it had before.
        """
        self._notes.append((kind, payload))

    @property
    def next_seq(self) -> int:
        return self.state.last_seq + 1

    def fault(self, point: str) -> None:
        self._faults.at(point)

    async def flush(
        self, changes: RunChanges | None = None, *, approvals: Sequence[Approval] = ()
    ) -> None:
        """Commit staged entries (and ``changes``) atomically; extends the lease as a by-product.

        Raises ``LeaseLost`` when another worker took the run, ``RunInterrupted`` when an operator
        changed it; in both cases nothing was written and the caller must stop. ``approvals`` are
        written in the same transaction (an approval request and the wait for it, say).
        """
        if not self._staged and changes is None:
            return
        for kind, payload in self._notes:
            self.stage(kind, payload)
        self._notes.clear()
        now = self._clock()
        base = changes or RunChanges()
        changes = RunChanges(
            status=base.status,
            status_reason=base.status_reason,
            output=base.output,
            set_output=base.set_output,
            metadata=base.metadata,
            lease_expires_at=now + self._ttl,
            release_lease=base.release_lease,
        )
        steps = sum(1 for p in self._staged if p.entry.kind is EntryKind.TOOL_RESULT)
        self._faults.at("before_commit")
        for attempt in range(3):
            try:
                version = await self.store.commit(
                    self.run.id,
                    expected_version=self.run.version,
                    fence=self.fence,
                    entries=self._staged,
                    changes=changes,
                    now=now,
                    approvals=approvals,
                )
                break
            except StaleVersion:
                await self._reload_after_conflict()
                if attempt == 2:
                    raise
        self.run = self.run.replace(
            version=version,
            status=changes.status or self.run.status,
            status_reason=changes.status_reason if changes.status else self.run.status_reason,
            output=changes.output if changes.set_output else self.run.output,
            updated_at=now,
        )
        if changes.release_lease:
            self.run = self.run.replace(
                lease=Lease(owner=None, expires_at=0.0, fence=self.run.lease.fence)
            )
        committed, self._staged = self._staged, []
        if self._on_commit is not None:
            for packed in committed:
                self._on_commit(packed.entry)
        self._faults.at("after_commit")
        for _ in range(steps):
            self._faults.at("step_done")

    async def _reload_after_conflict(self) -> None:
        """Our version was stale. Keep going only if nothing that matters changed."""
        fresh = await self.store.get_run(self.run.id)
        if fresh.lease.fence != self.fence:
            raise LeaseLost(f"run {self.run.id}: lease taken over (fence {fresh.lease.fence})")
        base_seq = self._staged[0].entry.seq - 1 if self._staged else self.state.last_seq
        newer = await self.store.load_journal(self.run.id, after_seq=base_seq)
        if fresh.status is not RunStatus.RUNNING or newer:
            raise RunInterrupted(fresh)
        self.run = fresh

    async def transition(
        self,
        target: RunStatus,
        reason: str,
        *,
        output: Any = None,
        approvals: Sequence[Approval] = (),
        **extra: Any,
    ) -> None:
        """Stage a transition entry and commit it together with the status change.

        Leaving RUNNING also gives up the lease in the same commit, so finishing a run costs one
        transaction, not two.
        """
        source = self.state.status
        check_transition(self.run.id, source, target)
        for kind, note in self._notes:  # nothing follows a transition, so notes go first
            self.stage(kind, note)
        self._notes.clear()
        payload: dict[str, Any] = {"from": source.value, "to": target.value, "reason": reason}
        if target is RunStatus.COMPLETED:
            payload["output"] = output
        payload.update(extra)
        self.stage(EntryKind.TRANSITION, payload)
        await self.flush(
            RunChanges(
                status=target,
                status_reason=reason,
                output=output,
                set_output=target is RunStatus.COMPLETED,
                release_lease=target is not RunStatus.RUNNING,
            ),
            approvals=approvals,
        )


async def suspend_for_budget(
    session: RunSession, verdict: GuardVerdict, action: GuardAction, *, call: str = ""
) -> None:
    """Suspend the run because the model call ``action`` would pass a budget: the verdict and the
    call's estimate go in the transition (``call`` names a call other than a turn)."""
    await session.transition(
        RunStatus.SUSPENDED,
        f"budget: {verdict.reason}" + (f" ({call})" if call else ""),
        guard=verdict.to_dict(),
        estimate={"tokens": action.estimate.tokens, "cost": action.estimate.cost},
    )
