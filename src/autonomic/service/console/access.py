"""Where the console meets the service's identities, roles and tenant scope.

Every page and form goes through these few functions, so the console never decides on its own
who someone is, what they may do or which tenant's rows they see: it asks the code the REST API
asks - ``auth.authenticate`` for the identity, ``Service.authorize`` (the Cedar policy) for the
right, ``Service.scope`` for the tenant's rows.

The session is the service's signed cookie (``auth.sign_in``); the forms carry the service's CSRF
token for that cookie (``auth.csrf_token``), which the API otherwise expects in a header: a page on
another site can make the browser send the cookie but cannot read the token.
"""

from __future__ import annotations

import dataclasses

from fastapi import Request, Response

from autonomic.core.approval import Approval
from autonomic.service import auth
from autonomic.service.authz import Action, Resource
from autonomic.service.console.scope import Scope
from autonomic.service.identity import Identity
from autonomic.service.problems import Forbidden, Unauthenticated
from autonomic.service.runtime import Service, service_of

__all__ = ["Identity", "Scope", "identify", "may_decide", "scope"]


async def identify(request: Request, *, csrf: str | None = None) -> Identity | None:
    """The identity behind the request's session cookie, or ``None`` (signed out, expired,
    revoked). A form that changes something passes its ``csrf`` field: a wrong or missing one is
    also ``None``, so the change is refused exactly as a request with no session."""
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        # The API takes the token from a header; a plain HTML form can only send a field. Check
        # the field, then authenticate as the API does, with the token where it looks for it.
        try:
            auth.check_csrf(request, csrf)
        except Forbidden:
            return None
        headers = [(k, v) for k, v in request.scope["headers"] if k.lower() != b"authorization"]
        headers.append((auth.CSRF_HEADER.lower().encode(), (csrf or "").encode()))
        request = Request(dict(request.scope, headers=headers), request.receive)
    elif "authorization" in request.headers:
        # the console is for browsers: a bearer credential is the API's, not a session
        request = Request(
            dict(
                request.scope,
                headers=[(k, v) for k, v in request.scope["headers"] if k != b"authorization"],
            ),
            request.receive,
        )
    try:
        return await auth.authenticate(request)
    except Unauthenticated:
        return None


async def sign_in(request: Request, key: str) -> str:
    """Check ``key``; the session cookie's value for it. Raises ``Unauthenticated`` saying why."""
    _identity, value = await auth.sign_in(service_of(request), key)
    return value


def set_session(request: Request, response: Response, session: str) -> None:
    auth.set_session(response, session, service_of(request).settings)


def clear_session(request: Request, response: Response) -> None:
    auth.clear_session(response)


def csrf_token(request: Request) -> str:
    """The token this session's forms carry."""
    cookie = request.cookies.get(auth.SESSION_COOKIE, "")
    return auth.csrf_token(cookie, service_of(request).settings.session_secret)


def scope(request: Request, identity: Identity) -> Scope:
    """The identity's tenant's view of the store; decisions are made as the identity."""
    service = service_of(request)
    return Scope(service.scope(identity), service.desk, identity)


def service(request: Request) -> Service:
    return service_of(request)


def may_decide(request: Request, identity: Identity, approval: Approval) -> tuple[bool, str | None]:
    """Whether ``identity`` may approve or deny ``approval`` (the Cedar policy's answer, as the
    API's POST will get it), and if not, why, in words for the person."""
    authorizer = service_of(request).authorizer
    resource = Resource.of_approval(approval)
    if authorizer.allows(identity, Action.DECIDE, resource):
        return True, None
    anyones = dataclasses.replace(resource, requester=None)
    if authorizer.allows(identity, Action.DECIDE, anyones):
        return False, "You started this run: another approver of your tenant must decide."
    return False, (
        f"Your role ({identity.role.value}) can see approvals but not decide them; "
        "an approver of your tenant decides."
    )


def authorize_decision(request: Request, identity: Identity, approval: Approval) -> None:
    """Raise ``Forbidden`` (or ``NotFound``) unless ``identity`` may decide ``approval``."""
    service_of(request).authorize(identity, Action.DECIDE, Resource.of_approval(approval))


def authorize_read(request: Request, identity: Identity) -> None:
    """Raise ``Forbidden`` unless ``identity`` may read its tenant's runs and approvals."""
    service_of(request).authorize(identity, Action.READ, Resource.tenant_of(identity))
