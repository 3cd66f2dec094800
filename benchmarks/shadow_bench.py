"""Shadow mode's cost on the live run's step latency (target: at most 5 %).

The workload of ``autonomic_bench.py`` (a ReAct run of 10 tool steps, fake model, trivial tool,
every step durable on a SQLite file), run under two configurations interleaved round by round
(so machine noise hits them alike): ``off``, and ``shadow`` - the live engine carries a
``ShadowHook`` and, between rounds (outside the timing, as a separate shadow process would), a
``Shadow`` mirrors every queued run to a candidate version on its own SQLite file. Reports the
median per-step wall and CPU time of the live runs and the overhead of ``shadow`` over ``off``.

Usage: .venv/bin/python benchmarks/shadow_bench.py [--runs 40] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from autonomic_bench import AGENT, MODEL, STEPS, engine_for

from autonomic import build_store
from autonomic.engine.agent import Agent
from autonomic.release.shadow import Shadow, ShadowHook

CANDIDATE = Agent(
    name=AGENT.name,
    instructions="v2",
    tools=AGENT.tools,
    max_turns=AGENT.max_turns,
    version="2",
)


async def round_ms(directory: Path, config: str, runs: int, index: int) -> tuple[float, float, int]:
    live = build_store(f"sqlite:///{directory}/live-{config}-{index}.db")
    await live.migrate()
    hook = ShadowHook(AGENT.name) if config == "shadow" else None
    engine = engine_for(live, hooks=[hook] if hook else [])
    await engine.run("bench", "count")  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(runs):
        final = await engine.run("bench", "count")
        assert final.status.value == "COMPLETED", final.status_reason
    elapsed, used = time.perf_counter() - start, time.process_time() - cpu
    mirrored = 0
    if hook is not None:
        shadow_store = build_store(f"sqlite:///{directory}/shadow-{index}.db")
        await shadow_store.migrate()
        shadow = Shadow(live, shadow_store, CANDIDATE, lambda spec: MODEL)
        mirrored = await shadow.drain(hook.queue)
        await shadow.aclose()
        await shadow_store.close()
    await live.close()
    return elapsed * 1000 / (runs * STEPS), used * 1000 / (runs * STEPS), mirrored


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    wall: dict[str, list[float]] = {"off": [], "shadow": []}
    cpu: dict[str, list[float]] = {"off": [], "shadow": []}
    mirrored = 0
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.rounds):
            for config in ("off", "shadow") if index % 2 == 0 else ("shadow", "off"):
                w, c, m = asyncio.run(round_ms(Path(tmp), config, args.runs, index))
                wall[config].append(w)
                cpu[config].append(c)
                mirrored += m
    off_w, on_w = statistics.median(wall["off"]), statistics.median(wall["shadow"])
    off_c, on_c = statistics.median(cpu["off"]), statistics.median(cpu["shadow"])
    print(
        json.dumps(
            {
                "bench": "shadow",
                "steps_per_run": STEPS,
                "runs_per_round": args.runs,
                "rounds": args.rounds,
                "mirrored": mirrored,
                "off_ms_per_step": round(off_w, 3),
                "shadow_ms_per_step": round(on_w, 3),
                "wall_overhead": round(on_w / off_w - 1, 4),
                "cpu_overhead": round(on_c / off_c - 1, 4),
                "target": 0.05,
            }
        )
    )


if __name__ == "__main__":
    main()
