"""Per-tenant daily budgets over the counters port: in memory and on Redis (127.0.0.1:6379)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator

import pytest

from autonomic.adapters.counters.memory import MemoryCounters
from autonomic.governance.runaway import (
    ActionKind,
    Estimate,
    ProposedAction,
    TenantBudget,
    TenantLedger,
)
from autonomic.governance.runaway.tenant import day_window
from autonomic.ports.counters import Counters

REDIS_URL = os.environ.get("AUTONOMIC_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _redis_reachable() -> str | None:
    try:
        import redis
    except ImportError as exc:
        return f"redis is not installed ({exc})"
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.exceptions.ConnectionError as exc:
        return f"Redis at {REDIS_URL} is unreachable: {exc}"
    return None


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def counters(request: pytest.FixtureRequest) -> Iterator[Counters]:
    if request.param == "memory":
        yield MemoryCounters()
        return
    reason = _redis_reachable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set; set AUTONOMIC_TEST_REDIS_URL)")
        pytest.skip(reason)
    from autonomic.adapters.redis.counters import RedisCounters

    yield RedisCounters(REDIS_URL)


def _call(tenant: str, tokens: int, cost: float = 0.0) -> ProposedAction:
    return ProposedAction(
        ActionKind.MODEL_CALL,
        "a",
        tenant=tenant,
        estimate=Estimate(tokens=tokens, cost=cost),
        now=time.time(),
    )


def test_concurrent_reservations_never_pass_the_daily_limit(counters: Counters):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    ledger = TenantLedger(counters, {tenant: TenantBudget(tokens=10_000, turns=1_000)})

    async def main() -> tuple[int, dict[str, float]]:
        verdicts = await asyncio.gather(*(ledger.reserve(_call(tenant, 300)) for _ in range(100)))
        used = await counters.read(ledger.key(tenant, time.time())[0])
        await counters.close()
        return sum(v.allowed for v in verdicts), used

    granted, used = asyncio.run(main())
    assert granted == 33  # 33 * 300 = 9,900; the 34th would make 10,200
    assert used["tokens"] == 9_900
    assert used["turns"] == 33


def test_a_naive_read_then_add_overshoots_under_the_same_load(counters: Counters):
    """The same load without the atomic check-and-add: proof the test above can fail."""
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    key = f"autonomic:naive:{tenant}"
    end = day_window(time.time())[1]

    async def naive() -> None:
        used = (await counters.read(key)).get("tokens", 0.0)
        await asyncio.sleep(0)  # any await between the read and the add lets others in
        if used + 300 <= 10_000:
            await counters.adjust(key, {"tokens": 300}, expires_at=end)

    async def main() -> float:
        await asyncio.gather(*(naive() for _ in range(100)))
        total = (await counters.read(key)).get("tokens", 0.0)
        await counters.close()
        return total

    assert asyncio.run(main()) > 10_000


def test_refusal_names_limit_usage_and_estimate_and_settle_corrects(counters: Counters):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    ledger = TenantLedger(counters, {}, default=TenantBudget(cost=1.0))

    async def main() -> None:
        first = _call(tenant, 100, cost=0.6)
        assert (await ledger.reserve(first)).allowed
        refused = await ledger.reserve(_call(tenant, 100, cost=0.6))
        assert not refused.allowed
        assert refused.code == "tenant_budget.cost"
        evidence = refused.findings[0].evidence
        assert evidence["limit"] == 1.0
        assert evidence["used"] == pytest.approx(0.6)
        assert evidence["estimate"] == 0.6
        assert evidence["tenant"] == tenant
        # the first call really cost 0.2: settling frees room for the second
        await ledger.settle(first, tokens=80, cost=0.2)
        assert (await ledger.reserve(_call(tenant, 100, cost=0.6))).allowed
        await counters.close()

    asyncio.run(main())


@pytest.mark.redis
def test_redis_counters_expire_at_the_end_of_the_utc_day():
    reason = _redis_reachable()
    if reason:
        pytest.skip(reason)
    import redis

    from autonomic.adapters.redis.counters import RedisCounters

    tenant = f"t-{uuid.uuid4().hex[:8]}"
    ledger = TenantLedger(RedisCounters(REDIS_URL), {tenant: TenantBudget(tokens=10)})
    now = time.time()

    async def main() -> None:
        await ledger.reserve(_call(tenant, 5))
        await ledger.counters.close()

    asyncio.run(main())
    key, end = ledger.key(tenant, now)
    ttl = redis.Redis.from_url(REDIS_URL).ttl(key)
    assert 0 < ttl <= end - now + 1
    assert key.endswith(day_window(now)[0])


def test_day_window_is_the_utc_day():
    day, end = day_window(1_795_000_000.0)  # 2026-11-18T06:13:20Z
    assert day == "2026-11-18"
    assert end == 1_795_046_400.0


def test_an_exhausted_budget_refuses_even_a_zero_estimate(counters: Counters):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    ledger = TenantLedger(counters, {tenant: TenantBudget(tokens=1_000)})

    async def main() -> None:
        first = _call(tenant, 900)
        assert (await ledger.reserve(first)).allowed
        await ledger.settle(first, tokens=1_200, cost=0.0)  # it used more than estimated
        verdict = await ledger.reserve(_call(tenant, 0))
        assert verdict.code == "tenant_budget.tokens"
        await counters.close()

    asyncio.run(main())
