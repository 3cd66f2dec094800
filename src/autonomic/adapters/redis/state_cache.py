"""Runs' folded state in Redis, for the worker that resumes them (``autonomic.ports.state_cache``).

Keys (under ``prefix``, default ``autonomic:state``): ``{prefix}:{tenant}:{run_id}`` one snapshot
per run (``autonomic.core.snapshot``), the tenant percent-quoted so that no tenant's name can
reach into another's keys; each expires ``ttl`` seconds after it was last written, so finished
and abandoned runs go away by themselves. The snapshot names its run and tenant again, and the
engine checks both before use.

**An outage costs a run at most one short timeout.** Every command waits ``socket_timeout``
(default 0.2 s) at most; a failure is a miss (or a lost write), logged once per outage, and
Redis is then left alone for ``retry_redis_after`` seconds so that a dead server does not add a
timeout to every claim. Needs the ``redis`` extra.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote

from autonomic.adapters.redis.client import connect, outage_errors
from autonomic.core.run import Run

log = logging.getLogger("autonomic.redis")


class RedisStateCache:
    """Snapshots shared by every worker using the same Redis and ``prefix``.

    Args:
        url: the Redis server (``redis://``, ``rediss://`` or ``unix://``).
        ttl: seconds a snapshot lives after its last write.
        prefix: the namespace of the keys.
        socket_timeout: seconds to wait for Redis (connect and each reply) before giving up.
        retry_redis_after: seconds during which Redis is not asked after it failed to answer.
        min_version: runs with fewer commits are neither looked up nor kept (their journal folds
            as fast as a snapshot loads: ``benchmarks/hot_state_bench.py``).
    """

    def __init__(
        self,
        url: str,
        *,
        ttl: float = 3600.0,
        prefix: str = "autonomic:state",
        socket_timeout: float = 0.2,
        retry_redis_after: float = 5.0,
        min_version: int = 200,
    ) -> None:
        if ttl < 1 or socket_timeout <= 0 or retry_redis_after < 0 or min_version < 0:
            raise ValueError(
                "ttl must be >= 1, socket_timeout > 0, retry_redis_after and min_version >= 0"
            )
        self._redis: Any = connect(
            url,
            needed_by="hot run state snapshots",
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
        )
        self._errors = outage_errors()
        self.ttl = ttl
        self.min_version = min_version
        self.prefix = prefix
        self._retry_after = retry_redis_after
        self._down_until = 0.0
        self._degraded = False
        self.outages = 0
        """Commands not served because Redis failed to answer (or was being left alone)."""

    def key(self, run: Run) -> str:
        """Where ``run``'s snapshot lives."""
        return f"{self.prefix}:{quote(run.tenant, safe='')}:{run.id}"

    def _available(self) -> bool:
        if time.monotonic() < self._down_until:
            self.outages += 1
            return False
        return True

    def _failed(self, exc: BaseException) -> None:
        self.outages += 1
        self._down_until = time.monotonic() + self._retry_after
        if not self._degraded:
            self._degraded = True
            # the exception names host and port at most, never the URL's password
            log.warning(
                "hot state cache: Redis unreachable (%s: %s); runs fold their journals until "
                "it answers again",
                type(exc).__name__,
                exc,
            )

    def _answered(self) -> None:
        if self._degraded:
            self._degraded = False
            log.warning("hot state cache: Redis answers again")

    async def get(self, run: Run) -> bytes | None:
        if not self._available():
            return None
        try:
            value = await self._redis.get(self.key(run))
        except self._errors as exc:
            self._failed(exc)
            return None
        self._answered()
        return value if isinstance(value, bytes) else None

    async def put(self, run: Run, snapshot: bytes) -> None:
        if not self._available():
            return
        try:
            await self._redis.set(self.key(run), snapshot, ex=int(self.ttl))
        except self._errors as exc:
            self._failed(exc)
            return
        self._answered()

    async def aclose(self) -> None:
        await self._redis.aclose()
