"""Through the CLI: a run with a missing or wrong input is suspended with one line saying what to
give, and resuming with it goes on; a run an agent's bug breaks ends FAILED with one line and the
command to inspect it. Never a traceback, never a run left RUNNING."""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from autonomic.examples.reconciliation.bank import create_bank

CLI = [sys.executable, "-m", "autonomic.cli"]


def autonomic(*args: str, cwd: Path, env: dict[str, str] | None = None):
    import os

    full = {k: v for k, v in os.environ.items() if k != "AUTONOMIC_DB"} | (env or {})
    full["COLUMNS"] = "200"
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=120
    )


def _flat(text: str) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(text.split())


def _no_traceback(result) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


def _runs(cwd: Path, db: str) -> list[dict]:
    result = autonomic("--db", db, "runs", "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_reconciliation_without_a_bank_is_suspended_saying_what_to_give(tmp_path):
    db = f"sqlite:///{tmp_path}/autonomic.db"
    result = autonomic("--db", db, "run", "reconciliation", "reconcile my accounts", cwd=tmp_path)
    _no_traceback(result)
    (run,) = _runs(tmp_path, db)
    assert run["status"] == "SUSPENDED"
    out = _flat(result.stdout)
    assert (
        f"run {run['id']} is SUSPENDED: this run has no bank database: metadata.bank is not set"
        in out
    )
    assert f'autonomic resume {run["id"]} --force --metadata \'{{"bank": "PATH"}}\'' in out
    assert re.search(rf"inspect it: \S+( -m autonomic\.cli)?( --db \S+)? show {run['id']}", out)

    # resuming without the input suspends it again, with the same line
    again = autonomic("--db", db, "resume", run["id"], "--force", cwd=tmp_path)
    _no_traceback(again)
    assert "metadata.bank is not set" in _flat(again.stdout)

    # a wrong bank says what is wrong with it
    wrong = autonomic(
        "--db", db, "resume", run["id"], "--force", "--metadata", '{"bank": "nope.db"}',
        cwd=tmp_path,
    )  # fmt: skip
    _no_traceback(wrong)
    assert "metadata.bank nope.db: no such file" in _flat(wrong.stdout)
    other = autonomic(
        "--db", db, "resume", run["id"], "--force", "--metadata",
        json.dumps({"bank": str(tmp_path / "autonomic.db")}),
        cwd=tmp_path,
    )  # fmt: skip
    _no_traceback(other)
    assert "not a bank database (no table adjustments, ledger, reports, statement)" in _flat(
        other.stdout
    )

    # given the bank, the run goes on: to the controller's approval of the large adjustment
    bank = create_bank(tmp_path / "bank.db")
    fixed = autonomic(
        "--db", db, "resume", run["id"], "--force", "--metadata", json.dumps({"bank": str(bank)}),
        cwd=tmp_path,
    )  # fmt: skip
    _no_traceback(fixed)
    (run,) = _runs(tmp_path, db)
    assert run["status"] == "WAITING_FOR_HUMAN", run["status_reason"]
    assert run["status_reason"].startswith("approval ")
    assert run["metadata"] == {"bank": str(bank)}


def test_resume_metadata_needs_force(tmp_path):
    db = f"sqlite:///{tmp_path}/autonomic.db"
    result = autonomic(
        "--db", db, "resume", "run_" + "0" * 32, "--metadata", '{"bank": "b.db"}', cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: --metadata sets run metadata when reopening")


BUGGY = """
    import json
    from pathlib import Path

    from autonomic import Agent, tool


    @tool(idempotent=True)
    def lookup(key: str) -> dict:
        \"\"\"Look a key up.\"\"\"
        return {"key": key}


    class Gate:
        name = "buggy"

        async def check(self, action):
            return action.arguments["missing"]  # a KeyError: the gate's bug


    SCRIPT = Path(__file__).with_name("script.json")
    SCRIPT.write_text(json.dumps({"turns": [
        {"tool_calls": [{"name": "lookup", "arguments": {"key": "a"}}]},
        {"content": "done"},
    ]}))
    agent = Agent(
        name="buggy", instructions="", tools=(lookup,), model=f"scripted:{SCRIPT}",
        gates=(Gate(),),
    )
"""


def test_a_bug_in_a_gate_fails_the_run_with_one_line_and_how_to_inspect_it(store_url, tmp_path):
    (tmp_path / "buggy_agent.py").write_text(textwrap.dedent(BUGGY))
    env = {"PYTHONPATH": str(tmp_path)}
    if store_url.startswith("postgresql"):  # SQLite is created and migrated on first use
        assert autonomic("--db", store_url, "migrate", cwd=tmp_path).returncode == 0
    result = autonomic(
        "--db", store_url, "run", "buggy", "go", "--agent", "buggy_agent:agent",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    _no_traceback(result)
    (run,) = _runs(tmp_path, store_url)
    assert run["status"] == "FAILED"
    assert run["status_reason"].startswith("unexpected KeyError in Gate.check (")
    assert "'missing'" in run["status_reason"]
    out = _flat(result.stdout)
    assert f"run {run['id']} is FAILED: unexpected KeyError in Gate.check" in out
    assert re.search(rf"inspect it: \S+( -m autonomic\.cli)?( --db \S+)? show {run['id']}", out)
    shown = autonomic("--db", store_url, "show", run["id"], "--json", cwd=tmp_path)
    last = [i for i in json.loads(shown.stdout)["timeline"] if i["kind"] == "transition"][-1]
    assert last["detail"]["error"]["type"] == "KeyError"
    line = (
        textwrap.dedent(BUGGY)
        .splitlines()
        .index('        return action.arguments["missing"]  # a KeyError: the gate\'s bug')
    )
    assert last["detail"]["error"]["where"].endswith(f"buggy_agent.py:{line + 1}")
