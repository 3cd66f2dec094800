"""A worker's hold on one run: its folded state, its lease, and the only path to the database.

The step protocol (``autonomic.engine.step``) decides *what* to journal and *when* to commit; this
is *how*. Entries are *staged* (typed values, applied to the in-memory state at once) and
*flushed* (committed atomically with the run's version and the lease's fencing token). Callers
flush before a side effect whose repetition would be unsafe, and after it; everything else rides
in the next flush, so a run pays one commit per step where that is all safety needs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from autonomic.core.approval import Approval
from autonomic.core.audit import AuditNote
from autonomic.core.entries import Body, EntryKind, Transition
from autonomic.core.events import Event
from autonomic.core.journal import Entry, PackedEntry, record
from autonomic.core.run import Lease, Run, RunChanges, RunStatus, check_transition
from autonomic.core.state import RunState
from autonomic.engine.faults import Faults, NoFaults
from autonomic.errors import LeaseLost, StaleVersion
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
        on_commit: Callable[[Sequence[Entry]], None] | None = None,
        outbox: Callable[[Run, Sequence[Entry]], Sequence[Event]] | None = None,
        audit_levels: Mapping[str, str] | None = None,
    ) -> None:
        """``on_commit``: called with the entries of every commit, after it is durable (the step
        protocol's commit hooks). ``outbox``: gives the events a commit's entries cause, written
        in the commit's own transaction (the ``stage_events`` hooks). ``audit_levels``: each
        tool's ``audit_level`` by name, what the audit log keeps of its arguments and results
        (``core/audit.py``)."""
        self._audit = AuditNote(levels=dict(audit_levels or {}))
        self.store = store
        self.on_commit = on_commit
        self.on_transition: Callable[[Sequence[Entry]], None] | None = None
        """Called with the entries of a commit that changes the run's status, after it is
        durable (the ``on_transition`` hooks; a step's commit does not call it)."""
        self.outbox = outbox
        self.run = run
        self.state = state
        self._clock = clock
        self._faults = faults
        self._ttl = lease_ttl
        self._staged: list[PackedEntry] = []
        self._notes: list[Body] = []
        self.lease_until = run.lease.expires_at
        """When this worker's lease ends by its own clock: set by the claim, extended by every
        commit and heartbeat."""
        self._lost: str | None = None
        self.before_transition: Callable[[], Awaitable[None]] | None = None
        """Called before any transition is staged: the step protocol finishes the effects it
        has deferred (a turn's idempotent calls run together), so a run never leaves RUNNING
        with a started call whose result it could have recorded."""
        self.read_seconds: float | None = None
        """How long loading and folding the journal took when this drive began (the metrics'
        ``state_read`` phase)."""

    def calm(self) -> None:
        """No commit hooks and no fault points from now on: the session only ends the run (after
        an unexpected error, which a hook or a fault point must not raise again)."""
        self.on_commit = self.on_transition = None
        self._faults = NoFaults()
        self.before_transition = None

    @property
    def fence(self) -> int:
        return self.run.lease.fence

    def now(self) -> float:
        return self._clock()

    def stage(self, body: Body) -> Entry:
        """Add an entry to the next commit and fold it into the state now."""
        packed = record(
            self.run.id,
            self.state.last_seq + 1,
            body,
            prev_hash=self.state.last_hash,
            created_at=self._clock(),
        )
        self.state.apply(packed.entry)
        self._staged.append(packed)
        return packed.entry

    def note(self, body: Body) -> None:
        """Journal an informational entry at the *end* of the next commit.

        Notes (a recovery, say) must not shift the ``seq`` of the work they precede: idempotency
        keys are ``run_id:seq``, and a step redone after a crash has to get the key it had before.
        """
        self._notes.append(body)

    @property
    def staged(self) -> bool:
        """Entries are staged and not yet committed: the state is ahead of the journal."""
        return bool(self._staged or self._notes)

    @property
    def next_seq(self) -> int:
        return self.state.last_seq + 1

    def fault(self, point: str) -> None:
        self._faults.at(point)

    def extend(self, until: float) -> None:
        """The lease was renewed (by the heartbeat) until ``until``."""
        self.lease_until = max(self.lease_until, until)

    def lost(self, reason: str) -> None:
        """The lease is known to be lost (the heartbeat's renewal was refused): every later
        commit and lease check raises ``LeaseLost`` without asking the store."""
        self._lost = reason

    async def check_lease(self) -> None:
        """Make sure this worker still holds the run, right before an effect that must not
        happen twice; raise ``LeaseLost`` (the run was taken over) or ``RunInterrupted`` (an
        operator moved it) otherwise. Commits are fenced already; effects are not, so a worker
        paused past its lease (a GC pause, SIGSTOP) would otherwise wake up and act as a zombie.

        With more than half the lease left by this worker's clock (the usual case: the intent
        was committed a moment ago, which extended it), nothing is asked: another worker can only
        have claimed the run if its clock runs half a lease ahead of ours, a skew this check
        tolerates (clocks under NTP differ by milliseconds; a store read here would cost a
        quarter of a non-idempotent step on SQLite). With less left, one read tells whether the
        fence moved. Once it has expired, any worker may take the run at any moment, so a read
        proves nothing: the lease is renewed instead, on condition that owner and fence are still
        ours (as the heartbeat does). That refusal means the run was taken over; success means
        nobody took it and nobody can before the new expiry, so the effect may start."""
        if self._lost is not None:
            raise LeaseLost(self._lost)
        run, owner = self.run, self.run.lease.owner or ""
        now = self._clock()
        if self.lease_until - now > self._ttl / 2:
            return
        if now < self.lease_until:
            current = await self.store.get_run(run.id)
            if current.lease.fence != self.fence or current.lease.owner != owner:
                self.lost(
                    f"run {run.id}: lease taken over (fence {current.lease.fence}, this worker "
                    f"held fence {self.fence})"
                )
                raise LeaseLost(self._lost or "")
            if current.status is not RunStatus.RUNNING:
                raise RunInterrupted(current)
            return
        until = now + self._ttl
        if not await self.store.renew_lease(
            run.id, owner=owner, fence=self.fence, expires_at=until
        ):
            self.lost(
                f"run {run.id}: lease expired and taken over (this worker held fence {self.fence})"
            )
            raise LeaseLost(self._lost or "")
        self.lease_until = until

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
        if self._lost is not None:
            raise LeaseLost(self._lost)
        self._stage_notes()
        now = self._clock()
        if changes is None:  # a step's commit: the lease is extended, nothing else changes
            changes = RunChanges(lease_expires_at=now + self._ttl)
        else:
            changes = RunChanges(
                status=changes.status,
                status_reason=changes.status_reason,
                output=changes.output,
                set_output=changes.set_output,
                metadata=changes.metadata,
                lease_expires_at=now + self._ttl,
                release_lease=changes.release_lease,
            )
        steps = sum(1 for p in self._staged if p.entry.kind is EntryKind.TOOL_RESULT)
        events = self.outbox(self.run, [p.entry for p in self._staged]) if self.outbox else ()
        extra: dict[str, Any] = {"outbox": events} if events else {}
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
                    audit=self._audit,
                    **extra,
                )
                break
            except StaleVersion:
                await self._reload_after_conflict()
                if attempt == 2:
                    raise
        if changes.status is None and not changes.set_output and not changes.release_lease:
            self.run = self.run.replace(version=version, updated_at=now)  # a step's commit
        else:
            self.run = self.run.replace(
                version=version,
                status=changes.status or self.run.status,
                status_reason=changes.status_reason if changes.status else self.run.status_reason,
                output=changes.output if changes.set_output else self.run.output,
                updated_at=now,
                lease=Lease(owner=None, expires_at=0.0, fence=self.run.lease.fence)
                if changes.release_lease
                else self.run.lease,
            )
        if not changes.release_lease:
            self.lease_until = max(self.lease_until, now + self._ttl)
        committed, self._staged = self._staged, []
        if self.on_commit is not None:
            self.on_commit([p.entry for p in committed])
        if self.on_transition is not None and changes.status is not None:
            self.on_transition([p.entry for p in committed])
        self._faults.at("after_commit")
        for _ in range(steps):
            self._faults.at("step_done")

    def _stage_notes(self) -> None:
        for body in self._notes:
            self.stage(body)
        self._notes.clear()

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
        **evidence: Any,
    ) -> None:
        """Stage a transition entry and commit it together with the status change.

        ``evidence``: the ``Transition`` fields that say why (``error``, ``decision``,
        ``in_doubt``, ``guard``, ``circuit`` ...). Leaving RUNNING also gives up the lease in the
        same commit, so finishing a run costs one transaction, not two.
        """
        if self.before_transition is not None:
            finish, self.before_transition = self.before_transition, None
            await finish()
        source = self.state.status
        check_transition(self.run.id, source, target)
        self._stage_notes()  # nothing follows a transition, so notes go first
        self.stage(
            Transition(
                source.value,
                target.value,
                reason,
                output=output if target is RunStatus.COMPLETED else None,
                **evidence,
            )
        )
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
