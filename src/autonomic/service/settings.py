"""What a service is started with: the store, the agents, the policies, sessions and OIDC.

``autonomic serve`` builds these from its options and environment; tests build them directly.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

POLICY_FILE = Path(__file__).with_name("policy.cedar")
"""The shipped authorization policy (Cedar): what each role may do. Point
``ServiceSettings.authz_policy`` (``autonomic serve --authz-policy``) at a copy to change it."""

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class OidcConfig:
    """Bearer tokens from an OpenID Connect provider, verified against its JWKS.

    Attributes:
        jwks_url: where the provider publishes its signing keys.
        issuer: the ``iss`` every token must carry.
        audience: the ``aud`` every token must carry (this service).
        tenant_claim: the claim naming the caller's tenant.
        role_claim: the claim naming its role (member, approver, admin).
        name_claim: the claim naming who it is.
        algorithms: the signature algorithms accepted (never ``none``).
    """

    jwks_url: str
    issuer: str
    audience: str
    tenant_claim: str = "tenant"
    role_claim: str = "role"
    name_claim: str = "sub"
    algorithms: tuple[str, ...] = ("RS256", "ES256")


def _session_secret() -> bytes:
    value = os.environ.get("AUTONOMIC_SESSION_SECRET")
    return value.encode() if value else secrets.token_bytes(32)


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """How one service process runs.

    Attributes:
        db: the store URL (``sqlite:///...`` or ``postgresql://...``), as ``--db`` everywhere.
        agents: extra agents to load (``module:attribute``), beside the built-in demo agents.
        policy: the governance policy YAML runs started here are governed by (risk rules).
        authz_policy: the Cedar file saying what each role may do (default: the shipped one).
        session_secret: signs session cookies; random per process unless
            ``AUTONOMIC_SESSION_SECRET`` is set (then sessions survive a restart and work across
            several service processes).
        session_ttl: seconds a console session lasts.
        secure_cookies: mark cookies ``Secure`` (serve behind HTTPS).
        oidc: accept OIDC bearer tokens too, when set.
        max_body_bytes: larger request bodies are refused with 413 before they are read whole.
        workers: run this many worker loops inside the service process (0: runs wait for an
            ``autonomic worker``).
        credentials: the secret source for tools' scoped credentials (``env`` or ``file:PATH``).
        key_cache_ttl: seconds a key row read to authenticate a request is reused (0: read it
            every time). A key revoked by another process (the CLI) stops working within this.
        bus: the event bus the events and dead-letter routes read (``--bus`` /
            ``AUTONOMIC_BUS``; default ``sql``, the embedded bus in ``db``).
    """

    db: str
    agents: tuple[str, ...] = ()
    policy: str | None = None
    authz_policy: Path = POLICY_FILE
    session_secret: bytes = field(default_factory=_session_secret, repr=False)
    session_ttl: float = 8 * 3600.0
    secure_cookies: bool = False
    oidc: OidcConfig | None = None
    max_body_bytes: int = MiB
    workers: int = 0
    credentials: str | None = None
    key_cache_ttl: float = 5.0
    bus: str | None = None
