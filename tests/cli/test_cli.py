"""The CLI as a user runs it: real processes, real files, exit codes and one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autonomic.cli.exit_codes import ExitCode
from autonomic.examples.reconciliation.bank import create_bank

CLI = [sys.executable, "-m", "autonomic.cli"]


def autonomic(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "AUTONOMIC_DB"} | (env or {})
    full_env["COLUMNS"] = "200"
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120
    )


def _one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode in (1, 2), result.stderr
    assert "Traceback" not in result.stderr
    assert expected in result.stderr
    assert result.stderr.startswith("error: ")


def _show(run_id: str, cwd: Path) -> dict:
    result = autonomic("show", run_id, "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _only_run(cwd: Path) -> str:
    runs = json.loads(autonomic("runs", "--json", cwd=cwd).stdout)
    assert len(runs) == 1
    return runs[0]["id"]


def test_demo_runs_end_to_end_on_the_embedded_default(tmp_path):
    result = autonomic("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "reconciled." in result.stdout
    assert (tmp_path / "autonomic.db").exists()
    shown = _show(_only_run(tmp_path), tmp_path)
    assert shown["status"] == "COMPLETED"
    kinds = [item["kind"] for item in shown["timeline"]]
    assert kinds.count("tool.result") == 8
    assert all("latency_ms" in item for item in shown["timeline"])
    # governance: every call decided before it ran; the large adjustment approved by the demo
    # playing the controller (and saying so); the irreversible cleanup blocked
    assert kinds.count("decision") == 8
    assert "the demo now plays the approver" in result.stdout
    [approval] = shown["approvals"]
    assert approval["status"] == "approved"
    assert approval["decided_by"] == ["demo-controller@default"]  # NAME@TENANT, as the API
    assert approval["arguments"]["reference"] == "INV-1002"
    verdicts = {
        i["detail"]["tool"]: i["detail"]["verdict"]
        for i in shown["timeline"]
        if i["kind"] == "decision"
    }
    assert verdicts["cleanup"] == "blocked"
    assert verdicts["sql_query"] == "allow"
    assert "Statement cleanup not done" in shown["output"]


@pytest.mark.parametrize("step", [1, 4, 7])
def test_a_demo_killed_after_a_step_resumes_to_the_identical_report(tmp_path, step):
    clean = tmp_path / "clean"
    crashed = tmp_path / "crashed"
    clean.mkdir()
    crashed.mkdir()
    assert autonomic("demo", cwd=clean).returncode == 0
    killed = autonomic("demo", "--crash-after-step", str(step), cwd=crashed)
    assert killed.returncode == -9
    assert "resume" in killed.stdout
    run_id = _only_run(crashed)
    assert _show(run_id, crashed)["status"] == "RUNNING"
    resumed = autonomic("resume", run_id, cwd=crashed)
    if _show(run_id, crashed)["status"] == "WAITING_FOR_HUMAN":  # crashed before the approval
        assert resumed.returncode == ExitCode.WAITING, resumed.stderr
        [waiting] = json.loads(autonomic("approvals", "--json", cwd=crashed).stdout)
        approved = autonomic("approve", waiting["id"], "--as", "controller", cwd=crashed)
        assert approved.returncode == 0, approved.stderr
        resumed = autonomic("resume", run_id, cwd=crashed)
    assert resumed.returncode == ExitCode.OK, resumed.stderr
    after = _show(run_id, crashed)
    before = _show(_only_run(clean), clean)
    assert after["status"] == "COMPLETED"
    assert after["output"] == before["output"]

    # nothing was done twice: the same tool steps, and one recovery note (python_exec's result
    # carries the sandbox's timings, which differ between runs: compared by tool name only)
    def steps(show: dict) -> list[str]:
        return [
            i["summary"] if not i["summary"].startswith("python_exec") else "python_exec"
            for i in show["timeline"]
            if i["kind"] == "tool.result"
        ]

    assert steps(after) == steps(before)
    assert [i["kind"] for i in after["timeline"]].count("recovery") == 1


def test_demo_falls_back_to_the_in_process_tool_where_the_sandbox_is_unavailable(tmp_path):
    result = autonomic("demo", cwd=tmp_path, env={"AUTONOMIC_SANDBOX": "nope"})
    assert result.returncode == 0, result.stderr
    assert "sandbox unavailable here (unknown sandbox backend 'nope'" in result.stdout
    steps = [i["summary"] for i in _show(_only_run(tmp_path), tmp_path)["timeline"]]
    assert any(s.startswith("compute_differences") for s in steps)
    assert not any(s.startswith("python_exec") for s in steps)


def test_runs_and_show_have_tables_and_json(tmp_path):
    assert autonomic("demo", cwd=tmp_path).returncode == 0
    table = autonomic("runs", cwd=tmp_path)
    assert "COMPLETED" in table.stdout
    run_id = _only_run(tmp_path)
    shown = autonomic("show", run_id, cwd=tmp_path)
    assert "timeline" in shown.stdout
    assert "post_adjustment" in shown.stdout
    filtered = json.loads(autonomic("runs", "--json", "--status", "failed", cwd=tmp_path).stdout)
    assert filtered == []


def test_run_with_a_scripted_model_and_detach_then_worker(tmp_path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"turns": [{"content": "nothing to reconcile"}]}))
    bank = json.dumps({"bank": str(create_bank(tmp_path / "bank.db"))})  # the agent's input
    queued = autonomic(
        "run", "reconciliation", "{}", "--model", f"scripted:{script}", "--detach",
        "--metadata", bank, cwd=tmp_path,
    )  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    run_id = _only_run(tmp_path)
    assert _show(run_id, tmp_path)["status"] == "PENDING"
    worked = autonomic("worker", "--until-idle", cwd=tmp_path)
    assert worked.returncode == 0, worked.stderr
    # the worker drove it to its end: the reconciliation workflow refuses an answer given before
    # its final state (the model skipped reading, comparing and reporting)
    assert f"{run_id} SUSPENDED" in worked.stdout
    shown = _show(run_id, tmp_path)
    assert "not a final state" in shown["status_reason"]
    assert shown["timeline"][-2]["summary"].startswith("turn 1: answers nothing to reconcile")


def test_invalid_run_id(tmp_path):
    _one_line_error(autonomic("show", "run_123", cwd=tmp_path), "invalid run id")


def test_unknown_run(tmp_path):
    assert autonomic("migrate", cwd=tmp_path).returncode == 0
    _one_line_error(autonomic("show", "run_" + "0" * 32, cwd=tmp_path), "no run run_")


def test_corrupt_script_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "bad.json").write_text('{"turns": [')
    _one_line_error(
        autonomic("run", "reconciliation", "x", "--model", "scripted:bad.json", cwd=tmp_path),
        "script bad.json is not valid JSON",
    )
    assert json.loads(autonomic("runs", "--json", cwd=tmp_path).stdout) == []


def test_unreachable_database_names_it_without_the_password(tmp_path):
    result = autonomic("--db", "postgresql://admin:hunter2@127.0.0.1:1/prod", "runs", cwd=tmp_path)
    _one_line_error(result, "cannot reach PostgreSQL at 127.0.0.1:1")
    assert "hunter2" not in result.stderr + result.stdout


def test_sqlite_in_a_missing_directory(tmp_path):
    _one_line_error(
        autonomic("--db", "sqlite:///missing/x.db", "runs", cwd=tmp_path),
        "directory missing does not exist",
    )


def test_unsupported_database_url(tmp_path):
    _one_line_error(
        autonomic("--db", "mysql://x", "runs", cwd=tmp_path), "unsupported database URL"
    )


def test_unknown_agent(tmp_path):
    _one_line_error(autonomic("run", "nobody", "x", cwd=tmp_path), "unknown agent 'nobody'")


def test_bad_metadata_json(tmp_path):
    _one_line_error(
        autonomic("run", "reconciliation", "x", "--metadata", "{", cwd=tmp_path),
        "--metadata is not valid JSON",
    )


def test_cancel_a_pending_run_and_refuse_to_resume_it(tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"turns": [{"content": "x"}]}))
    autonomic(
        "run", "reconciliation", "x", "--model", f"scripted:{script}", "--detach", cwd=tmp_path
    )
    run_id = _only_run(tmp_path)
    assert autonomic("cancel", run_id, "--reason", "not needed", cwd=tmp_path).returncode == 0
    assert _show(run_id, tmp_path)["status_reason"] == "not needed"
    _one_line_error(
        autonomic("resume", run_id, cwd=tmp_path), "cannot be resumed now: it is CANCELLED"
    )
    _one_line_error(
        autonomic("cancel", run_id, cwd=tmp_path), "illegal transition CANCELLED -> CANCELLED"
    )


def test_migrate_is_idempotent(tmp_path):
    first = autonomic("migrate", cwd=tmp_path)
    second = autonomic("migrate", cwd=tmp_path)
    assert "0001_initial" in first.stdout
    assert "up to date" in second.stdout
