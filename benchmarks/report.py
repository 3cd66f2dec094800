"""Turn the JSON Lines of every system into the Markdown table of benchmarks/README.md.

Ratios are against autonomic on the same store and mode, measured in the same invocation:
``x3.0`` in a peer's column means the peer took three times as long per step.
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


def table(rows: list[dict[str, Any]]) -> str:
    ours = {(r["store"], r["mode"]): r for r in rows if r["system"] == "autonomic"}
    out = [
        "| system | store | mode | per step (ms) | runs/s | first step after crash (ms) | fsync per commit | per-step ratio to autonomic |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    order = {"autonomic": 0, "raw": 1, "dbos": 2, "langgraph": 3}
    for r in sorted(rows, key=lambda r: (r["store"], r["mode"], order.get(r["system"], 9))):
        base = ours.get((r["store"], r["mode"]))
        ratio = f"x{r['per_step_ms'] / base['per_step_ms']:.2f}" if base else ""
        out.append(
            f"| {r['system']} | {r['store']} | {r['mode']} | {r['per_step_ms']:.3f} | "
            f"{r['runs_per_s'] if r['runs_per_s'] is not None else ''} | "
            f"{r['resume_first_step_ms'] if r['resume_first_step_ms'] is not None else ''} | "
            f"{'yes' if r['fsync'] else 'no'} | {ratio} |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    print(table(load([Path(p) for p in sys.argv[1:]])))
