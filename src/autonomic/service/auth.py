"""Authentication: which ``Identity`` a request comes from.

A request proves who it is in one of three ways, tried in this order:

1. ``Authorization: Bearer ak_<key id>_<secret>``: an API key (``autonomic keys create``).
2. ``Authorization: Bearer <JWT>``: an OIDC token, when the service is configured with OIDC
   (``oidc.py``: signature against the provider's JWKS, issuer, audience, expiry).
3. The session cookie ``autonomic_session`` (the console): made by ``session_cookie`` after the
   user signed in with an API key, signed with the service's session secret. It names the key and
   the first characters of the key's hash, so rotating or revoking the key ends its sessions.
   A user of the OIDC provider signs in by pasting a bearer token instead (``oidc_session_cookie``):
   the cookie then carries the identity the verified token named, and ends when the token expires
   (or sooner, ``session_ttl``); turning OIDC off ends these sessions too.
   A state-changing request (POST, PUT, PATCH, DELETE) authenticated by the cookie must also carry
   ``X-CSRF-Token: csrf_token(cookie value, secret)`` (or the console checks the same token from a
   form field with ``check_csrf``): a cookie alone never changes anything.

Anything else is a 401 in the one error shape (``problems.py``). ``authenticate`` is the FastAPI
dependency; use it as ``identity: Identity = Depends(authenticate)``.

For the console (interface):

* ``sign_in(service, credential) -> (Identity, cookie value)``: verify an API key a user typed;
  raises ``Unauthenticated``. Set the cookie with ``set_session(response, value, settings)``.
* ``session_cookie(key, secret, now, ttl) -> str`` / ``read_session(value, secret, now) ->
  (key id, hash prefix) | None``: make and read a cookie value.
* ``csrf_token(cookie value, secret) -> str`` and ``check_csrf(request, token)``.
* ``clear_session(response)``: sign out.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from typing import Any

from fastapi import Request, Response

from autonomic.errors import UserError
from autonomic.ports.keys import ApiKey, Role
from autonomic.service.identity import Identity
from autonomic.service.keys import PREFIX
from autonomic.service.problems import Forbidden, Unauthenticated
from autonomic.service.runtime import Service, service_of
from autonomic.service.settings import ServiceSettings

SESSION_COOKIE = "autonomic_session"
CSRF_HEADER = "X-CSRF-Token"
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_HASH_PREFIX = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(payload: str, secret: bytes) -> str:
    return _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())


def session_cookie(key: ApiKey, secret: bytes, *, now: float, ttl: float) -> str:
    """A signed cookie value naming ``key`` until ``now + ttl``."""
    body = json.dumps({"k": key.id, "h": key.hash[:_HASH_PREFIX], "e": now + ttl})
    payload = _b64(body.encode())
    return f"{payload}.{_sign(payload, secret)}"


def oidc_session_cookie(identity: Identity, secret: bytes, *, expires: float) -> str:
    """A signed cookie value carrying an OIDC-verified ``identity`` until ``expires``."""
    body = json.dumps({"o": [identity.name, identity.tenant, identity.role.value], "e": expires})
    payload = _b64(body.encode())
    return f"{payload}.{_sign(payload, secret)}"


def _session_body(value: str, secret: bytes, now: float) -> dict[str, Any] | None:
    payload, dot, signature = value.partition(".")
    if not dot or not hmac.compare_digest(signature, _sign(payload, secret)):
        return None
    try:
        body = json.loads(_unb64(payload))
        if not isinstance(body, dict) or now >= float(body["e"]):
            return None
    except (ValueError, KeyError, TypeError):
        return None
    return body


def read_session(value: str, secret: bytes, *, now: float) -> tuple[str, str] | None:
    """``(key id, hash prefix)`` of a valid, unexpired key session cookie; ``None`` otherwise."""
    body = _session_body(value, secret, now)
    if body is None or "k" not in body:
        return None
    return str(body["k"]), str(body.get("h", ""))


def read_oidc_session(value: str, secret: bytes, *, now: float) -> Identity | None:
    """The identity of a valid, unexpired OIDC session cookie; ``None`` otherwise."""
    body = _session_body(value, secret, now)
    if body is None or "o" not in body:
        return None
    try:
        name, tenant, role = (str(x) for x in body["o"])
        return Identity(
            key_id=f"oidc:{name}", name=name, tenant=tenant, role=Role(role), via="session"
        )
    except (ValueError, TypeError):
        return None


def csrf_token(cookie_value: str, secret: bytes) -> str:
    """The token a state-changing request made with this session cookie must carry."""
    return _sign("csrf:" + cookie_value, secret)


def check_csrf(request: Request, token: str | None) -> None:
    """Refuse (403) a cookie-authenticated change whose CSRF token is missing or wrong."""
    cookie = request.cookies.get(SESSION_COOKIE, "")
    secret = service_of(request).settings.session_secret
    if not token or not hmac.compare_digest(token, csrf_token(cookie, secret)):
        raise Forbidden(
            "this change needs the session's CSRF token",
            hint=f"send the {CSRF_HEADER} header (the console does it for you)",
            code="csrf",
        )


def set_session(response: Response, value: str, settings: ServiceSettings) -> None:
    """Put the session cookie on ``response``: HttpOnly, SameSite=Strict."""
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=int(settings.session_ttl),
        httponly=True,
        samesite="strict",
        secure=settings.secure_cookies,
        path="/",
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")


def identity_of(key: ApiKey, via: str = "key") -> Identity:
    return Identity(key_id=key.id, name=key.name, tenant=key.tenant, role=key.role, via=via)  # type: ignore[arg-type]


async def sign_in(service: Service, credential: str) -> tuple[Identity, str]:
    """Verify an API key (or, with OIDC configured, a bearer token from the provider) pasted into
    the console; the identity and a session cookie value."""
    credential = credential.strip()
    if credential.lower().startswith("bearer "):
        credential = credential[7:].strip()
    if not credential.startswith(PREFIX) and credential.count(".") == 2:
        if service.oidc is None:
            raise Unauthenticated(
                "this service does not accept OIDC tokens",
                hint="sign in with an API key, or start the service with --oidc-jwks-url ...",
            )
        identity, token_expires = await service.oidc.verify(credential)
        settings = service.settings
        expires = min(token_expires, service.clock() + settings.session_ttl)
        value = oidc_session_cookie(identity, settings.session_secret, expires=expires)
        return dataclasses.replace(identity, via="session"), value
    key = await service.keys.verify(credential)
    if key is None:
        raise Unauthenticated(
            "that API key is not valid (unknown, revoked or expired)",
            hint="ask an admin for a key: autonomic keys create --tenant T --role R --name N",
        )
    settings = service.settings
    value = session_cookie(
        key, settings.session_secret, now=service.clock(), ttl=settings.session_ttl
    )
    return identity_of(key, "session"), value


async def authenticate(request: Request) -> Identity:
    """The FastAPI dependency: the request's identity, or 401."""
    service = service_of(request)
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated(
                "the Authorization header must read 'Bearer <API key or token>'",
                hint="create a key with: autonomic keys create --tenant T --role R --name N",
            )
        if token.startswith("ak_"):
            key = await service.keys.verify(token)
            if key is None:
                raise Unauthenticated(
                    "that API key is not valid (unknown, revoked or expired)",
                    hint="`autonomic keys list` shows the keys and their state",
                )
            return identity_of(key)
        if service.oidc is not None and token.count(".") == 2:
            return await service.oidc.identify(token)
        raise Unauthenticated(
            "the bearer credential is neither an API key nor an accepted token",
            hint="API keys begin with ak_; OIDC tokens need `autonomic serve --oidc-*`",
        )
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        oidc = read_oidc_session(cookie, service.settings.session_secret, now=service.clock())
        if oidc is not None:
            if service.oidc is None:
                raise Unauthenticated("the session has ended", hint="sign in again")
            if request.method in _UNSAFE:
                check_csrf(request, request.headers.get(CSRF_HEADER))
            return oidc
        found = read_session(cookie, service.settings.session_secret, now=service.clock())
        key = None
        if found is not None:
            try:
                key = await service.keys.current(found[0])
            except UserError:  # a malformed or unknown id: a bad session, nothing more
                key = None
        if key is None or found is None or key.hash[:_HASH_PREFIX] != found[1]:
            raise Unauthenticated("the session has ended", hint="sign in again")
        if not key.usable(service.clock()):
            raise Unauthenticated("the key of this session was revoked or expired")
        if request.method in _UNSAFE:
            check_csrf(request, request.headers.get(CSRF_HEADER))
        return identity_of(key, "session")
    raise Unauthenticated(
        "this route needs a credential",
        hint="send 'Authorization: Bearer ak_...' (autonomic keys create) or sign in to the console",
    )
