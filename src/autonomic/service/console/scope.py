"""What the console reads and does for one signed-in identity: the service's ``TenantScope``
(one tenant's runs, journals and approvals; another tenant's row is ``NotFound``, worded as a
missing one) plus the few things pages need beyond the API's reads: the agents to suggest in a
filter, a run's children, and a decision made as the identity (``principal``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autonomic.core.approval import Approval, ApprovalStatus
from autonomic.core.journal import Entry
from autonomic.core.run import Run, RunStatus
from autonomic.governance.approvals import ApprovalDesk
from autonomic.service.identity import Identity
from autonomic.service.scope import TenantScope

_CHILDREN = 500
"""Child runs shown on a run's page at most."""


@dataclass(frozen=True, slots=True)
class Scope:
    """One identity's console view (see the module docstring)."""

    tenant_scope: TenantScope
    desk: ApprovalDesk
    identity: Identity

    async def run(self, run_id: str) -> Run:
        return await self.tenant_scope.run(run_id)

    async def runs(
        self,
        *,
        status: RunStatus | None,
        agent: str | None,
        before: tuple[float, str] | None,
        limit: int,
    ) -> tuple[list[Run], bool]:
        """A page of runs, newest first, older than the cursor ``before``; and whether more
        follow."""
        found = await self.tenant_scope.runs(
            status=status, agent=agent, before=before, limit=limit + 1
        )
        return found[:limit], len(found) > limit

    async def agents(self) -> list[str]:
        """The agents of the tenant's recent runs, for the filter's suggestions."""
        recent = await self.tenant_scope.runs(limit=200)
        return sorted({r.agent for r in recent})

    async def children(self, run: Run) -> list[Run]:
        """Runs started by ``run`` (a multi-agent run's delegations), oldest first.

        Children are created after their parent, so only runs since it are looked at."""
        found = await self.tenant_scope.runs(since=run.created_at, limit=_CHILDREN * 4)
        mine = [r for r in found if r.parent_run_id == run.id]
        return sorted(mine, key=lambda r: r.created_at)[:_CHILDREN]

    async def journal(
        self,
        run_id: str,
        *,
        after_seq: int = 0,
        before_seq: int | None = None,
        limit: int | None = None,
        newest: bool = False,
    ) -> list[Entry]:
        """The run's entries, or one page of them (``TenantScope.journal``)."""
        _run, entries = await self.tenant_scope.journal(
            run_id, after_seq=after_seq, before_seq=before_seq, limit=limit, newest=newest
        )
        return entries

    async def cost(self, run: Run) -> dict[str, Any]:
        """What the run's model calls cost (``TenantScope.cost``)."""
        return await self.tenant_scope.cost(run)

    async def approvals(self, *, run_id: str) -> list[Approval]:
        return await self.tenant_scope.approvals(status=None, run_id=run_id, limit=1000)

    async def pending_approvals(self) -> list[Approval]:
        """What waits for a human in this tenant, oldest first, once due expiries are applied
        (so what is shown can still be decided)."""
        await self.desk.sweep(tenant=self.tenant_scope.tenant)
        return await self.tenant_scope.approvals(status=ApprovalStatus.PENDING, limit=200)

    async def approval(self, approval_id: str) -> Approval:
        return await self.tenant_scope.approval(approval_id)

    async def decide(
        self, approval_id: str, *, approve: bool, reason: str, binding: str | None
    ) -> Approval:
        """Approve or deny as the identity's principal (the caller must have authorized it);
        ``binding``: the hash the page showed - a mismatch is refused, so nobody approves
        arguments they were not shown."""
        by = self.identity.principal
        await self.desk.sweep(tenant=self.tenant_scope.tenant)
        if approve:
            return await self.desk.approve(approval_id, by=by, reason=reason, binding=binding)
        return await self.desk.deny(approval_id, by=by, reason=reason)
