"""The engine benchmark of two checkouts side by side, in one invocation: is B as fast as A?

A refactor must not slow the engine down, and a shared machine's speed drifts by more than the
difference being looked for. So the two checkouts' ``benchmarks/autonomic_bench.py`` run in turn -
A, B, A, B ... each in its own virtualenv, on the same store - and what is compared is the ratio
B/A of each *pair*, which cancels the drift between pairs. Reported per mode (sequential,
concurrent, resume) and per configuration (guards off and on): the median per-step time of each,
the median of the pairwise ratios, and their spread (min-max) as the noise.

    python benchmarks/engine_ab.py --a ../old-checkout --b . --store sqlite --pairs 5
    python benchmarks/engine_ab.py --a ../old --b . --store postgres \\
        --pg-url postgresql://postgres@127.0.0.1:5432/test

Each checkout needs its ``.venv`` (``uv sync --frozen --all-extras``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path


def run_bench(checkout: Path, args: argparse.Namespace, guards: bool) -> dict[str, float]:
    command = [
        str(checkout / ".venv/bin/python"),
        str(checkout / "benchmarks/autonomic_bench.py"),
        "--store",
        args.store,
        "--pg-url",
        args.pg_url,
        "--runs",
        str(args.runs),
        "--rounds",
        "1",
        "--crashes",
        str(args.crashes),
        "--workdir",
        str(Path(args.workdir).resolve()),
    ]
    if guards:
        command.append("--guards")
    out = subprocess.run(command, cwd=checkout, capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {row["mode"]: float(row["per_step_ms"]) for row in rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="the baseline checkout")
    parser.add_argument("--b", type=Path, required=True, help="the checkout under test")
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--crashes", type=int, default=3)
    parser.add_argument("--workdir", default="benchmarks/.work")
    parser.add_argument("--guards", choices=["off", "on", "both"], default="both")
    args = parser.parse_args()
    configs = {"off": [False], "on": [True], "both": [False, True]}[args.guards]
    print(f"A = {args.a.resolve()}\nB = {args.b.resolve()}\nstore {args.store}, {args.pairs} pairs")
    for guards in configs:
        a_runs: list[dict[str, float]] = []
        b_runs: list[dict[str, float]] = []
        for _ in range(args.pairs):
            a_runs.append(run_bench(args.a, args, guards))
            b_runs.append(run_bench(args.b, args, guards))
        label = "guards on " if guards else "guards off"
        for mode in a_runs[0]:
            a = [r[mode] for r in a_runs]
            b = [r[mode] for r in b_runs]
            ratios = [y / x for x, y in zip(a, b, strict=True) if x > 0]
            print(
                f"{label} {mode:<11} A {statistics.median(a):.4f} ms/step  "
                f"B {statistics.median(b):.4f} ms/step  "
                f"B/A median x{statistics.median(ratios):.3f} "
                f"(pairs x{min(ratios):.3f}-x{max(ratios):.3f})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
