"""Redis counters: one hash per key, check-and-add in a Lua script, ``EXPIREAT`` end of day.

Why a script: Redis runs it atomically, so two workers reserving against the same tenant-day at the
same instant are serialised by the server — there is no window between the read and the add.
Needs the ``redis`` extra (``pip install 'autonomic[redis]'``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from autonomic.adapters.redis.client import connect, connection_errors, text
from autonomic.errors import StoreUnavailable
from autonomic.ports.counters import Reservation

_RESERVE = """
local key = KEYS[1]
local amounts = cjson.decode(ARGV[1])
local limits = cjson.decode(ARGV[2])
local expires_at = tonumber(ARGV[3])
local exceeded = {}
for name, limit in pairs(limits) do
  local used = tonumber(redis.call('HGET', key, name) or '0')
  local amount = tonumber(amounts[name] or 0)
  if used + amount > limit then table.insert(exceeded, name) end
end
if #exceeded == 0 then
  for name, amount in pairs(amounts) do redis.call('HINCRBYFLOAT', key, name, amount) end
  redis.call('EXPIREAT', key, expires_at)
end
return {#exceeded == 0 and 1 or 0, redis.call('HGETALL', key), exceeded}
"""

_ADJUST = """
local key = KEYS[1]
local amounts = cjson.decode(ARGV[1])
for name, amount in pairs(amounts) do redis.call('HINCRBYFLOAT', key, name, amount) end
redis.call('EXPIREAT', key, tonumber(ARGV[2]))
return redis.call('HGETALL', key)
"""


def _pairs(flat: list[Any]) -> dict[str, float]:
    items = [text(x) for x in flat]
    return {items[i]: float(items[i + 1]) for i in range(0, len(items), 2)}


class RedisCounters:
    """Counters in Redis hashes; atomic across every worker that shares the server.

    Only a failed connection is ``StoreUnavailable``; an error reply (a script's, ``READONLY``,
    ``OOM``) reaches the caller as the client raised it.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0") -> None:
        self._client: Any = connect(url, needed_by="Redis counters")
        self._reserve = self._client.register_script(_RESERVE)
        self._adjust = self._client.register_script(_ADJUST)
        self._errors = connection_errors()

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except self._errors as exc:
            raise StoreUnavailable(
                f"Redis is unreachable: {exc}", hint="check the counters URL and that Redis runs"
            ) from exc

    async def reserve(
        self,
        key: str,
        amounts: Mapping[str, float],
        limits: Mapping[str, float],
        *,
        expires_at: float,
    ) -> Reservation:
        granted, flat, exceeded = await self._call(
            self._reserve,
            [key],
            [json.dumps(dict(amounts)), json.dumps(dict(limits)), math.ceil(expires_at)],
        )
        names = tuple(text(x) for x in exceeded)
        return Reservation(bool(granted), _pairs(flat), names)

    async def adjust(
        self, key: str, amounts: Mapping[str, float], *, expires_at: float
    ) -> dict[str, float]:
        flat = await self._call(
            self._adjust, [key], [json.dumps(dict(amounts)), math.ceil(expires_at)]
        )
        return _pairs(flat)

    async def read(self, key: str) -> dict[str, float]:
        try:
            raw = await self._client.hgetall(key)
        except self._errors as exc:
            raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc
        return {text(k): float(v) for k, v in raw.items()}

    async def close(self) -> None:
        await self._client.aclose()
