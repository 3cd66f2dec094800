"""The plan cache in Redis, shared by every worker (``autonomic.ports.plan_cache``).

Keys (under ``prefix``, default ``autonomic:plans``): ``{prefix}:{key}`` a plan as JSON, expiring
with ``SET ... PX`` after its TTL; ``{prefix}:hits`` and ``{prefix}:misses`` the fleet's counts.
Errors reach the caller, which treats them as misses. Needs the ``redis`` extra.
"""

from __future__ import annotations

import json
from typing import Any

from autonomic.adapters.redis.client import connect


class RedisPlanCache:
    """Shared by every worker using the same Redis and ``prefix``; hits/misses are counted here
    and in Redis (``<prefix>:hits`` / ``<prefix>:misses``) for fleet-wide figures."""

    def __init__(self, url: str, *, ttl: float = 3600.0, prefix: str = "autonomic:plans") -> None:
        if ttl <= 0:
            raise ValueError("ttl must be > 0")
        self._redis: Any = connect(url, needed_by="a shared plan cache", socket_timeout=2.0)
        self.ttl = ttl
        self._prefix = prefix
        self.hits = 0
        self.misses = 0

    async def lookup(self, key: str) -> Any | None:
        raw = await self._redis.get(f"{self._prefix}:{key}")
        if raw is None:
            self.misses += 1
            await self._redis.incr(f"{self._prefix}:misses")
            return None
        self.hits += 1
        await self._redis.incr(f"{self._prefix}:hits")
        return json.loads(raw)

    async def store(self, key: str, plan: Any, *, ttl: float | None = None) -> None:
        seconds = self.ttl if ttl is None else ttl
        await self._redis.set(
            f"{self._prefix}:{key}",
            json.dumps(plan, sort_keys=True),
            px=max(1, int(seconds * 1000)),
        )

    async def forget(self, key: str) -> None:
        await self._redis.delete(f"{self._prefix}:{key}")

    async def fleet_stats(self) -> dict[str, int]:
        """Hits and misses of every worker sharing this cache."""
        hits, misses = await self._redis.mget(f"{self._prefix}:hits", f"{self._prefix}:misses")
        return {"hits": int(hits or 0), "misses": int(misses or 0)}

    async def aclose(self) -> None:
        await self._redis.aclose()
