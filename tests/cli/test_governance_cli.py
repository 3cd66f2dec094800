"""Approvals from the command line: the interactive demo, approve/deny, and what `show` tells."""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from autonomic.adapters.model.scripted import ScriptedModel
from autonomic.bootstrap import build_store
from autonomic.cli.exit_codes import ExitCode
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.examples.reconciliation.bank import create_bank
from autonomic.governance.approvals import ApprovalDesk
from autonomic.governance.policy.risk import parse_policy_text
from autonomic.tools.contract import tool

CLI = [sys.executable, "-m", "autonomic.cli"]


def autonomic(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AUTONOMIC_DB"} | {"COLUMNS": "250"}
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_interactive_demo_waits_and_approve_lets_it_continue(tmp_path):
    stopped = autonomic("demo", "--interactive", cwd=tmp_path)
    assert stopped.returncode == ExitCode.WAITING, stopped.stderr
    assert "WAITING_FOR_HUMAN" in stopped.stdout
    assert "approve apr_" in stopped.stdout
    [pending] = json.loads(autonomic("approvals", "--json", cwd=tmp_path).stdout)
    assert pending["arguments"]["reference"] == "INV-1002"
    listed = autonomic("approvals", cwd=tmp_path)
    assert pending["id"] in listed.stdout
    # the requester (this OS user) cannot approve their own run's action
    own = autonomic("approve", pending["id"], cwd=tmp_path)
    assert own.returncode == 2
    assert own.stderr.startswith("error: ")
    assert "cannot approve its actions" in own.stderr
    approved = autonomic(
        "approve", pending["id"], "--as", "controller", "--reason", "checked", cwd=tmp_path
    )
    assert approved.returncode == 0, approved.stderr
    assert "APPROVED" in approved.stdout
    run_id = pending["run_id"]
    resumed = autonomic("resume", run_id, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    shown = json.loads(autonomic("show", run_id, "--json", cwd=tmp_path).stdout)
    assert shown["status"] == "COMPLETED"
    assert "reconciled." in shown["output"]
    text = autonomic("show", run_id, cwd=tmp_path).stdout
    assert "APPROVED by controller@default: checked" in text
    assert "decisions: 6 allow, 1 blocked, 1 needs_approval" in text
    again = autonomic("approve", pending["id"], "--as", "other", cwd=tmp_path)
    assert again.returncode == 2
    assert "already approved" in again.stderr


def test_deny_needs_a_reason_and_ids_are_checked(tmp_path):
    missing = autonomic("deny", "apr_" + "0" * 24, "--reason", " ", cwd=tmp_path)
    assert missing.returncode == 2
    assert "needs a reason" in missing.stderr
    bad = autonomic("approve", "123", cwd=tmp_path)
    assert bad.returncode == 2
    assert "invalid approval id" in bad.stderr
    assert autonomic("migrate", cwd=tmp_path).returncode == 0
    unknown = autonomic("approve", "apr_" + "0" * 24, "--as", "x", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "no approval apr_" in unknown.stderr


@tool(idempotent=True)
def pay(to: str, amount: int) -> str:
    """Pay."""
    return to


def test_show_tells_a_timeout_from_a_rejection(tmp_path):
    url = f"sqlite:///{tmp_path}/autonomic.db"
    now = [1_900_000_000.0]
    policy = parse_policy_text(
        "approval: {expires_after: 1h}\nrules:\n  - {name: big, tool: pay, risk: medium}\n"
    )
    turns = [
        {"tool_calls": [{"name": "pay", "arguments": {"to": "bob", "amount": 5}}]},
        {"content": "ok"},
    ]

    async def go():
        store = build_store(url)
        await store.migrate()
        model = ScriptedModel(turns)
        engine = Engine(
            store,
            AgentRegistry([Agent(name="p", instructions="x", tools=(pay,))]),
            lambda s: model,
            gates=[policy.risk.gate()],
            clock=lambda: now[0],
        )
        desk = ApprovalDesk(store, clock=lambda: now[0])
        denied = await engine.run("p", "go", requester="rita")
        [a] = await store.list_approvals(run_id=denied.id)
        await desk.deny(a.id, by="carl", reason="wrong payee")
        timed = await engine.run("p", "go", requester="rita")
        now[0] += 4000
        await desk.sweep()
        await store.close()
        return denied.id, timed.id

    denied, timed = asyncio.run(go())
    rejected_text = autonomic("show", denied, cwd=tmp_path).stdout
    timeout_text = autonomic("show", timed, cwd=tmp_path).stdout
    assert "REJECTED by carl: wrong payee" in rejected_text
    assert "TIMED OUT" not in rejected_text
    assert "TIMED OUT - denied by default, nobody decided" in timeout_text
    assert "REJECTED" not in timeout_text
    shown = json.loads(autonomic("show", timed, "--json", cwd=tmp_path).stdout)
    assert [a["status"] for a in shown["approvals"]] == ["timeout"]
    events = [i["detail"].get("event") for i in shown["timeline"] if i["kind"] == "approval"]
    assert events == ["timeout"]
    every = json.loads(autonomic("approvals", "--all", "--json", cwd=tmp_path).stdout)
    assert sorted(a["status"] for a in every) == ["rejected", "timeout"]


def test_a_policy_file_from_the_command_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: a\n    risk: severe\n")
    refused = autonomic("--policy", str(bad), "run", "reconciliation", "x", cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: {bad}:3: unknown risk 'severe'")
    assert "hint: use low, medium or high" in refused.stderr
    assert "Traceback" not in refused.stderr
    typo = tmp_path / "typo.yaml"
    typo.write_text("tools:\n  sql_qeury:\n    timeout: 1\n")
    unknown = autonomic("--policy", str(typo), "run", "reconciliation", "x", cwd=tmp_path)
    assert unknown.stderr.startswith(f"error: {typo}:2: policy for unknown tool 'sql_qeury'")
    strict = tmp_path / "strict.yaml"
    strict.write_text("rules:\n  - {name: no-sql, tool: sql_query, risk: high, reason: frozen}\n")
    script = tmp_path / "script.json"
    script.write_text(
        json.dumps(
            {
                "turns": [
                    {"tool_calls": [{"name": "sql_query", "arguments": {"query": "SELECT 1"}}]},
                    {"content": "could not read"},
                ]
            }
        )
    )
    ran = autonomic(
        "--policy",
        str(strict),
        "run",
        "reconciliation",
        "{}",
        "--model",
        f"scripted:{script}",
        "--metadata",
        json.dumps({"bank": str(create_bank(tmp_path / "bank.db"))}),  # the agent's input
        cwd=tmp_path,
    )
    # the workflow refuses an answer given before its final state: the run is suspended
    assert ran.returncode == ExitCode.SUSPENDED, ran.stderr
    assert "blocked by risk" in ran.stdout
    assert "frozen" in ran.stdout
