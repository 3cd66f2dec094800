"""Guard overhead per step: all guards on, default embedder, history of 10, 500 and 2,000 steps.

What one step costs the engine: ``Guards.check(action, state)`` on a proposed tool call plus
``state.record(action)`` when it is allowed. Side by side in the same run, on the same actions:

* ``exact counter`` — what peers ship (same tool + same arguments counted over the window): the
  floor for "any loop check at all";
* ``all guards`` — budgets, loop detection (exact, near via hashed n-grams, plans), delegation,
  taint — with a history of 10, 500 and 2,000 earlier steps (the state is incremental, so the cost
  must not grow);
* ``screen`` — the injection screen on a small (~60 B) and a 2 KB JSON tool output;

Samples are **CPU time** of the measuring thread (``time.thread_time_ns``), so other work on a
shared machine does not count as guard cost (it still slows caches; compare ratios in one run).
* ``semantic`` (``--semantic``, needs the extra) — all guards with all-MiniLM-L6-v2.

Usage: .venv/bin/python benchmarks/guards_bench.py [--steps 2000] [--semantic]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable, Sequence

from autonomic.core.canonical import canonical_json
from autonomic.governance.runaway import (
    ActionKind,
    Budget,
    Finding,
    Guards,
    GuardState,
    ProposedAction,
    Provenance,
    Source,
    Verdict,
    screen,
)
from autonomic.testing.runaway import legitimate_run


class ExactCounter:
    name = "exact"

    def check(self, action: ProposedAction, state: GuardState) -> list[Finding]:
        key = canonical_json(dict(action.arguments))
        same = sum(1 for s in state.steps if s.tool == action.tool and s.args_key == key)
        return [Finding("exact", "exact", Verdict.SUSPEND, "repeat")] if same >= 10 else []


class NoEmbedder:
    """The baseline keeps no vectors: an exact counter needs none."""

    name = "none"
    dim = 0

    def embed(self, texts: Sequence[str]) -> list[Sequence[float]]:
        return [() for _ in texts]


def _tool_calls(seed: int, n: int) -> list[ProposedAction]:
    out: list[ProposedAction] = []
    while len(out) < n:
        out += [a for a in legitimate_run(seed, 200) if a.kind is ActionKind.TOOL_CALL]
        seed += 1000
    return out[:n]


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    return {"p50_ms": pick(0.50), "p99_ms": pick(0.99), "mean_ms": statistics.fmean(ordered) / 1e6}


def measure(
    guards: Guards, make_state: Callable[[], GuardState], history: int, steps: int
) -> dict[str, float]:
    state = make_state()
    for seq, action in enumerate(_tool_calls(1, history), 1):
        state.record(action, seq=seq)
    proposals = _tool_calls(7, steps)
    samples: list[int] = []
    gc.collect()
    for action in proposals:
        started = time.thread_time_ns()
        verdict = guards.check(action, state)
        if verdict.allowed:
            state.record(action, seq=state.last_seq + 1)
        else:
            state.acknowledge(seq=state.last_seq + 1)
        samples.append(time.thread_time_ns() - started)
    return _percentiles(samples)


SMALL = json.dumps({"ok": True, "echo": {"account": "1234", "amount": 250}})
LARGE = json.dumps(
    {"results": [{"id": i, "title": f"Invoice {i}", "note": "paid in full"} for i in range(40)]}
)[:2048]


def measure_screen(steps: int, body: str) -> dict[str, float]:
    source = Provenance(Source.TOOL_OUTPUT, "http_get")
    samples = []
    for _ in range(steps):
        started = time.thread_time_ns()
        screen(body, source)
        samples.append(time.thread_time_ns() - started)
    return _percentiles(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--semantic", action="store_true")
    args = parser.parse_args()
    budget = Budget(turns=100_000, tokens=10**9, cost=1e6, tool_calls={"*": 100_000})
    all_guards = Guards.default(budget=budget)
    rows = [
        (
            "exact counter (peers' loop check)",
            50,
            measure(Guards([ExactCounter()]), lambda: GuardState(NoEmbedder()), 50, args.steps),
        ),
        ("all guards", 10, measure(all_guards, GuardState, 10, args.steps)),
        ("all guards", 500, measure(all_guards, GuardState, 500, args.steps)),
        ("all guards", 2000, measure(all_guards, GuardState, 2000, args.steps)),
        ("screen small tool output", 0, measure_screen(args.steps, SMALL)),
        ("screen 2 KB tool output", 0, measure_screen(args.steps, LARGE)),
    ]
    if args.semantic:
        from autonomic.adapters.embedder.semantic import SemanticEmbedder

        embedder = SemanticEmbedder()
        rows.append(
            (
                "all guards, semantic embedder",
                50,
                measure(all_guards, lambda: GuardState(embedder), 50, min(args.steps, 300)),
            )
        )
    base = rows[0][2]["p50_ms"]
    print(
        "| what | history (steps) | P50 CPU (ms) | P99 CPU (ms) | mean CPU (ms) | P50 ratio to exact counter |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, history, r in rows:
        print(
            f"| {name} | {history or ''} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
            f"{r['mean_ms']:.3f} | x{r['p50_ms'] / base:.1f} |"
        )


if __name__ == "__main__":
    main()
