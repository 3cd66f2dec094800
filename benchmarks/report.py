"""Turn the JSON Lines of every system into the Markdown table of benchmarks/README.md.

Ratios are against autonomic on the same store and mode, measured in the same invocation:
``x3.0`` in a peer's column means the peer took three times as long per step. autonomic appears
three times, the default first: ``autonomic (default)`` as shipped (runaway guards, budgets,
injection screening of every tool result, and the tool as ``@tool`` declares it by default: not
idempotent, so its intent is made durable before each call), then the guards with an idempotent
tool, then ``autonomic (lean: guards off)``, the same work as the peers do. Each row has a ratio
to the default and to lean.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def load(paths: list[Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in paths:
        for line in path.read_text().splitlines():
            if line.startswith("{"):
                rows.append(json.loads(line))
    return rows


LABELS = {
    "autonomic default": "autonomic (default: guards on, @tool default = write-ahead)",
    "autonomic+guards": "autonomic (guards on, idempotent tool)",
    "autonomic": "autonomic (lean: guards off, idempotent tool)",
}
ORDER = {
    "autonomic default": 0,
    "autonomic+guards": 1,
    "autonomic": 2,
    "raw": 3,
    "dbos": 4,
    "langgraph": 5,
}


def table(rows: list[dict[str, Any]]) -> str:
    lean = {(r["store"], r["mode"]): r for r in rows if r["system"] == "autonomic"}
    default = {(r["store"], r["mode"]): r for r in rows if r["system"] == "autonomic default"}
    if not default:  # results from before the write-ahead default was measured
        default = {(r["store"], r["mode"]): r for r in rows if r["system"] == "autonomic+guards"}
    out = [
        "| system | store | mode | per step (ms) | runs/s | first step after crash (ms) | "
        "fsync per commit | per-step ratio to autonomic default | per-step ratio to autonomic lean |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]

    def ratio(r: dict[str, Any], base: dict[str, Any] | None) -> str:
        return f"x{r['per_step_ms'] / base['per_step_ms']:.2f}" if base else ""

    for r in sorted(rows, key=lambda r: (r["store"], r["mode"], ORDER.get(r["system"], 9))):
        key = (r["store"], r["mode"])
        out.append(
            f"| {LABELS.get(r['system'], r['system'])} | {r['store']} | {r['mode']} | "
            f"{r['per_step_ms']:.3f} | "
            f"{r['runs_per_s'] if r['runs_per_s'] is not None else ''} | "
            f"{r['resume_first_step_ms'] if r['resume_first_step_ms'] is not None else ''} | "
            f"{'yes' if r['fsync'] else 'no'} | {ratio(r, default.get(key))} | "
            f"{ratio(r, lean.get(key))} |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    print(table(load([Path(p) for p in sys.argv[1:]])))
