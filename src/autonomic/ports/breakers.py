"""The breaker port: where the state of keyed circuit breakers lives, and what one reports.

``BreakerStore`` is what the model gateway needs of its circuits. Two stores satisfy it: the
in-process ``Breakers`` (``autonomic.governance.breakers``, the default) and ``RedisBreakers``
(``autonomic.adapters.redis.breakers``, shared by every worker). Its queries are coroutines
(``astate`` and friends) because a shared store answers over the network. The conformance suite
``autonomic.testing.breaker_conformance`` holds every store to the same behaviour.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from autonomic.errors import AutonomicError

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


def counts_as_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says something about the protected dependency's health (the default
    predicate of every store: errors marked retryable, timeouts and connection errors)."""
    if isinstance(exc, AutonomicError):
        return exc.retryable
    return isinstance(exc, (TimeoutError, ConnectionError, OSError))


@dataclass(frozen=True, slots=True)
class BreakerState:
    """One breaker as ``snapshot()`` reports it."""

    key: str
    state: str
    """``closed``, ``open`` or ``half_open`` (open and due for a probe)."""
    failures: int
    retry_in: float
    """Seconds until an open breaker lets a probe through (0 unless open)."""
    probing: bool = False
    """A half-open probe is in flight (so other callers are refused)."""

    @property
    def refusing(self) -> bool:
        """Whether a call now would be refused: open and not yet due, or a probe in flight."""
        return self.state == OPEN or (self.state == HALF_OPEN and self.probing)

    def to_dict(self) -> dict[str, object]:
        return {
            "key": self.key,
            "state": self.state,
            "failures": self.failures,
            "retry_in": round(self.retry_in, 3),
        }


class BreakerStore(Protocol):
    """Where the state of keyed breakers lives: what the model gateway needs of it."""

    def guard(
        self, key: str, *, threshold: int | None = None, reset_after: float | None = None
    ) -> AbstractAsyncContextManager[None]:
        """Run the body under ``key``'s breaker; raise ``CircuitOpen`` instead while it refuses."""
        ...

    async def astate(self, key: str) -> BreakerState:
        """The state of ``key`` (closed if it was never used)."""
        ...

    async def ais_open(self, key: str) -> bool:
        """True while ``key`` refuses calls."""
        ...

    async def asnapshot(self) -> dict[str, BreakerState]:
        """Every known breaker, by key."""
        ...

    async def aexpire(self, key: str) -> None:
        """Make an open ``key`` due for its half-open probe now."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
