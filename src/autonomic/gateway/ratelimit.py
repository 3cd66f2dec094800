"""Token buckets for requests/min and tokens/min per provider, in-process or shared through Redis.

Each provider has two buckets (requests and tokens) that refill continuously at the limit's rate
and hold ``burst_seconds`` of it. A call *reserves* one request and its estimated tokens in a
single step: if both buckets will have enough within ``max_wait`` seconds, they are debited now
(possibly below zero) and the call is told how long to sleep before sending; otherwise nothing is
taken and the caller learns how long it would have had to wait, so it can fall back to another
provider without having wasted this one's capacity. Reserving instead of polling means waiting
callers do not race each other and the rate after the first burst is exactly the limit.

A call needing more tokens than a bucket holds goes through when the bucket is full and leaves it
in debt, so huge prompts are slowed down, never starved. After the call, ``settle`` corrects the
token bucket by the difference between the estimate and the usage the server reported.

``RedisBuckets`` does the same arithmetic in one Lua script (atomic on the server, timed by the
Redis clock), so any number of worker processes share one budget per provider.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from autonomic.errors import ModelError
from autonomic.gateway.provider import Limits


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """Refill ``rate`` per second, hold at most ``capacity``."""

    rate: float
    capacity: float


def bucket_specs(limits: Limits) -> tuple[BucketSpec | None, BucketSpec | None]:
    """The (requests, tokens) buckets for ``limits``; None where unlimited."""

    def spec(per_minute: float | None, minimum: float) -> BucketSpec | None:
        if per_minute is None:
            return None
        rate = per_minute / 60.0
        return BucketSpec(rate, max(minimum, rate * limits.burst_seconds))

    return spec(limits.requests_per_minute, 1.0), spec(limits.tokens_per_minute, 1.0)


@dataclass(frozen=True, slots=True)
class Reservation:
    """The outcome of ``reserve``: granted (sleep ``wait`` then go) or refused (``wait`` needed)."""

    granted: bool
    wait: float


class Buckets(Protocol):
    """Where bucket levels live."""

    async def reserve(self, key: str, limits: Limits, tokens: int, max_wait: float) -> Reservation:
        """Take one request and ``tokens`` if available within ``max_wait`` seconds."""
        ...

    async def settle(self, key: str, limits: Limits, tokens_delta: int) -> None:
        """Take ``tokens_delta`` more tokens (negative: give back)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def _debit(
    level: float, spec: BucketSpec, need: float
) -> tuple[float, float]:  # (wait until the level covers the need, level after taking it)
    effective = min(need, spec.capacity)
    wait = max(0.0, (effective - level) / spec.rate)
    return wait, level - need


class LocalBuckets:
    """Buckets in this process's memory (the default without Redis)."""

    def __init__(self) -> None:
        self._state: dict[tuple[str, str], tuple[float, float]] = {}

    def _level(self, key: tuple[str, str], spec: BucketSpec, now: float) -> float:
        level, ts = self._state.get(key, (spec.capacity, now))
        return min(spec.capacity, level + (now - ts) * spec.rate)

    async def reserve(self, key: str, limits: Limits, tokens: int, max_wait: float) -> Reservation:
        now = time.monotonic()
        req_spec, tok_spec = bucket_specs(limits)
        updates: list[tuple[tuple[str, str], float]] = []
        wait = 0.0
        for dim, spec, need in (("r", req_spec, 1.0), ("t", tok_spec, float(tokens))):
            if spec is None:
                continue
            k = (key, dim)
            w, after = _debit(self._level(k, spec, now), spec, need)
            wait = max(wait, w)
            updates.append((k, after))
        if wait > max_wait:
            return Reservation(False, wait)
        for k, after in updates:
            self._state[k] = (after, now)
        return Reservation(True, wait)

    async def settle(self, key: str, limits: Limits, tokens_delta: int) -> None:
        _, tok_spec = bucket_specs(limits)
        if tok_spec is None or tokens_delta == 0:
            return
        now = time.monotonic()
        k = (key, "t")
        self._state[k] = (min(tok_spec.capacity, self._level(k, tok_spec, now) - tokens_delta), now)

    async def aclose(self) -> None:
        return None


# KEYS: requests bucket, tokens bucket. ARGV: rate_r, cap_r, rate_t, cap_t (0 = unlimited),
# need_r, need_t, max_wait (-1 = settle: always apply). Returns {granted, wait} as strings (Lua
# numbers would be truncated to integers in the reply).
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local max_wait = tonumber(ARGV[7])
local wait = 0
local after = {}
for i = 1, 2 do
  local rate = tonumber(ARGV[2 * i - 1])
  local cap = tonumber(ARGV[2 * i])
  local need = tonumber(ARGV[4 + i])
  if rate > 0 then
    local v = redis.call('HMGET', KEYS[i], 'level', 'ts')
    local level = cap
    if v[1] then
      level = math.min(cap, tonumber(v[1]) + (now - tonumber(v[2])) * rate)
    end
    local effective = math.min(need, cap)
    local w = (effective - level) / rate
    if w > wait then wait = w end
    local new = level - need
    if new > cap then new = cap end
    after[i] = {new, math.ceil(cap / rate) + 60}
  end
end
if max_wait >= 0 and wait > max_wait then
  return {'0', tostring(wait)}
end
for i = 1, 2 do
  if after[i] then
    redis.call('HSET', KEYS[i], 'level', tostring(after[i][1]), 'ts', tostring(now))
    redis.call('EXPIRE', KEYS[i], after[i][2])
  end
end
return {'1', tostring(wait)}
"""


class RedisBuckets:
    """Buckets in Redis, shared by every process pointing at the same server and ``prefix``."""

    def __init__(self, url: str, *, prefix: str = "autonomic:ratelimit") -> None:
        from redis import asyncio as aioredis

        self._redis: Any = aioredis.Redis.from_url(url)
        self._script: Any = self._redis.register_script(_SCRIPT)
        self._prefix = prefix

    async def _run(
        self, key: str, limits: Limits, need_r: int, need_t: int, max_wait: float
    ) -> Reservation:
        req_spec, tok_spec = bucket_specs(limits)
        args = [
            req_spec.rate if req_spec else 0,
            req_spec.capacity if req_spec else 0,
            tok_spec.rate if tok_spec else 0,
            tok_spec.capacity if tok_spec else 0,
            need_r,
            need_t,
            max_wait,
        ]
        keys = [f"{self._prefix}:{key}:r", f"{self._prefix}:{key}:t"]
        from redis.exceptions import RedisError

        try:
            granted, wait = await self._script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise ModelError(
                f"cannot reach the Redis that holds the shared rate limits: {exc}",
                hint="check redis_url (or AUTONOMIC_GATEWAY_REDIS_URL) and that Redis is running",
                retryable=True,
            ) from None
        return Reservation(granted in (b"1", "1"), max(0.0, float(wait)))

    async def reserve(self, key: str, limits: Limits, tokens: int, max_wait: float) -> Reservation:
        if limits.requests_per_minute is None and limits.tokens_per_minute is None:
            return Reservation(True, 0.0)
        return await self._run(key, limits, 1, tokens, min(max(0.0, max_wait), 1e9))

    async def settle(self, key: str, limits: Limits, tokens_delta: int) -> None:
        if limits.tokens_per_minute is None or tokens_delta == 0:
            return
        await self._run(key, limits, 0, tokens_delta, -1.0)

    async def aclose(self) -> None:
        await self._redis.aclose()
