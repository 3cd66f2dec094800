"""Plan cache: a task that matches a pattern already planned by the same agent version reuses the
plan instead of paying for a planning call.

The *pattern* of a task is what stays the same between requests of one kind: lower case,
whitespace collapsed, and the parts that vary - numbers, quoted strings, ids, dates, e-mail
addresses - replaced by placeholders. A structured task (a JSON object) keeps its keys and
normalises its values, so ``{"action": "refund", "order": 12}`` and ``{"action": "cancel", ...}``
stay apart. The engine gives the planner the pattern, not the task, so a plan is written for the
kind of request and holds none of one request's values: that is what makes it safe to reuse.

The key is the pattern plus the agent's name and version and the tenant: a new agent version never
reuses an old plan, and one tenant's tasks never shape another's runs. Entries expire after a TTL
(the cache's default or the agent's own), and the engine forgets a plan whose run failed, so the
next task of the kind is planned afresh. The port is ``autonomic.ports.plan_cache.PlanCache``;
``LocalPlanCache`` (here) lives in the process; ``RedisPlanCache``
(``autonomic.adapters.redis.plan_cache``) is shared by every worker (entries expire in Redis with
``SET ... PX``) and counts hits and misses fleet-wide. A cache is an optimisation: callers treat
its errors as misses.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from autonomic.core.canonical import canonical_json
from autonomic.ports.plan_cache import PlanCache

__all__ = ["LocalPlanCache", "PlanCache", "normalise_task", "plan_key", "task_pattern"]

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "<email>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<id>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[t ]\d{2}:\d{2}(?::\d{2})?)?\b"), "<date>"),
    (re.compile(r"\"[^\"]*\"|'[^']*'"), "<text>"),
    (re.compile(r"\b[a-z]+_[0-9a-z]{6,}\b"), "<id>"),
    (re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?"), "<n>"),
]


def normalise_task(task: str) -> str:
    """The pattern of a task text: what stays the same between requests of one kind."""
    text = task.strip().lower()
    for pattern, placeholder in _PATTERNS:
        text = pattern.sub(placeholder, text)
    text = re.sub(r"\s+", " ", text)
    return text.rstrip(" .!?")


def task_pattern(task: Any) -> str:
    """The pattern of any task: text normalised, a JSON structure with its keys kept and its
    values normalised (numbers become ``<n>``)."""
    if isinstance(task, str):
        return normalise_task(task)
    return canonical_json(_normalise_value(task))


def _normalise_value(value: Any) -> Any:
    if isinstance(value, str):
        return normalise_task(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return "<n>"
    if isinstance(value, dict):
        return {str(k): _normalise_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise_value(v) for v in value]
    return normalise_task(str(value))


def plan_key(pattern: str, *, agent: str, version: str, tenant: str) -> str:
    """The cache key of a task ``pattern`` for ``agent`` at ``version`` in ``tenant``."""
    raw = f"{tenant}\x00{agent}\x00{version}\x00{pattern}"
    return hashlib.sha256(raw.encode()).hexdigest()


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

    async def lookup(self, key: str) -> Any | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock():
            self._entries.pop(key, None)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return json.loads(entry[1])

    async def store(self, key: str, plan: Any, *, ttl: float | None = None) -> None:
        expires = self._clock() + (self.ttl if ttl is None else ttl)
        self._entries[key] = (expires, json.dumps(plan, sort_keys=True))
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def forget(self, key: str) -> None:
        self._entries.pop(key, None)

    async def aclose(self) -> None:
        return None
