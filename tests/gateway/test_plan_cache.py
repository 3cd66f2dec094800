"""Plan cache: same task pattern, agent version and tenant hit, anything else misses; TTL (the
cache's or the caller's). The Redis cache, shared between instances, is tested in
``tests/adapters/redis``."""

import asyncio

import pytest

from autonomic.gateway.plan_cache import (
    LocalPlanCache,
    normalise_task,
    plan_key,
    task_pattern,
)

PLAN = ["read the ledger with sql_query", "diff it"]


def key(task, *, agent="rec", version="1", tenant="acme"):
    return plan_key(task_pattern(task), agent=agent, version=version, tenant=tenant)


def test_requests_of_one_kind_share_a_pattern():
    a = normalise_task("Reconcile account 4711 for 2026-11-01, ref 'INV-9'.")
    b = normalise_task("reconcile  account 815 for 2026-10-01, ref 'INV-12'")
    assert a == b == "reconcile account <n> for <date>, ref <text>"
    assert normalise_task("Refund order 12") != normalise_task("Reconcile account 12")
    assert key("x 1") == key("x 2")
    assert key("x 1") != key("x 1", version="2")
    assert key("x 1") != key("x 1", agent="other")


def test_tenants_never_share_a_plan():
    assert key("x 1", tenant="acme") != key("x 1", tenant="globex")


def test_a_structured_task_keeps_its_keys_and_words():
    refund = task_pattern({"action": "refund", "order": 12, "note": "late since 2026-11-01"})
    other_order = task_pattern({"action": "refund", "order": 977, "note": "late since 2026-10-02"})
    cancel = task_pattern({"action": "cancel", "order": 12, "note": "late since 2026-11-01"})
    assert refund == other_order
    assert refund != cancel
    assert '"action":"refund"' in refund
    assert '"order":"<n>"' in refund
    assert task_pattern([1, True, None]) == '["<n>",true,null]'


def test_local_cache_hits_misses_and_expires():
    now = [0.0]
    cache = LocalPlanCache(ttl=10, clock=lambda: now[0])

    async def main():
        assert await cache.lookup(key("reconcile account 1")) is None
        await cache.store(key("reconcile account 1"), PLAN)
        hit = await cache.lookup(key("Reconcile account 2"))
        other_version = await cache.lookup(key("reconcile account 2", version="2"))
        now[0] = 10.5
        expired = await cache.lookup(key("reconcile account 3"))
        await cache.store(key("short-lived 1"), PLAN, ttl=1)
        now[0] = 11.0
        short = await cache.lookup(key("short-lived 2"))
        return hit, other_version, expired, short

    hit, other_version, expired, short = asyncio.run(main())
    assert hit == PLAN
    assert other_version is None
    assert expired is None
    assert short == PLAN
    assert (cache.hits, cache.misses) == (2, 3)


def test_local_cache_is_bounded():
    cache = LocalPlanCache(max_entries=2)

    async def main():
        for task in ("alpha", "beta", "gamma"):
            await cache.store(key(task), task)
        return [await cache.lookup(key(t)) for t in ("alpha", "beta", "gamma")]

    assert asyncio.run(main()) == [None, "beta", "gamma"]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="ttl"):
        LocalPlanCache(ttl=0)
    with pytest.raises(ValueError, match="max_entries"):
        LocalPlanCache(max_entries=0)
