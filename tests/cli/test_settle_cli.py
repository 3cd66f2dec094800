"""``autonomic settle`` as an operator uses it: the demo agent's report call left in doubt by a
SIGKILLed process, settled by a person, and the run finished - on both stores."""

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from autonomic.examples.reconciliation.bank import ACCOUNT, DATE, create_bank

CLI = [sys.executable, "-m", "autonomic.cli"]
TASK = json.dumps({"account": ACCOUNT, "date": DATE, "compute": "tool"})


def autonomic(*args: str, cwd: Path, env: dict[str, str] | None = None):
    full = {k: v for k, v in os.environ.items() if k not in ("AUTONOMIC_DB", "AUTONOMIC_CRASH_AT")}
    full |= (env or {}) | {"COLUMNS": "200"}
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=120
    )


def _flat(text: str) -> str:
    return " ".join(text.split())


def _reports(bank: Path) -> int:
    db = sqlite3.connect(bank)
    try:
        return int(db.execute("SELECT COUNT(*) FROM reports").fetchone()[0])
    finally:
        db.close()


def _status(db: str, run_id: str, cwd: Path) -> dict:
    shown = autonomic("--db", db, "show", run_id, "--json", cwd=cwd)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def _in_doubt(db: str, tmp_path: Path, crash_at: str) -> tuple[str, Path]:
    """A reconciliation whose process is SIGKILLed around the report call (after the controller
    approved the large adjustment), then found in doubt by ``resume``."""
    if db.startswith("postgresql"):  # SQLite databases are created and migrated on first use
        assert autonomic("--db", db, "migrate", cwd=tmp_path).returncode == 0
    bank = create_bank(tmp_path / "bank.db")
    meta = json.dumps({"bank": str(bank)})
    started = autonomic(
        "--db", db, "run", "reconciliation", TASK, "--metadata", meta, "--as", "alice",
        cwd=tmp_path,
    )  # fmt: skip
    assert started.returncode == 5, started.stderr  # waits for the controller's approval
    listed = json.loads(autonomic("--db", db, "approvals", "--json", cwd=tmp_path).stdout)
    (approval,) = listed
    approved = autonomic("--db", db, "approve", approval["id"], "--as", "controller", cwd=tmp_path)
    assert approved.returncode == 0, approved.stderr
    run_id = approval["run_id"]
    killed = autonomic(
        "--db", db, "resume", run_id, cwd=tmp_path, env={"AUTONOMIC_CRASH_AT": crash_at}
    )
    assert killed.returncode == -9, killed.stderr
    found = autonomic("--db", db, "resume", run_id, cwd=tmp_path)
    assert "Traceback" not in found.stderr
    out = _flat(found.stdout)
    assert f"run {run_id} is WAITING_FOR_HUMAN: in doubt: file_report@1 call" in out
    assert f"autonomic settle {run_id} --executed --result JSON --reason TEXT" in out
    assert f"autonomic settle {run_id} --not-executed --reason TEXT" in out
    # and printed as commands that run as printed (the program as invoked, --db)
    assert re.search(rf"--db \S+ settle {run_id} --executed --result JSON --reason", out)
    assert re.search(rf"--db \S+ settle {run_id} --not-executed --reason", out)
    return run_id, bank


def test_settled_as_executed_the_run_completes_with_the_report_filed_once(store_url, tmp_path):
    # the second effect after resuming is the report (the approved adjustment is the first)
    run_id, bank = _in_doubt(store_url, tmp_path, "after_effect:2")
    assert _reports(bank) == 1  # the report was filed; its result never recorded

    settled = autonomic(
        "--db", store_url, "settle", run_id, "--executed",
        "--result", '{"report_id": 1, "filed": true}',
        "--as", "controller", "--reason", "report 1 is in the reports table",
        cwd=tmp_path,
    )  # fmt: skip
    assert settled.returncode == 0, settled.stderr
    assert (
        "settled by controller@default: file_report call call_8_1 executed - report 1 is in the "
        "reports table" in _flat(settled.stdout)
    )
    # the follow-up, as the program was invoked and with --db
    assert re.search(rf"it goes on: .* --db \S+ resume {run_id} ", _flat(settled.stdout))

    done = autonomic("--db", store_url, "resume", run_id, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    shown = _status(store_url, run_id, tmp_path)
    assert shown["status"] == "COMPLETED"
    assert _reports(bank) == 1  # not filed again
    (settlement,) = [i for i in shown["timeline"] if i["kind"] == "settlement"]
    assert settlement["detail"]["by"] == "controller@default"
    assert settlement["detail"]["output"] == {"report_id": 1, "filed": True}
    (result,) = [
        i
        for i in shown["timeline"]
        if i["kind"] == "tool.result" and i["detail"]["tool"] == "file_report"
    ]
    assert result["detail"]["settled"] == {
        "by": "controller@default",
        "reason": "report 1 is in the reports table",
    }

    refused = autonomic(
        "--db", store_url, "settle", run_id, "--not-executed", "--reason", "again",
        cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: run {run_id} is not in doubt: it is COMPLETED")
    assert "Traceback" not in refused.stderr


def test_settled_as_not_executed_the_report_is_filed_once_and_the_run_completes(
    store_url, tmp_path
):
    # after resuming: the adjustment's commit, the blocked cleanup's, then the report's intent
    run_id, bank = _in_doubt(store_url, tmp_path, "after_commit:3")
    assert _reports(bank) == 0  # killed after the intent was committed, before the effect

    settled = autonomic(
        "--db", store_url, "settle", run_id, "--not-executed", "--as", "controller",
        "--reason", "no report in the reports table",
        cwd=tmp_path,
    )  # fmt: skip
    assert settled.returncode == 0, settled.stderr
    done = autonomic("--db", store_url, "resume", run_id, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _status(store_url, run_id, tmp_path)["status"] == "COMPLETED"
    assert _reports(bank) == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--executed"], "error: settling needs a reason"),
        (["--reason", "x"], "error: say what you found: --executed or --not-executed"),
        (
            ["--not-executed", "--reason", "x", "--result", "{}"],
            "error: --result and --result-file go with --executed",
        ),
        (["--executed", "--reason", "x", "--result", "{nope"], "error: --result is not valid JSON"),
    ],
)
def test_settle_refuses_bad_options_with_one_line(tmp_path, args, expected):
    result = autonomic(
        "--db", f"sqlite:///{tmp_path}/a.db", "settle", "run_" + "0" * 32, *args, cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.startswith(expected), result.stderr
