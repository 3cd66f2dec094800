"""The Kafka bus against a real Kafka-protocol broker (Tansu): publish, per-key order, ack and
commit, retries with back-off, dead letters (list / show / retry / drop), malformed records, a
broker down at start and mid-run."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from autonomic.adapters.bus.kafka import KafkaBus, KafkaSettings
from autonomic.adapters.bus.kafka_consumer import backoff
from autonomic.bootstrap import open_bus
from autonomic.core.event_types import EventTypes
from autonomic.core.events import Event
from autonomic.errors import BusUnavailable, ConfigError, InvalidInput, NotFound
from autonomic.ports.bus import Consumer, Delivery, RetryPolicy

TYPE = "com.acme.audit.requested"
TYPES = EventTypes()
TYPES.declare(TYPE)


def kafka_bus(url: str) -> KafkaBus:
    return KafkaBus(url, types=TYPES)


def event(n: int, key: str, type_: str = TYPE) -> Event:
    return Event(
        type=type_, source="autonomic://test", id=f"e-{key}-{n}", data={"n": n, "key": key},
        correlation_id=key, time=1_700_000_000.0 + n, subject="s", traceparent=None,
    )  # fmt: skip


async def drain(
    consumer: Consumer,
    until: Callable[[list[Delivery]], bool],
    handle: Callable[[Delivery], Awaitable[None]] | None = None,
    limit: float = 60.0,
) -> list[Delivery]:
    """Poll, hand each delivery to ``handle`` (ack by default), until ``until(seen)``."""
    seen: list[Delivery] = []
    deadline = time.monotonic() + limit
    while not until(seen):
        assert time.monotonic() < deadline, f"gave up after {len(seen)} deliveries"
        for d in await consumer.poll(max_events=50, wait=0.5):
            seen.append(d)
            if handle is None:
                await consumer.ack(d)
            else:
                await handle(d)
    return seen


def test_the_url_is_read_and_refused_with_a_clear_error():
    s = KafkaSettings.from_url("kafka://h:1,h2:2?prefix=p.&partitions=6")
    assert (s.bootstrap, s.prefix, s.partitions) == ("h:1,h2:2", "p.", 6)
    with pytest.raises(ConfigError, match="unknown Kafka URL option 'colour'"):
        KafkaSettings.from_url("kafka://h:1?colour=red")
    with pytest.raises(ConfigError, match="whole number"):
        KafkaSettings.from_url("kafka://h:1?partitions=many")
    with pytest.raises(ConfigError, match="unsupported bus URL"):
        open_bus("amqp://h", store=None)  # type: ignore[arg-type]
    assert isinstance(open_bus("kafka://127.0.0.1:9", store=None), KafkaBus)  # type: ignore[arg-type]


def test_topics_are_named_after_event_types():
    bus = KafkaBus("kafka://h:1?prefix=acme.")
    assert bus.topic_of(TYPE) == "acme.com.acme.audit.requested"
    assert bus.topic_of("a/b c") == "acme.a_b_c"
    with pytest.raises(InvalidInput):
        bus.topic_of("")


def test_backoff_doubles_with_jitter_and_a_cap():
    import random

    policy = RetryPolicy(base_delay=1.0, max_delay=5.0, jitter=0.5)
    rng = random.Random(1)
    for attempt, top in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)]:
        delays = [backoff(policy, attempt, rng) for _ in range(50)]
        assert all(top * 0.5 <= d <= top for d in delays)
        assert len(set(delays)) > 1  # jitter


def test_events_arrive_in_key_order_with_every_attribute(kafka_url):
    async def main() -> None:
        bus = kafka_bus(kafka_url)
        sent = [event(n, f"k{n % 4}") for n in range(40)]
        await bus.publish(sent)
        consumer = bus.consumer("g", [TYPE], name="m1")
        got = await drain(consumer, lambda seen: len(seen) >= 40)
        await consumer.close()
        await bus.aclose()
        assert sorted(d.event.id for d in got) == sorted(e.id for e in sent)
        for key in ("k0", "k1", "k2", "k3"):
            assert [d.event.data["n"] for d in got if d.event.key == key] == [
                e.data["n"] for e in sent if e.key == key
            ]
        first = next(d for d in got if d.event.id == sent[0].id)
        assert first.event == sent[0]
        assert first.attempt == 1

    asyncio.run(main())


def test_acked_events_are_not_delivered_again_and_unacked_are(kafka_url):
    async def main() -> None:
        bus = kafka_bus(kafka_url)
        await bus.publish([event(n, "k") for n in range(10)])
        one = bus.consumer("g", [TYPE], name="m1")
        got = await drain(one, lambda seen: len(seen) >= 5, handle=_hold_after(one, 4))
        # four acked, the fifth handed out and never acked: then the member leaves
        assert [d.event.data["n"] for d in got][:4] == [0, 1, 2, 3]
        await one.close()
        two = bus.consumer("g", [TYPE], name="m2")
        again = await drain(two, lambda seen: len(seen) >= 6)
        await two.close()
        await bus.aclose()
        assert [d.event.data["n"] for d in again] == [4, 5, 6, 7, 8, 9]

    asyncio.run(main())


def _hold_after(consumer: Consumer, n: int) -> Callable[[Delivery], Awaitable[None]]:
    count = 0

    async def handle(d: Delivery) -> None:
        nonlocal count
        count += 1
        if count <= n:
            await consumer.ack(d)

    return handle


def test_a_poison_event_is_retried_with_backoff_then_dead_lettered_while_other_keys_flow(
    kafka_url,
):
    """The poison key's later event waits behind it (its conversation stays in order) and is
    delivered once the poison is dead-lettered; the other key flows meanwhile."""

    async def main() -> None:
        bus = kafka_bus(kafka_url)
        policy = RetryPolicy(max_attempts=3, base_delay=0.2, max_delay=1.0, jitter=0.0)
        sent = [event(0, "bad"), event(1, "bad"), *(event(n, "good") for n in range(2, 12))]
        await bus.publish(sent)
        consumer = bus.consumer("g", [TYPE], name="m1", retry=policy)
        log: list[tuple[str, int, float]] = []

        async def handle(d: Delivery) -> None:
            log.append((d.event.id, d.attempt, time.monotonic()))
            if d.event.id == "e-bad-0":
                await consumer.fail(d, "ValueError: field 'n' is poisonous")
            else:
                await consumer.ack(d)

        await drain(consumer, lambda seen: any(d.event.id == "e-bad-1" for d in seen), handle)
        await consumer.close()

        poison = [(a, t) for i, a, t in log if i == "e-bad-0"]
        assert [a for a, _ in poison] == [1, 2, 3]
        gaps = [b - a for (_, a), (_, b) in itertools.pairwise(poison)]
        assert gaps[0] >= 0.2
        assert gaps[1] >= 0.4
        order = [i for i, _, _ in log]
        goods = [i for i in order if i.startswith("e-good")]
        assert len(goods) == 10
        # other keys flowed before the poison was given up; its own next event waited for it
        assert order.index("e-good-11") < order.index("e-bad-1")
        assert order.index("e-bad-1") > max(i for i, x in enumerate(order) if x == "e-bad-0")

        letters = await bus.dead_letters()
        assert len(letters) == 1
        letter = letters[0]
        assert letter.event == sent[0]
        assert (letter.group, letter.attempts) == ("g", 3)
        assert letter.error == "ValueError: field 'n' is poisonous"
        assert letter.first_failure < letter.last_failure
        assert letter.topic == bus.topic_of(TYPE)
        assert await bus.dead_letter(letter.id) == letter
        await bus.aclose()

    asyncio.run(main())


def test_dead_letters_are_retried_to_their_group_only_and_dropped_with_a_reason(kafka_url):
    async def main() -> None:
        bus = kafka_bus(kafka_url)
        policy = RetryPolicy(max_attempts=1)
        await bus.publish([event(0, "a"), event(1, "b")])
        c = bus.consumer("g", [TYPE], name="m1", retry=policy)

        async def fail_all(d: Delivery) -> None:
            await c.fail(d, "boom")

        await drain(c, lambda seen: len(seen) >= 2, fail_all)
        letters = {x.event.id: x for x in await bus.dead_letters(group="g")}
        assert set(letters) == {"e-a-0", "e-b-1"}
        assert await bus.dead_letters(group="other") == []

        await bus.retry_dead_letter(letters["e-a-0"].id)
        again = await drain(c, lambda seen: len(seen) >= 1)
        assert [(d.event.id, d.attempt) for d in again] == [("e-a-0", 1)]
        await c.close()
        # another group reading the same type sees each event once, not the retry
        other = bus.consumer("h", [TYPE], name="m2")
        seen = await drain(other, lambda seen: len(seen) >= 2)
        assert sorted(d.event.id for d in seen) == ["e-a-0", "e-b-1"]
        assert await other.poll(wait=0.5) == []
        await other.close()

        with pytest.raises(InvalidInput, match="reason"):
            await bus.drop_dead_letter(letters["e-b-1"].id, reason=" ")
        await bus.drop_dead_letter(letters["e-b-1"].id, reason="known bad input")
        assert await bus.dead_letters() == []
        with pytest.raises(NotFound, match="dlq list"):
            await bus.dead_letter(letters["e-b-1"].id)
        await bus.aclose()

    asyncio.run(main())


def test_a_malformed_record_is_dead_lettered_with_the_reason(kafka_url):
    async def main() -> None:
        bus = kafka_bus(kafka_url)
        topic = bus.topic_of(TYPE)
        await bus.ensure_topics([topic])
        raw = AIOKafkaProducer(bootstrap_servers=bus.settings.bootstrap)
        await raw.start()
        await raw.send_and_wait(topic, value=b"not json", key=b"x", headers=[])
        await raw.stop()
        await bus.publish([event(1, "x")])
        c = bus.consumer("g", [TYPE], name="m1")
        got = await drain(c, lambda seen: len(seen) >= 1)
        await c.close()
        assert [d.event.id for d in got] == ["e-x-1"]
        [letter] = await bus.dead_letters()
        assert "not JSON" in letter.error, letter.error
        assert letter.event.data == {"value": "not json"}
        await bus.aclose()

    asyncio.run(main())


def test_a_broker_down_at_start_is_a_clear_error(private_broker):
    async def main() -> Any:
        bus = kafka_bus(private_broker.url)  # nothing listens on that port yet
        with pytest.raises(BusUnavailable) as info:
            await bus.publish([event(0, "k")])
        consumer = bus.consumer("g", [TYPE], name="m1")
        with pytest.raises(BusUnavailable, match="does not answer"):
            await consumer.poll(wait=0.1)
        await bus.aclose()
        return info.value

    error = asyncio.run(main())
    assert f"127.0.0.1:{private_broker.port} does not answer" in str(error)
    assert error.retryable


def test_a_broker_gone_mid_run_refuses_publish_until_it_is_back(private_broker):
    """What the outbox relay sees: publish raises (nothing accepted) while the broker is away,
    and the same bus publishes again once it is back."""

    async def main() -> None:
        private_broker.start()
        bus = kafka_bus(private_broker.url)
        await bus.publish([event(0, "k")])
        private_broker.stop()
        with pytest.raises(BusUnavailable):
            await bus.publish([event(1, "k")])
        private_broker.start()
        await _publish_when_back(bus, event(1, "k"))
        c = bus.consumer("g", [TYPE], name="m1")
        got = await drain(c, lambda seen: len(seen) >= 1)
        assert [d.event.id for d in got] == ["e-k-1"]
        await c.close()
        await bus.aclose()

    asyncio.run(main())


async def _publish_when_back(bus: KafkaBus, e: Event) -> None:
    """The relay's loop in small: retry until the broker accepts (bounded)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            await bus.publish([e])
            return
        except BusUnavailable:
            assert time.monotonic() < deadline


def test_the_outbox_keeps_a_runs_events_while_the_broker_is_down(private_broker, tmp_path):
    """A run's committed events wait in the outbox while the broker is down (the relay's publish
    is refused, nothing is marked sent) and reach Kafka once it is up."""
    from autonomic.adapters.model.scripted import ScriptedModel
    from autonomic.bootstrap import build_store
    from autonomic.core import event_types as et
    from autonomic.engine.agent import Agent, AgentRegistry
    from autonomic.engine.executor import Engine
    from autonomic.engine.outbox import OutboxHook, Relay
    from autonomic.governance.runaway.gate import Runaway

    async def main() -> None:
        store = build_store(f"sqlite:///{tmp_path / 'runs.db'}")
        await store.migrate()
        model = ScriptedModel([{"content": "done"}])
        engine = Engine(
            store,
            AgentRegistry([Agent(name="a", instructions="answer")]),
            lambda spec: model,
            runaway=Runaway(enabled=False),
            hooks=[OutboxHook()],
        )
        run = await engine.start("a", "go")
        await engine.run_to_end(run.id)
        bus = KafkaBus(private_broker.url)
        relay = Relay(store, bus)
        with pytest.raises(BusUnavailable):
            await relay.relay_once()
        pending = [item.event.type for item in await store.outbox_pending()]
        assert pending == [et.RUN_STARTED, et.RUN_COMPLETED]
        private_broker.start()
        deadline = time.monotonic() + 60
        while True:  # the relay's own loop retries with a back-off; here, bounded
            try:
                assert await relay.drain() == 2
                break
            except BusUnavailable:
                assert time.monotonic() < deadline
        assert await store.outbox_pending() == []
        consumer = bus.consumer("g", [et.RUN_STARTED, et.RUN_COMPLETED], name="m1")
        got = await drain(consumer, lambda seen: len(seen) >= 2)
        # two types, two topics: order holds per key within a topic, not across (docs/kafka.md)
        assert sorted(d.event.type for d in got if d.event.data["run_id"] == run.id) == sorted(
            pending
        )
        assert {d.event.correlation_id for d in got} == {run.id}
        await bus.aclose()
        await store.close()

    asyncio.run(main())
