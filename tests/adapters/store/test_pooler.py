"""PostgreSQL behind pgBouncer's transaction pooling (``pooler=transaction``): what holds there.

Two statements of one client connection may run on two server sessions, so the store keeps no
session state: no prepared statements, a read-only store begins each transaction ``READ ONLY``,
the embedded bus polls instead of listening. The crash and lease tests run through the pooler
too (``tests/engine/test_crash.py``, ``tests/engine/test_lease_check.py``).
"""

import asyncio

import pytest

from autonomic.adapters.bus.sql import SqlBus
from autonomic.adapters.store.postgres import PostgresStore
from autonomic.bootstrap import build_store
from autonomic.core.run import RunChanges
from autonomic.errors import ConfigError
from autonomic.ports.store import Claim
from autonomic.testing.store_conformance import T0, make_entries, make_run


def test_the_pooler_parameter_is_autonomics_and_checked():
    store = PostgresStore(
        "postgresql://u:secret@db.example:6432/app?sslmode=disable&pooler=transaction"
    )
    assert store.transaction_pooled
    assert store.conninfo == "postgresql://u:secret@db.example:6432/app?sslmode=disable"
    assert store.listen_url is None  # a LISTEN needs a session of its own
    direct = PostgresStore("postgresql://u@db.example/app?pooler=session")
    assert not direct.transaction_pooled
    assert direct.listen_url == "postgresql://u@db.example/app"
    with pytest.raises(ConfigError, match="unknown pooler=statement") as info:
        PostgresStore("postgresql://u:secret@db.example/app?pooler=statement")
    assert "pooler=transaction" in str(info.value.hint)
    assert "secret" not in str(info.value)


def test_a_run_is_written_and_resumed_through_the_pooler(pgbouncer_url):
    async def main() -> None:
        store = build_store(pgbouncer_url)
        other = build_store(pgbouncer_url)
        try:
            assert await store.migrate()  # the whole schema, through the pooler
            assert await other.migrate() == []  # found current by one read
            await other.verify()
            run = make_run()
            entries = make_entries(run.id, [{"a": 1}])
            await store.create_run(run, entries)
            claimed = await store.claim(Claim(owner="w1", now=T0 + 1, ttl=30, run_id=run.id))
            assert claimed is not None
            version = claimed.version
            # Many commits on a few server sessions: each one's statement is sent unprepared.
            for i in range(2, 12):
                prev = entries[-1].entry.hash
                entries = make_entries(run.id, [{"a": i}], first_seq=i, prev_hash=prev)
                version = await store.commit(
                    run.id,
                    expected_version=version,
                    fence=claimed.lease.fence,
                    entries=entries,
                    changes=RunChanges(),
                    now=T0 + i,
                )
            journal = await other.load_journal(run.id)
            assert [e.seq for e in journal] == list(range(1, 12))
        finally:
            await store.close()
            await other.close()

    asyncio.run(main())


def test_a_read_only_store_behind_the_pooler_reads_and_the_server_refuses_its_writes(
    pgbouncer_url,
):
    async def main() -> None:
        writer = build_store(pgbouncer_url)
        await writer.migrate()
        run = make_run()
        await writer.create_run(run, make_entries(run.id, [{"a": 1}]))
        reader = build_store(pgbouncer_url, readonly=True)
        try:
            await reader.verify()
            assert await reader.get_run(run.id) == run
            other = make_run()
            with pytest.raises(ConfigError, match="was opened read-only: it writes nothing"):
                await reader.create_run(other, make_entries(other.id, [{"a": 1}]))
            with pytest.raises(ConfigError, match="was opened read-only: it writes nothing"):
                await reader.claim(Claim(owner="w", now=T0 + 100, ttl=30))
            # The writer's session was not made read-only by the reader's transactions.
            await writer.create_run(other, make_entries(other.id, [{"a": 1}]))
            assert await reader.get_run(other.id) == other
        finally:
            await reader.close()
            await writer.close()

    asyncio.run(main())


def test_the_embedded_bus_behind_the_pooler_polls_instead_of_listening(pgbouncer_url):
    store = build_store(pgbouncer_url)
    assert isinstance(store, PostgresStore)
    assert SqlBus(store)._listener is None
