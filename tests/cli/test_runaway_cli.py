"""``autonomic demo --scenario runaway``: the incident suspended by loop detection, its evidence in
``show``, and the way out (``resume --force``, ``cancel``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from autonomic.cli.exit_codes import ExitCode

CLI = [sys.executable, "-m", "autonomic.cli"]


def autonomic(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AUTONOMIC_DB"} | {"COLUMNS": "200"}
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode in (1, 2), result.stderr
    assert "Traceback" not in result.stderr
    assert expected in result.stderr, result.stderr
    assert result.stderr.startswith("error: ")


def _show(run_id: str, cwd: Path) -> dict[str, object]:
    result = autonomic("show", run_id, "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_demo_runaway_suspends_the_loop_and_shows_how_to_resume_or_cancel(tmp_path: Path) -> None:
    result = autonomic("demo", "--scenario", "runaway", cwd=tmp_path)
    assert result.returncode == ExitCode.SUSPENDED, result.stderr  # the demo's run's outcome
    assert "the destructive tool ran 2 time(s)" in result.stdout
    assert "suspended by the runaway guard" in result.stdout
    assert "(loop.near_repeat)" in result.stdout
    run_id = re.search(r"run (run_[0-9a-f]+)", result.stdout)
    assert run_id is not None
    rid = run_id.group(1)
    assert f"resume {rid} --force" in result.stdout
    assert f"cancel {rid}" in result.stdout

    shown = _show(rid, tmp_path)
    assert shown["status"] == "SUSPENDED"
    kinds = [i["kind"] for i in shown["timeline"]]  # type: ignore[attr-defined]
    assert kinds.count("decision") == 1
    text = autonomic("show", rid, cwd=tmp_path).stdout
    assert "seq    7 (similarity" in text
    assert "seq   10 (similarity" in text

    refused = autonomic("resume", rid, "--budget", "tokens=5", cwd=tmp_path)
    _one_line_error(refused, "--budget raises a limit when reopening")
    bad = autonomic("resume", rid, "--force", "--budget", "tokenz=5", cwd=tmp_path)
    _one_line_error(bad, "unknown limit 'tokenz'")

    resumed = autonomic("resume", rid, "--force", cwd=tmp_path)
    assert resumed.returncode == ExitCode.SUSPENDED, resumed.stderr
    assert "suspended by the runaway guard" in resumed.stdout  # two more ran, then stopped again
    ledgers = list((tmp_path / "autonomic-demo").glob("ledger-*.db"))
    assert len(ledgers) == 1

    cancelled = autonomic("cancel", rid, cwd=tmp_path)
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(autonomic("runs", "--json", cwd=tmp_path).stdout)[0]["status"] == "CANCELLED"


def test_demo_rejects_an_unknown_scenario(tmp_path: Path) -> None:
    _one_line_error(
        autonomic("demo", "--scenario", "chaos", cwd=tmp_path), "unknown demo scenario 'chaos'"
    )
