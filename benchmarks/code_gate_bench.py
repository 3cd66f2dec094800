"""The code gate's cost per snippet, over the escape and benign corpora.

Measures, in one process: (a) the AST rules alone (``ast_findings`` with the default allow-lists),
(b) the whole gate without Bandit (``CodeGate(CodePolicy(bandit=False)).inspect``), (c) the
whole gate with Bandit (the default when the ``sandbox`` extra is installed), each over every
snippet of ``autonomic.testing.code_gate_corpus`` (escapes and benign data-analysis code).
Reported as microseconds per snippet at P50 and P99. A sandbox start costs ~30-110 ms
(namespace warm/cold, OCI) to seconds (microVM), which is what the gate saves on a refusal.

Usage: .venv/bin/python benchmarks/code_gate_bench.py [--rounds 50]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from autonomic.governance.code_gate import CodeGate, CodePolicy, ast_findings, bandit_available
from autonomic.testing.code_gate_corpus import load


def _measure(fn: Callable[[str], object], codes: list[str], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        for code in codes:
            t = time.perf_counter()
            fn(code)
            samples.append(time.perf_counter() - t)
    return samples


def _row(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1e6
    p99 = ordered[int(len(ordered) * 0.99) - 1] * 1e6
    return f"| {name} | {p50:,.0f} | {p99:,.0f} |"


def main(rounds: int) -> None:
    codes = [s.code for s in load("escapes")] + [s.code for s in load("benign")]
    policy = CodePolicy(bandit=False)
    allow = policy.allowances
    lean = CodeGate(policy)
    for code in codes:  # warm: the allowed modules are imported once to resolve attributes
        lean.inspect(code)
    print(f"{len(codes)} snippets x {rounds} rounds")
    print("| measure | P50 µs/snippet | P99 µs/snippet |")
    print("| --- | ---: | ---: |")
    print(
        _row("AST rules (allow-lists)", _measure(lambda c: ast_findings(c, allow), codes, rounds))
    )
    print(_row("gate without Bandit", _measure(lean.inspect, codes, rounds)))
    if bandit_available():
        full = CodeGate(CodePolicy())
        print(_row("gate with Bandit", _measure(full.inspect, codes, max(1, rounds // 10))))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    main(parser.parse_args().rounds)
