"""The crash trials still hold with tracing (exporting to the real OTLP receiver) and metrics on:
SIGKILL anywhere, resume, lose nothing, repeat nothing - and the spans and counters were made."""

import uuid

from autonomic.observability.metrics import Metrics
from autonomic.testing.crash import run_trials
from conftest import eventually, get_json

TRIALS = 24
SEED = 20261203


def test_crash_trials_hold_with_tracing_and_metrics_on(sqlite_url, tmp_path, otlp_url, monkeypatch):
    # made before PROMETHEUS_MULTIPROC_DIR is set: this process's metrics stay in memory, never
    # in a directory that goes away with the test
    steps_before = _steps()
    project = f"i16-crash-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_url)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"openinference.project.name={project}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(multiproc))

    report = run_trials(sqlite_url, TRIALS, SEED, workdir=tmp_path / "trials")

    broken = report.details(limit=20, ignore=("duplicated_effect",))
    assert not broken, "\n".join(broken)
    assert report.trials == TRIALS
    assert report.crashes == TRIALS
    assert report.completed + report.in_doubt == TRIALS
    assert report.lost_steps == 0
    assert report.duplicated_keys == 0
    assert report.repeated_model_calls == 0
    assert _steps() > steps_before  # the metrics hook counted the resumed halves' steps

    def traced() -> list:
        spans = get_json(f"{otlp_url}/v1/projects/{project}/spans?limit=1000").get("data", [])
        return spans if any(s["parent_id"] is None for s in spans) else []

    spans = eventually(traced, "the trials' spans reaching the receiver")
    assert any(s["name"].startswith("execute_tool ") for s in spans)


def _steps() -> float:
    total = 0.0
    for metric in Metrics.get().steps.collect():
        total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return total
