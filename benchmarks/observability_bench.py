"""Per-step overhead of tracing and of metrics, side by side with both off, in one run.

The workload of ``autonomic_bench.py`` (a ReAct run of 10 tool steps, fake model, trivial tool,
every step durable), run sequentially under six configurations interleaved round by round (so
machine noise hits them alike), on each store of ``--stores``:

* ``sqlite``: a SQLite file as shipped (``synchronous=FULL``: an fsync per commit) - the
  durable step the issue's 5 % target is stated against;
* ``sqlite-normal``: the same with ``?synchronous=normal`` (no fsync per commit in WAL mode):
  the smallest step there is, where tracing's share is largest;
* ``postgres``: PostgreSQL (``--pg-url``, a fresh schema), a commit a round trip and an fsync;

* ``off``: no hook;
* ``tracing``: the tracing hook, exporting over OTLP/HTTP with the batch processor to a real
  receiver (Phoenix, as the tests start it);
* ``tracing-sampled``: the same with ``OTEL_TRACES_SAMPLER=parentbased_traceidratio`` and
  ``OTEL_TRACES_SAMPLER_ARG=0.1`` (one run's trace in ten kept);
* ``tracing-sdk``: the hook as it was before recorded spans and the byte encoder - every span
  the SDK's, the SDK's OTLP exporter (the *before* of the A/B);
* ``metrics``: the Prometheus hook; ``both``: tracing and metrics.

Reports the median per-step time and each one's overhead over ``off`` (target: at most 5 %
each; a tracing configuration's CPU includes flushing its spans after its runs, so that no span
is encoded or posted on another configuration's account; ``added_cpu_pct_paired``: the added CPU
over the plain step's wall round by round, its median over the rounds - the figure least moved by
a host whose speed drifts), then the time of a scrape of ``/metrics`` served by
``autonomic.observability.metrics.serve`` after the runs (target: at most 10 ms, median of 200).

The OTLP receiver is a Phoenix of the benchmark's own (``own_receiver``: the one the test
command installs, ``scripts/lib/otel.sh``, started in a temporary working directory on a free
port of 127.0.0.1 and stopped at the end), so that neither a backlog of the shared test
receiver's nor this benchmark's tens of thousands of spans weigh on the other; ``--otlp URL``
points at another receiver instead.

``--default`` measures against the step as shipped (runaway guards on, the ``@tool`` default: an
intent commit before each call) instead of the lean one (guards off, an idempotent tool: the
smallest durable step, where tracing's share is largest).

Usage: .venv/bin/python benchmarks/observability_bench.py [--runs 60] [--rounds 5] [--default]
           [--otlp http://127.0.0.1:PORT] [--stores sqlite,sqlite-normal,postgres]
           [--pg-url postgresql://postgres@127.0.0.1:5432/test] [--configs off,tracing,...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import autonomic_bench
from autonomic_bench import STEPS, engine_for

from autonomic import build_store
from autonomic.engine.metering import MetricsHook
from autonomic.engine.step import Hook
from autonomic.engine.tracing import TracingHook
from autonomic.observability.metrics import Metrics, serve
from autonomic.observability.tracing import Tracing

CONFIGS = ("off", "tracing", "tracing-sdk", "tracing-sampled", "metrics", "both")
STORES = ("sqlite", "sqlite-normal", "postgres")


PHOENIX = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / (
    "autonomic/phoenix-20.26.1/bin/phoenix"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def own_receiver() -> Iterator[str]:
    """A Phoenix for this run only (its own working directory, a free port, telemetry off),
    yielding its base URL; stopped, and its directory removed, on the way out."""
    if not PHOENIX.exists():
        sys.exit(f"no Phoenix at {PHOENIX}: scripts/test installs it, or pass --otlp URL")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="obs-bench-phoenix-") as work:
        env = os.environ | {
            "PHOENIX_WORKING_DIR": work,
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(port),
            "PHOENIX_GRPC_PORT": str(_free_port()),
            "PHOENIX_TELEMETRY_ENABLED": "false",
        }
        with open(Path(work) / "phoenix.log", "wb") as log:
            server = subprocess.Popen(
                [str(PHOENIX), "serve"], cwd=work, env=env, stdout=log, stderr=log,
                start_new_session=True,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 180  # its first start compiles
            while not _answers(url):
                if server.poll() is not None or time.monotonic() > deadline:
                    log_text = (Path(work) / "phoenix.log").read_text(errors="replace")
                    sys.exit(f"Phoenix did not start at {url}:\n{log_text[-2000:]}")
                time.sleep(0.5)  # polling a server we started, bounded by the deadline
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def store_url(store: str, tmp: str, name: str, pg_url: str) -> str:
    """A fresh database of ``store`` for one configuration's round."""
    if store == "sqlite":
        return f"sqlite:///{tmp}/{name}.db"
    if store == "sqlite-normal":
        return f"sqlite:///{tmp}/{name}.db?synchronous=normal"
    import psycopg

    schema = f"obs_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{pg_url}{'&' if '?' in pg_url else '?'}options=-csearch_path%3D{schema}"


def drop_schemas(pg_url: str, urls: list[str]) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        for url in urls:
            schema = url.rsplit("%3D", 1)[1]
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def per_step_ms(
    url: str, hooks: list[Hook], runs: int, flush: Callable[[], object] | None = None
) -> tuple[float, float]:
    """Wall and CPU milliseconds per step (CPU: this process's, the exporter thread included -
    what the hooks cost, less sensitive than wall time to other processes on a busy host).

    ``flush``: the tracing provider's, called after the runs and inside the CPU measurement
    (outside the wall's, which would otherwise count the receiver's answer): every span these
    runs made is encoded and posted on their account, not during a later configuration's runs
    (the batch processor posts a batch when 512 spans are queued, the rest up to 5 s later)."""
    store = build_store(url)
    await store.migrate()
    engine = engine_for(store, hooks=hooks)
    await engine.run("bench", "count")  # warm-up
    if flush is not None:
        flush()  # the warm-up's spans, and any earlier configuration's, on no one's account
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(runs):
        final = await engine.run("bench", "count")
        assert final.status.value == "COMPLETED", final.status_reason
    elapsed = time.perf_counter() - start
    if flush is not None:
        flush()
    used = time.process_time() - cpu
    await store.close()
    return elapsed * 1000 / (runs * STEPS), used * 1000 / (runs * STEPS)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--otlp",
        default=None,
        help="an OTLP/HTTP receiver's base URL (default: a Phoenix of its own)",
    )
    parser.add_argument("--stores", default="sqlite", help="comma-separated: " + ",".join(STORES))
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument(
        "--default",
        action="store_true",
        help="the step as shipped: runaway guards on and the @tool default (not idempotent: "
        "an intent commit before each call) - default: the lean step (guards off, an "
        "idempotent tool), the smallest durable step, where tracing's share is largest",
    )
    args = parser.parse_args()
    autonomic_bench.GUARDS = autonomic_bench.WRITE_AHEAD = args.default
    stores = [s for s in args.stores.split(",") if s]
    configs = [c for c in args.configs.split(",") if c]
    if "off" not in configs or not set(configs) <= set(CONFIGS) or not set(stores) <= set(STORES):
        parser.error(f"--configs: 'off' and some of {CONFIGS}; --stores: some of {STORES}")

    with contextlib.ExitStack() as stack:
        otlp = args.otlp or stack.enter_context(own_receiver())
        print(json.dumps(measure(args, otlp, stores, configs), indent=2))


def measure(args: argparse.Namespace, otlp: str, stores: list[str], configs: list[str]) -> Any:
    """Run every configuration on every store, interleaved round by round; the report."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from autonomic.observability.otlp import FastOTLPSpanExporter

    load_at_start = [round(x, 2) for x in os.getloadavg()]
    endpoint = f"{otlp}/v1/traces"
    # a queue no round can fill: a span dropped is a span not encoded nor sent, which would
    # make tracing look cheaper than it is when the receiver falls behind on a loaded host
    os.environ.setdefault("OTEL_BSP_MAX_QUEUE_SIZE", "1000000")
    tracing = Tracing.build(FastOTLPSpanExporter(endpoint=endpoint))
    # the path before recorded spans and the byte encoder: the SDK's spans, the SDK's exporter
    tracing_sdk = Tracing.build(OTLPSpanExporter(endpoint=endpoint))
    tracing_sdk._sink = None
    # one run's trace in ten kept, as an operator would ask for it (the standard variables)
    os.environ |= {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    }
    tracing_sampled = Tracing.build(FastOTLPSpanExporter(endpoint=endpoint))
    del os.environ["OTEL_TRACES_SAMPLER"], os.environ["OTEL_TRACES_SAMPLER_ARG"]
    metrics = Metrics.get()
    hooks: dict[str, list[Hook]] = {
        "off": [],
        "tracing": [TracingHook(tracing)],
        "tracing-sdk": [TracingHook(tracing_sdk)],
        "tracing-sampled": [TracingHook(tracing_sampled)],
        "metrics": [MetricsHook(metrics)],
        "both": [TracingHook(tracing), MetricsHook(metrics)],
    }
    flushes: dict[str, Callable[[], object] | None] = {
        "tracing": tracing.flush,
        "tracing-sdk": tracing_sdk.flush,
        "tracing-sampled": tracing_sampled.flush,
        "both": tracing.flush,
    }
    samples = {st: {c: [] for c in configs} for st in stores}
    cpu = {st: {c: [] for c in configs} for st in stores}
    schemas: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(args.rounds):
            for store in stores:
                for config in configs:
                    url = store_url(store, tmp, f"{store}-{config}-{round_no}", args.pg_url)
                    if store == "postgres":
                        schemas.append(url)
                    wall, used = asyncio.run(
                        per_step_ms(url, hooks[config], args.runs, flushes.get(config))
                    )
                    samples[store][config].append(wall)
                    cpu[store][config].append(used)
    if schemas:
        drop_schemas(args.pg_url, schemas)
    assert tracing.flush(), "the OTLP receiver did not take the spans"
    assert tracing_sdk.flush(), "the OTLP receiver did not take the spans"

    server = serve(0)
    scrape_url = f"http://127.0.0.1:{server.server_port}/metrics"
    scrapes = []
    size = 0
    for _ in range(200):
        start = time.perf_counter()
        with urllib.request.urlopen(scrape_url, timeout=5) as response:
            size = len(response.read())
        scrapes.append((time.perf_counter() - start) * 1000)
    server.shutdown()
    tracing.shutdown()
    tracing_sdk.shutdown()
    tracing_sampled.shutdown()

    result: dict[str, Any] = {"stores": {}}
    for store in stores:
        walls = {c: statistics.median(v) for c, v in samples[store].items()}
        cpus = {c: statistics.median(v) for c, v in cpu[store].items()}
        result["stores"][store] = {
            "per_step_ms": {c: round(m, 4) for c, m in walls.items()},
            "overhead_pct": {c: round((m / walls["off"] - 1) * 100, 2) for c, m in walls.items()},
            "cpu_per_step_ms": {c: round(m, 4) for c, m in cpus.items()},
            "cpu_overhead_pct": {c: round((m / cpus["off"] - 1) * 100, 2) for c, m in cpus.items()},
            # tracing's added CPU against the durable step's wall time: what a step costs the
            # caller (the CPU a hook adds is paid on the loop's thread or the exporter's,
            # both under one GIL)
            "added_cpu_pct_of_off_wall": {
                c: round((cpus[c] - cpus["off"]) / walls["off"] * 100, 2) for c in configs
            },
            # the same, paired round by round (each round runs every configuration once, one
            # after the other): the median of the rounds' own shares, which a machine that
            # speeds up or slows down between rounds moves less than a ratio of medians
            "added_cpu_pct_paired": {
                c: round(
                    statistics.median(
                        (used - base) / wall * 100
                        for used, base, wall in zip(
                            cpu[store][c], cpu[store]["off"], samples[store]["off"], strict=True
                        )
                    ),
                    2,
                )
                for c in configs
            },
            "samples_ms": {c: [round(x, 3) for x in v] for c, v in samples[store].items()},
        }
    result |= {
        "scrape_ms_p50": round(statistics.median(scrapes), 3),
        "scrape_ms_p99": round(sorted(scrapes)[int(len(scrapes) * 0.99) - 1], 3),
        "scrape_bytes": size,
        "runs": args.runs,
        "rounds": args.rounds,
        "steps_per_run": STEPS,
        "step": "default (guards on, write-ahead tool)" if args.default else "lean",
        "load_average_start": load_at_start,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "otlp": otlp,
    }
    return result


if __name__ == "__main__":
    main()
