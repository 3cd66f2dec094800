"""``autonomic abort`` as an operator uses it: a reconciliation waiting for approval aborted with
compensation, driven to CANCELLED by ``resume``; a finished run refused in one line."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from autonomic.examples.reconciliation.bank import ACCOUNT, DATE, create_bank

CLI = [sys.executable, "-m", "autonomic.cli"]
TASK = json.dumps({"account": ACCOUNT, "date": DATE, "compute": "tool"})


def autonomic(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AUTONOMIC_DB", "AUTONOMIC_CRASH_AT")}
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=env | {"COLUMNS": "200"}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def test_abort_with_compensation_then_resume_cancels_the_run(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    bank = create_bank(tmp_path / "bank.db")
    meta = json.dumps({"bank": str(bank)})
    started = autonomic("--db", db, "run", "reconciliation", TASK, "--metadata", meta, cwd=tmp_path)
    assert started.returncode == 5, started.stderr  # waits for the controller's approval
    run_id = re.findall(r"run_[0-9a-f]{32}", started.stdout)[0]
    aborted = autonomic(
        "--db", db, "abort", run_id, "--compensate", "--reason", "wrong day", "--as", "ops",
        cwd=tmp_path,
    )  # fmt: skip
    assert aborted.returncode == 0, aborted.stderr
    assert "is aborting: a worker compensates its completed steps" in aborted.stdout
    resumed = autonomic("--db", db, "resume", run_id, cwd=tmp_path)
    assert resumed.returncode == 7, resumed.stdout + resumed.stderr  # CANCELLED
    flat = " ".join(resumed.stdout.split())
    assert "compensation" in flat
    assert "not undone: sql_query declares no compensating action" in flat
    assert (
        f"run {run_id} is CANCELLED: aborted by ops@default: wrong day; compensated 0 step(s)"
        in flat
    )
    again = autonomic("--db", db, "abort", run_id, "--compensate", cwd=tmp_path)
    assert again.returncode != 0
    assert "a finished run cannot be aborted" in again.stderr
    assert "Traceback" not in again.stderr
