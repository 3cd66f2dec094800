"""Fault points: named places in the step protocol where chaos testing can crash the process.

The engine calls ``faults.at(point)`` at each place where a crash is interesting. In production the
hook does nothing; ``CrashAt`` kills the process with SIGKILL at the N-th time a point is reached,
which is how the crash tests and ``autonomic demo --crash-after-step`` prove recovery.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from typing import Protocol

from autonomic.errors import ConfigError

STEP_POINTS = ("before_commit", "after_commit", "after_effect", "step_done")
"""``before_commit``: entries staged, not yet committed. ``after_commit``: just committed.
``after_effect``: a tool ran, its result not yet committed. ``step_done``: a tool step's result
is committed."""
POINTS = (*STEP_POINTS, "approved", "before_effect", "plan_scored", "compensated")
"""``approved``: a call's approval is in the journal, the call has not started (governance).
``before_effect``: a call's intent is committed (write-ahead, for a non-idempotent tool) and its
effect is about to start; the lease check comes next. ``plan_scored``: every Tree-of-Thoughts
candidate is scored and committed, the choice is not yet staged. ``compensated``: a compensating
call ran, its result not yet committed."""


class Faults(Protocol):
    def at(self, point: str) -> None: ...


class NoFaults:
    """The production hook: nothing happens."""

    def at(self, point: str) -> None:
        return None


class CrashAt:
    """SIGKILL this process the ``count``-th time ``point`` is reached."""

    def __init__(self, point: str, count: int) -> None:
        if point not in POINTS:
            raise ConfigError(
                f"unknown fault point {point!r}", hint=f"use one of {', '.join(POINTS)}"
            )
        if count < 1:
            raise ConfigError(f"fault count must be at least 1, got {count}")
        self.point = point
        self.count = count
        self._seen: Counter[str] = Counter()

    def at(self, point: str) -> None:
        self._seen[point] += 1
        if point == self.point and self._seen[point] == self.count:
            self.fire()

    def fire(self) -> None:
        """What reaching the point does: SIGKILL (a subclass may crash another way)."""
        os.kill(os.getpid(), signal.SIGKILL)

    @staticmethod
    def parse(spec: str) -> CrashAt:
        """Parse ``point:count`` (the form of ``AUTONOMIC_CRASH_AT``)."""
        point, _, count = spec.partition(":")
        try:
            return CrashAt(point, int(count or "1"))
        except ValueError:
            raise ConfigError(
                f"bad crash spec {spec!r}", hint="write point:count, e.g. after_effect:3"
            ) from None


def from_environment() -> Faults:
    """``CrashAt`` from ``AUTONOMIC_CRASH_AT`` if set, else ``NoFaults``."""
    spec = os.environ.get("AUTONOMIC_CRASH_AT")
    return CrashAt.parse(spec) if spec else NoFaults()
