"""Gateway fixtures: a reachable Redis (skipped without one unless CI is set)."""

from __future__ import annotations

import os
import uuid

import pytest

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def redis_server() -> str:
    """The URL of a reachable Redis, checked once."""
    url = os.environ.get("AUTONOMIC_TEST_REDIS_URL") or DEFAULT_REDIS_URL
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {url} is unreachable: {exc} (CI is set, so this is an error)")
        pytest.skip(f"Redis at {url} is unreachable: {exc}; set AUTONOMIC_TEST_REDIS_URL")
    return url


@pytest.fixture
def redis_prefix(redis_server: str) -> str:
    """A key prefix of this test's own (keys expire by themselves)."""
    return f"autonomic-test:{uuid.uuid4().hex}"
