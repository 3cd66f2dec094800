"""What only the Redis buckets do: keys a fleet running another release shares, and an unreachable
Redis. Their bucket arithmetic is held to the in-process buckets' in ``tests/gateway``."""

import asyncio

import pytest

from autonomic.adapters.redis.buckets import RedisBuckets
from autonomic.errors import ModelError
from autonomic.gateway.provider import Limits

PER_SECOND_10 = Limits(requests_per_minute=600, burst_seconds=0.5)  # 10/s, bucket of 5


def _run(buckets, coro_fn):
    async def main():
        try:
            return await coro_fn()
        finally:
            await buckets.aclose()

    return asyncio.run(main())


@pytest.mark.redis
def test_the_keys_are_the_ones_every_release_shares(redis_server, redis_prefix):
    import redis

    buckets = RedisBuckets(redis_server, prefix=redis_prefix)
    limits = Limits(requests_per_minute=600, tokens_per_minute=6000, burst_seconds=1)
    _run(buckets, lambda: buckets.reserve("main", limits, 10, 60))
    client = redis.Redis.from_url(redis_server)
    try:
        keys = sorted(k.decode() for k in client.scan_iter(match=f"{redis_prefix}:*"))
        fields = sorted(k.decode() for k in client.hgetall(f"{redis_prefix}:main:t"))
        ttl = client.ttl(f"{redis_prefix}:main:r")
    finally:
        client.close()
    assert keys == [f"{redis_prefix}:main:r", f"{redis_prefix}:main:t"]
    assert fields == ["level", "ts"]
    assert 60 < ttl <= 61  # a full bucket's refill (1 s) plus a minute


def test_an_unreachable_redis_is_a_retryable_model_error_not_a_crash():
    buckets = RedisBuckets("redis://127.0.0.1:1/0")
    with pytest.raises(ModelError, match="cannot reach the Redis") as info:
        _run(buckets, lambda: buckets.reserve("p", PER_SECOND_10, 0, 1))
    assert info.value.retryable
