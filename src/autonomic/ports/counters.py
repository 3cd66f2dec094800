"""The counters port: shared, atomic, expiring usage counters (per tenant per day).

A tenant's daily budget is spent by every worker at once, so "read the total, compare, add" would
let N workers overrun it together. The port's one decision method, ``reserve``, does the compare
and the add atomically: the amounts are added only if no limit would be passed. ``adjust`` corrects
a reservation once the real usage is known. Counters expire at ``expires_at`` (the end of the day),
so nothing has to clean them up. In-memory adapter for one process, Redis adapter for a fleet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Reservation:
    """The answer to ``reserve``.

    Args:
        granted: the amounts were added (every limit held).
        used: the counters after the call (granted) or as they stood (refused).
        exceeded: the names of the counters whose limit the amounts would have passed.
    """

    granted: bool
    used: Mapping[str, float] = field(default_factory=dict)
    exceeded: tuple[str, ...] = ()


@runtime_checkable
class Counters(Protocol):
    """Named float counters grouped under a key, with atomic check-and-add."""

    async def reserve(
        self,
        key: str,
        amounts: Mapping[str, float],
        limits: Mapping[str, float],
        *,
        expires_at: float,
    ) -> Reservation:
        """Add ``amounts`` under ``key`` if, for every name in ``limits``, used + amount <= limit."""
        ...

    async def adjust(
        self, key: str, amounts: Mapping[str, float], *, expires_at: float
    ) -> dict[str, float]:
        """Add ``amounts`` (possibly negative) unconditionally; return the counters."""
        ...

    async def read(self, key: str) -> dict[str, float]:
        """The counters under ``key`` (empty when expired or never written)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
