"""``/healthz`` (no credential: a load balancer asks it) and ``/metrics`` (admins)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response

from autonomic.service import metrics
from autonomic.service.auth import authenticate
from autonomic.service.authz import Action, Resource
from autonomic.service.identity import Identity
from autonomic.service.runtime import Service, current_service

router = APIRouter(tags=["system"])

PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
"""The only routes answered without a credential."""


@router.get("/healthz")
async def healthz(service: Annotated[Service, Depends(current_service)]) -> dict[str, Any]:
    """Whether the service can reach its database (one cheap read)."""
    await service.store.list_runs(limit=1)
    return {"status": "ok", "uptime_s": round(service.clock() - service.started_at, 3)}


@router.get("/metrics", response_class=Response)
async def get_metrics(
    identity: Annotated[Identity, Depends(authenticate)],
    service: Annotated[Service, Depends(current_service)],
) -> Response:
    """Prometheus text: the service's request counters and latencies."""
    service.authorize(identity, Action.READ_METRICS, Resource.tenant_of(identity))
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)
