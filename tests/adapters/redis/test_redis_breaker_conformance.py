"""The breaker conformance suite (``autonomic.testing.breaker_conformance``) against
``RedisBreakers``: the same behaviour as the in-process ``Breakers`` (``tests/governance``)."""

import asyncio

import pytest

from autonomic.adapters.redis.breakers import RedisBreakers
from autonomic.governance.breakers import Breakers
from autonomic.testing.breaker_conformance import CHECKS, run_check


@pytest.mark.redis
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_redis_breaker_conformance(check, redis_server, redis_prefix):
    def make(**kw):
        return RedisBreakers(
            redis_server, fallback=Breakers(**kw), prefix=redis_prefix, key_ttl=600, **kw
        )

    asyncio.run(run_check(check, make))
