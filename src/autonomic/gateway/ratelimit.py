"""Token buckets for requests/min and tokens/min per provider, in this process's memory.

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

The port (``Buckets``, ``Reservation``, ``bucket_specs``) is ``autonomic.ports.rate_limits``;
``RedisBuckets`` (``autonomic.adapters.redis.buckets``) does the same arithmetic in one Lua script
(atomic on the server, timed by the Redis clock), so any number of worker processes share one
budget per provider.
"""

from __future__ import annotations

import time

from autonomic.ports.rate_limits import (
    Buckets,
    BucketSpec,
    RateLimits,
    Reservation,
    bucket_specs,
)

__all__ = ["BucketSpec", "Buckets", "LocalBuckets", "Reservation", "bucket_specs"]


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

    async def reserve(
        self, key: str, limits: RateLimits, tokens: int, max_wait: float
    ) -> Reservation:
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

    async def settle(self, key: str, limits: RateLimits, tokens_delta: int) -> None:
        _, tok_spec = bucket_specs(limits)
        if tok_spec is None or tokens_delta == 0:
            return
        now = time.monotonic()
        k = (key, "t")
        self._state[k] = (min(tok_spec.capacity, self._level(k, tok_spec, now) - tokens_delta), now)

    async def aclose(self) -> None:
        return None
