"""What a PostgreSQL store's first connection is given while the store opens: the statements a
fresh worker's first step runs, prepared, so that step does not pay a new server session's first
look at them (``PostgresStore._prepare_hot``); the commit among them, run for no run in a
transaction rolled back, which writes nothing."""

from __future__ import annotations

import asyncio

from autonomic.adapters.store.postgres import PostgresStore
from autonomic.core.run import RunChanges
from autonomic.ports.store import Claim
from autonomic.testing.store_conformance import T0, make_entries, make_run


async def _audit(store: PostgresStore) -> tuple[int, int, int]:
    pool = await store._get_pool()
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT (SELECT pos FROM audit_head), (SELECT count(*) FROM audit_log),"
            " (SELECT count(*) FROM journal)"
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def test_an_opened_store_has_its_commit_prepared_and_wrote_nothing(pg_url: str) -> None:
    async def main() -> None:
        setup = PostgresStore(pg_url)
        await setup.migrate()
        before = await _audit(setup)
        await setup.close()

        store = PostgresStore(pg_url)
        try:
            await store.verify()
            pool = await store._get_pool()
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT statement FROM pg_prepared_statements")
                prepared = [str(r[0]) for r in await cur.fetchall()]
            assert any("audit_gate" in s and "journal_rows" in s for s in prepared)
            assert await _audit(store) == before  # the trial commit was rolled back

            run = make_run()  # and the prepared commit commits as it did
            entries = make_entries(run.id, [{"a": 1}])
            await store.create_run(run, entries)
            claimed = await store.claim(Claim(owner="w1", now=T0 + 1, ttl=30, run_id=run.id))
            assert claimed is not None
            more = make_entries(run.id, [{"a": 2}], first_seq=2, prev_hash=entries[-1].entry.hash)
            version = await store.commit(
                run.id,
                expected_version=claimed.version,
                fence=claimed.lease.fence,
                entries=more,
                changes=RunChanges(),
                now=T0 + 2,
            )
            assert version == claimed.version + 1
            assert [e.seq for e in await store.load_journal(run.id)] == [1, 2]
        finally:
            await store.close()

    asyncio.run(main())
