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
