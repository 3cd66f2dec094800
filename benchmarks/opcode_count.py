"""Python opcodes a step, by function: what a hook or a change adds, counted, not timed.

A step's CPU on a shared machine carries the neighbours' noise; an instruction count
(``tracing_instructions.py`` under callgrind) does not, but it cannot say which Python function
the instructions belong to. This counts the Python opcodes each function executes
(``sys.settrace`` with ``f_trace_opcodes``) over the workload of ``autonomic_bench.py`` (a ReAct
run of 10 tool steps, fake model, trivial tool; SQLite without fsync) for each configuration,
and prints each one's total a step and the functions that differ most from the first
configuration's. Deterministic up to the ids a run draws; C work inside an opcode (SQLite,
hashing, JSON) is not counted, so compare opcodes with opcodes.

Configurations: ``off`` (no hook), ``tracing`` (the tracing hook, spans dropped by the exporter:
what the step's thread does), ``metrics`` (the Prometheus hook), and the empty hooks ``empty``
(every point overridden, each doing nothing) - what the hook protocol itself costs.

Usage: .venv/bin/python benchmarks/opcode_count.py [off tracing ...] [--runs 30] [--top 15]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from autonomic_bench import STEPS, engine_for
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from autonomic import build_store
from autonomic.engine.metering import MetricsHook
from autonomic.engine.step import Hook
from autonomic.engine.tracing import TracingHook
from autonomic.observability.metrics import Metrics
from autonomic.observability.tracing import Tracing

Key = tuple[str, int, str]


class _Drop(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _Empty(Hook):
    """Every hook point overridden, each doing nothing: the protocol's own cost."""

    def before_run_started(self, started: Any) -> Any:
        return started

    async def around_run(self, step: Any, drive: Callable[[], Awaitable[None]]) -> None:
        await drive()

    async def after_model_call(self, step: Any, turn: Any) -> None:
        return None

    def after_model_turn(self, step: Any, turn: Any) -> None:
        return None

    async def around_tool_effect(self, step: Any, tool: Any, call: Any, effect: Any) -> Any:
        return await effect()

    def before_tool_effect(self, step: Any, tool: Any, call: Any, intent: Any) -> Any:
        return None

    def after_tool_effect(self, began: Any, result: Any, error: Any) -> None:
        return None

    def after_step(self, step: Any, entry: Any) -> None:
        return None

    def on_commit(self, session: Any, entries: Any) -> None:
        return None

    def on_transition(self, session: Any, transition: Any, at: float) -> None:
        return None


def _hooks(config: str) -> list[Hook]:
    if config == "tracing":
        return [TracingHook(Tracing.build(_Drop()))]
    if config == "metrics":
        return [MetricsHook(Metrics.get())]
    if config == "empty":
        return [_Empty()]
    return []


CONFIGS = ("off", "tracing", "metrics", "empty")


def count(config: str, runs: int) -> collections.Counter[Key]:
    """Opcodes by function over ``runs`` runs of ``config`` (after three untraced runs)."""
    counts: collections.Counter[Key] = collections.Counter()

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        if event == "opcode":
            code = frame.f_code
            counts[(Path(code.co_filename).name, code.co_firstlineno, code.co_name)] += 1
        return tracer

    async def drive(url: str) -> None:
        store = build_store(url)
        await store.migrate()
        engine = engine_for(store, hooks=_hooks(config))
        for _ in range(3):
            await engine.run("bench", "count")
        sys.settrace(tracer)
        try:
            for _ in range(runs):
                await engine.run("bench", "count")
        finally:
            sys.settrace(None)
        await store.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(drive(f"sqlite:///{tmp}/bench.db?synchronous=normal"))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("configs", nargs="*", default=["off", "tracing"], choices=CONFIGS)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    steps = args.runs * STEPS
    counted = {config: count(config, args.runs) for config in args.configs}
    base_name = args.configs[0]
    base = counted[base_name]
    print(f"{base_name}: {sum(base.values()) / steps:,.0f} opcodes a step")
    for config in args.configs[1:]:
        current = counted[config]
        print(
            f"{config}: {sum(current.values()) / steps:,.0f} opcodes a step "
            f"({(sum(current.values()) - sum(base.values())) / steps:+,.0f} over {base_name})"
        )
        diff = collections.Counter(
            {key: current.get(key, 0) - base.get(key, 0) for key in set(base) | set(current)}
        )
        for (name, line, function), extra in diff.most_common(args.top):
            if extra > 0:
                print(f"  {extra / steps:8.1f}  {function} ({name}:{line})")


if __name__ == "__main__":
    main()
