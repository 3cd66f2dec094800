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
from autonomic.ports.bus import CURSOR_MAX_CHARS, Listed
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


def event_out(event: Event, listed: Listed | None = None) -> EventOut:
    wire = json.loads(encode(event))
    return EventOut(
        position=listed.position if listed else None,
        published_at=listed.published_at if listed else None,
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
    since: Annotated[
        float | None, Query(ge=0, description="published at or after (epoch s)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=CURSOR_MAX_CHARS)] = None,
) -> EventPage:
    """The caller's tenant's events, newest first, a page at a time (``next_cursor``). Reading
    takes nothing from any consumer group. On Kafka the topics are read back within a time
    budget: a page may be short and still have a ``next_cursor``."""
    service.authorize(identity, Action.READ, Resource.tenant_of(identity))
    page = await service.scope(identity).events(
        event_type=type, correlation=correlation, since=since, cursor=cursor, limit=limit
    )
    return EventPage(events=[event_out(x.event, x) for x in page.events], next_cursor=page.cursor)


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
    return event_out(event)


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
