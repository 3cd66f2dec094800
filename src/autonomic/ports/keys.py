"""The key store port: API keys, kept only as hashes, each bound to a tenant, a role and an expiry.

A key's secret is shown once, when it is created or rotated; the store keeps ``sha256(secret)``.
The secret is 32 random bytes, so a fast hash is enough: nobody can guess their way to a preimage,
and a slow password hash would cost every request its latency for nothing.

Who did each act on a key (created, rotated, revoked) is kept on the key's row: a key is not a run,
so it has no journal of its own.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    """What an identity may do (the policy file says exactly what; see ``service/policy.cedar``)."""

    MEMBER = "member"
    """Starts and reads the runs of its tenant."""
    APPROVER = "approver"
    """A member who also decides approvals (never on its own requests), cancels and reopens runs."""
    ADMIN = "admin"
    """Manages keys and policies, in every tenant."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One API key as stored: never its secret.

    Attributes:
        id: ``key_`` and 16 hex digits; the public half of the key (the credential begins with it).
        name: who holds it (a person or a program); with the tenant, the principal acts are
            recorded under (``name@tenant``).
        tenant: the only tenant it sees (an admin sees every tenant).
        role: member, approver or admin.
        hash: ``sha256`` of the secret, hex.
        created_at: seconds since the epoch.
        expires_at: when it stops working, or ``None`` for never.
        created_by: who created it (the CLI's OS user, or an admin's principal).
        rotated_at, rotated_by: the last rotation (a new secret, the old one stops at once).
        revoked_at, revoked_by: when and by whom it was revoked; a revoked key never works again.
    """

    id: str
    name: str
    tenant: str
    role: Role
    hash: str
    created_at: float
    expires_at: float | None
    created_by: str
    rotated_at: float | None = None
    rotated_by: str | None = None
    revoked_at: float | None = None
    revoked_by: str | None = None

    def usable(self, now: float) -> bool:
        """Neither revoked nor expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def state(self, now: float) -> str:
        """``active``, ``expired`` or ``revoked``: what ``keys list`` shows."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"


class KeyStore(abc.ABC):
    """Where API keys live: the same database as the runs (``SqlKeyStore``)."""

    @abc.abstractmethod
    async def add(self, key: ApiKey) -> None:
        """Insert a new key; ``InvalidInput`` if its id exists."""

    @abc.abstractmethod
    async def get(self, key_id: str) -> ApiKey:
        """The key, or ``NotFound``."""

    @abc.abstractmethod
    async def list(self, *, tenant: str | None = None) -> list[ApiKey]:
        """Every key (of ``tenant``), oldest first, revoked ones included."""

    @abc.abstractmethod
    async def rotate(self, key_id: str, *, new_hash: str, by: str, now: float) -> ApiKey:
        """Replace a usable key's hash; ``NotFound`` if missing, ``InvalidInput`` if revoked."""

    @abc.abstractmethod
    async def revoke(self, key_id: str, *, by: str, now: float) -> ApiKey:
        """Revoke a key for good (revoking twice keeps the first record); ``NotFound`` if missing."""
