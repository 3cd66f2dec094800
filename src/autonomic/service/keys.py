"""The key desk: create, list, rotate, revoke and verify API keys (the CLI's ``autonomic keys``).

A credential reads ``ak_<key id>_<secret>``: the key id says which row to look at, the secret is
compared by its hash in constant time. Only ``sha256(secret)`` is stored (``ports/keys.py``); the
secret is returned once, by ``create`` and ``rotate``, for the caller to show.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable

from autonomic.errors import InvalidInput, NotFound
from autonomic.ports.keys import ApiKey, KeyStore, Role

PREFIX = "ak_"
KEY_ID = re.compile(r"^key_[0-9a-f]{16}$")
_CREDENTIAL = re.compile(r"^ak_(key_[0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}$")
TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def digest(secret: str) -> str:
    """What is stored of a secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` in seconds; ``InvalidInput`` otherwise."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise InvalidInput(
            f"bad duration {text!r}", hint="write a number and a unit: 45s, 90m, 12h, 30d, 2w"
        )
    return int(match.group(1)) * _SECONDS[match.group(2)]


def check_name(kind: str, value: str, pattern: re.Pattern[str] = _NAME) -> str:
    if not pattern.match(value):
        raise InvalidInput(
            f"bad {kind} {value!r}",
            hint=f"a {kind} is 1-64 letters, digits and . _ - (starting with a letter or digit)",
        )
    return value


class KeyDesk:
    """The Python API behind ``autonomic keys`` and the service's authentication."""

    def __init__(self, keys: KeyStore, *, clock: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self.clock = clock

    async def create(
        self, *, tenant: str, role: Role | str, name: str, by: str, expires_in: float | None
    ) -> tuple[ApiKey, str]:
        """A new key and its credential (``ak_<id>_<secret>``), shown once."""
        try:
            role = Role(role)
        except ValueError:
            raise InvalidInput(
                f"unknown role {role!r}", hint="use member, approver or admin"
            ) from None
        check_name("tenant", tenant, TENANT)
        check_name("name", name)
        now = self.clock()
        secret = secrets.token_urlsafe(32)
        key = ApiKey(
            id=f"key_{secrets.token_hex(8)}",
            name=name,
            tenant=tenant,
            role=role,
            hash=digest(secret),
            created_at=now,
            expires_at=now + expires_in if expires_in is not None else None,
            created_by=by,
        )
        await self.keys.add(key)
        return key, f"{PREFIX}{key.id}_{secret}"

    async def list(self, *, tenant: str | None = None) -> list[ApiKey]:
        return await self.keys.list(tenant=tenant)

    async def get(self, key_id: str) -> ApiKey:
        return await self.keys.get(self._checked_id(key_id))

    async def rotate(self, key_id: str, *, by: str) -> tuple[ApiKey, str]:
        """A new secret for the key; the old one stops working at once (sessions too)."""
        secret = secrets.token_urlsafe(32)
        key = await self.keys.rotate(
            self._checked_id(key_id), new_hash=digest(secret), by=by, now=self.clock()
        )
        return key, f"{PREFIX}{key.id}_{secret}"

    async def revoke(self, key_id: str, *, by: str) -> ApiKey:
        return await self.keys.revoke(self._checked_id(key_id), by=by, now=self.clock())

    async def verify(self, credential: str) -> ApiKey | None:
        """The usable key this credential is, or ``None`` (malformed, unknown, wrong secret,
        expired or revoked: a caller learns only that it was refused)."""
        match = _CREDENTIAL.match(credential)
        if not match:
            return None
        key_id, secret = match.groups()
        try:
            key = await self.keys.get(key_id)
        except NotFound:
            return None
        if not hmac.compare_digest(key.hash, digest(secret)):
            return None
        return key if key.usable(self.clock()) else None

    @staticmethod
    def _checked_id(key_id: str) -> str:
        if not KEY_ID.match(key_id):
            raise InvalidInput(
                f"bad key id {key_id!r}", hint="a key id reads key_ and 16 hex digits"
            )
        return key_id
