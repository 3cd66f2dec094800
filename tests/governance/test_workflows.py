"""State-machine workflows: allow-lists as a security boundary, invariants at every transition,
approvals at transitions, finishing only in a final state; and `autonomic workflow check`."""

import asyncio
import subprocess
import sys

import pytest
from governed import LEDGER, call, desk, open_store

from autonomic.adapters.model.scripted import ScriptedModel
from autonomic.core.journal import EntryKind
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.errors import PolicyFileError
from autonomic.governance.policy.workflow import Invariant, Workflow
from autonomic.tools.contract import ToolContext, tool

EXECUTED: list[str] = []


@tool(idempotent=True)
def read(item: str) -> str:
    """Read an item."""
    EXECUTED.append(f"read:{item}")
    return item


@tool(idempotent=True)
def pay(to: str, amount: int, ctx: ToolContext) -> str:
    """Pay."""
    EXECUTED.append(f"pay:{to}")
    LEDGER.setdefault(ctx.idempotency_key, []).append((to, amount))
    return "paid"


@tool(idempotent=True)
def report(text: str) -> str:
    """Report."""
    EXECUTED.append("report")
    return "filed"


FLOW = """\
workflow: payments
start: gather
states:
  gather:
    tools: [read]
    exits:
      - to: pay
        when: calls.read >= 2
  pay:
    tools: [pay]
    exits:
      - to: report
        approval: true
  report:
    tools: [report]
    final: true
invariants:
  - name: two-reads-before-paying
    check: state != 'pay' or calls.read >= 2
"""


def _run(url, turns, workflow=None):
    EXECUTED.clear()
    wf = workflow or Workflow.from_text(FLOW, "flow.yaml")

    async def go():
        store = await open_store(url)
        agent = Agent(name="wf", instructions="x", tools=(read, pay, report), workflow=wf)
        model = ScriptedModel(turns)
        engine = Engine(store, AgentRegistry([agent]), lambda s: model)
        run = await engine.run("wf", "go", requester="rita")
        if run.status is RunStatus.WAITING_FOR_HUMAN:
            [approval] = await store.list_approvals(run_id=run.id)
            await desk(store).approve(approval.id, by="carl")
            run = await engine.run_to_end(run.id)
        entries = await store.load_journal(run.id)
        await store.close()
        return run, entries

    return asyncio.run(go())


def _moves(entries):
    return [(e.payload["from"], e.payload["to"]) for e in entries if e.kind is EntryKind.WORKFLOW]


def test_a_run_follows_the_workflow_and_finishes_in_a_final_state(store_url):
    turns = [
        {"tool_calls": [call("read", item="a")]},
        {"tool_calls": [call("read", item="b")]},
        {"tool_calls": [call("pay", to="bob", amount=5)]},
        {"tool_calls": [call("report", text="done")]},
        {"content": "done"},
    ]
    run, entries = _run(store_url, turns)
    assert run.status is RunStatus.COMPLETED
    assert _moves(entries) == [("gather", "pay"), ("pay", "report")]
    assert EXECUTED == ["read:a", "read:b", "pay:bob", "report"]
    approvals = [e.payload for e in entries if e.kind is EntryKind.APPROVAL]
    assert [a["event"] for a in approvals] == ["approved"], "pay -> report needs approval"


def test_a_tool_outside_the_state_is_a_security_violation(store_url):
    turns = [{"tool_calls": [call("report", text="skip ahead")]}, {"content": "x"}]
    run, entries = _run(store_url, turns)
    assert run.status is RunStatus.SUSPENDED
    assert "security violation" in run.status_reason
    assert "not allowed in state gather" in run.status_reason
    assert EXECUTED == [], "0 executions"
    [decision] = [e.payload for e in entries if e.kind is EntryKind.DECISION]
    assert decision["verdict"] == "suspend"
    assert not [e for e in entries if e.kind is EntryKind.TOOL_INTENT]


def test_an_exit_whose_condition_is_false_is_not_taken(store_url):
    turns = [
        {"tool_calls": [call("read", item="a")]},
        {"tool_calls": [call("pay", to="bob", amount=5)]},
        {"content": "gave up"},
    ]
    run, entries = _run(store_url, turns)
    assert EXECUTED == ["read:a"]
    assert _moves(entries) == []
    assert run.status is RunStatus.SUSPENDED, "answered outside a final state"
    assert "not a final state" in run.status_reason


def test_an_invariant_violation_stops_the_transition(store_url):
    flow = Workflow.from_text(FLOW.replace("when: calls.read >= 2", "when: calls.read >= 1"))
    turns = [
        {"tool_calls": [call("read", item="a")]},
        {"tool_calls": [call("pay", to="bob", amount=5)]},
        {"content": "x"},
    ]
    _, entries = _run(store_url, turns, flow)
    assert _moves(entries) == [], "0 transitions"
    assert EXECUTED == ["read:a"], "0 executions of the refused call"
    [_, decision] = [e.payload for e in entries if e.kind is EntryKind.DECISION]
    assert decision["verdict"] == "blocked"
    assert "two-reads-before-paying" in decision["explanation"]
    # and the probe can fail: without the invariant the same run does transition
    lax = Workflow(name=flow.name, start=flow.start, states=flow.states, invariants=())
    _, entries = _run(store_url, turns, lax)
    assert _moves(entries) == [("gather", "pay")]


def test_python_invariants():
    wf = Workflow.from_text(FLOW)
    python = Invariant(name="small", check=lambda ctx: ctx["calls"].get("read", 0) < 5)
    assert python.holds({"calls": {"read": 1}})
    assert not python.holds({"calls": {"read": 9}})
    assert wf.pin()["start"] == "gather"


def test_workflow_problems_and_file_errors(tmp_path):
    wf = Workflow.from_text(
        "workflow: w\nstart: a\nstates:\n  a:\n    tools: [x]\n    exits: [b]\n"
        "  b:\n    tools: [y]\n  c:\n    final: true\n"
    )
    messages = [p.message for p in wf.problems({"x"})]
    assert "state c is unreachable from a" in messages
    assert "state b has no exit and is not final: a run there can never finish" in messages
    assert any(m.startswith("unknown tool 'y' in state b") for m in messages)
    lines = {p.message.split(" ")[1]: p.line for p in wf.problems() if p.line}
    assert lines["c"] == 9
    with pytest.raises(PolicyFileError, match=r"^w.yaml:6: state a: exit to unknown state 'zz'"):
        Workflow.from_text(
            "workflow: w\nstart: a\nstates:\n  a:\n    exits:\n      - to: zz\n", "w.yaml"
        )
    with pytest.raises(PolicyFileError, match=r"w.yaml:2: start state 'q' is not defined"):
        Workflow.from_text("workflow: w\nstart: q\nstates:\n  a: {final: true}\n", "w.yaml")
    with pytest.raises(PolicyFileError, match=r"w.yaml:4: unknown key 'tols' in state a"):
        Workflow.from_text("workflow: w\nstart: a\nstates:\n  a: {tols: [x]}\n", "w.yaml")


def test_workflow_check_cli(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(FLOW)
    bad = tmp_path / "bad.yaml"
    bad.write_text("workflow: w\nstart: a\nstates:\n  a:\n    tools: [x]\n  b:\n    final: true\n")

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "autonomic.cli", "workflow", "check", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    ok = cli(str(good), "--tools", "read,pay,report")
    assert ok.returncode == 0, ok.stderr
    assert "is sound" in ok.stdout
    failed = cli(str(bad), "--tools", "y")
    assert failed.returncode == 1
    assert f"{bad}:6: state b is unreachable from a" in failed.stderr
    assert f"{bad}:4: state a has no exit and is not final" in failed.stderr
    assert f"{bad}:4: unknown tool 'x' in state a" in failed.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("workflow: w\nstart: a\nstates:\n  a:\n    exits:\n      - to: nowhere\n")
    refused = cli(str(broken))
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: {broken}:6: state a: exit to unknown state")
