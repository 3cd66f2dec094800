"""A real Prometheus scrapes a worker's /metrics; PromQL over its HTTP API returns what the runs
did, every panel of the shipped dashboard parses and returns data, and the shipped alerting
rules load. The demo runs in another process sharing PROMETHEUS_MULTIPROC_DIR with the worker:
the one scrape target reports both."""

import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from autonomic.examples.reconciliation.bank import create_bank
from conftest import (
    CLI,
    autonomic,
    eventually,
    free_port,
    get_json,
    promql,
    running_prometheus,
)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "autonomic.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
            return r.read().decode()
    except OSError:
        return ""


def _value(base: str, query: str) -> float | None:
    result = promql(base, query)
    return float(result[0]["value"][1]) if result else None


@pytest.fixture
def fleet(tmp_path, prometheus_bin):
    """A worker serving /metrics (multi-process mode) and a Prometheus scraping it every second."""
    multiproc = tmp_path / "prom-multiproc"
    multiproc.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AUTONOMIC_DB"))}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
    port = free_port()
    worker = subprocess.Popen(
        [*CLI, "worker", "--metrics-port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with running_prometheus(prometheus_bin, tmp_path, port, rule_files=(ALERTS,)) as base:
            eventually(lambda: _scrape(port), "the worker serving /metrics")
            eventually(lambda: _value(base, 'up{job="autonomic"}') == 1.0, "Prometheus scraping it")
            yield tmp_path, env, base, port
    finally:
        worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=60)
    assert "Traceback" not in err, err


def test_prometheus_scrapes_a_worker_and_promql_returns_what_the_runs_did(fleet):
    cwd, env, base, port = fleet
    script = cwd / "script.json"
    script.write_text(json.dumps({"turns": [{"content": "nothing to reconcile"}]}))
    bank = json.dumps({"bank": str(create_bank(cwd / "bank.db"))})
    for _ in range(2):  # driven by the worker: each ends SUSPENDED (an answer before the end)
        queued = autonomic(
            "run", "reconciliation", "{}", "--model", f"scripted:{script}", "--detach",
            "--metadata", bank, cwd=cwd, env=env,
        )  # fmt: skip
        assert queued.returncode == 0, queued.stderr
    demo = autonomic("demo", cwd=cwd, env=env)  # another process, the same multiproc directory
    assert demo.returncode == 0, demo.stderr

    def counted() -> bool:
        return (
            _value(base, 'sum(autonomic_runs_total{status="COMPLETED"})') == 1.0
            and _value(base, 'sum(autonomic_runs_total{status="SUSPENDED"})') == 2.0
        )

    eventually(counted, "the worker's and the demo's runs counted by Prometheus")
    assert _value(base, 'sum(autonomic_tool_calls_total{tool="post_adjustment"})') == 3.0
    assert _value(base, 'sum(autonomic_steps_total{kind="model.response"})') == 9.0 + 2.0
    assert _value(base, 'sum(autonomic_tokens_total{provider="function"})') > 0
    assert _value(base, 'sum(autonomic_phase_seconds_count{phase="inference"})') == 11.0
    assert _value(base, 'sum(autonomic_phase_seconds_count{phase="state_read"})') >= 3.0
    # the worker's idle look at the store: nothing pending, the two suspended runs
    eventually(
        lambda: _value(base, 'autonomic_runs_current{status="SUSPENDED"}') == 2.0,
        "the runs-in-status gauge",
    )
    assert _value(base, "autonomic_approvals_pending") == 0.0
    metrics = _scrape(port)
    assert 'autonomic_phase_seconds_bucket{le="0.005",phase="tool"}' in metrics

    # every panel of the dashboard parses and returns data
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$__range", "10m")
            eventually(lambda expr=expr: promql(base, expr), f"panel {panel['title']!r}: {expr}")

    # the alerting rules loaded, all healthy
    groups = get_json(f"{base}/api/v1/rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == 8
    assert {r["health"] for r in rules} <= {"ok", "unknown"}


def test_a_bad_metrics_port_is_one_clear_line(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = autonomic("worker", "--metrics-port", str(port), "--until-idle", cwd=tmp_path)
    assert result.returncode in (1, 2)
    assert result.stderr.startswith("error: cannot serve metrics on 127.0.0.1:")
    assert "Traceback" not in result.stderr
    assert "--metrics-port" in result.stderr
    elsewhere = autonomic(
        "worker", "--metrics-port", "0", "--metrics-host", "192.0.2.1", "--until-idle",
        cwd=tmp_path,
    )  # fmt: skip
    assert elsewhere.returncode == 2, elsewhere.stderr
    assert "--metrics-host an address of this machine" in elsewhere.stderr


@pytest.mark.parametrize("command", [("demo",), ("worker", "--until-idle")])
def test_a_multiprocess_dir_that_cannot_be_written_is_one_clear_line(tmp_path, command):
    """It was a traceback of prometheus_client's (FileNotFoundError): now the variable is named,
    before any run is made."""
    missing = tmp_path / "no-such-dir"
    result = autonomic(*command, cwd=tmp_path, env={"PROMETHEUS_MULTIPROC_DIR": str(missing)})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        f"error: PROMETHEUS_MULTIPROC_DIR={missing} is not a directory this process can write"
    )
    listed = autonomic("runs", "--json", cwd=tmp_path)
    assert json.loads(listed.stdout or "[]") == []
