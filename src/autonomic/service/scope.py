"""The store (and the bus) as one identity may see it: every read of the service goes through a
``TenantScope``.

Lists are filtered by tenant in SQL (``Store.page_runs``, ``Store.list_approvals``); one object is
read by id and then refused, as ``NotFound`` worded exactly like a missing id, when it belongs to
another tenant: existence does not leak. A journal is read only after its run passed that check,
and a long run's only as far as the page shown (``Store.page_journal``).
An admin's scope is every tenant. Events and dead letters are scoped the same way, by the tenant
each event was published for; KPIs are computed over the scope's runs only.

Writes go through the engine and the approval desk, always after a read through this scope and an
``authorize`` (so a write can only touch an object its caller could read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autonomic.core.approval import Approval, ApprovalStatus
from autonomic.core.journal import Entry
from autonomic.core.run import Run, RunStatus
from autonomic.core.timeline import spend_of
from autonomic.errors import NotFound
from autonomic.observability.kpis import RunFacts, run_facts
from autonomic.ports.bus import Bus, DeadLetter, EventPage
from autonomic.ports.store import Store
from autonomic.service.identity import Identity
from autonomic.service.problems import NotAvailable
from autonomic.service.spend_cache import SpendCache


@dataclass(frozen=True, slots=True)
class TenantScope:
    """Reads of runs, journals and approvals limited to ``identity``'s tenant (see module)."""

    store: Store
    identity: Identity
    bus: Bus | None = None
    spending: SpendCache | None = None
    """The service's cost per run version (``spend_cache``); ``None``: summed every time."""

    @property
    def tenant(self) -> str | None:
        """The one tenant this scope sees, or ``None`` for an admin (every tenant)."""
        return None if self.identity.sees_every_tenant else self.identity.tenant

    def _mine(self, tenant: str) -> bool:
        return self.tenant is None or tenant == self.tenant

    async def run(self, run_id: str) -> Run:
        """The run, or ``NotFound`` (also when it is another tenant's)."""
        try:
            run = await self.store.get_run(run_id)
        except NotFound:
            raise NotFound(f"no run {run_id}") from None
        if not self._mine(run.tenant):
            raise NotFound(f"no run {run_id}")
        return run

    async def runs(
        self,
        *,
        status: RunStatus | None = None,
        agent: str | None = None,
        since: float | None = None,
        before: tuple[float, str] | None = None,
        limit: int = 50,
    ) -> list[Run]:
        """A page of this scope's runs, newest first (see ``Store.page_runs``)."""
        return await self.store.page_runs(
            tenant=self.tenant, status=status, agent=agent, since=since, before=before, limit=limit
        )

    async def journal(
        self,
        run_id: str,
        *,
        after_seq: int = 0,
        before_seq: int | None = None,
        limit: int | None = None,
        newest: bool = False,
    ) -> tuple[Run, list[Entry]]:
        """The run and its journal entries - all of them after ``after_seq``, or the page
        ``Store.page_journal`` reads with these arguments - once the run is this scope's."""
        run = await self.run(run_id)
        if before_seq is None and limit is None:
            return run, await self.store.load_journal(run_id, after_seq=after_seq)
        page = await self.store.page_journal(
            run_id, after_seq=after_seq, before_seq=before_seq, limit=limit, newest=newest
        )
        return run, page

    async def cost(self, run: Run) -> dict[str, Any]:
        """What ``run``'s model calls cost (``core.timeline.spend``), summed from its calls alone
        (``Store.model_calls``), not its whole journal - once per run version when the service
        keeps a ``SpendCache``."""
        if not self._mine(run.tenant):
            raise NotFound(f"no run {run.id}")
        if self.spending is not None and (kept := self.spending.get(run)) is not None:
            return kept
        spent = spend_of(await self.store.model_calls(run.id))
        if self.spending is not None:
            self.spending.put(run, spent)
        return spent

    async def approval(self, approval_id: str) -> Approval:
        """The approval, or ``NotFound`` (also when it is another tenant's)."""
        try:
            approval = await self.store.get_approval(approval_id)
        except NotFound:
            raise NotFound(f"no approval {approval_id}") from None
        if not self._mine(approval.tenant):
            raise NotFound(f"no approval {approval_id}")
        return approval

    async def approvals(
        self,
        *,
        status: ApprovalStatus | None = ApprovalStatus.PENDING,
        run_id: str | None = None,
        limit: int = 100,
    ) -> list[Approval]:
        """This scope's approvals, oldest first (the queue's order)."""
        return await self.store.list_approvals(
            status=status, tenant=self.tenant, run_id=run_id, limit=limit
        )

    def _bus(self) -> Bus:
        if self.bus is None:  # pragma: no cover - the service always opens one
            raise NotAvailable("this service has no event bus", hint="start it with --bus")
        return self.bus

    async def events(
        self,
        *,
        event_type: str | None = None,
        correlation: str | None = None,
        since: float | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> EventPage:
        """A page of this scope's published events, newest first (``Bus.list_events``: the
        adapter filters by tenant before anything leaves it)."""
        return await self._bus().list_events(
            tenant=self.tenant,
            event_type=event_type,
            correlation=correlation,
            since=since,
            cursor=cursor,
            limit=limit,
        )

    async def dead_letters(self, *, group: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """This scope's dead letters, oldest first."""
        return await self._bus().dead_letters(group=group, tenant=self.tenant, limit=limit)

    async def dead_letter(self, letter_id: str) -> DeadLetter:
        """The dead letter, or ``NotFound`` (also when its event is another tenant's)."""
        try:
            letter = await self._bus().dead_letter(letter_id)
        except NotFound:
            raise NotFound(f"no dead letter {letter_id}") from None
        if not self._mine(letter.tenant):
            raise NotFound(f"no dead letter {letter_id}")
        return letter

    async def kpi_facts(
        self, *, agent: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[RunFacts]:
        """What the KPIs need of this scope's most recent runs (one journal read per run)."""
        runs = await self.store.page_runs(tenant=self.tenant, agent=agent, since=since, limit=limit)
        return [run_facts(run, await self.store.load_journal(run.id)) for run in runs]
