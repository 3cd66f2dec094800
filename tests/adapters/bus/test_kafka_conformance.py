"""The Kafka bus against the bus conformance suite, on the broker ``scripts/test`` starts
(Tansu), each check under a topic prefix of its own."""

from __future__ import annotations

import asyncio

import pytest

from autonomic.adapters.bus.kafka import KafkaBus
from autonomic.core.event_types import EventTypes
from autonomic.ports.bus import Bus
from autonomic.testing.bus_conformance import CHECKS, run_check


@pytest.mark.parametrize("check", CHECKS)
def test_kafka_bus_conformance(check, kafka_url):
    async def open_bus(types: EventTypes) -> Bus:
        return KafkaBus(kafka_url, types=types)

    asyncio.run(run_check(check, open_bus=open_bus))
