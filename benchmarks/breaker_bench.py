"""Circuit-breaker overhead per tool call, side by side with the same call without breakers.

Measures, in one process and one run: (a) a bare async tool call, (b) the same call through
``Circuits.call`` (purgatory's breaker around it, closed circuit), (c) the breaker gate's check of a
closed circuit (what every governed call pays before its intent). Reported as microseconds at P50
and the ratio of (b) to (a).

Usage: .venv/bin/python benchmarks/breaker_bench.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from autonomic.core.run import Lease, Run, RunStatus
from autonomic.core.state import RunState
from autonomic.governance.action import ProposedAction
from autonomic.governance.circuits import Circuits
from autonomic.tools.contract import tool
from autonomic.tools.operational import BreakerThresholds


@tool(name="echo", breaker=BreakerThresholds(min_calls=5, open_seconds=30))
async def echo(x: int) -> dict[str, Any]:
    """Return its argument."""
    return {"x": x}


async def _bare() -> tuple[dict[str, Any], bool]:
    return await echo.fn(x=1), False  # type: ignore[misc]


def _p50(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


async def main(calls: int) -> None:
    circuits = Circuits()
    gate = circuits.gate()
    run = Run(
        id="run_bench",
        agent="a",
        agent_version="1",
        model="scripted:",
        status=RunStatus.RUNNING,
        version=1,
        lease=Lease(owner=None, expires_at=0.0, fence=0),
        created_at=0.0,
        updated_at=0.0,
    )
    action = ProposedAction.tool_call(
        run, RunState(run_id=run.id), echo, {"x": 1}, call_id="c", step=1
    )
    bare, wrapped, checks = [], [], []
    for _ in range(calls):
        t = time.perf_counter()
        await _bare()
        bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        await circuits.call(echo, _bare)
        wrapped.append(time.perf_counter() - t)
        t = time.perf_counter()
        await gate.check(action)
        checks.append(time.perf_counter() - t)
    b, w, g = _p50(bare), _p50(wrapped), _p50(checks)
    print("| measurement | P50 (µs) |")
    print("|---|---|")
    print(f"| bare tool call | {b:.1f} |")
    print(f"| tool call under its breaker (`Circuits.call`, closed) | {w:.1f} |")
    print(f"| breaker gate check (closed circuit) | {g:.1f} |")
    print(f"| added per call (call + gate) | {w - b + g:.1f} ({w / b:.1f}x the bare call) |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    asyncio.run(main(parser.parse_args().calls))
