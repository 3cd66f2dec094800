"""Token buckets in Redis: the rate-limit port's arithmetic (``autonomic.ports.rate_limits``) in
one Lua script, atomic on the server and timed by the Redis clock, so any number of worker
processes share one budget per provider.

Keys (under ``prefix``, default ``autonomic:ratelimit``; the gateway uses
``{redis_prefix}:ratelimit``): ``{prefix}:{key}:r`` the requests bucket and ``{prefix}:{key}:t``
the tokens bucket, each a hash (``level``, ``ts``) that expires once a full bucket would have
refilled (plus a minute). An unreachable Redis is a retryable ``ModelError``: the call fails over
or retries like any provider failure. Needs the ``redis`` extra.
"""

from __future__ import annotations

from typing import Any

from autonomic.adapters.redis.client import connect, outage_errors
from autonomic.errors import ModelError
from autonomic.ports.rate_limits import RateLimits, Reservation, bucket_specs

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
        self._redis: Any = connect(url, needed_by="shared rate limits")
        self._script: Any = self._redis.register_script(_SCRIPT)
        self._prefix = prefix
        self._errors = outage_errors()

    async def _run(
        self, key: str, limits: RateLimits, need_r: int, need_t: int, max_wait: float
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
        try:
            granted, wait = await self._script(keys=keys, args=args)
        except self._errors as exc:
            raise ModelError(
                f"cannot reach the Redis that holds the shared rate limits: {exc}",
                hint="check redis_url (or AUTONOMIC_GATEWAY_REDIS_URL) and that Redis is running",
                retryable=True,
            ) from None
        return Reservation(granted in (b"1", "1"), max(0.0, float(wait)))

    async def reserve(
        self, key: str, limits: RateLimits, tokens: int, max_wait: float
    ) -> Reservation:
        if limits.requests_per_minute is None and limits.tokens_per_minute is None:
            return Reservation(True, 0.0)
        return await self._run(key, limits, 1, tokens, min(max(0.0, max_wait), 1e9))

    async def settle(self, key: str, limits: RateLimits, tokens_delta: int) -> None:
        if limits.tokens_per_minute is None or tokens_delta == 0:
            return
        await self._run(key, limits, 0, tokens_delta, -1.0)

    async def aclose(self) -> None:
        await self._redis.aclose()
