"""The CLI refuses a database that is not autonomic's, as a user meets it: a mistyped path,
another application's file or PostgreSQL schema, a damaged file, one from a newer autonomic.

Each refusal is an error line and a hint line, no traceback, a non-zero exit, and nothing
written: no file created, the file's bytes and modification time unchanged, no table added.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "autonomic.cli"]
RUN_ID = "run_" + "0" * 32
Fingerprint = Callable[[Path], tuple[str, int, int]]


def autonomic(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AUTONOMIC_DB"} | {"COLUMNS": "200"}
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _refused(result: subprocess.CompletedProcess[str], error: str, hint: str) -> None:
    """An error line starting with ``error`` and a hint line holding ``hint``; nothing else."""
    lines = result.stderr.splitlines()
    assert result.returncode in (1, 2), result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith(f"error: {error}"), result.stderr
    assert lines[1].startswith("hint: "), result.stderr
    assert hint in lines[1], result.stderr


def test_a_mistyped_path_is_never_created(tmp_path: Path) -> None:
    """Readers, and writers that need an existing run, refuse a missing file and create none."""
    for command in (
        ["runs"],
        ["show", RUN_ID],
        ["approvals"],
        ["breakers"],
        ["cancel", RUN_ID],
        ["resume", RUN_ID],
        ["approve", "apr_" + "0" * 24, "--as", "carl"],
    ):
        _refused(
            autonomic("--db", "sqlite:///autonoimc.db", *command, cwd=tmp_path),
            "no SQLite database at autonoimc.db",
            "to create a database there: autonomic --db sqlite:///autonoimc.db migrate",
        )
        assert list(tmp_path.iterdir()) == [], f"{command} created {list(tmp_path.iterdir())}"


def test_another_applications_file_is_refused_until_migrate_adds_our_tables(
    tmp_path: Path, fingerprint: Fingerprint
) -> None:
    app = tmp_path / "app.db"
    db = sqlite3.connect(app)
    db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    db.execute("INSERT INTO customers VALUES (1, 'Ada')")
    db.commit()
    db.close()
    before = fingerprint(app)
    for command in (["runs"], ["run", "reconciliation", "x", "--detach"], ["demo"]):
        _refused(
            autonomic("--db", "sqlite:///app.db", *command, cwd=tmp_path),
            "SQLite database app.db is not an autonomic database: it holds tables customers, "
            "orders",
            "to add autonomic's tables to this one on purpose: autonomic --db sqlite:///app.db "
            "migrate",
        )
    assert fingerprint(app) == before

    migrated = autonomic("--db", "sqlite:///app.db", "migrate", cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "0001_initial" in migrated.stdout
    listed = autonomic("--db", "sqlite:///app.db", "runs", "--json", cwd=tmp_path)
    assert json.loads(listed.stdout) == []
    db = sqlite3.connect(app)
    assert db.execute("SELECT name FROM customers").fetchall() == [("Ada",)]
    db.close()


def test_a_damaged_file_is_named_in_one_line_and_never_written(
    tmp_path: Path, damaged_sqlite: Path, fingerprint: Fingerprint
) -> None:
    """The issue's case: `runs` printed a 60-line traceback and `demo` wrote a run into it."""
    assert damaged_sqlite == tmp_path / "autonomic.db"  # the default --db
    before = fingerprint(damaged_sqlite)
    hint = "check it with `sqlite3 autonomic.db 'PRAGMA integrity_check'` and restore it"
    _refused(
        autonomic("runs", cwd=tmp_path),
        "SQLite database autonomic.db is damaged: database disk image is malformed; autonomic "
        "writes nothing into it",
        hint,
    )
    for command in (["demo"], ["migrate"], ["run", "reconciliation", "x", "--detach"]):
        _refused(
            autonomic(*command, cwd=tmp_path),
            "SQLite database autonomic.db is damaged: PRAGMA quick_check found: On tree page ",
            hint,
        )
    assert fingerprint(damaged_sqlite) == before
    assert not (tmp_path / "autonomic-demo").exists(), "the demo must stop before its bank"


def test_a_database_from_a_newer_autonomic_is_refused(
    tmp_path: Path, autonomic_sqlite: Path, fingerprint: Fingerprint
) -> None:
    db = sqlite3.connect(autonomic_sqlite)
    db.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    db.commit()
    db.close()
    before = fingerprint(autonomic_sqlite)
    for command in (["runs"], ["demo"], ["migrate"]):
        _refused(
            autonomic(*command, cwd=tmp_path),
            "SQLite database autonomic.db was written by a newer autonomic (schema version 999",
            "upgrade autonomic to use this database",
        )
    assert fingerprint(autonomic_sqlite) == before


@pytest.mark.postgres
def test_another_applications_postgres_schema_is_refused_until_migrate(
    tmp_path: Path, pg_url: str
) -> None:
    import psycopg

    def tables() -> list[str]:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema() ORDER BY 1"
            ).fetchall()
        return [str(row[0]) for row in rows]

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    for command in (["runs"], ["run", "reconciliation", "x", "--detach"], ["worker"]):
        _refused(
            autonomic("--db", pg_url, *command, cwd=tmp_path),
            "PostgreSQL schema t_",
            "to add autonomic's tables to this one on purpose: autonomic --db",
        )
        assert tables() == ["customers"]
    assert autonomic("--db", pg_url, "migrate", cwd=tmp_path).returncode == 0
    assert {"customers", "runs", "journal"} <= set(tables())
    assert json.loads(autonomic("--db", pg_url, "runs", "--json", cwd=tmp_path).stdout) == []


@pytest.mark.postgres
def test_the_worker_banner_never_prints_the_database_password(pg_url, tmp_path):
    """A worker says which database it serves without the password in its URL (it used to print
    the URL as given: a secret in every worker's log)."""
    url = pg_url.replace("postgresql://postgres@", "postgresql://postgres:s3cret-pw@", 1)
    assert url != pg_url
    assert autonomic("--db", url, "migrate", cwd=tmp_path).returncode == 0
    done = autonomic("--db", url, "worker", "--until-idle", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "s3cret-pw" not in done.stdout + done.stderr
    assert "on postgresql://postgres:***@127.0.0.1" in done.stderr


def test_the_demo_never_prints_the_database_password(pg_url, tmp_path):
    """The demo says which database it writes to without the password in its URL."""
    url = pg_url.replace("postgresql://postgres@", "postgresql://postgres:s3cret-pw@", 1)
    assert autonomic("--db", url, "migrate", cwd=tmp_path).returncode == 0
    done = autonomic("--db", url, "demo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "s3cret-pw" not in done.stdout + done.stderr
    assert "database postgresql://postgres:***@127.0.0.1" in done.stdout
