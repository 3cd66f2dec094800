"""KPIs of the caller's tenant's runs (the CLI's ``autonomic kpis``), and audit verification (the
CLI's ``autonomic audit verify``, for admins: the audit log spans every tenant)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from autonomic.audit.verify import verify_store
from autonomic.observability.kpis import kpis
from autonomic.service.auth import authenticate
from autonomic.service.authz import Action, Resource
from autonomic.service.identity import Identity
from autonomic.service.keys import parse_duration
from autonomic.service.runtime import Service, current_service
from autonomic.service.schemas import AGENT_NAME, RUN_ID, AuditReport, KpiOut, KpiReport

router = APIRouter(tags=["kpis and audit"])

Who = Annotated[Identity, Depends(authenticate)]
Svc = Annotated[Service, Depends(current_service)]


@router.get("/kpis", response_model=KpiReport)
async def get_kpis(
    identity: Who,
    service: Svc,
    since: Annotated[
        str | None, Query(pattern=r"^\d+[smhdw]$", description="only runs created in this window")
    ] = None,
    agent: Annotated[str | None, Query(pattern=AGENT_NAME)] = None,
    limit: Annotated[
        int, Query(ge=1, le=10_000, description="at most this many recent runs")
    ] = 1000,
) -> KpiReport:
    """Completion rate, mean steps, recovery and human intervention rates, cost per task and
    latency percentiles per agent and task type, over the caller's tenant's recent runs."""
    service.authorize(identity, Action.READ, Resource.tenant_of(identity))
    after = service.clock() - parse_duration(since) if since else None
    facts = await service.scope(identity).kpi_facts(agent=agent, since=after, limit=limit)
    rows = [KpiOut(**row.to_dict()) for row in kpis(facts)]
    return KpiReport(since=after, runs=len(facts), kpis=rows)


@router.get("/audit/verify", response_model=AuditReport)
async def verify_audit(
    identity: Who,
    service: Svc,
    run_id: Annotated[
        str | None, Query(pattern=RUN_ID, description="check this run's journal only (and the log)")
    ] = None,
) -> dict[str, Any]:
    """Check the audit log's chain and every journal (or one run's) against its anchors; the
    first break is named. A break is an answer (``ok: false``), not an error."""
    service.authorize(identity, Action.VERIFY_AUDIT, Resource("Service", "audit", identity.tenant))
    report = await verify_store(service.store, run_id=run_id)
    return report.to_dict()
