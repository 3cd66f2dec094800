"""Upgrading a database that an older autonomic created keeps every run and journal entry."""

import asyncio
import sqlite3

import pytest

from autonomic.adapters.store import migrations
from autonomic.adapters.store import sql as sql_store
from autonomic.adapters.store.rows import blob_rows, journal_rows
from autonomic.adapters.store.sqlite import _split_sql
from autonomic.bootstrap import build_store
from autonomic.testing.store_conformance import T0, big_payload, make_entries, make_run


def test_sqlite_0002_rebuilds_the_journal_and_keeps_its_entries(tmp_path):
    path = tmp_path / "old.db"
    first = migrations.load("sqlite")[0]
    assert first.version == 1
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at REAL)"
    )
    for statement in _split_sql(first.sql):
        db.execute(statement)
    db.execute("INSERT INTO schema_migrations VALUES (1, 'initial', 0)")
    run = make_run()
    entries = make_entries(run.id, [{"a": 1}, big_payload("b"), {"c": 3}])
    # Written as the 0001 schema held them (that release's store wrote these rows).
    old_columns = [c for c in sql_store.RUN_NAMES if c not in ("capability", "queued")]  # 0008's
    db.execute(
        f"INSERT INTO runs ({', '.join(old_columns)}) VALUES ({', '.join(':' + c for c in old_columns)})",
        {c: v for c, v in sql_store.run_params(run).items() if c in old_columns},
    )
    db.executemany("INSERT INTO blobs VALUES (?, ?, ?, ?)", blob_rows(entries, T0))
    db.executemany("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?)", journal_rows(entries))
    db.close()

    async def main():
        old = build_store(f"sqlite:///{path}")
        before = await old.load_journal(run.id)
        await old.close()
        store = build_store(f"sqlite:///{path}")
        applied = await store.migrate()
        after = await store.load_journal(run.id)
        await store.close()
        return applied, before, after

    applied, before, after = asyncio.run(main())
    assert applied == [f"{m.version:04d}_{m.name}" for m in migrations.load("sqlite")[1:]]
    assert after == before
    assert len(after) == 3
    db = sqlite3.connect(path)
    (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'journal'").fetchone()
    assert "WITHOUT ROWID" not in sql
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM journal")
    assert not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'journal_0001'").fetchall()
    db.close()
