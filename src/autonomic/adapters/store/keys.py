"""API keys in the runs' own database (``api_keys``, migration 0005), over a ``SqlStore``'s seams.

The key store borrows the SQL store's connection (its ``_read`` and ``_write``): one database, one
pool, one migration runner. A rotation or a revocation is one conditional ``UPDATE``, so two admins
racing leave one coherent row.
"""

from __future__ import annotations

from typing import Any

from autonomic.adapters.store.sql import SqlStore, translate
from autonomic.errors import InvalidInput, NotFound
from autonomic.ports.keys import ApiKey, KeyStore, Role

_COLUMNS = (
    "id, name, tenant, role, hash, created_at, expires_at, created_by, "
    "rotated_at, rotated_by, revoked_at, revoked_by"
)
_NAMES = tuple(c.strip() for c in _COLUMNS.split(","))


def _key(row: tuple[Any, ...]) -> ApiKey:
    values = dict(zip(_NAMES, row, strict=True))
    values["role"] = Role(values["role"])
    return ApiKey(**values)


class SqlKeyStore(KeyStore):
    """The key store port on the database of ``store`` (SQLite or PostgreSQL)."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        style = store.paramstyle
        self._insert = translate(
            f"INSERT INTO api_keys ({_COLUMNS}) VALUES ({', '.join(':' + n for n in _NAMES)}) "
            "ON CONFLICT (id) DO NOTHING",
            style,
        )
        self._get = translate(f"SELECT {_COLUMNS} FROM api_keys WHERE id = :id", style)
        self._list = translate(
            f"SELECT {_COLUMNS} FROM api_keys "
            "WHERE (CAST(:tenant AS TEXT) IS NULL OR tenant = :tenant) ORDER BY created_at, id",
            style,
        )
        self._rotate = translate(
            "UPDATE api_keys SET hash = :hash, rotated_at = :now, rotated_by = :by "
            "WHERE id = :id AND revoked_at IS NULL",
            style,
        )
        self._revoke = translate(
            "UPDATE api_keys SET revoked_at = :now, revoked_by = :by "
            "WHERE id = :id AND revoked_at IS NULL",
            style,
        )

    async def add(self, key: ApiKey) -> None:
        params = {n: getattr(key, n) for n in _NAMES}
        params["role"] = key.role.value
        if (await self._store._write(self._insert, params)).rowcount != 1:
            raise InvalidInput(f"key {key.id} exists already", hint="create another key")

    async def get(self, key_id: str) -> ApiKey:
        rows = await self._store._read(self._get, {"id": key_id})
        if not rows:
            raise NotFound(f"no key {key_id}", hint="`autonomic keys list` shows the keys")
        return _key(rows[0])

    async def list(self, *, tenant: str | None = None) -> list[ApiKey]:
        return [_key(r) for r in await self._store._read(self._list, {"tenant": tenant})]

    async def rotate(self, key_id: str, *, new_hash: str, by: str, now: float) -> ApiKey:
        params = {"id": key_id, "hash": new_hash, "by": by, "now": now}
        if (await self._store._write(self._rotate, params)).rowcount != 1:
            key = await self.get(key_id)  # NotFound when missing
            raise InvalidInput(
                f"key {key.id} was revoked; it cannot be rotated",
                hint=f"create a new one: autonomic keys create --tenant {key.tenant} "
                f"--role {key.role.value} --name {key.name}",
            )
        return await self.get(key_id)

    async def revoke(self, key_id: str, *, by: str, now: float) -> ApiKey:
        await self._store._write(self._revoke, {"id": key_id, "by": by, "now": now})
        return await self.get(key_id)
