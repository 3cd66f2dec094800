"""Both stores against the Store conformance suite, plus what is specific to each adapter."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from autonomic.adapters.store import migrations
from autonomic.adapters.store.postgres import PostgresStore
from autonomic.adapters.store.sqlite import SQLiteStore
from autonomic.bootstrap import build_store
from autonomic.core.journal import PackedEntry
from autonomic.core.run import Run, RunChanges, RunStatus
from autonomic.errors import ConfigError, LeaseLost, StaleVersion, StoreUnavailable
from autonomic.ports.store import Claim, Store
from autonomic.testing.store_conformance import (
    CHECKS,
    T0,
    big_payload,
    make_entries,
    make_run,
    run_check,
)


@pytest.mark.parametrize("check", CHECKS)
def test_store_conformance(check, store_url, make_store, raw_execute):
    asyncio.run(run_check(check, open_store=lambda: make_store(store_url), raw_execute=raw_execute))


def test_conformance_suite_is_complete():
    """Guards against a check silently dropping out of the parametrisation."""
    assert len(CHECKS) >= 20
    assert "check_concurrent_claims_never_hand_a_run_to_two_claimers" in CHECKS


def test_conformance_rejects_unknown_check():
    async def never() -> Store:
        raise AssertionError("must not open a store")

    async def no_sql(sql: str) -> list[tuple[object, ...]]:
        raise AssertionError("must not run SQL")

    with pytest.raises(ValueError, match="unknown store conformance check"):
        asyncio.run(run_check("check_nothing", open_store=never, raw_execute=no_sql))


# -- both adapters ---------------------------------------------------------------------------------


def _dialect(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgres"


def test_operations_before_migrate_say_so(store_url):
    async def main() -> None:
        store = build_store(store_url)
        try:
            run = make_run()
            calls = [
                lambda: store.create_run(run, []),
                lambda: store.get_run(run.id),
                lambda: store.list_runs(),
                lambda: store.load_journal(run.id),
                lambda: store.commit(
                    run.id,
                    expected_version=1,
                    fence=None,
                    entries=make_entries(run.id, [{"a": 1}]),
                    changes=RunChanges(),
                    now=T0,
                ),
                lambda: store.claim(Claim(owner="w", now=T0, ttl=30)),
                lambda: store.renew_lease(run.id, owner="w", fence=1, expires_at=T0),
                lambda: store.release_lease(run.id, owner="w", fence=1),
            ]
            for call in calls:
                with pytest.raises(StoreUnavailable, match="no autonomic schema") as info:
                    await call()
                assert "autonomic migrate" in str(info.value)
        finally:
            await store.close()

    asyncio.run(main())


def test_a_closed_store_says_so(store_url):
    async def main() -> None:
        store = build_store(store_url)
        await store.migrate()
        await store.close()
        run = make_run()
        calls = [
            lambda: store.create_run(run, []),
            lambda: store.get_run(run.id),
            lambda: store.list_runs(),
            lambda: store.load_journal(run.id),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable, match="closed"):
                await call()

    asyncio.run(main())


def test_concurrent_migrators_apply_each_migration_once(store_url, raw_execute):
    expected = [f"{m.version:04d}_{m.name}" for m in migrations.load(_dialect(store_url))]

    async def main() -> list[list[str]]:
        stores = [build_store(store_url) for _ in range(6)]
        try:
            return list(await asyncio.gather(*(s.migrate() for s in stores)))
        finally:
            for s in stores:
                await s.close()

    results = asyncio.run(main())
    assert sorted(results, key=len, reverse=True) == [expected] + [[]] * 5
    rows = asyncio.run(raw_execute("SELECT version, name FROM schema_migrations ORDER BY version"))
    assert [f"{int(v):04d}_{n}" for v, n in rows] == expected


# -- SQLite ----------------------------------------------------------------------------------------


def test_sqlite_missing_directory_is_store_unavailable(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(StoreUnavailable) as info:
        build_store(f"sqlite:///{missing}/autonomic.db")
    assert f"directory {missing} does not exist" in info.value.message
    assert info.value.hint


def test_sqlite_parent_that_is_a_file_is_store_unavailable(tmp_path):
    not_a_dir = tmp_path / "plain-file"
    not_a_dir.write_text("x")
    with pytest.raises(StoreUnavailable, match="cannot open SQLite database") as info:
        build_store(f"sqlite:///{not_a_dir}/autonomic.db")
    assert str(not_a_dir / "autonomic.db") in info.value.message


def test_sqlite_unwritable_directory_is_store_unavailable(tmp_path):
    """A directory nobody may write to (root ignores modes, so /proc stands in for one)."""
    with pytest.raises(StoreUnavailable, match=r"cannot open SQLite database /proc/autonomic\.db"):
        build_store("sqlite:////proc/autonomic.db")


def test_sqlite_file_that_is_not_a_database_is_store_unavailable(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    with pytest.raises(StoreUnavailable, match="not a database") as info:
        build_store(f"sqlite:///{path}")
    assert str(path) in info.value.message
    assert "SQLite file" in (info.value.hint or "")
    assert path.read_bytes().startswith(b"these are my notes"), "the file must be left alone"


def test_sqlite_claims_from_threads_never_hand_a_run_to_two_claimers(sqlite_url):
    """Real concurrency on one file: each thread has its own store and event loop."""
    n_runs, n_threads = 30, 6

    async def setup() -> list[str]:
        store = build_store(sqlite_url)
        await store.migrate()
        runs = [make_run(created_at=T0 + i) for i in range(n_runs)]
        for run in runs:
            await store.create_run(run, [])
        await store.close()
        return [r.id for r in runs]

    ids = asyncio.run(setup())
    taken: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(n_threads)

    async def claim_all(name: str) -> list[str]:
        store = build_store(sqlite_url)
        got: list[str] = []
        try:
            start.wait()
            while (run := await store.claim(Claim(owner=name, now=T0 + 100, ttl=3600))) is not None:
                assert run.lease.owner == name
                got.append(run.id)
        finally:
            await store.close()
        return got

    def worker(name: str) -> None:
        try:
            taken[name] = asyncio.run(claim_all(name))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    all_taken = [run_id for got in taken.values() for run_id in got]
    assert sorted(all_taken) == sorted(ids), "every run claimed exactly once"


# -- PostgreSQL ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_unreachable_server_is_store_unavailable_without_password(scheme):
    url = f"{scheme}://alice:s3cret-pw@127.0.0.1:1/test?connect_timeout=3"

    async def main() -> None:
        store = build_store(url)
        assert isinstance(store, PostgresStore)
        try:
            for call in (store.get_run("run_x"), store.migrate()):
                started = time.monotonic()
                with pytest.raises(StoreUnavailable) as info:
                    await call
                assert time.monotonic() - started < 5, "must fail at once, not after a pool timeout"
                error = info.value
                assert "127.0.0.1:1" in error.message
                assert "Connection refused" in error.message or "connect" in error.message
                for text in (str(error), repr(error), repr(error.to_dict())):
                    assert "s3cret-pw" not in text
                assert "alice:***@127.0.0.1:1" in (error.hint or "")
        finally:
            await store.close()

    asyncio.run(main())


def test_postgres_rejects_other_urls():
    with pytest.raises(ConfigError, match="not a PostgreSQL URL"):
        PostgresStore("mysql://u:secret@host/db")
    with pytest.raises(ConfigError, match="bogus_option"):
        PostgresStore("postgresql://u:secret@host/db?bogus_option=1")
    # libpq quotes a badly percent-encoded password back in its error; it must not reach us.
    with pytest.raises(ConfigError, match="percent-encoded") as info:
        PostgresStore("postgresql://u:sec%ret@host/db")
    assert "sec%ret" not in f"{info.value} {info.value.to_dict()}"


@pytest.mark.postgres
def test_postgres_accepts_postgres_scheme(pg_url, make_store):
    url = pg_url.replace("postgresql://", "postgres://", 1)
    assert url.startswith("postgres://")

    async def main() -> None:
        store = await make_store(url)
        try:
            run = make_run()
            await store.create_run(run, [])
            assert await store.get_run(run.id) == run
        finally:
            await store.close()

    asyncio.run(main())


@pytest.mark.postgres
def test_postgres_opens_a_current_schema_with_one_connection_and_one_read(
    pg_url, make_store, monkeypatch
):
    """What a fresh worker pays before its first step: one pooled connection (a request queued
    while it was being made once grew a second one), one read of the migration record."""

    async def main() -> None:
        await (await make_store(pg_url)).close()
        store = PostgresStore(pg_url)
        reads: list[str] = []
        read = store._read

        async def counted(sql, params):
            reads.append(sql)
            return await read(sql, params)

        monkeypatch.setattr(store, "_read", counted)
        try:
            await store.verify()
            assert await store.migrate() == []
            assert reads == [store.sql.recorded_migrations] * 2
            assert store._pool is not None
            assert store._pool.get_stats()["pool_size"] == 1
        finally:
            await store.close()

    asyncio.run(main())


@pytest.mark.postgres
def test_postgres_tables_live_in_the_schema_named_by_the_url(pg_url, make_store):
    schema = pg_url.rpartition("%3D")[2]

    async def main() -> None:
        store = await make_store(pg_url)
        await store.close()

    asyncio.run(main())
    rows = asyncio.run(
        _raw(
            pg_url,
            "SELECT table_name, table_type FROM information_schema.tables "
            f"WHERE table_schema = '{schema}' ORDER BY table_name",
        )
    )
    tables = [r[0] for r in rows if r[1] == "BASE TABLE"]
    assert tables == [
        "api_keys",
        "approvals",
        "audit_head",
        "audit_log",
        "blobs",
        "bus_cursors",
        "bus_dead_letters",
        "bus_events",
        "inbox",
        "journal",
        "outbox",
        "runs",
        "schema_migrations",
        "worker_agents",  # 0009
    ]
    assert [r[0] for r in rows if r[1] == "VIEW"] == ["kpis", "run_kpi_facts"]  # 0007


@pytest.mark.postgres
def test_postgres_store_closes_cleanly(pg_url):
    async def main() -> None:
        never_used = PostgresStore(pg_url)
        await never_used.close()
        await never_used.close()
        store = PostgresStore(pg_url, min_size=1, max_size=2)
        await store.migrate()
        assert await store.list_runs() == []
        await store.close()
        await store.close()
        with pytest.raises(StoreUnavailable, match="closed"):
            await store.list_runs()

    asyncio.run(main())


@pytest.mark.postgres
def test_postgres_store_shares_its_pool_between_concurrent_calls(pg_url, make_store):
    """Many concurrent calls on one store, with a pool smaller than the number of calls."""

    async def main() -> None:
        await (await make_store(pg_url)).close()
        store = PostgresStore(pg_url, min_size=1, max_size=3)
        try:
            runs = [make_run(created_at=T0 + i) for i in range(30)]
            await asyncio.gather(*(store.create_run(r, []) for r in runs))
            claimed = await asyncio.gather(
                *(store.claim(Claim(owner=f"w{i}", now=T0 + 100, ttl=60)) for i in range(40))
            )
            got = [r.id for r in claimed if r is not None]
            assert len(got) == len(set(got))
            assert set(got) <= {r.id for r in runs}
            assert len(await store.list_runs(status=RunStatus.PENDING)) == 30
        finally:
            await store.close()

    asyncio.run(main())


async def _raw(url: str, sql: str) -> list[tuple[object, ...]]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(sql)
        return [tuple(row) for row in await cur.fetchall()]


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("change", "error"),
    [
        pytest.param("fence = fence + 1, lease_owner = 'thief'", LeaseLost, id="claimed"),
        pytest.param("version = version + 1", StaleVersion, id="committed"),
    ],
)
def test_postgres_commit_that_waited_for_a_concurrent_writer_is_classified(
    pg_url, make_store, change, error
):
    """The commit starts while another transaction holds the run's row and changes it, so its
    snapshot still shows the old row: the refusal must still be named after what changed."""
    import psycopg

    async def main() -> None:
        store = await make_store(pg_url)
        try:
            run = make_run()
            await store.create_run(run, make_entries(run.id, [{"step": 1}]))
            held = await store.claim(Claim(owner="w1", now=T0, ttl=30))
            assert held is not None
            async with await psycopg.AsyncConnection.connect(pg_url) as blocker:
                await blocker.execute(f"UPDATE runs SET {change} WHERE id = %s", (run.id,))
                late = make_entries(run.id, [big_payload("late")], first_seq=2)
                commit = asyncio.create_task(
                    store.commit(
                        run.id,
                        expected_version=1,
                        fence=held.lease.fence,
                        entries=late,
                        changes=RunChanges(status=RunStatus.RUNNING),
                        now=T0 + 1,
                    )
                )
                blocker_pid = blocker.info.backend_pid
                async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as watch:
                    for _ in range(100_000):  # until the commit waits on the blocker's row lock
                        cur = await watch.execute(
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE %s = ANY(pg_blocking_pids(pid))",
                            (blocker_pid,),
                        )
                        row = await cur.fetchone()
                        assert row is not None
                        if row[0]:
                            break
                        assert not commit.done(), "the commit did not wait for the row lock"
                    else:
                        raise AssertionError("the commit never waited for the row lock")
                await blocker.commit()
            with pytest.raises(error):
                await commit
            assert [e.seq for e in await store.load_journal(run.id)] == [1]
            rows = await _raw(pg_url, "SELECT count(*) FROM blobs")
            assert rows == [(0,)]
        finally:
            await store.close()

    asyncio.run(main())


async def _runs(store: Store, n: int) -> list[Run]:
    runs = [make_run() for _ in range(n)]
    for run in runs:
        await store.create_run(run, [])
    return runs


async def _commit_each_once(store: Store, runs: list[Run]) -> list[int]:
    """One commit per run, all in flight at once."""
    return list(
        await asyncio.gather(
            *(
                store.commit(
                    r.id,
                    expected_version=1,
                    fence=None,
                    entries=make_entries(r.id, [{"n": i}]),
                    changes=RunChanges(),
                    now=T0,
                )
                for i, r in enumerate(runs)
            )
        )
    )


def test_sqlite_groups_the_commits_of_concurrent_runs_into_one_transaction(sqlite_url):
    async def main() -> tuple[list[int], list[str]]:
        store = build_store(sqlite_url)
        await store.migrate()
        runs = await _runs(store, 20)
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)  # type: ignore[attr-defined]
        versions = await _commit_each_once(store, runs)
        store._db.set_trace_callback(None)  # type: ignore[attr-defined]
        await store.close()
        return list(versions), statements

    versions, statements = asyncio.run(main())
    assert versions == [2] * 20
    assert statements.count("COMMIT") == 1, "20 concurrent commits, one transaction, one fsync"
    assert statements.count("SAVEPOINT one_commit") == 20


def test_sqlite_a_lone_commit_takes_no_savepoint_and_its_refusal_writes_nothing(sqlite_url):
    async def main() -> list[str]:
        store = build_store(sqlite_url)
        await store.migrate()
        (run,) = await _runs(store, 1)
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)  # type: ignore[attr-defined]
        assert await _commit_each_once(store, [run]) == [2]
        store._db.set_trace_callback(None)  # type: ignore[attr-defined]
        before = await store.load_journal(run.id), await store.get_run(run.id)
        with pytest.raises(StaleVersion):  # refused after nothing was written
            await store.commit(
                run.id,
                expected_version=1,
                fence=None,
                entries=make_entries(run.id, [{"n": "late"}], first_seq=2),
                changes=RunChanges(),
                now=T0,
            )
        assert (await store.load_journal(run.id), await store.get_run(run.id)) == before
        await store.close()
        return statements

    statements = asyncio.run(main())
    assert statements.count("COMMIT") == 1
    assert not [s for s in statements if "SAVEPOINT" in s or "RELEASE" in s]


def test_payload_and_blob_bytes_are_stored_as_packed(store_url, make_store, raw_execute):
    """What a commit sends (PostgreSQL: binary column arrays) is stored byte for byte: the
    payload's text with quotes, backslashes, braces and commas, and a blob's bytes."""
    tricky = {"q": 'say "hi", {x}\\n \\"', "u": "déjà ✓ \u2028", "e": "", "n": [None, 1.5]}

    async def main() -> tuple[list[PackedEntry], list[tuple[object, ...]]]:
        store = await make_store(store_url)
        (run,) = await _runs(store, 1)
        entries = make_entries(run.id, [tricky, big_payload("b")])
        await store.commit(
            run.id, expected_version=1, fence=None, entries=entries, changes=RunChanges(), now=T0
        )
        loaded = await store.load_journal(run.id)
        assert [e.payload for e in loaded] == [p.entry.payload for p in entries]
        rows = await raw_execute(
            f"SELECT j.seq, j.payload, b.data FROM journal j LEFT JOIN blobs b "
            f"ON j.payload LIKE '%' || b.address || '%' WHERE j.run_id = '{run.id}' "
            "ORDER BY j.seq"
        )
        await store.close()
        return entries, rows

    entries, rows = asyncio.run(main())
    assert [(r[0], r[1]) for r in rows] == [(p.entry.seq, p.text) for p in entries]
    assert rows[0][2] is None
    blob = entries[1].blob
    assert blob is not None
    assert bytes(rows[1][2]) == blob.data  # type: ignore[arg-type]


@pytest.mark.postgres
def test_postgres_groups_the_commits_of_concurrent_runs(pg_url, monkeypatch):
    alone: list[str] = []
    together: list[int] = []
    real_alone = PostgresStore._commit_alone
    real_together = PostgresStore._commit_together

    async def spy_alone(self, request):  # a spy: the real method runs
        alone.append(request.run_id)
        await real_alone(self, request)

    async def spy_together(self, group):
        together.append(len(group))
        await real_together(self, group)

    monkeypatch.setattr(PostgresStore, "_commit_alone", spy_alone)
    monkeypatch.setattr(PostgresStore, "_commit_together", spy_together)

    async def main() -> list[int]:
        store = build_store(pg_url)
        await store.migrate()
        runs = await _runs(store, 20)
        versions = await _commit_each_once(store, runs)
        lone = await store.commit(
            runs[0].id,
            expected_version=2,
            fence=None,
            entries=make_entries(runs[0].id, [{"n": "again"}], first_seq=2),
            changes=RunChanges(),
            now=T0,
        )
        await store.close()
        return [*versions, lone]

    versions = asyncio.run(main())
    assert versions == [2] * 20 + [3]
    assert together == [20], "20 concurrent commits went as one group"
    assert len(alone) == 1, "a lone commit goes alone"


class _PortDefaults(SQLiteStore):
    """A store with the port's own ``page_journal`` (the whole journal read, then cut) and
    ``model_calls`` (the entries that carry calls, decoded): what an adapter without reads of
    its own gives its readers."""

    page_journal = Store.page_journal
    model_calls = Store.model_calls


@pytest.mark.parametrize(
    "check",
    [
        "check_journal_pages_are_parts_of_the_whole_journal",
        "check_model_calls_are_those_of_the_whole_journal",
    ],
)
def test_the_ports_own_journal_reads_pass_the_same_checks(check, sqlite_url):
    async def open_store() -> Store:
        store = _PortDefaults(sqlite_url)
        await store.migrate()
        return store

    async def raw_execute(sql: str) -> list[tuple[object, ...]]:
        raise AssertionError("the check reads through the store only")

    asyncio.run(run_check(check, open_store=open_store, raw_execute=raw_execute))
