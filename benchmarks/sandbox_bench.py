"""Sandbox start-to-result latency: plain python3, cold namespace sandbox, warm pool, side by side.

Two floors: ``python3 -I -S`` (a bare interpreter start, what the sandbox's own loader runs: the
ratios are to this one) and ``python3 -I`` (with ``site``, what a user typing ``python3`` gets).
Targets (issue 17): cold <= 1.5x and warm pool <= 0.5x the bare start, in one run.

Workload: ``print(sum(range(1000)))``, measured from "execute" to "result in hand" (output read,
processes reaped, cgroup removed). Rounds interleave the systems so machine load hits them alike.
``warm`` waits (untimed) for the pool to be refilled between runs, so it measures the latency when
a warm sandbox is available, which is what a pool sized for the load gives.

Usage: .venv/bin/python benchmarks/sandbox_bench.py [--runs 200] [--json out.jsonl]
Prints a Markdown table for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable

from autonomic.adapters.sandbox.namespace import PYTHON, NamespaceSandbox
from autonomic.ports.sandbox import Execution

CODE = "print(sum(range(1000)))"
BARE = "python3 -I -S (bare interpreter start, no isolation)"
EXPECTED = "499500\n"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def plain() -> str:
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-I", "-c", CODE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return out.decode()


async def bare() -> str:
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-I", "-S", "-c", CODE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return out.decode()


async def main(runs: int, json_path: str | None) -> None:
    cold = NamespaceSandbox()
    warm = NamespaceSandbox(pool_size=2)
    await warm.start()

    async def run_cold() -> str:
        return (await cold.execute(Execution(code=CODE))).stdout

    async def run_warm() -> str:
        return (await warm.execute(Execution(code=CODE))).stdout

    systems: dict[str, Callable[[], Awaitable[str]]] = {
        BARE: bare,
        "plain python3 -I (no isolation, with site)": plain,
        "namespace, cold": run_cold,
        "namespace, warm pool": run_warm,
    }
    samples: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(5):  # warm the page cache; not measured
        for fn in systems.values():
            await fn()
        await warm.start()
    for _ in range(runs):
        for name, fn in systems.items():
            began = time.perf_counter()
            out = await fn()
            samples[name].append((time.perf_counter() - began) * 1000)
            if out != EXPECTED:
                raise SystemExit(f"{name}: wrong output {out!r}")
            if fn is run_warm:
                await warm.start()  # refill, untimed
    await cold.close()
    await warm.close()
    base = statistics.median(samples[BARE])
    print(
        f"{runs} runs each, interleaved; {os.cpu_count()} CPUs, {platform.machine()}, "
        f"kernel {platform.release()}, load average {os.getloadavg()[0]:.2f}\n"
    )
    print("| system | P50 (ms) | P99 (ms) | mean (ms) | P50 ratio to python3 -I -S |")
    print("| --- | ---: | ---: | ---: | ---: |")
    rows: list[dict[str, object]] = []
    for name, values in samples.items():
        p50, p99 = percentile(values, 50), percentile(values, 99)
        row = {
            "system": name,
            "runs": runs,
            "p50_ms": round(p50, 2),
            "p99_ms": round(p99, 2),
            "mean_ms": round(statistics.fmean(values), 2),
            "ratio_p50": round(p50 / base, 2),
        }
        rows.append(row)
        print(
            f"| {name} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['mean_ms']:.1f} "
            f"| x{row['ratio_p50']:.2f} |"
        )
    if json_path:
        write_rows(json_path, rows)


def write_rows(path: str, rows: list[dict[str, object]]) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.json_path))
