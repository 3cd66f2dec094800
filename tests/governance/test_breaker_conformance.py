"""The same breaker behaviour in this process's memory and in Redis: the conformance suite run
against ``Breakers`` and ``RedisBreakers``."""

import asyncio

import pytest

from autonomic.adapters.redis.breakers import RedisBreakers
from autonomic.governance.breakers import Breakers
from autonomic.testing.breaker_conformance import CHECKS, run_check


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
def make(request):
    if request.param == "local":
        return lambda **kw: Breakers(**kw)
    url = request.getfixturevalue("redis_server")
    prefix = request.getfixturevalue("redis_prefix")
    return lambda **kw: RedisBreakers(url, prefix=prefix, key_ttl=600, **kw)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_breaker_conformance(check, make):
    asyncio.run(run_check(check, make))
