"""The key desk: create, list, rotate, revoke and verify API keys (the CLI's ``autonomic keys``).

A credential reads ``ak_<key id>_<secret>``: the key id says which row to look at, the secret is
compared by its hash in constant time. Only ``sha256(secret)`` is stored (``ports/keys.py``); the
secret is returned once, by ``create`` and ``rotate``, for the caller to show.

Every request of the service is authenticated, so the desk keeps the key rows it read for
``cache_ttl`` seconds (5 by default; 0 turns it off): a burst of requests with one key reads its row
once, not once per request. The secret is still hashed and compared on every request, and expiry
is checked against the clock each time. A rotation or revocation made through this desk (the
service's own ``/keys`` routes) takes effect at once; one made by another process (``autonomic
keys revoke`` on the database) within ``cache_ttl`` seconds.
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

    CACHE_LIMIT = 10_000
    """Key rows kept at most; the cache starts over when it is full."""

    def __init__(
        self,
        keys: KeyStore,
        *,
        clock: Callable[[], float] = time.time,
        cache_ttl: float = 0.0,
        ticker: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keys = keys
        self.clock = clock
        self.cache_ttl = cache_ttl
        self.ticker = ticker
        self._cache: dict[str, tuple[ApiKey, float]] = {}

    async def _row(self, key_id: str) -> ApiKey:
        """The key's row, from the cache while it is fresh (see the module docstring)."""
        if self.cache_ttl > 0:
            found = self._cache.get(key_id)
            now = self.ticker()
            if found is not None and now - found[1] < self.cache_ttl:
                return found[0]
            key = await self.keys.get(key_id)
            if len(self._cache) >= self.CACHE_LIMIT:
                self._cache.clear()
            self._cache[key_id] = (key, now)
            return key
        return await self.keys.get(key_id)

    def forget(self, key_id: str) -> None:
        """Drop a cached row (after a change made here)."""
        self._cache.pop(key_id, None)

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
        """The key's row (fresh: what admins read and change)."""
        return await self.keys.get(self._checked_id(key_id))

    async def current(self, key_id: str) -> ApiKey:
        """The key's row as authentication reads it (cached for ``cache_ttl``)."""
        return await self._row(self._checked_id(key_id))

    async def rotate(self, key_id: str, *, by: str) -> tuple[ApiKey, str]:
        """A new secret for the key; the old one stops working at once (sessions too)."""
        secret = secrets.token_urlsafe(32)
        self.forget(key_id)
        key = await self.keys.rotate(
            self._checked_id(key_id), new_hash=digest(secret), by=by, now=self.clock()
        )
        self.forget(key_id)
        return key, f"{PREFIX}{key.id}_{secret}"

    async def revoke(self, key_id: str, *, by: str) -> ApiKey:
        self.forget(key_id)
        key = await self.keys.revoke(self._checked_id(key_id), by=by, now=self.clock())
        self.forget(key_id)
        return key

    async def verify(self, credential: str) -> ApiKey | None:
        """The usable key this credential is, or ``None`` (malformed, unknown, wrong secret,
        expired or revoked: a caller learns only that it was refused)."""
        match = _CREDENTIAL.match(credential)
        if not match:
            return None
        key_id, secret = match.groups()
        try:
            key = await self._row(key_id)
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
