"""Plan cache: same task pattern and agent version hit, anything else misses; TTL; Redis shared."""

import asyncio

import pytest

from autonomic.gateway.plan_cache import LocalPlanCache, RedisPlanCache, normalise_task, plan_key

PLAN = {"steps": [{"tool": "read_ledger"}, {"tool": "diff"}]}


def test_requests_of_one_kind_share_a_pattern():
    a = normalise_task("Reconcile account 4711 for 2026-11-01, ref 'INV-9'.")
    b = normalise_task("reconcile  account 815 for 2026-10-01, ref 'INV-12'")
    assert a == b == "reconcile account <n> for <date>, ref <text>"
    assert normalise_task("Refund order 12") != normalise_task("Reconcile account 12")
    assert plan_key("x 1", "agent", "1") == plan_key("x 2", "agent", "1")
    assert plan_key("x 1", "agent", "1") != plan_key("x 1", "agent", "2")


def test_local_cache_hits_misses_and_expires():
    now = [0.0]
    cache = LocalPlanCache(ttl=10, clock=lambda: now[0])

    async def main():
        assert await cache.lookup("reconcile account 1", "rec", "1") is None
        await cache.store("reconcile account 1", "rec", "1", PLAN)
        hit = await cache.lookup("Reconcile account 2", "rec", "1")
        other_version = await cache.lookup("reconcile account 2", "rec", "2")
        now[0] = 10.5
        expired = await cache.lookup("reconcile account 3", "rec", "1")
        return hit, other_version, expired

    hit, other_version, expired = asyncio.run(main())
    assert hit == PLAN
    assert other_version is None
    assert expired is None
    assert (cache.hits, cache.misses) == (1, 3)


def test_local_cache_is_bounded():
    cache = LocalPlanCache(max_entries=2)

    async def main():
        for task in ("alpha", "beta", "gamma"):
            await cache.store(task, "a", "1", task)
        return [await cache.lookup(t, "a", "1") for t in ("alpha", "beta", "gamma")]

    assert asyncio.run(main()) == [None, "beta", "gamma"]


def test_redis_cache_is_shared_between_instances(redis_server, redis_prefix):
    async def main():
        one = RedisPlanCache(redis_server, ttl=60, prefix=redis_prefix)
        two = RedisPlanCache(redis_server, ttl=60, prefix=redis_prefix)
        try:
            assert await two.lookup("reconcile account 1", "rec", "1") is None
            await one.store("reconcile account 1", "rec", "1", PLAN)
            got = await two.lookup("reconcile account 99", "rec", "1")
            ttl = await one._redis.pttl(
                f"{redis_prefix}:{plan_key('reconcile account 1', 'rec', '1')}"
            )
            stats = await one.fleet_stats()
            return got, ttl, stats
        finally:
            await one.aclose()
            await two.aclose()

    got, ttl, stats = asyncio.run(main())
    assert got == PLAN
    assert 0 < ttl <= 60_000
    assert stats == {"hits": 1, "misses": 1}


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="ttl"):
        LocalPlanCache(ttl=0)
