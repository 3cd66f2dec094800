"""The rate-limit port: token buckets for requests/min and tokens/min, per key (a provider).

Each key has two buckets (requests and tokens) that refill continuously at the limit's rate and
hold ``burst_seconds`` of it. ``reserve`` takes one request and the estimated tokens in a single
step: if both buckets will have enough within ``max_wait`` seconds they are debited now (possibly
below zero) and the caller is told how long to sleep before sending; otherwise nothing is taken
and the caller learns how long it would have had to wait. ``settle`` corrects the token bucket once
the real usage is known. In-process buckets live in ``autonomic.gateway.ratelimit``
(``LocalBuckets``), shared ones in ``autonomic.adapters.redis.buckets`` (``RedisBuckets``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class RateLimits(Protocol):
    """What a bucket store reads of a provider's limits (``autonomic.gateway.provider.Limits``).
    ``None`` means unlimited."""

    @property
    def requests_per_minute(self) -> float | None: ...

    @property
    def tokens_per_minute(self) -> float | None: ...

    @property
    def burst_seconds(self) -> float:
        """The buckets hold this many seconds' worth of the limit."""
        ...


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """Refill ``rate`` per second, hold at most ``capacity``."""

    rate: float
    capacity: float


def bucket_specs(limits: RateLimits) -> tuple[BucketSpec | None, BucketSpec | None]:
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

    async def reserve(
        self, key: str, limits: RateLimits, tokens: int, max_wait: float
    ) -> Reservation:
        """Take one request and ``tokens`` if available within ``max_wait`` seconds."""
        ...

    async def settle(self, key: str, limits: RateLimits, tokens_delta: int) -> None:
        """Take ``tokens_delta`` more tokens (negative: give back)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
