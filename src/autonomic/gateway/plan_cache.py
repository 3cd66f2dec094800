"""Plan cache: a task that matches a pattern already planned by the same agent version reuses the
plan instead of paying for a planning call.

The key is the *normalised* task (lower case, whitespace collapsed, and the parts that vary between
otherwise identical requests - numbers, quoted strings, ids, dates, e-mail addresses - replaced by
placeholders) plus the agent's name and version, so a new agent version never reuses an old plan.
Entries expire after a TTL. Hits and misses are counted. ``LocalPlanCache`` lives in the process;
``RedisPlanCache`` is shared by every worker (entries expire in Redis with ``SET ... EX``).

Plans are JSON values; the cache stores what it is given and returns an equal value.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "<email>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<id>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[t ]\d{2}:\d{2}(?::\d{2})?)?\b"), "<date>"),
    (re.compile(r"\"[^\"]*\"|'[^']*'"), "<text>"),
    (re.compile(r"\b[a-z]+_[0-9a-z]{6,}\b"), "<id>"),
    (re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?"), "<n>"),
]


def normalise_task(task: str) -> str:
    """The pattern of ``task``: what stays the same between requests of one kind."""
    text = task.strip().lower()
    for pattern, placeholder in _PATTERNS:
        text = pattern.sub(placeholder, text)
    text = re.sub(r"\s+", " ", text)
    return text.rstrip(" .!?")


def plan_key(task: str, agent: str, version: str) -> str:
    """The cache key of ``task`` for ``agent`` at ``version``."""
    raw = f"{agent}\x00{version}\x00{normalise_task(task)}"
    return hashlib.sha256(raw.encode()).hexdigest()


class PlanCache(Protocol):
    """Where cached plans live."""

    hits: int
    misses: int

    async def lookup(self, task: str, agent: str, version: str) -> Any | None:
        """The cached plan for this task pattern, or None (counted as a miss)."""
        ...

    async def store(self, task: str, agent: str, version: str, plan: Any) -> None:
        """Cache ``plan`` (a JSON value) for this task pattern."""
        ...


class LocalPlanCache:
    """In-process, bounded (least recently used entries go first)."""

    def __init__(
        self,
        *,
        ttl: float = 3600.0,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0 or max_entries < 1:
            raise ValueError("ttl must be > 0 and max_entries >= 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    async def lookup(self, task: str, agent: str, version: str) -> Any | None:
        key = plan_key(task, agent, version)
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock():
            self._entries.pop(key, None)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return json.loads(entry[1])

    async def store(self, task: str, agent: str, version: str, plan: Any) -> None:
        key = plan_key(task, agent, version)
        self._entries[key] = (self._clock() + self.ttl, json.dumps(plan, sort_keys=True))
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class RedisPlanCache:
    """Shared by every worker using the same Redis and ``prefix``; hits/misses are counted here
    and in Redis (``<prefix>:hits`` / ``<prefix>:misses``) for fleet-wide figures."""

    def __init__(self, url: str, *, ttl: float = 3600.0, prefix: str = "autonomic:plans") -> None:
        from redis import asyncio as aioredis

        self._redis: Any = aioredis.Redis.from_url(url)
        self.ttl = ttl
        self._prefix = prefix
        self.hits = 0
        self.misses = 0

    async def lookup(self, task: str, agent: str, version: str) -> Any | None:
        raw = await self._redis.get(f"{self._prefix}:{plan_key(task, agent, version)}")
        if raw is None:
            self.misses += 1
            await self._redis.incr(f"{self._prefix}:misses")
            return None
        self.hits += 1
        await self._redis.incr(f"{self._prefix}:hits")
        return json.loads(raw)

    async def store(self, task: str, agent: str, version: str, plan: Any) -> None:
        await self._redis.set(
            f"{self._prefix}:{plan_key(task, agent, version)}",
            json.dumps(plan, sort_keys=True),
            px=max(1, int(self.ttl * 1000)),
        )

    async def fleet_stats(self) -> dict[str, int]:
        """Hits and misses of every worker sharing this cache."""
        hits, misses = await self._redis.mget(f"{self._prefix}:hits", f"{self._prefix}:misses")
        return {"hits": int(hits or 0), "misses": int(misses or 0)}

    async def aclose(self) -> None:
        await self._redis.aclose()
