"""Events on the bus: the caller's tenant's published events (newest first), publishing one, and
the declared event types (the CLI's ``autonomic events``)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from autonomic.core.envelope import encode, new_event
from autonomic.core.event_types import EventTypes
from autonomic.core.events import Event
from autonomic.errors import InvalidInput
from autonomic.service.auth import authenticate
from autonomic.service.authz import Action, Resource
from autonomic.service.identity import Identity
from autonomic.service.runtime import Service, current_service
from autonomic.service.schemas import EVENT_TYPE, EventOut, EventPage, EventTypeOut, Publish

router = APIRouter(tags=["events"])

Who = Annotated[Identity, Depends(authenticate)]
Svc = Annotated[Service, Depends(current_service)]
RUNTIME_TYPES = "autonomic."
"""Event types the runtime itself emits (a run started, completed, waiting...): not publishable over
the API, so no caller can forge the runtime's own announcements."""


def event_out(seq: int, event: Event) -> EventOut:
    wire = json.loads(encode(event))
    return EventOut(
        seq=seq,
        id=event.id,
        type=event.type,
        source=event.source,
        time=event.time,
        tenant=event.tenant,
        correlation_id=event.correlation_id,
        data=wire.get("data"),
    )


@router.get("/events", response_model=EventPage)
async def list_events(
    identity: Who,
    service: Svc,
    type: Annotated[str | None, Query(pattern=EVENT_TYPE, description="only this type")] = None,
    correlation: Annotated[
        str | None, Query(max_length=200, description="only this conversation (ordering key)")
    ] = None,
    before: Annotated[int | None, Query(ge=1, description="older than this seq")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> EventPage:
    """The caller's tenant's events, newest first, a page at a time (``next_before``). Reading
    takes nothing from any consumer group."""
    service.authorize(identity, Action.READ, Resource.tenant_of(identity))
    found = await service.scope(identity).events(
        event_type=type, correlation=correlation, before=before, limit=limit + 1
    )
    more = len(found) > limit
    found = found[:limit]
    return EventPage(
        events=[event_out(seq, event) for seq, event in found],
        next_before=found[-1][0] if more else None,
    )


@router.post("/events", response_model=EventOut, status_code=201)
async def publish(body: Publish, identity: Who, service: Svc) -> EventOut:
    """Publish one event in the caller's tenant, checked against its type's schema first (a
    refusal names the field). Types under ``autonomic.`` are the runtime's own: refused."""
    service.authorize(identity, Action.PUBLISH, Resource.tenant_of(identity))
    if body.type.startswith(RUNTIME_TYPES):
        raise InvalidInput(
            f"{body.type} is an event the runtime emits itself",
            hint="publish your own types (declared by your agents); GET /event-types lists them",
        )
    event = new_event(
        body.type,
        body.data,
        source=f"autonomic://service/{identity.principal}",
        correlation_id=body.correlation_id,
        tenant=identity.tenant,
    )
    assert service.bus is not None
    await service.bus.publish([event])
    return event_out(0, event)


@router.get("/event-types", response_model=list[EventTypeOut])
async def event_types(identity: Who, service: Svc) -> list[EventTypeOut]:
    """The declared event types and their data schemas."""
    service.authorize(identity, Action.READ, Resource.tenant_of(identity))
    return [
        EventTypeOut.model_validate(
            {"name": t.name, "description": t.description, "schema": t.schema}
        )
        for t in EventTypes.default()
    ]
