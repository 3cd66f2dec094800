"""Start-to-result latency of the OCI and microVM sandbox backends, beside plain python3.

Workload: ``print(sum(range(1000)))``, one execution at a time, timed from the call to the
Result (or, for plain python3, from spawn to exit with its output read). Every row runs in the
same invocation, so a loaded machine slows all of them alike; compare ratios, not absolutes.

    .venv/bin/python benchmarks/sandbox_vm_bench.py [--runs 200] [--runsc-runs 50] \
        [--vm-budget 120] [--json results.jsonl]

MicroVM rows run as many executions as fit in ``--vm-budget`` seconds each (snapshot-restored
and cold-booted); the table says whether KVM or TCG emulation was used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from autonomic.adapters.sandbox.image import build
from autonomic.adapters.sandbox.microvm import MicroVmSandbox
from autonomic.adapters.sandbox.oci import OciSandbox
from autonomic.ports.sandbox import Execution, Limits, Result, Sandbox, SandboxUnavailable

CODE = "print(sum(range(1000)))"
EXPECTED = "499500\n"
VM_LIMITS = Limits(wall_seconds=30, cpu_seconds=30)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def plain_python() -> float:
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "/usr/bin/python3", "-c", CODE, stdout=subprocess.PIPE
    )
    out, _ = await proc.communicate()
    elapsed = time.perf_counter() - start
    assert out.decode() == EXPECTED
    return elapsed


def sandbox_call(box: Sandbox, limits: Limits) -> Callable[[], Awaitable[float]]:
    async def call() -> float:
        start = time.perf_counter()
        result: Result = await box.execute(Execution(code=CODE, limits=limits))
        elapsed = time.perf_counter() - start
        if result.stdout != EXPECTED:
            raise RuntimeError(f"{box.name}: unexpected result {result}")
        return elapsed

    return call


async def measure(
    call: Callable[[], Awaitable[float]], runs: int, budget_s: float | None = None
) -> list[float]:
    await call()  # warm-up: page cache, snapshot creation, runtime binaries
    samples: list[float] = []
    started = time.monotonic()
    while len(samples) < runs:
        samples.append(await call())
        if budget_s is not None and time.monotonic() - started > budget_s:
            break
    return samples


def row(name: str, mode: str, samples: list[float], baseline: float | None) -> dict[str, object]:
    p50 = statistics.median(samples)
    return {
        "backend": name,
        "mode": mode,
        "runs": len(samples),
        "p50_ms": round(p50 * 1000, 1),
        "p99_ms": round(percentile(samples, 99) * 1000, 1),
        "x_python3": round(p50 / baseline, 1) if baseline else 1.0,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--runsc-runs", type=int, default=50)
    parser.add_argument("--vm-budget", type=float, default=120.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    rows: list[dict[str, object]] = []
    py = await measure(plain_python, args.runs)
    baseline = statistics.median(py)
    rows.append(row("python3", "plain subprocess, no isolation", py, None))

    for runtime, runs in (("runc", args.runs), ("runsc", args.runsc_runs)):
        oci = OciSandbox(runtime=runtime)
        try:
            samples = await measure(sandbox_call(oci, Limits()), runs)
            rows.append(row(f"oci:{runtime}", "fresh container per run", samples, baseline))
        except SandboxUnavailable as exc:
            print(f"skipping oci:{runtime}: {exc}", file=sys.stderr)
        finally:
            await oci.close()

    await asyncio.to_thread(build)
    snap = MicroVmSandbox(snapshot=True)
    samples = await measure(sandbox_call(snap, VM_LIMITS), 10_000, args.vm_budget)
    accel = snap.accel or "?"
    rows.append(row(f"microvm:{accel}", "snapshot restore (COW RAM)", samples, baseline))
    cold = MicroVmSandbox(snapshot=False, accel=accel)
    samples = await measure(sandbox_call(cold, VM_LIMITS), 10_000, args.vm_budget)
    rows.append(row(f"microvm:{accel}", "cold boot", samples, baseline))

    load = os.getloadavg()
    print(
        f"host: {platform.node()} {os.cpu_count()} cpus, load {load[0]:.1f}/{load[1]:.1f}, "
        f"microVM accelerator: {'KVM' if accel == 'kvm' else 'TCG software emulation'}"
    )
    print("| backend | mode | runs | P50 (ms) | P99 (ms) | P50 vs python3 |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['backend']} | {r['mode']} | {r['runs']} | {r['p50_ms']} | {r['p99_ms']} "
            f"| x{r['x_python3']} |"
        )
    if args.json:
        with args.json.open("a") as f:
            for r in rows:
                f.write(json.dumps({**r, "load1": load[0]}) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
