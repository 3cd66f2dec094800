"""How long ``autonomic`` takes to start, as a ratio against ``python -c pass``.

Times three whole processes in turn, round after round (so a machine whose speed drifts slows all
three alike): ``python -c pass``, ``autonomic --help`` and ``autonomic runs`` on an empty, migrated
SQLite file. Reports each one's median wall and CPU time (user + system, from the kernel's
accounting of the finished child) and the median of the per-round ratios against ``python -c pass``.

``--src DIR`` times another checkout's ``src/`` too (the release before, say), side by side in the
same rounds. ``--instructions`` counts each command's instructions under ``valgrind
--tool=cachegrind`` instead (Debian's ``valgrind``): a figure a busy machine does not change. Byte-code is compiled first (``--no-compile`` skips it): an installed package has it
(pip compiles at install), but ``uv sync`` does not write it and ``PYTHONDONTWRITEBYTECODE=1``
keeps Python from caching it, and then every start compiles every module it imports.

Usage: .venv/bin/python benchmarks/cli_start.py [--rounds 20] [--src OTHER/src] [--instructions]
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import autonomic

SRC = Path(autonomic.__file__).resolve().parents[1]


def _cli(pythonpath: Path | None) -> tuple[list[str], dict[str, str]]:
    """How a user starts the CLI: the console script beside this interpreter, else ``-m``."""
    script = Path(sys.executable).parent / "autonomic"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "autonomic.cli"]
    env = {k: v for k, v in os.environ.items() if k != "AUTONOMIC_DB"} | {"COLUMNS": "100"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return command, env


def _time(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _instructions(command: list[str], env: dict[str, str]) -> int:
    """Instructions one run of ``command`` executes (the script run by this interpreter)."""
    if not command[0].endswith("python") and Path(command[0]).is_file():
        command = [sys.executable, *command]  # the console script, through its interpreter
    valgrind = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
    ]
    done = subprocess.run(
        [*valgrind, *command],
        env=env | {"PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in done.stderr.splitlines() if "I   refs" in x or "I refs" in x)
    return int(line.split(":")[1].strip().replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--src", type=Path, help="another checkout's src/ to time beside this one")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--instructions", action="store_true", help="count, under valgrind")
    args = parser.parse_args()

    trees: dict[str, Path | None] = {"this": None}
    if args.src is not None:
        trees["other"] = args.src.resolve()
    if args.compile:
        for tree in (SRC, sysconfig.get_paths()["purelib"], *(t for t in trees.values() if t)):
            compileall.compile_dir(str(tree), quiet=2, workers=0)

    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/empty.db"
        command, env = _cli(None)
        subprocess.run([*command, "--db", db, "migrate"], env=env, check=True, capture_output=True)
        cases: dict[str, tuple[list[str], dict[str, str]]] = {
            "python -c pass": ([sys.executable, "-c", "pass"], dict(os.environ)),
        }
        for name, tree in trees.items():
            command, env = _cli(tree)
            suffix = "" if name == "this" else f" ({tree})"
            cases[f"autonomic --help{suffix}"] = ([*command, "--help"], env)
            cases[f"autonomic runs{suffix}"] = ([*command, "--db", db, "runs"], env)

        if args.instructions:
            counts = {name: _instructions(cmd, env) for name, (cmd, env) in cases.items()}
            base = counts["python -c pass"]
            print("| command | instructions | / python -c pass |")
            print("| --- | ---: | ---: |")
            for name, n in counts.items():
                print(f"| `{name}` | {n:,} | x{n / base:.1f} |")
            return
        for cmd, env in cases.values():  # warm-up: the page cache, not the figures
            _time(cmd, env)
        walls: dict[str, list[float]] = {name: [] for name in cases}
        cpus: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, (cmd, env) in cases.items():
                wall, cpu = _time(cmd, env)
                walls[name].append(wall)
                cpus[name].append(cpu)

    base = "python -c pass"
    print(
        f"{args.rounds} rounds, medians; byte-code {'compiled' if args.compile else 'as found'}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"| command | wall (ms) | cpu (ms) | wall / {base} | cpu / {base} |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in cases:
        wall_ratio = statistics.median(w / b for w, b in zip(walls[name], walls[base], strict=True))
        cpu_ratio = statistics.median(
            c / max(b, 1e-3) for c, b in zip(cpus[name], cpus[base], strict=True)
        )
        print(
            f"| `{name}` | {statistics.median(walls[name]) * 1000:.0f} | "
            f"{statistics.median(cpus[name]) * 1000:.0f} | x{wall_ratio:.1f} | x{cpu_ratio:.1f} |"
        )


if __name__ == "__main__":
    main()
