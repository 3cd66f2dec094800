"""A run's place in a trace: the traceparent round trip, refusals, the derived context, and no
SDK import on the hot path when tracing is off."""

import subprocess
import sys

import pytest

from autonomic.observability.trace_context import TraceContext
from autonomic.observability.tracing import enabled_by_environment


def test_traceparent_round_trip():
    ctx = TraceContext.new()
    assert TraceContext.parse(ctx.traceparent) == ctx
    assert TraceContext.new(trace_id=ctx.trace_id).trace_id == ctx.trace_id


@pytest.mark.parametrize(
    "text",
    [None, "", "garbage", "00-" + "0" * 32 + "-" + "1" * 16 + "-01",
     "00-" + "1" * 32 + "-" + "0" * 16 + "-01", "00-" + "g" * 32 + "-" + "1" * 16 + "-01"],
)  # fmt: skip
def test_malformed_traceparents_are_refused(text):
    assert TraceContext.parse(text) is None


def test_the_derived_context_is_stable_and_distinct():
    assert TraceContext.of_run("run_a") == TraceContext.of_run("run_a")
    assert TraceContext.of_run("run_a").trace_id != TraceContext.of_run("run_b").trace_id


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_the_standard_variables_turn_tracing_on_and_off(env, on):
    assert enabled_by_environment(env) is on


def test_with_tracing_and_metrics_off_no_sdk_is_imported(tmp_path):
    """A run with the environment's telemetry (none set) never imports the OpenTelemetry SDK's
    tracer, an exporter or prometheus_client: the hot path pays nothing. (Redis's client imports
    the OpenTelemetry API itself when it is installed: that part is not ours to avoid.)"""
    script = """
import asyncio, sys
from autonomic.bootstrap import build_telemetry
from autonomic.cli.common import build_engine, open_store
async def go():
    store = await open_store(sys.argv[1])
    engine = build_engine(store, None)
    assert build_telemetry() == []
    await store.close()
asyncio.run(go())
loaded = sorted(m for m in sys.modules if m.startswith((
    "opentelemetry.sdk.trace", "opentelemetry.exporter", "prometheus_client",
    "autonomic.engine.tracing", "autonomic.engine.metering",
)))
print(loaded)
"""
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", script, f"sqlite:///{tmp_path}/a.db"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_tracing_configured_without_the_extra_is_one_clear_line(tmp_path):
    code = f"""
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.startswith("opentelemetry.sdk"):
            raise ModuleNotFoundError(name + " is blocked", name="opentelemetry.sdk")
sys.meta_path.insert(0, Refuse())
from autonomic.cli.app import main
sys.argv = ["autonomic", "--db", "sqlite:///{tmp_path}/a.db", "demo", "--workdir", "{tmp_path}"]
main()
"""
    env = {"PATH": "/usr/bin:/bin", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, cwd=tmp_path)  # fmt: skip
    assert done.returncode in (1, 2), done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: tracing is configured (OTEL_EXPORTER_OTLP_ENDPOINT)")
    assert "autonomic[observability]" in done.stderr


def test_a_forked_worker_makes_other_trace_ids_than_its_parent():
    import json
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        ids = [TraceContext.new() for _ in range(8)]
        os.write(write, json.dumps([[t.trace_id, t.span_id] for t in ids]).encode())
        os._exit(0)
    os.close(write)
    ours = [TraceContext.new() for _ in range(8)]
    with os.fdopen(read) as pipe:
        theirs = {(trace, span) for trace, span in json.load(pipe)}
    os.waitpid(pid, 0)
    assert len(theirs) == 8
    assert not {(t.trace_id, t.span_id) for t in ours} & theirs
    assert all(trace and span for trace, span in theirs)
