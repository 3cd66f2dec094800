"""The demo's trace, received by a real OTLP/HTTP server (Arize Phoenix, started by the test
command) and read back from its REST API: one trace, the run span at the root, each tool call
under its turn, and the resumed halves of a crashed run in the same trace."""

import json
import sqlite3
import uuid
from pathlib import Path

from autonomic.cli.exit_codes import ExitCode
from autonomic.observability.trace_context import TraceContext
from conftest import autonomic, eventually, get_json


def _spans(base: str, project: str) -> list[dict]:
    try:
        doc = get_json(f"{base}/v1/projects/{project}/spans?limit=1000")
    except OSError:
        return []
    return list(doc.get("data", []))


def _recorded_trace(db: Path, run_id: str) -> TraceContext:
    with sqlite3.connect(db) as conn:
        (payload,) = conn.execute(
            "SELECT payload FROM journal WHERE run_id = ? AND seq = 1", (run_id,)
        ).fetchone()
    ctx = TraceContext.parse(json.loads(payload).get("trace"))
    assert ctx is not None
    return ctx


def _only_run(cwd: Path) -> str:
    [run] = json.loads(autonomic("runs", "--json", cwd=cwd).stdout)
    return str(run["id"])


def test_a_crashed_demo_resumed_twice_is_one_trace_under_its_run_span(tmp_path, otlp_url):
    project = f"i16-{uuid.uuid4().hex[:12]}"
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_url,
        "OTEL_SERVICE_NAME": "autonomic-test",
        "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={project}",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    killed = autonomic("demo", "--crash-after-step", "3", cwd=tmp_path, env=env)
    assert killed.returncode == -9, killed.stderr
    run_id = _only_run(tmp_path)
    resumed = autonomic("resume", run_id, cwd=tmp_path, env=env)  # stops at the approval
    assert resumed.returncode == ExitCode.WAITING, resumed.stderr
    [waiting] = json.loads(autonomic("approvals", "--json", cwd=tmp_path).stdout)
    assert autonomic("approve", waiting["id"], "--as", "controller", cwd=tmp_path).returncode == 0
    done = autonomic("resume", run_id, cwd=tmp_path, env=env)
    assert done.returncode == ExitCode.OK, done.stderr
    recorded = _recorded_trace(tmp_path / "autonomic.db", run_id)

    def complete() -> list[dict]:
        spans = _spans(otlp_url, project)
        return spans if any(s["parent_id"] is None for s in spans) else []

    spans = eventually(complete, "the run's root span reaching Phoenix")
    index = {s["context"]["span_id"]: s for s in spans}
    # one trace: the one the journal names
    assert {s["context"]["trace_id"] for s in spans} == {f"{recorded.trace_id:032x}"}
    [root] = [s for s in spans if s["parent_id"] is None]
    assert root["name"] == "invoke_agent reconciliation"
    assert root["context"]["span_id"] == f"{recorded.span_id:016x}"
    assert root["attributes"]["autonomic.run.status"] == "COMPLETED"
    # every drive (the resumed halves; the killed one's if it was exported before SIGKILL)
    # hangs from the root, and the last two processes' drives are there
    drives = [s for s in spans if s["name"] == "autonomic.drive"]
    assert len(drives) >= 2
    assert all(d["parent_id"] == root["context"]["span_id"] for d in drives)
    assert any(d["attributes"].get("autonomic.resumed") for d in drives)
    # each tool call under its turn, each turn under the root (a killed process never exports
    # its drive span, but the turns it finished are there). A turn is its model call's span
    # (``chat MODEL``, with the turn's number); a turn resumed by another process than the one
    # whose model call began it is a ``turn N`` span of the resuming process.
    tools = [s for s in spans if s["name"].startswith("execute_tool ")]
    assert {t["name"] for t in tools} >= {
        "execute_tool post_adjustment",
        "execute_tool file_report",
    }
    # The killed process may die before the batch processor exported the model call's span of
    # the turn it died in, while the tool calls it finished in that turn were: at most one
    # turn's span is missing, the one turn those calls share.
    orphans = [t for t in tools if t["parent_id"] not in index]
    assert len({t["parent_id"] for t in orphans}) <= 1, orphans
    assert len({t["attributes"]["autonomic.turn"] for t in orphans}) <= 1, orphans
    for t in tools:
        if t in orphans:
            continue
        turn = index[t["parent_id"]]
        number = t["attributes"]["autonomic.turn"]
        assert turn["name"] in (f"turn {number}", "chat function:reconciliation"), turn
        assert turn["attributes"]["autonomic.turn"] == number
        assert turn["parent_id"] == root["context"]["span_id"]
    # the wait for the controller, and the model calls with the GenAI attributes
    [wait] = [s for s in spans if s["name"] == "approval wait"]
    assert wait["parent_id"] == root["context"]["span_id"]
    chats = [s for s in spans if s["name"].startswith("chat ")]
    assert chats
    for chat in chats:
        attrs = chat["attributes"]
        assert attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.request.model"] == "function:reconciliation"
        assert attrs["gen_ai.usage.input_tokens"] > 0
    # the sandbox execution under its python_exec call (when the host has a sandbox)
    for box in (s for s in spans if s["name"].startswith("sandbox.execute ")):
        assert box["parent_id"] in index, box
        assert index[box["parent_id"]]["name"] == "execute_tool python_exec"
    for span in spans:
        assert span["attributes"].get("autonomic.correlation_id") == run_id, span
