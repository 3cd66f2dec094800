"""Output a person can use: ids that copy whole, follow-up commands that run as printed, a cost
line that says when a price is unknown."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from autonomic.cli.exit_codes import ExitCode
from autonomic.cli.invocation import program
from autonomic.cli.render import cost_cell, cost_line
from autonomic.core.entries import Body, ModelCall, ModelTurn, PlanOutcome, RunStarted
from autonomic.core.journal import Entry, record
from autonomic.core.messages import Usage
from autonomic.core.timeline import spend

SCRIPT = Path(sys.executable).parent / "autonomic"
"""The console script installed beside this interpreter (what `.venv/bin/autonomic` is)."""


def _env(**extra: str) -> dict[str, str]:
    """This environment without AUTONOMIC_DB and without the console script's directory on PATH
    (a virtual environment that was never activated)."""
    env = {k: v for k, v in os.environ.items() if k != "AUTONOMIC_DB"}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != SCRIPT.parent
    )
    return env | extra


def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autonomic.cli", *args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ids_are_whole_in_narrow_piped_output(tmp_path: Path) -> None:
    demo = cli("demo", "--interactive", cwd=tmp_path, COLUMNS="40")
    assert demo.returncode == ExitCode.WAITING, demo.stderr
    [run] = json.loads(cli("runs", "--json", cwd=tmp_path).stdout)
    [approval] = json.loads(cli("approvals", "--json", cwd=tmp_path).stdout)
    ids = (run["id"], approval["id"])
    for args in (("runs",), ("approvals",), ("show", run["id"])):
        narrow = cli(*args, cwd=tmp_path, COLUMNS="40")
        assert narrow.returncode == 0, narrow.stderr
        for ident in ids:
            assert ident in narrow.stdout, (args, ident, narrow.stdout)
    for ident in ids:
        assert ident in demo.stdout
    # wider, the same ids inside real tables
    wide = cli("runs", cwd=tmp_path, COLUMNS="160")
    assert "┃ run " in wide.stdout
    assert run["id"] in wide.stdout
    assert approval["id"] in wide.stdout


@pytest.mark.skipif(not SCRIPT.is_file(), reason="no console script beside this interpreter")
def test_printed_follow_up_commands_run_as_printed(tmp_path: Path) -> None:
    """Invoked by its path (the venv not activated) on a database that is not the default: the
    commands the demo prints carry that path and --db, and running them finishes the run."""
    db = "sqlite:///other.db"
    typed = os.path.relpath(SCRIPT, tmp_path)
    stopped = subprocess.run(
        [typed, "--db", db, "demo", "--interactive"],
        cwd=tmp_path,
        env=_env(COLUMNS="60"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stopped.returncode == ExitCode.WAITING, stopped.stderr
    printed = stopped.stdout.split("--interactive:", 1)[1]
    commands = [line.strip() for line in printed.splitlines() if line.startswith("  ")]
    assert [shlex.split(c)[:3] for c in commands] == [[typed, "--db", db], [typed, "--db", db]]
    approve, resume = commands
    assert " approve apr_" in approve
    assert " resume run_" in resume
    for line in (approve, resume):
        done = subprocess.run(
            line, shell=True, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, (line, done.stdout, done.stderr)
    [run] = json.loads(cli("--db", db, "runs", "--json", cwd=tmp_path).stdout)
    assert run["status"] == "COMPLETED"
    assert not (tmp_path / "autonomic.db").exists()  # the follow-ups used --db, not the default


def test_the_program_is_named_as_the_user_can_run_it(tmp_path: Path, monkeypatch) -> None:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    script = bin_dir / "autonomic"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    python = str(bin_dir / "python")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert program("venv/bin/autonomic", python) == "venv/bin/autonomic"  # as typed
    assert program("/x/autonomic/cli/__main__.py", python) == str(script)  # python -m, by path
    assert program("-m", "/usr/bin/python3") == "/usr/bin/python3 -m autonomic.cli"
    monkeypatch.setenv("PATH", str(bin_dir))
    assert program(str(script), python) == "autonomic"  # on PATH: the name finds it
    assert program("/x/autonomic/cli/__main__.py", python) == "autonomic"
    assert program("/elsewhere/autonomic", python) == "/elsewhere/autonomic"  # another install


RUN = "run_" + "b" * 32


def _journal(*bodies: Body) -> list[Entry]:
    entries: list[Entry] = []
    prev = "0" * 64
    for seq, body in enumerate(bodies, start=1):
        packed = record(RUN, seq, body, prev_hash=prev, created_at=float(seq))
        entries.append(packed.entry)
        prev = packed.entry.hash
    return entries


def _turn(n: int, call: ModelCall) -> ModelTurn:
    return ModelTurn(n, "x", (), None, call)


STARTED = RunStarted("a", "1", "function:reconciliation", "i", "t", (), 5)
FREE = ModelCall(Usage(10, 2))
PAID = ModelCall(Usage(10, 2), provider="main", cost_usd=0.25, attempts=1, waited_s=0.0)


def test_a_model_without_a_price_makes_the_cost_unknown_not_zero() -> None:
    entries = _journal(STARTED, _turn(1, FREE), _turn(2, FREE))
    assert cost_line(entries) == (
        "cost unknown: model function:reconciliation has no price (2 model call(s), 20+4 tokens)"
    )
    assert "$0" not in cost_line(entries)
    assert cost_cell(spend(entries)) == "unknown"


def test_priced_and_unpriced_calls_are_told_apart() -> None:
    plan = PlanOutcome(key="k", pattern="p", source="model", model="openai:small", call=FREE)
    entries = _journal(STARTED, plan, _turn(1, PAID), _turn(2, PAID))
    line = cost_line(entries)
    assert line.startswith("cost $0.500000 over 2 model call(s) (main 2 call(s) $0.500000)")
    assert "not counting 1 call(s): model openai:small has no price" in line
    assert cost_cell(spend(entries)) == "$0.500000 + 1 unpriced"
    priced = _journal(STARTED, _turn(1, PAID))
    assert cost_line(priced) == (
        "cost $0.250000 over 1 model call(s) (main 1 call(s) $0.250000); 10+2 tokens"
    )
    assert cost_cell(spend(priced)) == "$0.250000"
    assert cost_line(_journal(STARTED)) == "cost $0: no model calls"


def test_show_places_the_recovery_where_the_takeover_happened(tmp_path: Path) -> None:
    killed = cli("demo", "--crash-after-step", "2", cwd=tmp_path, COLUMNS="60")
    assert killed.returncode == -9
    run_id = re.search(r"resume (run_[0-9a-f]{32})", killed.stdout)
    assert run_id is not None, killed.stdout
    assert "it stops at the controller's approval" in killed.stdout
    resumed = cli("resume", run_id.group(1), cwd=tmp_path)
    assert resumed.returncode == ExitCode.WAITING, resumed.stderr
    shown = json.loads(cli("show", run_id.group(1), "--json", cwd=tmp_path).stdout)
    rows = shown["timeline"]
    [at] = [i for i, row in enumerate(rows) if row["kind"] == "recovery"]
    before = rows[at]["detail"]["journal_seq"]
    assert rows[at - 1]["seq"] == before  # right after the last entry before the takeover
    assert rows[at + 1]["seq"] == before + 1  # and before the first step of the new worker
    assert rows[at]["seq"] > before + 1  # though journaled with that step's commit
    text = cli("show", run_id.group(1), cwd=tmp_path, COLUMNS="200").stdout
    assert f"took over after seq {before}" in text
    assert "cost unknown: model function:reconciliation has no price" in text


def test_the_result_is_wrapped_inside_its_frame_not_cut(tmp_path: Path) -> None:
    """Text is not wrapped (so ids copy whole), but the result panel wraps inside its frame: at 80
    columns the report's last words are all there."""
    done = cli("demo", cwd=tmp_path, COLUMNS="80")
    assert done.returncode == ExitCode.OK, done.stderr
    assert "reconciled." in done.stdout
    panel = done.stdout.split("╭", 1)[1].split("╰", 1)[0]
    assert max(len(line) for line in panel.splitlines()) <= 80
