"""The plan cache in Redis: shared between instances (as between workers), entries that expire
with their TTL, fleet-wide hits and misses, under the keys every release shares."""

import asyncio

import pytest

from autonomic.adapters.redis.plan_cache import RedisPlanCache
from autonomic.gateway.plan_cache import plan_key, task_pattern

PLAN = ["read the ledger with sql_query", "diff it"]


def key(task):
    return plan_key(task_pattern(task), agent="rec", version="1", tenant="acme")


@pytest.mark.redis
def test_redis_cache_is_shared_between_instances(redis_server, redis_prefix):
    async def main():
        one = RedisPlanCache(redis_server, ttl=60, prefix=redis_prefix)
        two = RedisPlanCache(redis_server, ttl=60, prefix=redis_prefix)
        try:
            assert await two.lookup(key("reconcile account 1")) is None
            await one.store(key("reconcile account 1"), PLAN)
            got = await two.lookup(key("reconcile account 99"))
            ttl = await one._redis.pttl(f"{redis_prefix}:{key('reconcile account 1')}")
            await one.store(key("brief 1"), PLAN, ttl=5)
            brief = await one._redis.pttl(f"{redis_prefix}:{key('brief 1')}")
            stats = await one.fleet_stats()
            await two.forget(key("reconcile account 7"))
            forgotten = await one.lookup(key("reconcile account 1"))
            keys = [k.decode() async for k in one._redis.scan_iter(match=f"{redis_prefix}:*")]
            return got, ttl, brief, stats, forgotten, keys
        finally:
            await one.aclose()
            await two.aclose()

    got, ttl, brief, stats, forgotten, keys = asyncio.run(main())
    assert got == PLAN
    assert 5_000 < ttl <= 60_000
    assert 0 < brief <= 5_000
    assert stats == {"hits": 1, "misses": 1}
    assert forgotten is None
    assert sorted(keys) == sorted(
        [f"{redis_prefix}:{key('brief 1')}", f"{redis_prefix}:hits", f"{redis_prefix}:misses"]
    )


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="ttl"):
        RedisPlanCache("redis://127.0.0.1:1/0", ttl=0)
