"""``autonomic sandbox`` as a user runs it: exit codes, output, JSON and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autonomic.testing.sandbox import require_bwrap


def autonomic(*args: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200", **extra)
    return subprocess.run(
        [sys.executable, "-m", "autonomic.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode in (1, 2), result.stderr
    assert "Traceback" not in result.stderr
    assert expected in result.stderr
    assert result.stderr.startswith("error: ")


@pytest.fixture(autouse=True)
def _bwrap() -> None:
    require_bwrap()


def test_exec_prints_output_and_how_it_ended(tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text(
        "import sys\nprint('hi')\nprint('oops', file=sys.stderr)\nsys.exit(3)\n"
    )
    refused = autonomic("sandbox", "exec", "job.py", cwd=tmp_path)
    assert refused.returncode == 1  # sys is not on the default import allow-list
    assert "blocked AUT001 line 1: imports sys" in refused.stderr
    # The allow-list is policy: widened by the setting, the same file runs.
    result = autonomic(
        "sandbox", "exec", "job.py", cwd=tmp_path, AUTONOMIC_SANDBOX_GATE="allow_imports=sys"
    )
    assert result.returncode == 3
    assert result.stdout == "hi\n"
    assert "oops" in result.stderr
    assert "ended exit (exit code 3)" in result.stderr


def test_exec_json_has_the_whole_result(tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text("import time\ntime.sleep(30)\n")
    result = autonomic("sandbox", "exec", "job.py", "--timeout", "1", "--json", cwd=tmp_path)
    assert result.returncode == 1
    body = json.loads(result.stdout)
    assert body["ended"] == "timeout"
    assert body["exit_code"] is None
    assert body["backend"] == "namespace"


def test_exec_refuses_what_the_gate_blocks(tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text("import subprocess\nsubprocess.run(['id'])\n")
    result = autonomic("sandbox", "exec", "job.py", cwd=tmp_path)
    assert result.returncode == 1
    assert "blocked AUT001 line 1" in result.stderr
    assert "ended refused" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["missing.py"], "missing.py does not exist"),
        (["junk.py"], "junk.py is not UTF-8 text"),
        (["--backend", "nope", "ok.py"], "unknown sandbox backend 'nope'"),
    ],
)
def test_exec_bad_input_is_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    (tmp_path / "junk.py").write_bytes(b"\xff\xfe\x00junk")
    (tmp_path / "ok.py").write_text("print(1)\n")
    _one_line_error(autonomic("sandbox", "exec", *args, cwd=tmp_path), expected)


def test_probe_prints_a_table_and_exits_zero_when_all_hold(tmp_path: Path) -> None:
    result = autonomic(
        "sandbox", "probe", "--only", "read_shadow", "--only", "tcp_host_loopback", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "read_shadow" in result.stdout
    assert "2/2 held" in result.stdout


def test_probe_unknown_name_is_one_line(tmp_path: Path) -> None:
    _one_line_error(
        autonomic("sandbox", "probe", "--only", "nope", cwd=tmp_path), "unknown probe nope"
    )


def test_doctor_says_which_backends_work(tmp_path: Path) -> None:
    result = autonomic("sandbox", "doctor", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {row["backend"]: row for row in json.loads(result.stdout)}
    assert rows["namespace"]["works"] is True, rows
