"""The plan-cache port: where planning agents' plans are kept for reuse, by key.

The key (``autonomic.gateway.plan_cache.plan_key``) is a task's pattern plus the agent's name and
version and the tenant. ``LocalPlanCache`` (``autonomic.gateway.plan_cache``) lives in the process;
``RedisPlanCache`` (``autonomic.adapters.redis.plan_cache``) is shared by every worker. A cache is
an optimisation: callers treat its errors as misses.
"""

from __future__ import annotations

from typing import Any, Protocol


class PlanCache(Protocol):
    """Where cached plans live. Plans are JSON values; a lookup returns an equal value."""

    hits: int
    misses: int
    ttl: float
    """The default time to live, in seconds."""

    async def lookup(self, key: str) -> Any | None:
        """The cached plan under ``key`` (see ``plan_key``), or None (counted as a miss)."""
        ...

    async def store(self, key: str, plan: Any, *, ttl: float | None = None) -> None:
        """Cache ``plan`` under ``key`` for ``ttl`` seconds (default: the cache's)."""
        ...

    async def forget(self, key: str) -> None:
        """Drop the plan under ``key`` (a run that followed it failed)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
