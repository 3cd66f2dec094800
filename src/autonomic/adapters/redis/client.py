"""What every Redis adapter does the same way: make a client from a URL, say which extra is missing
when the ``redis`` package is not installed, tell an outage from a bug, and read Redis replies.

The ``redis`` package is imported here, when the first client is made, never when an adapter
module is imported: ``autonomic --help`` and ``import autonomic`` stay free of it.
"""

from __future__ import annotations

from typing import Any

from autonomic.errors import ConfigError

EXTRA_HINT = "install the extra: pip install 'autonomic[redis]' (the gateway extra includes it)"


def connect(url: str, *, needed_by: str, **options: Any) -> Any:
    """An asyncio Redis client for ``url`` (``redis://``, ``rediss://`` or ``unix://``) with the
    ``redis.asyncio.Redis.from_url`` ``options``. ``needed_by`` names what needs it, for the
    ``ConfigError`` raised when the ``redis`` package is not installed."""
    try:
        from redis import asyncio as aioredis
    except ImportError as exc:  # the core installs no Redis client
        raise ConfigError(
            f"{needed_by} need Redis support ({exc.name} is missing)", hint=EXTRA_HINT
        ) from None
    return aioredis.Redis.from_url(url, **options)


def outage_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean Redis did not serve a request: any of the client's own errors
    (refused, timed out, loading, read-only, out of memory, ...) and a socket's ``OSError``."""
    from redis.exceptions import RedisError

    return (RedisError, OSError)


def connection_errors() -> tuple[type[BaseException], ...]:
    """The narrower set: the connection to Redis failed (refused, reset, authentication, loading).
    A reply that is an error (a script's, ``READONLY``, ``OOM``) is not in it."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    return (RedisConnectionError,)


def text(value: object) -> str:
    """A Redis reply item as text (replies are bytes unless the client decodes them)."""
    return value.decode() if isinstance(value, bytes) else str(value)
