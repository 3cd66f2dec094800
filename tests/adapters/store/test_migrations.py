"""Upgrading a database that an older autonomic created keeps every run and journal entry."""

import asyncio
import sqlite3

import pytest

from autonomic.adapters.store import migrations
from autonomic.adapters.store import sql as sql_store
from autonomic.adapters.store.rows import blob_rows
from autonomic.adapters.store.sqlite import _split_sql
from autonomic.audit.verify import verify_store
from autonomic.bootstrap import build_store
from autonomic.core.audit import GENESIS_HASH, AuditNote, anchor_body, record_digest, record_hash
from autonomic.core.journal import PackedEntry
from autonomic.core.run import RunChanges
from autonomic.testing.store_conformance import T0, big_payload, make_entries, make_run


def hex_rows(entries: list[PackedEntry]) -> list[tuple[object, ...]]:
    """Journal rows as every release before issue 17's compaction wrote them: hex hashes."""
    return [
        (p.entry.run_id, p.entry.seq, p.entry.kind.value, p.text, p.entry.hash, p.entry.created_at)
        for p in entries
    ]


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
    db.executemany("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?)", hex_rows(entries))
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


def test_postgres_0010_keeps_hashes_as_bytes_and_every_one_reads_and_verifies_the_same(pg_url):
    """A database at 0009 (hex hashes in the journal and the log, written here as that release
    wrote them) is migrated: the hashes become their 32 bytes, read back as the same hex, the log
    and journal verify, and the run goes on with new entries chained to the old ones."""
    import psycopg

    run = make_run()
    entries = make_entries(run.id, [{"a": 1}, big_payload("b"), {"c": 3}, {"d": 4}])
    more = make_entries(run.id, [{"e": 5}], first_seq=5, prev_hash=entries[-1].entry.hash)
    log: list[tuple[int, str, str, str]] = []  # pos, run, body, hash (hex)
    head = GENESIS_HASH
    for pos, commit in enumerate((entries[:1], entries[1:]), start=1):
        body = anchor_body(
            run.id,
            [(p.entry.seq, p.entry.kind.value, p.entry.hash, p.entry.payload) for p in commit],
            AuditNote(),
        )
        head = record_hash(head, pos, "anchor", record_digest("anchor", run.id, body))
        log.append((pos, run.id, body, head))
    old = [m for m in migrations.load("postgres") if m.version <= 9]
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "applied_at DOUBLE PRECISION NOT NULL)"
        )
        for m in old:
            db.execute(m.sql.encode())
            db.execute("INSERT INTO schema_migrations VALUES (%s, %s, 0)", (m.version, m.name))
        db.execute(
            f"INSERT INTO runs ({', '.join(sql_store.RUN_NAMES)}) "
            f"VALUES ({', '.join('%(' + c + ')s' for c in sql_store.RUN_NAMES)})",
            sql_store.run_params(run),
        )
        with db.cursor() as cur:
            cur.executemany("INSERT INTO blobs VALUES (%s, %s, %s, %s)", blob_rows(entries, T0))
            cur.executemany(
                "INSERT INTO journal VALUES (%s, %s, %s, %s, %s, %s)", hex_rows(entries)
            )
            cur.executemany("INSERT INTO audit_log VALUES (%s, 'anchor', %s, %s, %s, 1.0)", log)
        db.execute("UPDATE audit_head SET pos = %s, hash = %s", (len(log), head))

    async def main():
        store = build_store(pg_url)
        applied = await store.migrate()
        before = await store.load_journal(run.id)
        scanned = await store.scan_journal(run_id=run.id)
        records = await store.scan_audit_log()
        clean = await verify_store(store)
        await store.commit(
            run.id,
            expected_version=1,
            fence=None,
            entries=more,
            changes=RunChanges(),
            now=T0 + 10,
        )
        after = await store.load_journal(run.id)
        again = await verify_store(store)
        await store.close()
        return applied, before, scanned, records, clean, after, again

    applied, before, scanned, records, clean, after, again = asyncio.run(main())
    assert applied == ["0010_hashes_as_bytes"]
    hashes = [p.entry.hash for p in entries]
    assert [e.hash for e in before] == hashes
    assert [e.payload for e in before] == [p.entry.payload for p in entries]
    assert [row[4] for row in scanned] == hashes
    assert [(pos, h) for pos, _, _, _, h, _ in records] == [(0, GENESIS_HASH)] + [
        (pos, h) for pos, _, _, h in log
    ]
    assert clean.ok, clean.breaks
    assert (clean.runs, clean.entries, clean.records) == (1, 4, 3)
    assert [e.hash for e in after] == [*hashes, more[0].entry.hash]
    assert again.ok, again.breaks
    assert (again.entries, again.records) == (5, 4)
    with psycopg.connect(pg_url) as db:
        types = db.execute(
            "SELECT table_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND column_name = 'hash' "
            "AND table_name IN ('journal', 'audit_log', 'audit_head') ORDER BY table_name"
        ).fetchall()
        sizes = db.execute("SELECT DISTINCT length(hash) FROM journal").fetchall()
    assert types == [("audit_head", "text"), ("audit_log", "bytea"), ("journal", "bytea")]
    assert sizes == [(32,)]
