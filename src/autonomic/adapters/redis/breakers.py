"""Keyed circuit breakers whose state lives in Redis, so every worker process shares it.

With ``Breakers`` each worker learns that a provider is down by itself (``threshold`` failures
each) and reports only its own view. ``RedisBreakers`` keeps one state per key for the whole
fleet: ``threshold`` consecutive counted failures anywhere open it for everyone; once
``reset_after`` has passed, exactly one caller in the fleet probes and the others are refused until
the probe ends; the probe's success closes it for everyone, its failure opens it again.

**The state machine is written here, not borrowed from purgatory.** purgatory has a Redis
repository, but it reads the state, decides in Python and writes it back in separate commands
(two workers failing at once both read 4 failures and both write 5), times the open state with each
worker's own clock, and has no notion of a single half-open probe. Making it atomic would mean
replacing its repository, its unit of work and its state classes - everything but the name. The
machine is small (closed, open, due; a failure count; an opening time), so each transition is one
Lua script run atomically by Redis and timed by the Redis clock, and the probe is a
``SET NX PX`` lock that expires by itself, so a prober that crashed does not wedge the breaker
beyond ``probe_timeout``. The in-process ``Breakers`` keeps purgatory; the conformance suite
(``autonomic.testing.breaker_conformance``) holds both to the same behaviour.

Keys (all under ``prefix``, default ``autonomic:breaker``): ``{prefix}:k:{key}`` a hash (``st``
closed/open, ``f`` consecutive failures, ``at`` when it opened, ``th``/``ra`` the threshold and reset
time the key was made with), ``{prefix}:p:{key}`` the probe lock, ``{prefix}:keys`` the set of keys
for ``asnapshot``. Every write refreshes a ``key_ttl`` expiry, so abandoned keys go away.

**A Redis outage does not take calls down.** When Redis cannot be reached, every operation falls
back to the ``fallback`` store it was given (the gateway gives it an in-process ``Breakers`` with
the same settings, so the breaker keeps working for this worker, as it did before sharing), logs
one warning per outage, reports each fallback to ``on_fallback`` (the gateway counts them) and
leaves Redis alone for ``retry_redis_after`` seconds so a dead server does not add a timeout to
every call. An outcome that cannot be written back is lost; a probe lock that cannot be released
expires by itself.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from autonomic.adapters.redis.client import connect, outage_errors, text
from autonomic.errors import CircuitOpen
from autonomic.ports.breakers import CLOSED, BreakerState, BreakerStore, counts_as_failure

log = logging.getLogger("autonomic.redis")

# Shared preamble: the Redis clock in seconds, and a key's hash made on first use.
# KEYS[1] hash. ARGV[1] threshold, ARGV[2] reset_after, ARGV[3] key_ttl (seconds).
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function ensure()
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('HSET', KEYS[1], 'st', 'closed', 'f', '0', 'th', ARGV[1], 'ra', ARGV[2])
  end
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
end
"""

# KEYS: hash, probe lock, key set. ARGV: threshold, reset_after, key_ttl, key, token, probe ms.
# Returns {verdict, retry_in}: pass (closed), probe (this caller holds the lock), open (not due
# for retry_in seconds), probing (due, but another caller's probe is in flight).
_ENTER = (
    _NOW
    + """
ensure()
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
local v = redis.call('HMGET', KEYS[1], 'st', 'at', 'ra')
if v[1] ~= 'open' then return {'pass', '0'} end
local retry_in = tonumber(v[2]) + tonumber(v[3]) - now
if retry_in > 0 then return {'open', tostring(retry_in)} end
if redis.call('SET', KEYS[2], ARGV[5], 'NX', 'PX', tonumber(ARGV[6])) then
  return {'probe', '0'}
end
return {'probing', '0'}
"""
)

# KEYS: hash, probe lock. ARGV: threshold, reset_after, key_ttl, outcome (ok, fail, abandon),
# probe ('1' if this caller entered as the probe), token.
_EXIT = (
    _NOW
    + """
local probe = ARGV[5] == '1'
if probe and redis.call('GET', KEYS[2]) == ARGV[6] then redis.call('DEL', KEYS[2]) end
local outcome = ARGV[4]
if outcome == 'abandon' then return 'abandoned' end
ensure()
local v = redis.call('HMGET', KEYS[1], 'st', 'th')
if probe then
  if outcome == 'ok' then
    redis.call('HSET', KEYS[1], 'st', 'closed', 'f', '0')
    redis.call('HDEL', KEYS[1], 'at')
    return 'closed'
  end
  redis.call('HINCRBY', KEYS[1], 'f', 1)
  redis.call('HSET', KEYS[1], 'st', 'open', 'at', tostring(now))
  return 'opened'
end
if v[1] == 'open' then return 'late' end
if outcome == 'ok' then
  redis.call('HSET', KEYS[1], 'f', '0')
  return 'closed'
end
local f = redis.call('HINCRBY', KEYS[1], 'f', 1)
if f >= tonumber(v[2]) then
  redis.call('HSET', KEYS[1], 'st', 'open', 'at', tostring(now))
  return 'opened'
end
return 'counted'
"""
)

# KEYS: pairs of (hash, probe lock). Returns per pair {state, failures, retry_in, probing};
# state '' for a key whose hash is gone.
_STATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {}
for i = 1, #KEYS, 2 do
  local v = redis.call('HMGET', KEYS[i], 'st', 'f', 'at', 'ra')
  local probing = tostring(redis.call('EXISTS', KEYS[i + 1]))
  if not v[1] then
    table.insert(out, {'', '0', '0', '0'})
  elseif v[1] == 'open' then
    local retry_in = tonumber(v[3]) + tonumber(v[4]) - now
    if retry_in > 0 then
      table.insert(out, {'open', v[2], tostring(retry_in), probing})
    else
      table.insert(out, {'half_open', v[2], '0', probing})
    end
  else
    table.insert(out, {'closed', v[2], '0', '0'})
  end
end
return out
"""

# KEYS: hash. Moves an open breaker's opening time back so that it is due now.
_EXPIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local v = redis.call('HMGET', KEYS[1], 'st', 'ra')
if v[1] == 'open' then
  redis.call('HSET', KEYS[1], 'at', tostring(now - tonumber(v[2]) - 1))
  return 1
end
return 0
"""


# KEYS: the key set.
_MEMBERS = "return redis.call('SMEMBERS', KEYS[1])"


class _Unreachable(Exception):
    """Redis did not answer (or is being left alone after it did not); use local state."""


class RedisBreakers:
    """Breakers shared through Redis by every process using the same server and ``prefix``.

    Args:
        url: the Redis server (``redis://``, ``rediss://`` or ``unix://``).
        fallback: the store that answers while Redis is unreachable, made with the same
            ``threshold``, ``reset_after`` and ``counts`` (an in-process ``Breakers``); this store
            owns it from then on (``aclose`` closes it).
        threshold: consecutive counted failures (fleet-wide) that open a key.
        reset_after: seconds an open key refuses calls before one probe is let through.
        counts: which exceptions count as failures (see ``counts_as_failure``).
        prefix: the namespace of this store's Redis keys.
        probe_timeout: seconds after which a probe's lock expires if its holder never reports
            back (crashed, partitioned); should exceed the longest call it guards.
        key_ttl: seconds an untouched key lives in Redis.
        retry_redis_after: seconds to use local state only after Redis failed to answer.
        socket_timeout: seconds to wait for Redis (connect and each reply) before falling back.
        on_fallback: called each time an operation is answered locally because Redis is
            unreachable, with the breaker's key ("" for the whole-store ``asnapshot``).
    """

    def __init__(
        self,
        url: str,
        *,
        fallback: BreakerStore,
        threshold: int = 5,
        reset_after: float = 30.0,
        counts: Callable[[BaseException], bool] = counts_as_failure,
        prefix: str = "autonomic:breaker",
        probe_timeout: float = 60.0,
        key_ttl: float = 86400.0,
        retry_redis_after: float = 5.0,
        socket_timeout: float = 1.0,
        on_fallback: Callable[[str], None] | None = None,
    ) -> None:
        if probe_timeout <= 0 or key_ttl < 1 or retry_redis_after < 0 or socket_timeout <= 0:
            raise ValueError(
                "probe_timeout and socket_timeout must be > 0, key_ttl >= 1, retry_redis_after >= 0"
            )
        if threshold < 1 or reset_after <= 0:
            raise ValueError("threshold must be >= 1 and reset_after > 0")
        self.local = fallback
        """Where state lives while Redis is unreachable."""
        self.threshold = threshold
        self.reset_after = reset_after
        self.prefix = prefix
        self._redis: Any = connect(
            url,
            needed_by="shared circuit breakers",
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
        )
        self._errors = outage_errors()
        self._enter: Any = self._redis.register_script(_ENTER)
        self._exit: Any = self._redis.register_script(_EXIT)
        self._state: Any = self._redis.register_script(_STATE)
        self._expire: Any = self._redis.register_script(_EXPIRE)
        self._members: Any = self._redis.register_script(_MEMBERS)
        self._counts = counts
        self._probe_ms = max(1, int(probe_timeout * 1000))
        self._key_ttl = int(key_ttl)
        self._retry_redis_after = retry_redis_after
        self._on_fallback = on_fallback
        self._down_until = 0.0  # monotonic time before which Redis is not asked
        self._degraded = False
        self.fallbacks = 0
        """Operations answered from local state because Redis was unreachable."""

    def _hash(self, key: str) -> str:
        return f"{self.prefix}:k:{key}"

    def _lock(self, key: str) -> str:
        return f"{self.prefix}:p:{key}"

    async def _run(self, script: Any, keys: list[str], args: list[Any], key: str) -> Any:
        """Run ``script``; on a Redis failure note the outage and raise ``_Unreachable``."""
        if time.monotonic() < self._down_until:
            self._fell_back(key)
            raise _Unreachable
        try:
            result = await script(keys=keys, args=args)
        except self._errors as exc:
            self._down_until = time.monotonic() + self._retry_redis_after
            if not self._degraded:
                self._degraded = True
                # the exception names host and port at most, never the URL's password
                log.warning(
                    "circuit breakers: Redis unreachable (%s: %s); using this process's own "
                    "breaker state until it answers again",
                    type(exc).__name__,
                    exc,
                )
            self._fell_back(key)
            raise _Unreachable from None
        if self._degraded:
            self._degraded = False
            log.warning("circuit breakers: Redis answers again; breaker state is shared again")
        return result

    def _fell_back(self, key: str) -> None:
        self.fallbacks += 1
        if self._on_fallback is not None:
            self._on_fallback(key)

    def _settings(self, threshold: int | None, reset_after: float | None) -> list[Any]:
        return [
            threshold or self.threshold,
            repr(float(reset_after or self.reset_after)),
            self._key_ttl,
        ]

    @asynccontextmanager
    async def guard(
        self, key: str, *, threshold: int | None = None, reset_after: float | None = None
    ) -> AsyncIterator[None]:
        """Run the body under ``key``'s shared breaker (see ``Breakers.guard``)."""
        token = uuid.uuid4().hex
        settings = self._settings(threshold, reset_after)
        try:
            verdict, retry_in = await self._run(
                self._enter,
                [self._hash(key), self._lock(key), f"{self.prefix}:keys"],
                [*settings, key, token, self._probe_ms],
                key,
            )
        except _Unreachable:
            async with self.local.guard(key, threshold=threshold, reset_after=reset_after):
                yield
            return
        verdict = text(verdict)
        if verdict == "open":
            raise CircuitOpen(key, max(0.0, float(retry_in)))
        if verdict == "probing":
            raise CircuitOpen(key, 0.0)
        probe = verdict == "probe"
        try:
            yield
        except Exception as exc:
            await self._report(key, settings, "fail" if self._counts(exc) else "ok", probe, token)
            raise
        except BaseException:
            # cancelled: nothing learnt; free the probe so the next caller can probe
            await self._report(key, settings, "abandon", probe, token)
            raise
        else:
            await self._report(key, settings, "ok", probe, token)

    async def _report(
        self, key: str, settings: list[Any], outcome: str, probe: bool, token: str
    ) -> None:
        # unreachable: the outcome is lost, and a probe lock expires by itself
        with contextlib.suppress(_Unreachable):
            await self._run(
                self._exit,
                [self._hash(key), self._lock(key)],
                [*settings, outcome, "1" if probe else "0", token],
                key,
            )

    async def _states(self, keys: list[str]) -> list[BreakerState | None]:
        redis_keys = [k for key in keys for k in (self._hash(key), self._lock(key))]
        rows = await self._run(self._state, redis_keys, [], keys[0] if len(keys) == 1 else "")
        out: list[BreakerState | None] = []
        for key, (state, failures, retry_in, probing) in zip(keys, rows, strict=True):
            name = text(state)
            if not name:
                out.append(None)
                continue
            out.append(
                BreakerState(
                    key, name, int(failures), max(0.0, float(retry_in)), text(probing) == "1"
                )
            )
        return out

    async def astate(self, key: str) -> BreakerState:
        """The fleet's state of ``key`` (closed if never used, or gone after ``key_ttl``)."""
        try:
            (state,) = await self._states([key])
        except _Unreachable:
            return await self.local.astate(key)
        return state or BreakerState(key, CLOSED, 0, 0.0)

    async def ais_open(self, key: str) -> bool:
        """True while ``key`` refuses calls anywhere in the fleet."""
        return (await self.astate(key)).refusing

    async def asnapshot(self) -> dict[str, BreakerState]:
        """Every key any process used (and Redis still holds), by key."""
        try:
            members = await self._run(self._members, [f"{self.prefix}:keys"], [], "")
            keys = sorted(text(m) for m in members)
            states = await self._states(keys) if keys else []
        except _Unreachable:
            return await self.local.asnapshot()
        return {s.key: s for s in states if s is not None}

    async def aexpire(self, key: str) -> None:
        """Make an open ``key`` due for its probe now, for the whole fleet."""
        try:
            await self._run(self._expire, [self._hash(key)], [], key)
        except _Unreachable:
            await self.local.aexpire(key)

    async def aclose(self) -> None:
        """Close the Redis connection and the fallback store."""
        try:
            await self._redis.aclose()
        finally:
            await self.local.aclose()
