"""Where the console meets the service's identities, roles and tenant-scoped store.

Every page and form goes through these few functions, so the console never decides on its own
who someone is, what they may do or which tenant's rows they see: it asks the same code the REST
API asks (``autonomic.service.auth``).

CSRF: a form that changes something carries a token derived from the session cookie with the
service's secret (HMAC), so a page on another site - which can make the browser send the cookie
but cannot read it - cannot make the token. The cookie is also ``SameSite=Strict``.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol

from fastapi import Request, Response

from autonomic.core.approval import Approval
from autonomic.service.console.scope import Scope


class Identity(Protocol):
    """Who is signed in: the key's id and name, its tenant and role."""

    @property
    def key_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def role(self) -> str: ...


async def identify(request: Request) -> Identity | None:
    """The identity behind the request's session cookie, or ``None`` (signed out, expired)."""
    raise NotImplementedError


async def sign_in(request: Request, key: str) -> str:
    """Check ``key``; the session cookie's value for it. Raises ``UserError`` saying why not."""
    raise NotImplementedError


def set_session(request: Request, response: Response, session: str) -> None:
    raise NotImplementedError


def clear_session(request: Request, response: Response) -> None:
    raise NotImplementedError


def session_value(request: Request) -> str:
    raise NotImplementedError


def secret(request: Request) -> bytes:
    raise NotImplementedError


def scope(request: Request, identity: Identity) -> Scope:
    """The identity's tenant's view of the store; decisions are made as the identity."""
    raise NotImplementedError


def allowed(identity: Identity, action: str, approval: Approval) -> bool:
    raise NotImplementedError


def may_decide(identity: Identity, approval: Approval) -> tuple[bool, str | None]:
    """Whether ``identity`` may approve or deny ``approval``, and if not, why (said to them)."""
    if not allowed(identity, "approval.decide", approval):
        return False, (
            f"Your role ({identity.role}) can see approvals but not decide them; "
            "an approver of your tenant decides."
        )
    if approval.requester is not None and approval.requester == decider(identity):
        return False, "You requested this run: another approver must decide."
    return True, None


def decider(identity: Identity) -> str:
    """The name a decision is recorded under: the key's name (its holder), never a form field."""
    return identity.name


def csrf_token(request: Request) -> str:
    """The token this session's forms carry."""
    material = b"console-csrf\n" + session_value(request).encode()
    return hmac.new(secret(request), material, hashlib.sha256).hexdigest()[:40]


def csrf_ok(request: Request, token: str) -> bool:
    try:
        expected = csrf_token(request)
    except LookupError:
        return False
    return bool(token) and hmac.compare_digest(expected, token)
