"""A system that refuses stale writers: the pattern a tool's ``ctx.fence`` is for.

Fencing stops a zombie's *commits* (its fence is old, so the journal refuses it) and the engine
checks the lease right before a non-idempotent effect starts. What neither can stop is an effect
already under way when its worker was paused: the paused worker wakes up after another worker
took its run over and finishes the write it had begun. Only the system written to can refuse it,
and it can if each write carries the run's fencing token (``ctx.fence``, which grows with every
takeover) and the system keeps the highest token it has accepted: a write with a lower one comes
from a worker that has since lost the run.

``FencedSink`` is that system at its smallest, for tests and as an example: a JSON-lines file
several processes may share (each write under an exclusive ``flock``, one ``O_APPEND`` write per
record, so what a killed process wrote is still there). In a real system the same check is a
conditional write - ``UPDATE accounts SET ..., fence = :fence WHERE id = :id AND fence <= :fence``,
an object store's precondition, a Kafka producer epoch.

    @tool(idempotent=True)
    def post(entry: str, ctx: ToolContext) -> str:
        FencedSink(ctx.metadata["sink"]).write(ctx.fence, {"entry": entry, "key": ctx.idempotency_key})
        return "posted"
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from autonomic.errors import ToolError


class StaleFence(ToolError):
    """A write carried a lower fencing token than one the sink has accepted: its writer lost the
    run to another worker. Not retryable: the same writer will never hold a higher token."""

    code = "stale_fence"


class FencedSink:
    """An append-only record file that refuses writes with a fence lower than it has seen."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write(self, fence: int, record: dict[str, Any]) -> None:
        """Append ``record`` written under ``fence``; raise ``StaleFence`` (and append nothing
        but a note of the refusal) if the sink has accepted a higher fence."""
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            highest = _highest(_read(fd))
            stale = fence < highest
            line = {**record, "fence": fence, "accepted": not stale}
            os.write(fd, (json.dumps(line, sort_keys=True) + "\n").encode())
        finally:
            os.close(fd)  # closing releases the lock
        if stale:
            raise StaleFence(
                f"write refused: fence {fence} is older than fence {highest}, which this sink "
                "has accepted (the run was taken over by another worker)",
                hint="the worker holding the newer fence owns the run now",
            )

    def records(self) -> list[dict[str, Any]]:
        """Every write attempted, in order: ``accepted`` says whether the sink took it."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def accepted(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["accepted"]]

    def highest_fence(self) -> int:
        return _highest(self.records())


def _read(fd: int) -> list[dict[str, Any]]:
    size = os.fstat(fd).st_size
    data = os.pread(fd, size, 0) if size else b""
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def _highest(records: list[dict[str, Any]]) -> int:
    return max((int(r["fence"]) for r in records if r.get("accepted")), default=0)
