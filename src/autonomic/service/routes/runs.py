"""Runs: start, list and filter, one run, its timeline and cost, cancel, resume (reopen)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse, Response

from autonomic.core.run import RunStatus
from autonomic.core.timeline import timeline
from autonomic.errors import InvalidInput, NotFound
from autonomic.service.auth import authenticate
from autonomic.service.authz import Action, Resource
from autonomic.service.identity import Identity
from autonomic.service.routes.views import cursor_of, parse_cursor, run_out
from autonomic.service.runtime import Service, current_service
from autonomic.service.schemas import RUN_ID, Reason, Resume, RunOut, RunPage, StartRun, TimelineOut

router = APIRouter(tags=["runs"])

Who = Annotated[Identity, Depends(authenticate)]
Svc = Annotated[Service, Depends(current_service)]
RunId = Annotated[str, Path(pattern=RUN_ID, description="the run's id (run_...)")]
TIMELINE_PAGE = 500
"""Timeline rows per page by default (a 500-step run is about 1,500 rows: three pages)."""
TIMELINE_MAX = 5000


@router.post("/runs", status_code=201, response_model=RunOut)
async def start_run(body: StartRun, identity: Who, service: Svc) -> RunOut:
    """Start a run in the caller's tenant; a worker drives it. The caller is its requester (and
    so may not approve its actions)."""
    service.authorize(identity, Action.START_RUN, Resource.tenant_of(identity))
    if body.agent not in service.engine.agents.names():
        raise InvalidInput(
            f"unknown agent {body.agent!r}", hint="GET /agents lists the agents this service runs"
        )
    metadata: dict[str, Any] = dict(body.metadata)
    if body.budget is not None:
        metadata["budget"] = dict(body.budget)
    run = await service.engine.start(
        body.agent,
        body.task,
        tenant=identity.tenant,
        metadata=metadata,
        max_turns=body.max_turns,
        requester=identity.principal,
    )
    return run_out(run)


@router.get("/runs", response_model=RunPage)
async def list_runs(
    identity: Who,
    service: Svc,
    status: Annotated[RunStatus | None, Query(description="only runs in this status")] = None,
    agent: Annotated[str | None, Query(max_length=128)] = None,
    since: Annotated[float | None, Query(ge=0, description="created at or after (epoch s)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> RunPage:
    """The caller's tenant's runs, newest first, a page at a time (``next_cursor``)."""
    service.authorize(identity, Action.READ, Resource.tenant_of(identity))
    before = parse_cursor(cursor) if cursor else None
    runs = await service.scope(identity).runs(
        status=status, agent=agent, since=since, before=before, limit=limit + 1
    )
    more = len(runs) > limit
    runs = runs[:limit]
    return RunPage(
        runs=[run_out(r) for r in runs], next_cursor=cursor_of(runs[-1]) if more else None
    )


@router.get("/runs/{run_id}", response_model=RunOut)
async def get_run(run_id: RunId, identity: Who, service: Svc) -> RunOut:
    run = await service.scope(identity).run(run_id)
    service.authorize(identity, Action.READ, Resource.of_run(run))
    return run_out(run)


@router.get("/runs/{run_id}/timeline", response_model=TimelineOut)
async def get_timeline(
    run_id: RunId,
    identity: Who,
    service: Svc,
    after: Annotated[int, Query(ge=0, description="rows after this journal seq")] = 0,
    limit: Annotated[int, Query(ge=1, le=TIMELINE_MAX, description="rows at most")] = TIMELINE_PAGE,
) -> Response:
    """The run's journal as rows a person reads, a page at a time (``next_after``), and what all
    its model calls cost.

    Reads the page (one more row, to know whether another follows) and the run's model calls
    (``Store.model_calls``: a model turn's call, not its message), never the whole journal: a
    500-step run's first page decodes 501 of its 1,504 entries. Answered as JSON written once:
    the rows are built here from the journal (already checked), so validating them again against
    the response model would only double the work of a long run's timeline; ``TimelineOut``
    still documents the shape."""
    scope = service.scope(identity)
    run, shown = await scope.journal(run_id, after_seq=after, limit=limit + 1)
    service.authorize(identity, Action.READ, Resource.of_run(run))
    more = len(shown) > limit
    shown = shown[:limit]
    body = {
        "run": run_out(run).model_dump(),
        "items": [item.to_dict() for item in timeline(shown, start=run.created_at)],
        "cost": await scope.cost(run),
        "next_after": shown[-1].seq if more else None,
    }
    return JSONResponse(body)


@router.post("/runs/{run_id}/cancel", response_model=RunOut)
async def cancel_run(run_id: RunId, body: Reason, identity: Who, service: Svc) -> RunOut:
    """Cancel the run; journaled with the caller as who did it."""
    run = await service.scope(identity).run(run_id)
    service.authorize(identity, Action.CANCEL, Resource.of_run(run))
    return run_out(
        await service.engine.cancel(run.id, f"{body.reason} (by {identity.principal})",
                                    by=identity.principal)
    )  # fmt: skip


@router.post("/runs/{run_id}/resume", response_model=RunOut)
async def resume_run(run_id: RunId, body: Resume, identity: Who, service: Svc) -> RunOut:
    """Reopen a SUSPENDED or WAITING_FOR_HUMAN run (raising its budget, setting metadata); a
    worker takes it on. Journaled with the caller as who did it."""
    run = await service.scope(identity).run(run_id)
    service.authorize(identity, Action.RESUME, Resource.of_run(run))
    try:
        reopened = await service.engine.reopen(
            run.id,
            f"{body.reason} (by {identity.principal})",
            budget=body.budget,
            metadata=body.metadata,
            by=identity.principal,
        )
    except NotFound as exc:  # not the run (it was read above): something it names
        raise InvalidInput(exc.message, hint=exc.hint) from None
    return run_out(reopened)
