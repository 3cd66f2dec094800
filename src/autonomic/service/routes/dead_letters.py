"""The dead-letter queue: events a consumer group gave up on, listed, shown, retried or dropped
(the CLI's ``autonomic dlq``), each scoped by the tenant its event was published for."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from autonomic.ports.bus import DeadLetter
from autonomic.service.auth import authenticate
from autonomic.service.authz import Action, Resource
from autonomic.service.identity import Identity
from autonomic.service.routes.events import event_out
from autonomic.service.runtime import Service, current_service
from autonomic.service.schemas import LETTER_ID, DeadLetterOut, Drop

router = APIRouter(tags=["dead letters"])
log = logging.getLogger("autonomic.service")

Who = Annotated[Identity, Depends(authenticate)]
Svc = Annotated[Service, Depends(current_service)]
LetterId = Annotated[str, Path(pattern=LETTER_ID, description="the dead letter's id")]


def letter_out(letter: DeadLetter) -> DeadLetterOut:
    return DeadLetterOut(
        id=letter.id,
        group=letter.group,
        topic=letter.topic,
        tenant=letter.tenant,
        error=letter.error,
        attempts=letter.attempts,
        first_failure=letter.first_failure,
        last_failure=letter.last_failure,
        event=event_out(letter.event),
    )


def _resource(letter: DeadLetter) -> Resource:
    return Resource("DeadLetter", letter.id, letter.tenant)


@router.get("/dead-letters", response_model=list[DeadLetterOut])
async def list_letters(
    identity: Who,
    service: Svc,
    group: Annotated[str | None, Query(max_length=200, description="only this group")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeadLetterOut]:
    """The caller's tenant's dead letters, oldest first."""
    service.authorize(identity, Action.READ, Resource.tenant_of(identity))
    letters = await service.scope(identity).dead_letters(group=group, limit=limit)
    return [letter_out(x) for x in letters]


@router.get("/dead-letters/{letter_id}", response_model=DeadLetterOut)
async def get_letter(letter_id: LetterId, identity: Who, service: Svc) -> DeadLetterOut:
    letter = await service.scope(identity).dead_letter(letter_id)
    service.authorize(identity, Action.READ, _resource(letter))
    return letter_out(letter)


@router.post("/dead-letters/{letter_id}/retry", response_model=DeadLetterOut)
async def retry_letter(letter_id: LetterId, identity: Who, service: Svc) -> DeadLetterOut:
    """Deliver the event to its group again (attempts start over); the letter goes."""
    letter = await service.scope(identity).dead_letter(letter_id)
    service.authorize(identity, Action.SETTLE_LETTER, _resource(letter))
    assert service.bus is not None
    await service.bus.retry_dead_letter(letter.id)
    log.info("dead letter %s retried by %s", letter.id, identity.principal)
    return letter_out(letter)


@router.post("/dead-letters/{letter_id}/drop", response_model=DeadLetterOut)
async def drop_letter(
    letter_id: LetterId, body: Drop, identity: Who, service: Svc
) -> DeadLetterOut:
    """Give the event up for good; the reason is kept, with who dropped it."""
    letter = await service.scope(identity).dead_letter(letter_id)
    service.authorize(identity, Action.SETTLE_LETTER, _resource(letter))
    assert service.bus is not None
    await service.bus.drop_dead_letter(letter.id, reason=f"{body.reason} (by {identity.principal})")
    return letter_out(letter)
