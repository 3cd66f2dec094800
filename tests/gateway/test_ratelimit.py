"""Token buckets, the same behaviour in process (``LocalBuckets``) and in Redis (``RedisBuckets``):
reservations, refusals that take nothing, token debt for huge prompts, settling to real usage. What
only the Redis buckets do is tested in ``tests/adapters/redis``."""

import asyncio

import pytest

from autonomic.adapters.redis.buckets import RedisBuckets
from autonomic.gateway.provider import Limits
from autonomic.gateway.ratelimit import LocalBuckets, bucket_specs

PER_SECOND_10 = Limits(requests_per_minute=600, burst_seconds=0.5)  # 10/s, bucket of 5


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
def buckets(request):
    if request.param == "local":
        return LocalBuckets()
    url = request.getfixturevalue("redis_server")
    return RedisBuckets(url, prefix=request.getfixturevalue("redis_prefix"))


def _run(buckets, coro_fn):
    async def main():
        try:
            return await coro_fn()
        finally:
            await buckets.aclose()

    return asyncio.run(main())


def test_a_full_bucket_then_reservations_queue_at_the_rate(buckets):
    async def go():
        return [await buckets.reserve("p", PER_SECOND_10, 0, 60) for _ in range(8)]

    grants = _run(buckets, go)
    assert all(g.granted for g in grants)
    assert [g.wait for g in grants[:5]] == [0, 0, 0, 0, 0]
    # the i-th over the bucket waits i/10 s (less the time the reservations themselves took)
    for i, g in enumerate(grants[5:], start=1):
        assert i / 10 - 0.05 < g.wait <= i / 10 + 0.001


def test_a_refusal_takes_nothing(buckets):
    async def go():
        for _ in range(5):
            await buckets.reserve("p", PER_SECOND_10, 0, 60)
        refused = await buckets.reserve("p", PER_SECOND_10, 0, 0.01)
        again = await buckets.reserve("p", PER_SECOND_10, 0, 0.01)
        queued = await buckets.reserve("p", PER_SECOND_10, 0, 60)
        return refused, again, queued

    refused, again, queued = _run(buckets, go)
    assert not refused.granted
    assert 0.05 < refused.wait <= 0.101
    assert not again.granted
    assert (
        again.wait <= refused.wait + 0.001
    )  # the refusal did not deepen the queue (0.2 if it had)
    assert queued.granted
    assert queued.wait <= again.wait + 0.001


def test_a_prompt_bigger_than_the_bucket_goes_when_full_and_leaves_debt(buckets):
    limits = Limits(tokens_per_minute=6000, burst_seconds=1)  # 100 tokens/s, bucket of 100

    async def go():
        huge = await buckets.reserve("p", limits, 500, 60)
        after = await buckets.reserve("p", limits, 10, 60)
        await buckets.settle("p", limits, -400)  # it really used 100
        settled = await buckets.reserve("p", limits, 10, 60)
        return huge, after, settled

    huge, after, settled = _run(buckets, go)
    assert huge.granted
    assert huge.wait == 0
    assert after.wait == pytest.approx(4.1, abs=0.1)  # 400 tokens of debt + 10, at 100/s
    assert settled.wait == pytest.approx(0.2, abs=0.1)  # the debt given back: 10 + 10 short


def test_providers_have_separate_buckets_and_unlimited_never_waits(buckets):
    async def go():
        for _ in range(5):
            await buckets.reserve("a", PER_SECOND_10, 0, 60)
        other = await buckets.reserve("b", PER_SECOND_10, 0, 60)
        free = [await buckets.reserve("c", Limits(), 10**9, 0) for _ in range(3)]
        return other, free

    other, free = _run(buckets, go)
    assert other.wait == 0
    assert all(f.granted and f.wait == 0 for f in free)


def test_bucket_sizes():
    req, tok = bucket_specs(Limits(requests_per_minute=30, tokens_per_minute=None))
    assert tok is None
    assert req.rate == 0.5
    assert req.capacity == 1  # never below one request
