"""A canary secret planted everywhere a run takes input - the task, the metadata, the tool
arguments the model wrote, the tool's output, the environment - is absent from every exported
span (read back from the OTLP receiver), every log line of the worker and every metric label;
with content opted in, spans carry the tool's arguments, but the secret in them masked."""

import json
import uuid

import pytest
from prometheus_client import CollectorRegistry, generate_latest, multiprocess

from autonomic.examples.reconciliation.bank import create_bank
from conftest import autonomic, eventually, get_json

CANARY = "sk-canary" + uuid.uuid4().hex[:16]


@pytest.mark.parametrize("content", [False, True], ids=["content-off", "content-on"])
def test_a_planted_secret_is_absent_from_spans_logs_and_metrics(tmp_path, otlp_url, content):
    project = f"i16-canary-{uuid.uuid4().hex[:12]}"
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"turns": [
        {"tool_calls": [{"name": "sql_query",
                         "arguments": {"query": f"SELECT '{CANARY}' AS api_key"}}]},
        {"content": "done"},
    ]}))  # fmt: skip
    meta = json.dumps({"bank": str(create_bank(tmp_path / "bank.db")), "api_key": CANARY})
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_url,
        "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={project}",
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "OPENAI_API_KEY": CANARY,
        "AUTONOMIC_TRACE_CONTENT": "1" if content else "0",
    }
    queued = autonomic(
        "run", "reconciliation", f"reconcile; the key is {CANARY}", "--model",
        f"scripted:{script}", "--detach", "--metadata", meta, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    worked = autonomic("worker", "--until-idle", cwd=tmp_path, env=env)
    assert worked.returncode == 0, worked.stderr

    def exported() -> list:
        try:
            doc = get_json(f"{otlp_url}/v1/projects/{project}/spans?limit=1000")
        except OSError:
            return []
        spans = doc.get("data", [])
        return spans if any(s["name"] == "execute_tool sql_query" for s in spans) else []

    spans = eventually(exported, "the run's spans reaching the receiver")
    text = json.dumps(spans)
    assert CANARY not in text
    [call] = [s for s in spans if s["name"] == "execute_tool sql_query"]
    if content:  # the arguments are there, the secret in them masked
        assert "SELECT" in call["attributes"]["gen_ai.tool.call.arguments"]
        assert "sk-***" in call["attributes"]["gen_ai.tool.call.arguments"]
    else:
        assert "gen_ai.tool.call.arguments" not in call["attributes"]

    assert CANARY not in worked.stdout + worked.stderr + queued.stdout + queued.stderr

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(multiproc))
    metrics = generate_latest(registry).decode()
    assert "autonomic_tool_calls_total" in metrics
    assert CANARY not in metrics
    for path in multiproc.iterdir():  # nor in the files the processes share
        assert CANARY.encode() not in path.read_bytes()
