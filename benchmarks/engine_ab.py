"""The engine benchmark of two checkouts side by side, in one invocation: is B as fast as A?

A refactor must not slow the engine down, and a shared machine's speed drifts by more than the
difference being looked for. So the two checkouts' ``benchmarks/autonomic_bench.py`` run in turn -
A B, B A, A B ... each in its own virtualenv, on the same store - and what is compared is the ratio
B/A of each *pair*, which cancels the drift between pairs. Reported per mode (sequential,
concurrent, resume) and per configuration (guards off and on): the median per-step time of each,
the median of the pairwise ratios, and their spread (min-max) as the noise.

    python benchmarks/engine_ab.py --a ../old-checkout --b . --store sqlite --pairs 5
    python benchmarks/engine_ab.py --a ../old --b . --store postgres \\
        --pg-url postgresql://postgres@127.0.0.1:5432/test

Each checkout needs its ``.venv`` (``uv sync --frozen --all-extras``).

``--instructions`` counts instead of timing, for a machine too noisy to time on: each checkout's
sequential workload runs under ``valgrind --tool=cachegrind`` (Debian's ``valgrind``) twice, with
5 and 45 runs, and the difference divided by the 400 extra steps is the instructions per step -
the same number on every run, whatever else the machine is doing.
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


_COUNT = """
import asyncio, sys, uuid
sys.path.insert(0, "benchmarks")
import autonomic_bench as bench
bench.GUARDS = {guards}
url = "sqlite:///{workdir}/count-" + uuid.uuid4().hex[:8] + ".db?synchronous=normal"
asyncio.run(bench.migrate(url))
asyncio.run(bench.sequential(url, {runs}))
"""


def instructions(checkout: Path, workdir: str, guards: bool, runs: int) -> int:
    code = _COUNT.format(guards=guards, workdir=Path(workdir).resolve(), runs=runs)
    out = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            str(checkout / ".venv/bin/python"),
            "-c",
            code,
        ],
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "0", "PATH": "/usr/bin:/bin"},
    )
    line = next(x for x in out.stderr.splitlines() if "I   refs" in x or "I refs" in x)
    return int(line.split(":")[1].strip().replace(",", ""))


def count(args: argparse.Namespace, guards: bool) -> None:
    """Run ids, timestamps and latencies differ from run to run and so do the JSON bytes the
    journal encodes: counts vary by a few per cent, so each is taken ``--pairs`` times."""
    samples: dict[str, list[float]] = {"A": [], "B": []}
    for _ in range(args.pairs):
        for name, checkout in (("A", args.a), ("B", args.b)):
            low = instructions(checkout, args.workdir, guards, 5)
            high = instructions(checkout, args.workdir, guards, 45)
            samples[name].append((high - low) / 400)
    a, b = (statistics.median(samples[k]) for k in ("A", "B"))
    ratios = [y / x for x, y in zip(samples["A"], samples["B"], strict=True)]
    label = "guards on " if guards else "guards off"
    print(
        f"{label} sequential  A {a:,.0f} instructions/step  B {b:,.0f}  B/A x{b / a:.3f} "
        f"(pairs x{min(ratios):.3f}-x{max(ratios):.3f})",
        flush=True,
    )


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
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under valgrind instead"
    )
    args = parser.parse_args()
    configs = {"off": [False], "on": [True], "both": [False, True]}[args.guards]
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    if args.instructions:
        for guards in configs:
            count(args, guards)
        return 0
    print(f"A = {args.a.resolve()}\nB = {args.b.resolve()}\nstore {args.store}, {args.pairs} pairs")
    for guards in configs:
        a_runs: list[dict[str, float]] = []
        b_runs: list[dict[str, float]] = []
        for pair in range(args.pairs):
            if pair % 2:  # B first in every other pair: whatever the order costs, both pay it
                b_runs.append(run_bench(args.b, args, guards))
                a_runs.append(run_bench(args.a, args, guards))
            else:
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
