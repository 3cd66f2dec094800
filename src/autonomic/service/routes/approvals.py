"""The approvals inbox, one approval, approve and deny. The decider is the caller's identity."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from autonomic.core.approval import ApprovalStatus
from autonomic.service.auth import authenticate
from autonomic.service.authz import Action, Resource
from autonomic.service.identity import Identity
from autonomic.service.routes.views import approval_out
from autonomic.service.runtime import Service, current_service
from autonomic.service.schemas import APPROVAL_ID, ApprovalOut, Decide, Deny

router = APIRouter(tags=["approvals"])

Who = Annotated[Identity, Depends(authenticate)]
Svc = Annotated[Service, Depends(current_service)]
ApprovalId = Annotated[str, Path(pattern=APPROVAL_ID, description="apr_ and 24 hex digits")]


@router.get("/approvals", response_model=list[ApprovalOut])
async def inbox(
    identity: Who,
    service: Svc,
    status: Annotated[ApprovalStatus, Query()] = ApprovalStatus.PENDING,
    run_id: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[ApprovalOut]:
    """The caller's tenant's approvals (pending by default), oldest first; expiries that are due
    are applied first, so what is listed can still be decided."""
    service.authorize(identity, Action.READ, Resource.tenant_of(identity))
    scope = service.scope(identity)
    if status is ApprovalStatus.PENDING:
        await service.desk.sweep(tenant=scope.tenant)
    found = await scope.approvals(status=status, run_id=run_id, limit=limit)
    return [approval_out(a) for a in found]


@router.get("/approvals/{approval_id}", response_model=ApprovalOut)
async def get_approval(approval_id: ApprovalId, identity: Who, service: Svc) -> ApprovalOut:
    approval = await service.scope(identity).approval(approval_id)
    service.authorize(identity, Action.READ, Resource.of_approval(approval))
    return approval_out(approval)


@router.post("/approvals/{approval_id}/approve", response_model=ApprovalOut)
async def approve(
    approval_id: ApprovalId, body: Decide, identity: Who, service: Svc
) -> ApprovalOut:
    """Vote yes as the caller (never on a run the caller started). ``binding``: the hash shown,
    so the arguments approved are the ones that will run."""
    approval = await service.scope(identity).approval(approval_id)
    service.authorize(identity, Action.DECIDE, Resource.of_approval(approval))
    decided = await service.desk.approve(
        approval.id, by=identity.principal, reason=body.reason, binding=body.binding
    )
    return approval_out(decided)


@router.post("/approvals/{approval_id}/deny", response_model=ApprovalOut)
async def deny(approval_id: ApprovalId, body: Deny, identity: Who, service: Svc) -> ApprovalOut:
    """Reject as the caller, with a reason; the run goes on without the action."""
    approval = await service.scope(identity).approval(approval_id)
    service.authorize(identity, Action.DECIDE, Resource.of_approval(approval))
    decided = await service.desk.deny(approval.id, by=identity.principal, reason=body.reason)
    return approval_out(decided)
