"""In-memory counters: the reference adapter, atomic within one process.

All work happens under one ``threading.Lock`` without awaiting, so it is atomic for coroutines
and threads alike. Expiry is checked against ``clock`` on every access.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from autonomic.ports.counters import Reservation


class MemoryCounters:
    """Counters in a dict; what the tests and a single-process deployment use."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._data: dict[str, tuple[float, dict[str, float]]] = {}

    def _live(self, key: str) -> dict[str, float]:
        entry = self._data.get(key)
        if entry is None or entry[0] <= self._clock():
            self._data.pop(key, None)
            return {}
        return entry[1]

    async def reserve(
        self,
        key: str,
        amounts: Mapping[str, float],
        limits: Mapping[str, float],
        *,
        expires_at: float,
    ) -> Reservation:
        with self._lock:
            used = self._live(key)
            exceeded = tuple(
                name
                for name, limit in limits.items()
                if used.get(name, 0.0) + amounts.get(name, 0.0) > limit
            )
            if exceeded:
                return Reservation(False, dict(used), exceeded)
            new = dict(used)
            for name, amount in amounts.items():
                new[name] = new.get(name, 0.0) + amount
            self._data[key] = (expires_at, new)
            return Reservation(True, dict(new))

    async def adjust(
        self, key: str, amounts: Mapping[str, float], *, expires_at: float
    ) -> dict[str, float]:
        with self._lock:
            new = dict(self._live(key))
            for name, amount in amounts.items():
                new[name] = new.get(name, 0.0) + amount
            self._data[key] = (expires_at, new)
            return dict(new)

    async def read(self, key: str) -> dict[str, float]:
        with self._lock:
            return dict(self._live(key))

    async def close(self) -> None:
        return None
