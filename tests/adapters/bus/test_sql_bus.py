"""The embedded SQL bus against the bus conformance suite, on SQLite and PostgreSQL, and what is
particular to it."""

from __future__ import annotations

import asyncio

import pytest

from autonomic.adapters.bus.sql import SqlBus
from autonomic.adapters.store.sql import SqlStore
from autonomic.core.event_types import EventTypes
from autonomic.ports.bus import Bus
from autonomic.testing.bus_conformance import CHECKS, ITEM, collect, conformance_types, run_check


async def _open(url: str, make_store, types: EventTypes, stores: list[SqlStore]) -> Bus:
    store = await make_store(url)
    stores.append(store)
    return SqlBus(store, types=types, lease_ttl=1.0)


@pytest.mark.parametrize("check", CHECKS)
def test_sql_bus_conformance(check, store_url, make_store):
    async def go() -> None:
        stores: list[SqlStore] = []
        try:
            await run_check(
                check, open_bus=lambda types: _open(store_url, make_store, types, stores)
            )
        finally:
            for store in stores:
                await store.close()

    asyncio.run(go())


def test_the_suite_is_complete():
    assert len(CHECKS) >= 14
    assert "check_a_dead_members_unacknowledged_events_go_to_another" in CHECKS


def test_a_malformed_envelope_on_the_topic_is_dead_lettered_with_the_reason(
    store_url, make_store, raw_execute
):
    async def go() -> None:
        store = await make_store(store_url)
        bus = SqlBus(store, types=conformance_types())
        try:
            await raw_execute(
                "INSERT INTO bus_events (topic, key, event_id, type, tenant, only_group, dedupe, "
                f"envelope, published_at) VALUES ('{ITEM}', 'k', 'x1', '{ITEM}', 'default', '', "
                "'raw-1', '{not json', 0)"
            )
            await raw_execute(
                "INSERT INTO bus_events (topic, key, event_id, type, tenant, only_group, dedupe, "
                f"envelope, published_at) VALUES ('{ITEM}', 'k', 'x2', '{ITEM}', 'default', '', "
                '\'raw-2\', \'{"specversion": "1.0", "id": "x2", "source": "s", '
                f'"type": "{ITEM}", "data": {{"n": "two"}}}}\', 0)'
            )
            consumer = bus.consumer("g", [ITEM], name="m")
            assert await collect(consumer, 1, deadline=1.0) == []
            letters = await bus.dead_letters(group="g")
            assert [letter.attempts for letter in letters] == [1, 1]
            assert "not JSON" in letters[0].error
            assert letters[0].event.type == "autonomic.bus.undecodable"
            assert "data.n" in letters[1].error
            await consumer.close()
        finally:
            await bus.aclose()
            await store.close()

    asyncio.run(go())


@pytest.mark.postgres
def test_postgres_consumers_wake_on_notify_without_polling(pg_url, make_store):
    """Another process's publish (a raw insert and NOTIFY here) wakes a consumer whose poll
    interval is far longer than the test: LISTEN/NOTIFY, not polling."""
    from autonomic.core.envelope import encode
    from autonomic.testing.bus_conformance import item

    async def go() -> None:
        store = await make_store(pg_url)
        bus = SqlBus(store, types=conformance_types(), poll_interval=600.0)
        try:
            consumer = bus.consumer("g", [ITEM], name="m")
            assert await consumer.poll(wait=0.5) == []  # listening from here on
            event = item(1)
            envelope = encode(event).decode().replace("'", "''")
            import psycopg

            async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
                await conn.execute(
                    "INSERT INTO bus_events (topic, key, event_id, type, tenant, only_group, dedupe, "
                    f"envelope, published_at) VALUES ('{ITEM}', 'k', '{event.id}', '{ITEM}', "
                    f"'default', '', 'n-1', '{envelope}', 0)"
                )
                await conn.execute("NOTIFY autonomic_bus")
            # woken by NOTIFY, the poll returns long before its own wait (or the deadline) ends
            got = await asyncio.wait_for(consumer.poll(wait=600.0), 120.0)
            assert [d.event.id for d in got] == [event.id]
            await consumer.close()
        finally:
            await bus.aclose()
            await store.close()

    asyncio.run(go())


def test_open_bus_reads_its_options_and_refuses_bad_ones(sqlite_url, make_store):
    from autonomic.bootstrap import open_bus
    from autonomic.errors import ConfigError

    async def go() -> None:
        store = await make_store(sqlite_url)
        try:
            bus = open_bus("sql?lease_ttl=2.5&poll_interval=0.01", store)
            assert isinstance(bus, SqlBus)
            assert (bus.lease_ttl, bus.poll_interval) == (2.5, 0.01)
            with pytest.raises(ConfigError, match="unknown option 'ttl'"):
                open_bus("sql?ttl=1", store)
            with pytest.raises(ConfigError, match="lease_ttl must be a positive number"):
                open_bus("sql?lease_ttl=-1", store)
            with pytest.raises(ConfigError, match="unsupported bus URL"):
                open_bus("amqp://x", store)
        finally:
            await store.close()

    asyncio.run(go())
