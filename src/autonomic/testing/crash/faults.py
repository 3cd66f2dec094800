"""Faults inside one process: a crash raised as an exception, a worker paused by SIGSTOP.

``RaiseAt`` leaves the journal a dead worker leaves, without a child process; ``StopAt`` pauses a
(child) worker at a fault point, so another can take its run over before it wakes up as a zombie.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

from autonomic.engine.faults import CrashAt
from autonomic.testing.crash.kit import append_jsonl


class SimulatedCrash(BaseException):
    """Stands for SIGKILL inside one process: nothing after the fault point runs, nothing the
    engine could catch as an error, and the run stays RUNNING and leased, as a dead worker leaves
    it."""


class RaiseAt(CrashAt):
    """``CrashAt`` that raises ``SimulatedCrash`` instead of SIGKILL: for tests that need only the
    journal a dead worker leaves, without a child process."""

    def fire(self) -> None:
        raise SimulatedCrash(f"{self.point} #{self.count}")


class StopAt:
    """A ``Faults`` that SIGSTOPs this process the ``count``-th time ``point`` is reached.

    The parent sees the stop with ``wait_child(pid, until_stopped=True)``, can let another worker
    take the run over, then SIGCONT the child: a paused worker that wakes up as a zombie. With
    ``events``, the child logs ``stopping`` / ``continued`` and every later point it reaches.
    """

    def __init__(self, point: str, count: int, *, events: Path | None = None) -> None:
        self.point = point
        self.count = count
        self.events = events
        self.continued = False
        self._seen: Counter[str] = Counter()

    def _log(self, event: str, **extra: Any) -> None:
        if self.events is not None:
            append_jsonl(self.events, {"event": event, "pid": os.getpid(), **extra})

    def at(self, point: str) -> None:
        self._seen[point] += 1
        if self.continued:
            self._log("point", point=point)
        if point == self.point and self._seen[point] == self.count:
            self._log("stopping", point=point, count=self.count)
            os.kill(os.getpid(), signal.SIGSTOP)
            self.continued = True
            self._log("continued")
