"""Instructions a step costs with tracing on and off, counted by valgrind (immune to a busy host).

On a shared machine, CPU time carries the neighbours' noise (caches, frequency, hyperthreads):
tens of microseconds a step either way, as much as tracing costs. An instruction count does not
move with the load. This script is the workload; run it under ``valgrind --tool=callgrind``
twice per configuration, with two run counts, and subtract: the difference is the instructions
of the extra runs alone (start-up and imports cancel)::

    for mode in off on; do for n in 2 12; do
      PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python benchmarks/tracing_instructions.py $mode $n 2>&1 | grep Collected
    done; done
    # per step = (Collected(12) - Collected(2)) / (10 runs * 10 steps)

or let the script do it, per thread (the step's thread, and the others: the batch processor's
export thread), with runs of 2 and of ``--runs``::

    .venv/bin/python benchmarks/tracing_instructions.py --callgrind off on --runs 302

(about a minute and a half of valgrind per hundred runs; a figure moves by about 1 k a step
from one invocation to the next, more with fewer runs).

The workload of ``autonomic_bench.py`` (10 tool steps a run, fake model, trivial tool) on SQLite
with ``synchronous=normal`` (no fsync: nothing but this process's own work). ``on``: the tracing
hook with the batch processor and an exporter that encodes every span as the OTLP exporter does
(``otlp.encode_spans``) but posts nothing (the post is the same bytes either way and its
instructions are the HTTP client's); the provider is flushed at the end, so every span made is
encoded inside the count. Both modes build the provider, so both import the same modules.
``unanchored``: tracing off and the audit log's anchors not written, so ``off`` minus
``unanchored`` is anchoring's instructions a step. ``metrics``: tracing off and the Prometheus
hook on (``metrics`` minus ``off``: what metrics cost a step). ``posted``: tracing on with the
exporter as shipped (``FastOTLPSpanExporter``), posting to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the
test command's Phoenix: ``http://127.0.0.1:16006``); ``posted`` minus ``on`` is the HTTP
client's instructions (the kernel's part of a post is not counted).

``--default`` (anywhere on the line): the step as shipped - the runaway guards on and the
``@tool`` default, not idempotent, so an intent commit before each call - instead of the lean
step (guards off, an idempotent tool), where tracing's share is largest::

    .venv/bin/python benchmarks/tracing_instructions.py --callgrind off on --runs 302 --default
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import autonomic_bench
from autonomic_bench import STEPS, engine_for
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from autonomic import build_store
from autonomic.engine.metering import MetricsHook
from autonomic.engine.step import Hook
from autonomic.engine.tracing import TracingHook
from autonomic.observability import otlp
from autonomic.observability.metrics import Metrics
from autonomic.observability.tracing import Tracing

MODES = ("on", "off", "unanchored", "posted", "metrics")
"""Tracing on, tracing off, and tracing off with the audit log's anchoring off too (``off`` minus
``unanchored``: what anchoring costs a step, ``SqlStore._anchoring`` as ``audit_bench.py``)."""


class EncodeOnly(SpanExporter):
    """Encodes each batch as ``FastOTLPSpanExporter`` does; sends nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        otlp.encode_spans(spans)
        return SpanExportResult.SUCCESS


async def drive(url: str, runs: int, mode: str, tracing: Tracing) -> None:
    store = build_store(url)
    store._anchoring = mode != "unanchored"  # type: ignore[attr-defined]
    await store.migrate()
    hooks: list[Hook] = []
    if mode in ("on", "posted"):
        hooks = [TracingHook(tracing)]
    elif mode == "metrics":
        hooks = [MetricsHook(Metrics.get())]
    engine = engine_for(store, hooks=hooks)
    for _ in range(runs):
        final = await engine.run("bench", "count")
        assert final.status.value == "COMPLETED", final.status_reason
    await store.close()


def callgrind(modes: list[str], runs: int, *, default: bool = False) -> None:
    """Run the workload of each mode under callgrind, one output file per thread, for 2 runs and
    for ``runs``; print each mode's instructions a step on the step's thread and on the others
    (the difference of the two, over the extra runs' steps: start-up and imports cancel)."""
    if shutil.which("valgrind") is None:
        sys.exit("--callgrind: valgrind is not installed (apt-get install valgrind)")
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    with tempfile.TemporaryDirectory() as out:
        for mode in modes:
            by_thread: dict[int, dict[str, int]] = {}
            for n in (2, runs):
                prefix = f"{out}/{mode}.{n}"
                command = [
                    "valgrind",
                    "--tool=callgrind",
                    "--separate-threads=yes",
                    f"--callgrind-out-file={prefix}",
                    sys.executable,
                    __file__,
                    mode,
                    str(n),
                    *(["--default"] if default else []),
                ]
                done = subprocess.run(command, env=env, capture_output=True, text=True)
                if done.returncode != 0:  # the workload's own message, not valgrind's lines
                    said = [line for line in done.stderr.splitlines() if not line.startswith("==")]
                    sys.exit(f"--callgrind: the {mode} workload failed: {(said or ['?'])[-1]}")
                by_thread[n] = {
                    path.name.rsplit("-", 1)[1]: _summary(path)
                    for path in Path(out).glob(f"{mode}.{n}-*")
                }
            steps = (runs - 2) * STEPS
            extra = {
                thread: (by_thread[runs].get(thread, 0) - by_thread[2].get(thread, 0)) / steps
                for thread in by_thread[2].keys() | by_thread[runs].keys()
            }
            step_thread = extra.pop("01", 0.0)
            print(
                json.dumps(
                    {
                        "mode": mode,
                        "step": "default" if default else "lean",
                        "runs": runs,
                        "instructions_a_step": {
                            "step_thread": round(step_thread),
                            "other_threads": round(sum(extra.values())),
                        },
                    }
                ),
                flush=True,
            )


def _summary(path: Path) -> int:
    """The instruction total of one thread's callgrind file."""
    for line in path.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    default = "--default" in sys.argv
    if default:
        sys.argv.remove("--default")
        autonomic_bench.GUARDS = autonomic_bench.WRITE_AHEAD = True
    if len(sys.argv) > 1 and sys.argv[1] == "--callgrind":
        args = sys.argv[2:]
        runs = 102
        if "--runs" in args:
            at = args.index("--runs")
            given = args[at + 1] if at + 1 < len(args) else ""
            runs = int(given) if given.isdigit() else 0
            del args[at : at + 2]
        if not args or not set(args) <= set(MODES) or runs < 3:
            sys.exit(
                f"usage: tracing_instructions.py --callgrind MODE... [--runs N>2] [--default]; {MODES}"
            )
        callgrind(args, runs, default=default)
        return
    if len(sys.argv) != 3 or sys.argv[1] not in MODES or not sys.argv[2].isdigit():
        sys.exit("usage: tracing_instructions.py on|off|unanchored|posted|metrics RUNS [--default]")
    if sys.argv[1] == "posted" and not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        sys.exit(
            "posted: set OTEL_EXPORTER_OTLP_ENDPOINT (the test Phoenix: http://127.0.0.1:16006)"
        )
    tracing = Tracing.build(None if sys.argv[1] == "posted" else EncodeOnly())
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db?synchronous=normal"
        asyncio.run(drive(url, int(sys.argv[2]), sys.argv[1], tracing))
    assert tracing.flush()


if __name__ == "__main__":
    main()
