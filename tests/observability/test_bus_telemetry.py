"""The bus under telemetry, against the real servers: the two-agent bus demo's conversation is one
trace in the OTLP receiver (Phoenix) - the analyzer's run, the relay's publish span under it, the
worker's process span under that (the ``traceparent`` the CloudEvent carried), the auditor's run
under that - and a worker on the embedded bus reports its outbox backlog, its consumer group's
lag and its dead letters to a real Prometheus."""

import json
import os
import signal
import sqlite3
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

from autonomic.examples.bus.agent import AUDIT_REQUESTED
from conftest import (
    CLI,
    autonomic,
    eventually,
    free_port,
    get_json,
    promql,
    running_prometheus,
)

AUDIT_TOPIC = AUDIT_REQUESTED.name


def _spans(base: str, project: str) -> list[dict]:
    try:
        doc = get_json(f"{base}/v1/projects/{project}/spans?limit=1000")
    except OSError:
        return []
    return list(doc.get("data", []))


def test_a_conversation_over_the_bus_is_one_trace_publish_to_process_to_run(tmp_path, otlp_url):
    project = f"i16-bus-{uuid.uuid4().hex[:12]}"
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_url,
        "OTEL_SERVICE_NAME": "autonomic-test",
        "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={project}",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    demo = autonomic("demo", "--scenario", "bus", cwd=tmp_path, env=env)
    assert demo.returncode == 0, demo.stderr
    runs = json.loads(autonomic("runs", "--json", cwd=tmp_path).stdout)
    analyzers = [r for r in runs if r["agent"] == "code-analyzer"]
    auditors = [r for r in runs if r["agent"] == "security-auditor"]
    assert analyzers
    assert len(auditors) == len(analyzers)

    def complete() -> list[dict]:
        spans = _spans(otlp_url, project)
        roots = [s for s in spans if s["name"].startswith("invoke_agent ")]
        return spans if len(roots) == len(runs) else []

    spans = eventually(complete, "every run's root span reaching Phoenix")
    index = {s["context"]["span_id"]: s for s in spans}
    for auditor in auditors:
        source = auditor["metadata"]["event"]["source"]
        [analyzer] = [a for a in analyzers if source == f"autonomic://run/{a['id']}"]
        conversation = analyzer["id"]  # the analyzer's run started the conversation
        mine = [s for s in spans if s["attributes"].get("autonomic.correlation_id") == conversation]
        # one trace per conversation, with one root: the analyzer's run
        assert len({s["context"]["trace_id"] for s in mine}) == 1
        [top] = [s for s in mine if s["parent_id"] is None]
        assert top["name"] == "invoke_agent code-analyzer"
        assert top["attributes"]["autonomic.run.id"] == analyzer["id"]
        # the analyzer's audit request: published under its run, consumed under the publish
        [publish] = [s for s in mine if s["name"] == f"publish {AUDIT_TOPIC}"]
        assert publish["parent_id"] == top["context"]["span_id"]
        assert publish["attributes"]["messaging.system"] == "autonomic"
        [process] = [s for s in mine if s["name"] == f"process {AUDIT_TOPIC}"]
        assert process["parent_id"] == publish["context"]["span_id"]
        assert process["attributes"]["messaging.consumer.group.name"] == "autonomic-workers"
        assert (
            process["attributes"]["messaging.message.id"]
            == (publish["attributes"]["messaging.message.id"])
        )
        # the auditor's run started from it: its root under the process span, its turns (their
        # model calls' spans) below
        [started] = [s for s in mine if s["name"] == "invoke_agent security-auditor"]
        assert started["parent_id"] == process["context"]["span_id"]
        assert started["attributes"]["autonomic.run.id"] == auditor["id"]
        turns = [
            s
            for s in mine
            if s["name"].startswith("chat ")
            and s["attributes"].get("autonomic.run.id") == auditor["id"]
        ]
        assert turns
        assert all(index[t["parent_id"]] is started for t in turns)


def _value(base: str, query: str) -> float | None:
    try:
        result = promql(base, query)
    except OSError:  # Prometheus is still starting
        return None
    return float(result[0]["value"][1]) if result else None


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


def _garbage_on_the_bus(db: Path) -> None:
    """A record on the audit topic that is not a CloudEvent (written past the publisher's checks,
    as an old or foreign producer might): the consumer dead-letters it at once."""
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO bus_events (topic, key, event_id, type, tenant, only_group, dedupe, "
            "envelope, published_at) VALUES (?, 'k', 'garbage-1', ?, 'default', '', "
            "'garbage-1', 'not a cloudevent', ?)",
            (AUDIT_TOPIC, AUDIT_TOPIC, time.time()),
        )


def test_a_worker_on_the_bus_reports_its_outbox_lag_and_dead_letters_to_prometheus(
    tmp_path, prometheus_bin
):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AUTONOMIC_DB"))}
    assert autonomic("migrate", cwd=tmp_path).returncode == 0
    _garbage_on_the_bus(tmp_path / "autonomic.db")
    port = free_port()
    worker = subprocess.Popen(
        [*CLI, "worker", "--bus", "sql", "--metrics-port", str(port),
         "--agent", "autonomic.examples.bus.agent:agents"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with running_prometheus(prometheus_bin, tmp_path, port) as base:
            eventually(lambda: _ready(base), "Prometheus ready")
            eventually(
                lambda: (
                    _value(base, 'sum(autonomic_dead_letters_total{group="autonomic-workers"})')
                    == 1.0
                ),
                "the worker's dead letter counted by Prometheus",
            )
            eventually(
                lambda: _value(base, 'autonomic_consumer_lag{group="autonomic-workers"}') == 0.0,
                "the consumer group's lag (nothing left once the garbage is buried)",
            )
            assert _value(base, "autonomic_outbox_pending") == 0.0
            letters = json.loads(autonomic("dlq", "list", "--json", cwd=tmp_path).stdout)
            assert [letter["topic"] for letter in letters] == [AUDIT_TOPIC]
    finally:
        worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=60)
    assert "Traceback" not in err, err
