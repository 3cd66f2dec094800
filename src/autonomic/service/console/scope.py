"""What one signed-in identity may read and do, as the console needs it: one tenant's runs,
journals and approvals, and decisions made as that identity.

Every read names the identity's tenant, and a row of another tenant is ``NotFound`` - the same
answer as a row that does not exist, so a page never tells whether another tenant's run is there.
"""

from __future__ import annotations

from dataclasses import dataclass

from autonomic.core.approval import Approval
from autonomic.core.journal import Entry
from autonomic.core.run import Run, RunStatus
from autonomic.errors import InvalidInput, NotFound
from autonomic.governance.approvals import ApprovalDesk
from autonomic.ports.store import Store

_SCAN = 2_000
"""Runs read at most to filter by agent or find children when the store cannot filter itself."""


@dataclass(frozen=True, slots=True)
class Scope:
    """One tenant's view of the store, for one identity (``by``: who decisions are made as)."""

    store: Store
    tenant: str
    by: str

    async def run(self, run_id: str) -> Run:
        run = await self.store.get_run(run_id)
        if run.tenant != self.tenant:
            raise NotFound(f"no run {run_id}", hint="`autonomic runs` lists the runs")
        return run

    async def runs(
        self, *, status: RunStatus | None, agent: str | None, offset: int, limit: int
    ) -> tuple[list[Run], bool]:
        """A page of runs, newest first, and whether there are more after it."""
        want = offset + limit + 1
        found = await self.store.list_runs(
            status=status, tenant=self.tenant, limit=want if agent is None else _SCAN
        )
        if agent is not None:
            found = [r for r in found if r.agent == agent]
        page = found[offset : offset + limit]
        return page, len(found) > offset + limit

    async def agents(self) -> list[str]:
        """The agents of the tenant's recent runs, for the filter's suggestions."""
        return sorted({r.agent for r in await self.store.list_runs(tenant=self.tenant, limit=200)})

    async def children(self, run_id: str) -> list[Run]:
        """Runs started by ``run_id`` (a multi-agent run's delegations), oldest first."""
        found = await self.store.list_runs(tenant=self.tenant, limit=_SCAN)
        return sorted((r for r in found if r.parent_run_id == run_id), key=lambda r: r.created_at)

    async def journal(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[Entry]:
        await self.run(run_id)
        entries = await self.store.load_journal(run_id, after_seq=after_seq)
        return entries if limit is None else entries[:limit]

    async def approvals(self, *, run_id: str) -> list[Approval]:
        return await self.store.list_approvals(tenant=self.tenant, run_id=run_id, limit=1000)

    async def pending_approvals(self) -> list[Approval]:
        """What waits for a human in this tenant, oldest first, after due expiries applied."""
        return await ApprovalDesk(self.store).pending(tenant=self.tenant, limit=200)

    async def approval(self, approval_id: str) -> Approval:
        if not approval_id.startswith("apr_") or len(approval_id) > 64:
            raise InvalidInput(f"invalid approval id {approval_id!r}")
        approval = await self.store.get_approval(approval_id)
        if approval.tenant != self.tenant:
            raise NotFound(f"no approval {approval_id}")
        return approval

    async def decide(
        self, approval_id: str, *, approve: bool, reason: str, binding: str | None
    ) -> Approval:
        """Approve or deny as ``by``; ``binding``: the hash the page showed (a mismatch is
        refused, so nobody approves arguments they were not shown)."""
        await self.approval(approval_id)
        desk = ApprovalDesk(self.store)
        await desk.sweep(tenant=self.tenant)
        if approve:
            return await desk.approve(approval_id, by=self.by, reason=reason, binding=binding)
        return await desk.deny(approval_id, by=self.by, reason=reason)
