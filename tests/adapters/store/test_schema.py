"""The store refuses what is not its own (``adapters/store/schema.py``): another application's
tables, a schema written by a newer autonomic, a missing SQLite file, a damaged one.

Every refusal writes nothing: a SQLite file keeps its bytes and its modification time, a
PostgreSQL schema keeps its tables and rows. Both stores where the case exists for both.
"""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path
from typing import Any

import pytest

from autonomic.adapters.store import migrations
from autonomic.adapters.store.sqlite import _split_sql, parse_sqlite_url
from autonomic.bootstrap import build_store
from autonomic.core.run import RunChanges
from autonomic.errors import AutonomicError, ConfigError, StoreDamaged
from autonomic.ports.store import Claim, Store
from autonomic.testing.store_conformance import T0, make_entries, make_run

NEWEST = max(m.version for m in migrations.load("sqlite"))

_PG_TABLES = (
    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = current_schema() AND c.relkind = 'r' ORDER BY 1"
)


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


async def _state(url: str, raw_execute: Any, fingerprint: Any) -> object:
    """What a refusal must leave as it was: the file, or the schema's tables and their rows."""
    if _is_sqlite(url):
        return fingerprint(parse_sqlite_url(url)[0])
    tables = [str(row[0]) for row in await raw_execute(_PG_TABLES)]
    return {t: sorted(map(repr, await raw_execute(f'SELECT * FROM "{t}"'))) for t in tables}


async def _open(url: str, how: str) -> Store:
    """Open ``url`` as a reader (``use``: read-only, verified), a writer (``write``: migrated)
    or ``autonomic migrate`` (``adopt``); close it again and raise what the opening raised."""
    store = build_store(url, readonly=how == "use")
    try:
        if how == "use":
            await store.verify()
        else:
            await store.migrate(beside_other_tables=how == "adopt")
    finally:
        await store.close()
    return store


async def _refusals(url: str, hows: tuple[str, ...]) -> list[AutonomicError]:
    refusals: list[AutonomicError] = []
    for how in hows:
        with pytest.raises(AutonomicError) as info:
            await _open(url, how)
        refusals.append(info.value)
    return refusals


async def _foreign_tables(raw_execute: Any) -> None:
    await raw_execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    await raw_execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER)")
    await raw_execute("INSERT INTO customers VALUES (1, 'Ada')")


def test_a_database_of_other_tables_is_refused_and_left_alone(store_url, raw_execute, fingerprint):
    async def main() -> None:
        await _foreign_tables(raw_execute)
        before = await _state(store_url, raw_execute, fingerprint)
        for refusal in await _refusals(store_url, ("use", "write")):
            assert isinstance(refusal, ConfigError)
            assert "is not an autonomic database: it holds tables customers, orders" in (
                refusal.message
            )
            assert f"autonomic --db {shlex.quote(store_url)} migrate" in (refusal.hint or "")
        assert await _state(store_url, raw_execute, fingerprint) == before

    asyncio.run(main())


def test_migrate_adds_our_tables_beside_other_tables_when_asked(store_url, raw_execute):
    async def main() -> None:
        await _foreign_tables(raw_execute)
        store = build_store(store_url)
        try:
            applied = await store.migrate(beside_other_tables=True)
        finally:
            await store.close()
        assert applied == [f"{m.version:04d}_{m.name}" for m in migrations.load("sqlite")]
        assert await raw_execute("SELECT id, name FROM customers") == [(1, "Ada")]
        # now the database is autonomic's too: it is used without asking again
        for how in ("use", "write"):
            await _open(store_url, how)

    asyncio.run(main())


def test_another_tools_schema_migrations_is_refused_even_when_asked(
    store_url, raw_execute, fingerprint
):
    """Rails keeps ``schema_migrations (version)``: autonomic's versions cannot live in it."""

    async def main() -> None:
        await raw_execute("CREATE TABLE schema_migrations (version VARCHAR(20) PRIMARY KEY)")
        await raw_execute("INSERT INTO schema_migrations VALUES ('20240101120000')")
        await raw_execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
        before = await _state(store_url, raw_execute, fingerprint)
        for refusal in await _refusals(store_url, ("use", "write", "adopt")):
            assert isinstance(refusal, ConfigError)
            assert "another tool's schema_migrations" in refusal.message
        assert await _state(store_url, raw_execute, fingerprint) == before

    asyncio.run(main())


def test_a_schema_from_a_newer_autonomic_is_refused_and_left_alone(
    store_url, make_store, raw_execute, fingerprint
):
    async def main() -> None:
        await (await make_store(store_url)).close()
        await raw_execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)"
        )
        before = await _state(store_url, raw_execute, fingerprint)
        for refusal in await _refusals(store_url, ("use", "write", "adopt")):
            assert isinstance(refusal, ConfigError)
            assert (
                f"was written by a newer autonomic (schema version 999; this one knows up to "
                f"{NEWEST}); nothing was read or written" in refusal.message
            )
            assert refusal.hint == "upgrade autonomic to use this database"
        assert await _state(store_url, raw_execute, fingerprint) == before

    asyncio.run(main())


def test_an_empty_database_is_refused_for_use_and_created_by_migrate(store_url, raw_execute):
    async def main() -> None:
        if _is_sqlite(store_url):
            await raw_execute("SELECT 1")  # an empty file, as another program leaves it
        (refusal,) = await _refusals(store_url, ("use",))
        assert isinstance(refusal, ConfigError)
        assert refusal.message.endswith("has no autonomic schema")
        assert "migrate" in (refusal.hint or "")
        await _open(store_url, "write")
        await _open(store_url, "use")

    asyncio.run(main())


def test_an_older_schema_is_upgraded_by_a_writer_never_by_a_reader(
    store_url, raw_execute, fingerprint
):
    async def main() -> None:
        first = migrations.load("sqlite" if _is_sqlite(store_url) else "postgres")[0]
        await raw_execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "applied_at DOUBLE PRECISION NOT NULL)"
        )
        for statement in _split_sql(first.sql) if _is_sqlite(store_url) else [first.sql]:
            await raw_execute(statement)
        await raw_execute("INSERT INTO schema_migrations VALUES (1, 'initial', 0)")
        before = await _state(store_url, raw_execute, fingerprint)
        (refusal,) = await _refusals(store_url, ("use",))
        assert refusal.message.endswith(
            f"holds autonomic's schema at version 1; this autonomic needs version {NEWEST}"
        )
        assert "migrate" in (refusal.hint or "")
        assert await _state(store_url, raw_execute, fingerprint) == before
        await _open(store_url, "write")
        await _open(store_url, "use")

    asyncio.run(main())


def test_a_read_only_store_reads_and_cannot_write(store_url, make_store, raw_execute, fingerprint):
    async def main() -> None:
        writer = await make_store(store_url)
        run = make_run()
        await writer.create_run(run, make_entries(run.id, [{"a": 1}]))
        await writer.close()
        before = await _state(store_url, raw_execute, fingerprint)
        reader = build_store(store_url, readonly=True)
        try:
            await reader.verify()
            assert await reader.get_run(run.id) == run
            assert len(await reader.load_journal(run.id)) == 1
            other = make_run()
            with pytest.raises(ConfigError, match="was opened read-only: it writes nothing"):
                await reader.create_run(other, make_entries(other.id, [{"a": 1}]))
            with pytest.raises(ConfigError, match="was opened read-only: it writes nothing"):
                await reader.claim(Claim(owner="w", now=T0 + 100, ttl=30))
        finally:
            await reader.close()
        assert await _state(store_url, raw_execute, fingerprint) == before

    asyncio.run(main())


# -- SQLite: missing and damaged files ------------------------------------------------------------


def test_a_missing_file_is_created_only_by_a_store_that_may_create(tmp_path):
    url = f"sqlite:///{tmp_path}/typo.db"
    for options in ({"readonly": True}, {"create": False}):
        with pytest.raises(ConfigError) as info:
            build_store(url, **options)
        assert info.value.message == f"no SQLite database at {tmp_path}/typo.db"
        assert f"autonomic --db {url} migrate" in (info.value.hint or "")
        assert list(tmp_path.iterdir()) == [], "nothing may be created"

    async def create() -> None:
        await _open(url, "write")

    asyncio.run(create())
    assert (tmp_path / "typo.db").exists()


def test_a_damaged_page_is_found_before_any_write(damaged_sqlite, fingerprint):
    """The damaged page is one no write of a new run would touch: only reading every page first
    keeps the writer out (the issue: `autonomic demo` wrote a new run into such a file)."""
    url = f"sqlite:///{damaged_sqlite}"
    before = fingerprint(damaged_sqlite)

    async def main() -> None:
        for refusal in await _refusals(url, ("write", "adopt")):
            assert isinstance(refusal, StoreDamaged)
            assert not refusal.retryable
            assert refusal.message.startswith(
                f"SQLite database {damaged_sqlite} is damaged: PRAGMA quick_check found: "
                "On tree page "
            )
            assert refusal.message.endswith("; autonomic writes nothing into it")
            assert f"sqlite3 {damaged_sqlite} 'PRAGMA integrity_check'" in (refusal.hint or "")
            assert "backup" in (refusal.hint or "")

    asyncio.run(main())
    assert fingerprint(damaged_sqlite) == before


def test_after_meeting_a_damaged_page_a_store_writes_nothing(damaged_sqlite, fingerprint):
    """A store used without ``migrate`` (as a library user may) reads until it meets the damage;
    from then on it refuses every write without attempting it."""
    url = f"sqlite:///{damaged_sqlite}"
    before = fingerprint(damaged_sqlite)

    async def main() -> None:
        store = build_store(url)
        try:
            runs = await store.list_runs()
            assert len(runs) == 12

            async def read_every_journal() -> None:
                for run in runs:
                    await store.load_journal(run.id)

            with pytest.raises(StoreDamaged) as info:
                await read_every_journal()
            assert info.value.message == (
                f"SQLite database {damaged_sqlite} is damaged: database disk image is "
                "malformed; autonomic writes nothing into it"
            )
            new = make_run()
            writes = [
                lambda: store.create_run(new, make_entries(new.id, [{"a": 1}])),
                lambda: store.commit(
                    runs[0].id,
                    expected_version=1,
                    fence=None,
                    entries=make_entries(runs[0].id, [{"b": 2}], first_seq=26),
                    changes=RunChanges(),
                    now=T0,
                ),
                lambda: store.claim(Claim(owner="w", now=T0 + 100, ttl=30)),
                lambda: store.migrate(),
            ]
            for write in writes:
                with pytest.raises(StoreDamaged, match=f"{damaged_sqlite} is damaged"):
                    await write()
        finally:
            await store.close()

    asyncio.run(main())
    assert fingerprint(damaged_sqlite) == before


def test_a_damaged_header_is_refused_at_once(autonomic_sqlite: Path, fingerprint):
    with autonomic_sqlite.open("r+b") as f:
        f.write(b"\x13" * 16)  # "SQLite format 3\0", the magic string, overwritten
    before = fingerprint(autonomic_sqlite)
    for options in ({}, {"readonly": True}):
        with pytest.raises(StoreDamaged) as info:
            build_store(f"sqlite:///{autonomic_sqlite}", **options)
        assert info.value.message == (
            f"cannot open SQLite database {autonomic_sqlite}: file is not a database"
        )
        assert "PRAGMA integrity_check" in (info.value.hint or "")
    assert fingerprint(autonomic_sqlite) == before


def test_opening_and_reading_write_nothing(autonomic_sqlite: Path, fingerprint):
    before = fingerprint(autonomic_sqlite)

    async def main() -> None:
        for options in ({}, {"readonly": True}, {"create": False}):
            store = build_store(f"sqlite:///{autonomic_sqlite}", **options)
            try:
                await store.verify()
                for run in await store.list_runs():
                    await store.load_journal(run.id)
            finally:
                await store.close()

    asyncio.run(main())
    assert fingerprint(autonomic_sqlite) == before


# -- PostgreSQL: the schema a URL names -----------------------------------------------------------


@pytest.mark.postgres
def test_a_search_path_naming_no_schema_is_refused(pg_server):
    url = f"{pg_server}{'&' if '?' in pg_server else '?'}options=-csearch_path%3Dno_such_schema"
    refusals = asyncio.run(_refusals(url, ("use", "write", "adopt")))
    for refusal in refusals:
        assert isinstance(refusal, ConfigError)
        assert "the search_path names none that exists" in refusal.message
        assert "CREATE SCHEMA" in (refusal.hint or "")
