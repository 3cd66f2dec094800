"""The breaker behaviour every store must have, held against this process's ``Breakers``; the
same suite runs against ``RedisBreakers`` in ``tests/adapters/redis``."""

import asyncio

import pytest

from autonomic.governance.breakers import Breakers
from autonomic.testing.breaker_conformance import CHECKS, run_check


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_breaker_conformance(check):
    asyncio.run(run_check(check, lambda **kw: Breakers(**kw)))
