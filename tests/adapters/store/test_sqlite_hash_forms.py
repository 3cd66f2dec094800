"""SQLite keeps a journal entry's chain hash as its 32 raw bytes since issue 17's compaction; an
entry written before keeps 64 hex digits. One database, even one run, may hold both: it reads,
verifies and is tampered with as if it held one form (``adapters/store/sqlite.py``, ``_hex``)."""

import asyncio
import random
import sqlite3
from pathlib import Path

import pytest

import autonomic.adapters.store.sqlite as sqlite_store
from autonomic.adapters.store.sqlite import SQLiteStore
from autonomic.audit.verify import verify_store
from autonomic.bootstrap import build_store
from autonomic.core.canonical import canonical_json
from autonomic.core.journal import PackedEntry
from autonomic.core.run import RunChanges
from autonomic.core.verification import BreakKind
from autonomic.testing.store_conformance import T0, make_entries, make_run
from autonomic.testing.tampering import JOURNAL_KINDS, Tamperer

PAYLOADS = [{"step": i, "text": "x" * (3000 if i == 3 else 10)} for i in range(1, 9)]
"""Eight entries, the third kept as a blob (its row holds a reference, chained by address)."""


def hex_rows(entries: list[PackedEntry]) -> list[tuple[object, ...]]:
    """Journal rows as every release before issue 17's compaction wrote them: hex hashes."""
    return [
        (p.entry.run_id, p.entry.seq, p.entry.kind.value, p.text, p.entry.hash, p.entry.created_at)
        for p in entries
    ]


def _mixed(db: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, list[str]]:
    """A run whose first four entries were written as the release before wrote them (hex) and
    whose last four as today's (raw bytes), and a run written today alone. The first run's id and
    the chain hashes of its entries, as packed."""
    run = make_run()
    entries = make_entries(run.id, PAYLOADS)
    today = make_run(created_at=T0 + 1)

    async def main() -> None:
        store = build_store(f"sqlite:///{db}")
        await store.migrate()
        with monkeypatch.context() as old:
            old.setattr(sqlite_store, "journal_rows", hex_rows)
            await store.create_run(run, entries[:4])
        await store.commit(
            run.id,
            expected_version=1,
            fence=None,
            entries=entries[4:],
            changes=RunChanges(),
            now=T0 + 10,
        )
        await store.create_run(today, make_entries(today.id, PAYLOADS[:3]))
        await store.close()

    asyncio.run(main())
    return run.id, [p.entry.hash for p in entries]


def test_a_run_of_hex_and_raw_hashes_reads_and_verifies_as_one_chain(tmp_path, monkeypatch):
    db = tmp_path / "mixed.db"
    run_id, hashes = _mixed(db, monkeypatch)
    conn = sqlite3.connect(db)
    types = conn.execute(
        "SELECT typeof(hash), length(hash) FROM journal WHERE run_id = ? ORDER BY seq", (run_id,)
    ).fetchall()
    conn.close()
    assert types == [("text", 64)] * 4 + [("blob", 32)] * 4

    async def main():
        store = build_store(f"sqlite:///{db}", readonly=True)
        journal = await store.load_journal(run_id)
        page = await store.page_journal(run_id, after_seq=2, limit=4)
        scanned = await store.scan_journal(run_id=run_id)
        report = await verify_store(store)
        await store.close()
        return journal, page, scanned, report

    journal, page, scanned, report = asyncio.run(main())
    assert [e.hash for e in journal] == hashes
    assert [e.payload for e in journal] == PAYLOADS
    assert [e.hash for e in page] == hashes[2:6]
    assert [row[4] for row in scanned] == hashes
    assert report.ok, report.breaks
    assert report.runs == 2
    assert report.entries == 11


@pytest.mark.parametrize("action", JOURNAL_KINDS)
def test_tampering_with_a_run_of_both_forms_is_found_where_it_was_done(
    tmp_path, monkeypatch, action
):
    db = tmp_path / "mixed.db"
    _mixed(db, monkeypatch)
    url = f"sqlite:///{db}"
    tamperer = Tamperer(url)
    tamperer.drop_triggers()
    rng = random.Random(f"{action} 17")
    try:
        for _ in range(12):  # either run, with and without the chain remade
            done = tamperer.tamper(rng, action)
            report = asyncio.run(_verify(url))
            assert report.breaks, done
            first = report.breaks[0]
            assert (first.kind, first.run_id, first.position) == (
                done.expected,
                done.run_id,
                done.position,
            ), done
            tamperer.restore()
            assert asyncio.run(_verify(url)).ok, f"restored after {done}"
    finally:
        tamperer.close()


async def _verify(url: str):
    store = build_store(url, readonly=True)
    try:
        return await verify_store(store)
    finally:
        await store.close()


def test_the_scans_verify_reads_convert_the_hash_in_the_driver():
    for statement in (SQLiteStore.sql.journal_scan, SQLiteStore.sql.audit_scan):
        assert ', hash AS "hash [autonomic_hash]"' in statement, statement


@pytest.mark.parametrize(
    "forged", [b"\xff\xfe not utf-8", b"", "0" * 63, "x" * 32, b"\x00" * 31], ids=repr
)
def test_a_hash_that_is_no_hash_is_reported_where_it_is(tmp_path, monkeypatch, forged):
    db = tmp_path / "mixed.db"
    run_id, _ = _mixed(db, monkeypatch)
    url = f"sqlite:///{db}"
    tamperer = Tamperer(url)
    tamperer.drop_triggers()
    tamperer.q("DELETE FROM journal WHERE run_id = ? AND seq = 6", (run_id,))
    tamperer.q(
        "INSERT INTO journal VALUES (?, 6, 'model.response', ?, ?, 1.0)",
        (run_id, canonical_json(PAYLOADS[5]), forged),
    )
    tamperer.close()
    report = asyncio.run(_verify(url))
    assert [(b.kind, b.run_id, b.position) for b in report.breaks] == [
        (BreakKind.EDITED, run_id, 6)
    ]
