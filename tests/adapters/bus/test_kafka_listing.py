"""Listing published events on Kafka (``kafka_listing``) where it differs from the embedded bus:
the end of a partition found past Tansu's short ListOffsets answer, a page bounded by its time
budget whose cursor goes on where it stopped, and records that are not our events skipped."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from autonomic.adapters.bus.kafka import KafkaBus
from autonomic.errors import BusUnavailable
from autonomic.testing.bus_conformance import ITEM, conformance_types, item, listing


def test_the_newest_events_are_found_past_a_short_list_offsets_answer(kafka_url):
    """Two batches on one partition: Tansu's ListOffsets says the second batch's base offset
    plus one, and the fetch's high watermark the real end; the first page must start at the
    newest event, not at the offset ListOffsets names."""

    async def go():
        bus = KafkaBus(kafka_url, types=conformance_types())
        try:
            await bus.publish([item(n, "one") for n in range(10)])
            await bus.publish([item(n, "one") for n in range(10, 20)])
            first = await bus.list_events(limit=1)
            assert [x.event.data["n"] for x in first.events] == [19]
            shown = await listing(bus, limit=3)
            assert [x.event.data["n"] for x in shown] == list(range(19, -1, -1))
        finally:
            await bus.aclose()

    asyncio.run(go())


def test_a_page_cut_short_by_its_budget_leaves_a_cursor_that_goes_on(kafka_url):
    async def go():
        hurried = KafkaBus(kafka_url + "&list_budget_ms=1", types=conformance_types())
        bus = KafkaBus(kafka_url, types=conformance_types())
        try:
            events = [item(n, f"k{n % 4}", tenant="acme") for n in range(12)]
            await bus.publish(events)
            short = await hurried.list_events(tenant="acme", limit=100)
            assert len(short.events) < 12, "a 1 ms budget read everything"
            assert short.cursor is not None, "a page cut short must say where to go on"
            rest, cursor = [], short.cursor
            while cursor is not None:
                page = await bus.list_events(tenant="acme", limit=100, cursor=cursor)
                rest += page.events
                cursor = page.cursor
            shown = [x.event for x in short.events + rest]
            assert sorted(e.data["n"] for e in shown) == list(range(12)), "lost or repeated"
        finally:
            await hurried.aclose()
            await bus.aclose()

    asyncio.run(go())


def test_records_that_are_not_our_events_are_skipped(kafka_url):
    async def go():
        bus = KafkaBus(kafka_url, types=conformance_types())
        try:
            await bus.publish([item(1, "k", tenant="acme")])
            producer = AIOKafkaProducer(bootstrap_servers=bus.settings.bootstrap, acks="all")
            await producer.start()
            try:
                topic = bus.topic_of(ITEM)
                for junk in (b"\xff\xfe", b"[]", b'{"specversion":"1.0"}', None):
                    await producer.send_and_wait(topic, value=junk, key=b"k")
                await producer.send_and_wait(bus.dlq_topic, value=b"{}", key=b"k")
            finally:
                await producer.stop()
            await bus.publish([item(2, "k", tenant="acme")])
            shown = await listing(bus, limit=2)
            assert [x.event.data["n"] for x in shown] == [2, 1]
        finally:
            await bus.aclose()

    asyncio.run(go())


def test_a_listing_on_a_broker_that_stopped_is_unavailable_not_a_hang(private_broker):
    async def go():
        private_broker.start()
        bus = KafkaBus(private_broker.url, types=conformance_types())
        try:
            await bus.publish([item(1, "k", tenant="acme")])
            assert len((await bus.list_events(tenant="acme")).events) == 1
            private_broker.stop()
            with pytest.raises(BusUnavailable, match="does not answer"):
                await bus.list_events(tenant="acme")
        finally:
            await bus.aclose()

    asyncio.run(go())
