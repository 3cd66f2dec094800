"""Keyed circuit breakers: one per provider, tool, agent or workflow, made on first use.

A thin wrapper over ``purgatory`` (an async-first breaker library: closed -> opened after
``threshold`` consecutive failures -> half-opened after ``reset_after`` seconds -> closed on a
successful probe, opened again on a failed one). What the wrapper adds:

* **one probe at a time** while half-open: purgatory lets every caller through once the TTL has
  passed; here the first caller probes and the others are refused until it is done, so a dependency
  that is still down gets one request, not a thundering herd;
* **which failures count** is a predicate (by default: errors marked retryable, timeouts and
  connection errors; a 400 for a bad request says nothing about the dependency's health, nor does
  cancellation);
* our ``CircuitOpen`` error (retryable, with how long until the next probe);
* ``snapshot()``: every breaker's state for ``autonomic show``, metrics and health pages.

What ends a guarded call decides what the breaker learns: a counted failure is a failure; any
other exception (a 400, a bug in the caller) is an answer, so it ends a failure streak like a
success does (purgatory's rule); cancellation and other ``BaseException`` that are not
``Exception`` (the caller gave up) say nothing and change nothing - a cancelled probe leaves the
breaker due for the next caller's probe instead of closing it.

``BreakerStore`` (``autonomic.ports.breakers``, with ``BreakerState``) is the seam the model
gateway depends on: ``Breakers`` (this process's memory, the default) and ``RedisBreakers``
(``autonomic.adapters.redis.breakers``, shared by every worker) both satisfy it. Its queries are
coroutines (``astate`` and friends) because a shared store answers over the network; ``Breakers``
keeps its synchronous ``state``/``is_open``/``snapshot``/``expire`` for the engine's circuits and
adds the async twins.

purgatory is imported when the first ``Breakers`` is made, not with this module: it imports the
``redis`` client whenever that is installed, and ``autonomic --help`` needs neither.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from autonomic.errors import CircuitOpen
from autonomic.ports.breakers import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerState,
    BreakerStore,
    counts_as_failure,
)

if TYPE_CHECKING:
    from purgatory.domain.model import Context

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "BreakerState",
    "BreakerStore",
    "Breakers",
    "counts_as_failure",
]


class Breakers:
    """``async with breakers.guard("provider:openai"): ...`` raises ``CircuitOpen`` when open."""

    def __init__(
        self,
        *,
        threshold: int = 5,
        reset_after: float = 30.0,
        counts: Callable[[BaseException], bool] = counts_as_failure,
    ) -> None:
        if threshold < 1 or reset_after <= 0:
            raise ValueError("threshold must be >= 1 and reset_after > 0")
        self.threshold = threshold
        self.reset_after = reset_after
        from purgatory import AsyncCircuitBreakerFactory

        self._factory = AsyncCircuitBreakerFactory(
            default_threshold=threshold,
            default_ttl=reset_after,
            exclude=[(BaseException, lambda exc: not counts(exc))],
        )
        self._counts = counts
        self._failures: dict[str, int] = {}  # consecutive counted failures (purgatory forgets
        # them once open)
        self._contexts: dict[str, Context] = {}
        self._probing: set[str] = set()

    def state(self, key: str) -> BreakerState:
        """The state of ``key`` (closed if it was never used)."""
        ctx = self._contexts.get(key)
        if ctx is None:
            return BreakerState(key, CLOSED, 0, 0.0)
        failures = self._failures.get(key, 0)
        if ctx.state == "opened":
            retry_in = max(0.0, (ctx.opened_at or 0.0) + ctx.ttl - time.time())
            if retry_in > 0:
                return BreakerState(key, OPEN, failures, retry_in)
            return BreakerState(key, HALF_OPEN, failures, 0.0, key in self._probing)
        if ctx.state == "half-opened":
            return BreakerState(key, HALF_OPEN, failures, 0.0, key in self._probing)
        return BreakerState(key, CLOSED, failures, 0.0)

    def is_open(self, key: str) -> bool:
        """True while ``key`` refuses calls (open and not yet due, or a probe is in flight)."""
        return self.state(key).refusing

    def snapshot(self) -> dict[str, BreakerState]:
        """Every breaker used so far, by key."""
        return {key: self.state(key) for key in sorted(self._contexts)}

    def expire(self, key: str) -> None:
        """Make an open ``key`` due for its half-open probe now (an operator's "try again now",
        and how tests reach half-open without waiting for the reset time)."""
        ctx = self._contexts.get(key)
        if ctx is not None and ctx.state == "opened":
            ctx._state.opened_at = time.time() - ctx.ttl - 1.0

    # -- the ``BreakerStore`` twins: this process's memory answers at once ----------------------

    async def astate(self, key: str) -> BreakerState:
        return self.state(key)

    async def ais_open(self, key: str) -> bool:
        return self.is_open(key)

    async def asnapshot(self) -> dict[str, BreakerState]:
        return self.snapshot()

    async def aexpire(self, key: str) -> None:
        self.expire(key)

    async def aclose(self) -> None:
        return None

    @asynccontextmanager
    async def guard(
        self, key: str, *, threshold: int | None = None, reset_after: float | None = None
    ) -> AsyncIterator[None]:
        """Run the body under ``key``'s breaker; a failure the predicate counts is recorded.

        ``threshold`` and ``reset_after`` override the defaults for a key's first use (a tool's
        contract carries its own); later calls keep what the key was made with."""
        breaker = await self._factory.get_breaker(key, threshold=threshold, ttl=reset_after)
        self._contexts[key] = breaker.context
        probe = self.state(key).state == HALF_OPEN
        if probe and key in self._probing:
            raise CircuitOpen(key, 0.0)
        from purgatory.domain.model import OpenedState

        try:
            await breaker.__aenter__()
        except OpenedState:
            raise CircuitOpen(key, self.state(key).retry_in) from None
        if probe:
            self._probing.add(key)
        try:
            yield
        except Exception as exc:
            if self._counts(exc):
                self._failures[key] = self._failures.get(key, 0) + 1
            else:  # an answer: purgatory ends the streak, so does the count we report
                self._failures[key] = 0
            await breaker.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        except BaseException:
            # cancelled (the caller gave up): nothing learnt about the dependency, so purgatory
            # is not told - a half-open breaker stays due and the next caller probes
            raise
        else:
            self._failures[key] = 0
            await breaker.__aexit__(None, None, None)
        finally:
            if probe:
                self._probing.discard(key)
