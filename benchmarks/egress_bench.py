"""What an egress allow-list costs: a cold sandbox with no network vs with ALLOWLIST.

Both run ``print(sum(range(1000)))`` cold, interleaved so machine load hits them alike; the
ALLOWLIST side builds and removes its sandbox and router namespaces, veth pairs and nftables table
each time (the code does not connect: this measures the network's set-up and tear-down). The
uplink is a namespace this script creates and deletes (``ip netns``); needs root, ip and nft.

Any backend (``--backend namespace|oci|oci-runsc|microvm``; the microVM's first allow-listed
execution takes its networked snapshot, outside the measurement: one warm-up run each).

Usage: .venv/bin/python benchmarks/egress_bench.py [--runs 50] [--backend namespace]
Prints a Markdown table for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import time

from autonomic.adapters.sandbox import build_sandbox
from autonomic.ports.sandbox import Execution, Limits, NetworkPolicy

CODE = "print(sum(range(1000)))"
UPLINK = f"autonomic-bench-uplink-{os.getpid()}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def main(runs: int, backend: str) -> None:
    sandbox = build_sandbox(backend, egress_uplink=UPLINK)
    none = f"{backend}, cold, network none"
    limits = {
        none: Limits(wall_seconds=60, cpu_seconds=60),
        f"{backend}, cold, egress allow-list": Limits(
            wall_seconds=60,
            cpu_seconds=60,
            network=NetworkPolicy.ALLOWLIST,
            egress_allow=("10.99.0.2:8080",),
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in limits}
    try:
        for lim in limits.values():  # warm-up: snapshots, calibration, first imports
            await sandbox.execute(Execution(code=CODE, limits=lim))
        for _ in range(runs):
            for name, lim in limits.items():
                begun = time.perf_counter()
                result = await sandbox.execute(Execution(code=CODE, limits=lim))
                times[name].append((time.perf_counter() - begun) * 1000)
                assert result.stdout == "499500\n", (result.ended, result.stderr)
    finally:
        await sandbox.close()
    base = statistics.median(times[none])
    print(f"load average {os.getloadavg()[0]:.1f}, {runs} runs each, interleaved\n")
    print("| system | P50 ms | P99 ms | P50 vs none |")
    print("| --- | ---: | ---: | ---: |")
    for name, values in times.items():
        p50 = statistics.median(values)
        print(f"| {name} | {p50:.1f} | {percentile(values, 99):.1f} | x{p50 / base:.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--backend", default="namespace")
    args = parser.parse_args()
    subprocess.run(["ip", "netns", "add", UPLINK], check=True)
    try:
        asyncio.run(main(args.runs, args.backend))
    finally:
        subprocess.run(["ip", "netns", "del", UPLINK], check=False)
