"""``autonomic run``, ``resume`` and ``demo`` exit with the outcome of the run they drove: a script
can tell done from waiting for a human from suspended, failed or cancelled (docs/cli.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autonomic.cli.exit_codes import ExitCode
from autonomic.core.run import RunStatus

CLI = [sys.executable, "-m", "autonomic.cli"]

AGENTS = '''
from autonomic import Agent, AgentRegistry, Engine, build_store, tool
from autonomic.tools.contract import ToolContext


@tool(idempotent=True)
def noop() -> str:
    """Do nothing."""
    return "ok"


@tool(idempotent=True)
async def stop_me(ctx: ToolContext) -> str:
    """Cancel the run this call belongs to from outside its worker, as an operator would."""
    store = build_store(ctx.metadata["db"])
    try:
        await Engine(store, AgentRegistry([]), lambda spec: None).cancel(ctx.run_id, "stopped")
    finally:
        await store.close()
    return "cancelled"


def agents():
    return [Agent(name="plain", instructions="do it", tools=(noop, stop_me))]
'''


def autonomic(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AUTONOMIC_DB"} | {
        "COLUMNS": "200",
        "PYTHONPATH": str(cwd),
    }
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _script(cwd: Path, *turns: dict[str, object]) -> str:
    path = cwd / "script.json"
    path.write_text(json.dumps({"turns": list(turns)}))
    return f"scripted:{path}"


def _call(name: str) -> dict[str, object]:
    return {"tool_calls": [{"name": name, "arguments": {}}]}


def _status(cwd: Path) -> str:
    [run] = json.loads(autonomic("runs", "--json", cwd=cwd).stdout)
    status: str = run["status"]
    return status


@pytest.mark.parametrize(
    ("outcome", "turns", "extra"),
    [
        (ExitCode.OK, [{"content": "done"}], []),
        (ExitCode.FAILED, [_call("noop"), {"content": "late"}], ["--max-turns", "1"]),
        (ExitCode.WAITING, [_call("noop"), {"content": "done"}], ["POLICY"]),
        (ExitCode.CANCELLED, [_call("stop_me"), {"content": "done"}], []),
    ],
    ids=["completed", "failed", "waiting", "cancelled"],
)
def test_run_exits_with_its_runs_outcome(
    tmp_path: Path, outcome: ExitCode, turns: list[dict[str, object]], extra: list[str]
) -> None:
    (tmp_path / "agents.py").write_text(AGENTS)
    options = ["--agent", "agents:agents", "--model", _script(tmp_path, *turns)]
    options += ["--metadata", json.dumps({"db": f"sqlite:///{tmp_path}/autonomic.db"})]
    policy: list[str] = []
    if "POLICY" in extra:
        extra = []
        (tmp_path / "policy.yaml").write_text("rules:\n  - {name: ask, tool: noop, risk: medium}\n")
        policy = ["--policy", str(tmp_path / "policy.yaml")]
    result = autonomic(*policy, "run", "plain", "go", *options, *extra, cwd=tmp_path)
    assert result.returncode == outcome, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    expected = {code: status for status, code in _STATUS_CODES.items()}[outcome]
    assert _status(tmp_path) == expected.value


_STATUS_CODES = {
    RunStatus.COMPLETED: ExitCode.OK,
    RunStatus.FAILED: ExitCode.FAILED,
    RunStatus.WAITING_FOR_HUMAN: ExitCode.WAITING,
    RunStatus.SUSPENDED: ExitCode.SUSPENDED,
    RunStatus.CANCELLED: ExitCode.CANCELLED,
}


def test_a_suspended_run_exits_6_and_resuming_a_waiting_one_without_force_is_a_usage_error(
    tmp_path: Path,
) -> None:
    # the reconciliation workflow refuses an answer given before its final state: SUSPENDED
    model = _script(tmp_path, {"content": "nothing to reconcile"})
    suspended = autonomic("run", "reconciliation", "{}", "--model", model, cwd=tmp_path)
    assert suspended.returncode == ExitCode.SUSPENDED, suspended.stderr
    assert _status(tmp_path) == "SUSPENDED"
    [run] = json.loads(autonomic("runs", "--json", cwd=tmp_path).stdout)
    refused = autonomic("resume", run["id"], cwd=tmp_path)
    assert refused.returncode == ExitCode.USAGE
    assert refused.stderr.startswith("error: ")


def test_every_status_has_its_own_code_and_the_codes_are_stable() -> None:
    assert {s: ExitCode.of(s) for s in _STATUS_CODES} == _STATUS_CODES
    assert ExitCode.of(RunStatus.PENDING) is ExitCode.of(RunStatus.RUNNING) is ExitCode.UNFINISHED
    # documented numbers: a change here breaks users' scripts
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 130]
    assert len(set(_STATUS_CODES.values())) == len(_STATUS_CODES)


def test_a_detached_run_exits_0_once_enqueued(tmp_path: Path) -> None:
    model = _script(tmp_path, {"content": "x"})
    queued = autonomic("run", "reconciliation", "{}", "--model", model, "--detach", cwd=tmp_path)
    assert queued.returncode == ExitCode.OK, queued.stderr
    assert _status(tmp_path) == "PENDING"


def test_docs_list_every_exit_code() -> None:
    table = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    for code in ExitCode:
        assert f"| {int(code)} | `{code.name}` |" in table, code
