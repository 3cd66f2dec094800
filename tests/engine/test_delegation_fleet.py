"""A capability's concurrency limit holds across the whole fleet: three worker processes on one
database never run more than its limit of subtasks at once; the rest wait queued, none fails."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from autonomic.bootstrap import build_store
from autonomic.core.run import RunStatus
from autonomic.testing.delegation import LIMIT, UNIT, fleet_engine, meter_reading

PARENTS = 10


def test_a_capability_limit_of_two_is_never_exceeded_by_three_worker_processes(
    store_url: str, tmp_path: Path
) -> None:
    meter = tmp_path / "meter.json"

    async def enqueue() -> list[str]:
        store = build_store(store_url)
        await store.migrate()
        try:
            engine = fleet_engine(store, meter)
            return [(await engine.start("boss", f"unit {i}")).id for i in range(PARENTS)]
        finally:
            await store.close()

    parents = asyncio.run(enqueue())
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "autonomic.testing.delegation",
                "--db",
                store_url,
                "--meter",
                str(meter),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=240)
        assert worker.returncode == 0, err.decode()[-2000:]

    async def outcome() -> tuple[list[RunStatus], list[RunStatus]]:
        store = build_store(store_url)
        try:
            runs = await store.list_runs(limit=1000)
            kids = [r.status for r in runs if r.capability == UNIT]
            return [(await store.get_run(p)).status for p in parents], kids
        finally:
            await store.close()

    statuses, children = asyncio.run(outcome())
    reading = meter_reading(meter)
    assert reading["done"] == PARENTS
    assert 1 <= reading["max"] <= LIMIT
    assert statuses == [RunStatus.COMPLETED] * PARENTS
    assert children == [RunStatus.COMPLETED] * PARENTS
