"""Upgrading a database that an older autonomic created keeps every run and journal entry."""

import asyncio
import sqlite3

import pytest

from autonomic.adapters.store import migrations
from autonomic.adapters.store.sqlite import _split_sql
from autonomic.bootstrap import build_store
from autonomic.core.run import RunChanges
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
    db.close()

    async def main():
        old = build_store(f"sqlite:///{path}")
        run = make_run()
        entries = make_entries(run.id, [{"a": 1}, big_payload("b"), {"c": 3}])
        # Written by the 0001 schema (the store's SQL is the same for both layouts).
        await old.create_run(run, entries[:2])
        await old.commit(
            run.id,
            expected_version=1,
            fence=None,
            entries=entries[2:],
            changes=RunChanges(),
            now=T0,
        )
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
