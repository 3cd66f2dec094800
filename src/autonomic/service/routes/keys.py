"""API keys over HTTP, for admins (the CLI's ``autonomic keys`` does the same on the database)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from autonomic.ports.keys import ApiKey
from autonomic.service.auth import authenticate
from autonomic.service.authz import Action, Resource
from autonomic.service.identity import Identity
from autonomic.service.keys import parse_duration
from autonomic.service.routes.views import key_out
from autonomic.service.runtime import Service, current_service
from autonomic.service.schemas import KEY_ID, CreateKey, KeyOut, NewKey

router = APIRouter(tags=["keys"])

Who = Annotated[Identity, Depends(authenticate)]
Svc = Annotated[Service, Depends(current_service)]
KeyId = Annotated[str, Path(pattern=KEY_ID, description="key_ and 16 hex digits")]


def _resource(key: ApiKey) -> Resource:
    return Resource("Key", key.id, key.tenant)


@router.get("/keys", response_model=list[KeyOut])
async def list_keys(identity: Who, service: Svc) -> list[KeyOut]:
    service.authorize(identity, Action.MANAGE_KEYS, Resource.tenant_of(identity))
    now = service.clock()
    return [key_out(k, now) for k in await service.keys.list()]


@router.post("/keys", response_model=NewKey, status_code=201)
async def create_key(body: CreateKey, identity: Who, service: Svc) -> NewKey:
    """A new key; its secret is in this answer only."""
    service.authorize(identity, Action.MANAGE_KEYS, Resource("Tenant", body.tenant, body.tenant))
    expires = parse_duration(body.expires) if body.expires else None
    key, secret = await service.keys.create(
        tenant=body.tenant, role=body.role, name=body.name, by=identity.principal,
        expires_in=expires,
    )  # fmt: skip
    return NewKey(key=key_out(key, service.clock()), secret=secret)


async def _key(service: Service, identity: Identity, key_id: str) -> ApiKey:
    key = await service.keys.get(key_id)
    service.authorize(identity, Action.MANAGE_KEYS, _resource(key))
    return key


@router.post("/keys/{key_id}/rotate", response_model=NewKey)
async def rotate_key(key_id: KeyId, identity: Who, service: Svc) -> NewKey:
    """A new secret for the key; the old one (and its console sessions) stop at once."""
    await _key(service, identity, key_id)
    key, secret = await service.keys.rotate(key_id, by=identity.principal)
    return NewKey(key=key_out(key, service.clock()), secret=secret)


@router.post("/keys/{key_id}/revoke", response_model=KeyOut)
async def revoke_key(key_id: KeyId, identity: Who, service: Svc) -> KeyOut:
    await _key(service, identity, key_id)
    key = await service.keys.revoke(key_id, by=identity.principal)
    return key_out(key, service.clock())
