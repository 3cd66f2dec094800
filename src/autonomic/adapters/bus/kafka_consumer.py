"""One member of a Kafka consumer group, with per-key holding of failed events.

Kafka orders a partition, not a key, and commits one offset per partition. The port asks for
more: a failed event holds back later events of *its key* only, while other keys (which share
its partition) keep flowing. So this consumer keeps, per assigned partition, the records it has
fetched and not finished, queued by key:

* only the head of each key's queue is handed out, and only once its retry time has come;
* ``ack`` (or dead-lettering) finishes the head and lets the key's next record go;
* the offset committed for the partition is the lowest *unfinished* offset, so a crash or a
  rebalance redelivers every record not yet finished - and some finished after it, which the
  consumer's inbox deduplicates (at least once, effects once). Commits are made lazily (at the
  next ``poll``, at revocation, at ``close``): a commit is a round trip, and committing late
  only widens what a crash redelivers, never narrows it.

Retries: a failed record waits ``RetryPolicy`` back-off (exponential, with jitter) and is handed
out again; after ``max_attempts`` it is published to the dead-letter topic with its error,
attempt count and first / last failure times, then finished. Attempt counts live in this member:
after a rebalance the new owner counts from 1 again (a poison event gets at most
``max_attempts`` per owner; it cannot loop for ever unless members keep dying on it).

A partition whose held records pile up (a key held for minutes while its partition keeps
producing) is paused at ``max_buffered`` records and resumed when it drains, so memory is
bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from autonomic.core.events import Event
from autonomic.errors import BusUnavailable, EventRejected
from autonomic.ports.bus import Delivery, RetryPolicy

log = logging.getLogger(__name__)

Decode = Callable[[bytes | None], Event]
"""A record's value to its event; raises ``EventRejected`` (with the reason) for anything else."""

DeadLetterSink = Callable[[Event, str, str, int, float, float], Awaitable[None]]
"""(event, topic, error, attempts, first_failure, last_failure) -> published to the DLQ."""


@dataclass(eq=False)
class _Held:
    """One fetched record not yet finished."""

    offset: int
    key: str
    event: Event
    malformed: str | None = None
    attempt: int = 1
    due: float = 0.0
    first_failure: float | None = None
    in_flight: bool = False


@dataclass(eq=False)
class _Partition:
    tp: TopicPartition
    open: dict[int, _Held] = field(default_factory=dict)
    """Unfinished records by offset, in offset order (fetch order)."""
    keys: dict[str, deque[_Held]] = field(default_factory=dict)
    fetched_to: int | None = None
    committed: int | None = None
    paused: bool = False

    def commit_point(self) -> int | None:
        """The offset to commit: the lowest unfinished one, else just past the last fetched."""
        if self.open:
            return next(iter(self.open))
        return self.fetched_to


@dataclass(frozen=True, slots=True)
class _Receipt:
    partition: _Partition
    held: _Held


def backoff(policy: RetryPolicy, failed_attempt: int, rng: random.Random) -> float:
    """Seconds to wait after the ``failed_attempt``-th delivery failed: ``base_delay`` doubled per
    earlier failure, capped at ``max_delay``, drawn from [delay * (1 - jitter), delay]."""
    delay = min(policy.max_delay, policy.base_delay * 2 ** (failed_attempt - 1))
    return float(delay * (1.0 - policy.jitter * rng.random()))


class KafkaConsumer:
    """A ``Consumer`` (see ``autonomic.ports.bus``) over one ``AIOKafkaConsumer``."""

    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        topics: Sequence[str],
        name: str,
        retry: RetryPolicy,
        decode: Decode,
        dead_letter: DeadLetterSink,
        prepare: Callable[[], Awaitable[None]],
        session_timeout_ms: int,
        fetch_max_wait_ms: int = 100,
        max_buffered: int = 1000,
    ) -> None:
        self._topics = list(topics)
        self._retry = retry
        self._decode = decode
        self._dead_letter = dead_letter
        self._prepare = prepare
        self._max_buffered = max_buffered
        self._parts: dict[TopicPartition, _Partition] = {}
        self._rng = random.Random()  # noqa: S311 - jitter, not secrecy
        self._started = False
        self._closed = False
        self._bootstrap = bootstrap
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "group_id": group_id,
            "client_id": name,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": max(100, session_timeout_ms // 5),
            "rebalance_timeout_ms": max(session_timeout_ms, 2000),
            "max_poll_interval_ms": max(300_000, session_timeout_ms),
            "fetch_max_wait_ms": fetch_max_wait_ms,
        }
        self._kafka: Any = None
        self.dead_lettered = 0

    async def _start(self) -> None:
        if self._started:
            return
        await self._prepare()
        kafka = AIOKafkaConsumer(**self._options)
        kafka.subscribe(self._topics, listener=_Listener(self))
        try:
            await kafka.start()
        except (KafkaError, OSError) as exc:
            with contextlib.suppress(Exception):
                await kafka.stop()
            raise self._unavailable(exc) from None
        self._kafka = kafka
        self._started = True

    def _unavailable(self, exc: BaseException) -> BusUnavailable:
        return BusUnavailable(
            f"the Kafka broker at {self._bootstrap} does not answer ({exc})",
            hint="start the broker or fix the kafka:// URL; the member joins once it answers",
        )

    # -- the port ------------------------------------------------------------------------

    async def poll(self, *, max_events: int = 100, wait: float = 1.0) -> list[Delivery]:
        if self._closed:
            raise RuntimeError("poll on a closed consumer")
        await self._start()
        await self._commit(list(self._parts.values()))
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            ready = self._ready(max_events)
            if ready:
                return ready
            now = time.monotonic()
            remaining = deadline - now
            next_due = self._next_due()
            if next_due is not None:
                remaining = min(remaining, max(0.0, next_due - time.time()))
            try:
                batches = await self._kafka.getmany(
                    timeout_ms=int(max(0.0, remaining) * 1000), max_records=max(max_events, 100)
                )
            except KafkaError as exc:
                raise self._unavailable(exc) from None
            for tp, records in batches.items():
                self._take(tp, records)
            await self._settle_malformed()
            if not batches and time.monotonic() >= deadline:
                return self._ready(max_events)

    async def ack(self, delivery: Delivery) -> None:
        receipt = delivery.receipt
        assert isinstance(receipt, _Receipt)
        self._finish(receipt)

    async def fail(self, delivery: Delivery, error: str) -> None:
        receipt = delivery.receipt
        assert isinstance(receipt, _Receipt)
        held = receipt.held
        if self._parts.get(receipt.partition.tp) is not receipt.partition:
            return  # revoked meanwhile: the new owner delivers it again
        now = time.time()
        first = held.first_failure if held.first_failure is not None else now
        if held.attempt >= self._retry.max_attempts:
            held.in_flight = False
            await self._dead_letter(held.event, delivery.topic, error, held.attempt, first, now)
            self.dead_lettered += 1
            self._finish(receipt)
            return
        held.first_failure = first
        held.due = now + backoff(self._retry, held.attempt, self._rng)
        held.attempt += 1
        held.in_flight = False

    async def lag(self) -> int:
        """Records of this member's partitions past its commit point (the lowest unfinished
        offset): up to the broker's end offset, asked now - or past the last record fetched,
        when that is further (a broker may report the end of a batch's first record)."""
        if not self._started or not self._parts:
            return 0
        try:
            ends = await self._kafka.end_offsets(list(self._parts))
        except KafkaError as exc:
            raise self._unavailable(exc) from None
        behind = 0
        for tp, part in self._parts.items():
            done = part.commit_point()
            if done is None:
                done = part.committed if part.committed is not None else 0
            end = max(int(ends.get(tp) or 0), part.fetched_to or 0)
            behind += max(0, end - done)
        return behind

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._started:
            await self._commit(list(self._parts.values()))
            with contextlib.suppress(KafkaError, asyncio.TimeoutError):
                await self._kafka.stop()

    # -- bookkeeping ---------------------------------------------------------------------

    def _take(self, tp: TopicPartition, records: Sequence[Any]) -> None:
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Partition(tp)
        for record in records:
            if part.fetched_to is not None and record.offset < part.fetched_to:
                continue  # fetched again after a seek: already held
            part.fetched_to = record.offset + 1
            key = (record.key or b"").decode(errors="replace")
            try:
                event = self._decode(record.value)
                malformed = None
            except EventRejected as exc:
                event = Event(
                    type="autonomic.bus.malformed",
                    source=f"kafka://{tp.topic}",
                    id=f"{tp.topic}/{tp.partition}/{record.offset}",
                    data={"value": (record.value or b"")[:4096].decode(errors="replace")},
                    correlation_id=key or "(no key)",
                    time=record.timestamp / 1000 if record.timestamp else time.time(),
                )
                malformed = str(exc)
            held = _Held(record.offset, event.correlation_id, event, malformed)
            part.open[record.offset] = held
            part.keys.setdefault(held.key, deque()).append(held)
        if not part.paused and len(part.open) >= self._max_buffered:
            self._kafka.pause(tp)
            part.paused = True

    def _ready(self, limit: int) -> list[Delivery]:
        now = time.time()
        out: list[Delivery] = []
        for part in self._parts.values():
            for queue in part.keys.values():
                head = queue[0]
                if head.in_flight or head.due > now:
                    continue
                if head.malformed is not None:
                    continue  # dead-lettered by _settle_malformed
                head.in_flight = True
                out.append(
                    Delivery(
                        event=head.event,
                        topic=part.tp.topic,
                        attempt=head.attempt,
                        receipt=_Receipt(part, head),
                        first_failure=head.first_failure,
                    )
                )
                if len(out) >= limit:
                    return out
        return out

    async def _settle_malformed(self) -> None:
        """Heads that are not CloudEvents (or break their type's schema) are dead-lettered at
        once, with the reason: retrying cannot make a record well-formed."""
        found = [
            _Receipt(part, queue[0])
            for part in self._parts.values()
            for queue in part.keys.values()
            if queue[0].malformed is not None
        ]
        for receipt in found:
            held = receipt.held
            now = time.time()
            reason = held.malformed or "rejected"
            await self._dead_letter(held.event, receipt.partition.tp.topic, reason, 1, now, now)
            self.dead_lettered += 1
            self._finish(receipt)

    def _next_due(self) -> float | None:
        dues = [
            q[0].due
            for part in self._parts.values()
            for q in part.keys.values()
            if not q[0].in_flight and q[0].due > 0
        ]
        return min(dues) if dues else None

    def _finish(self, receipt: _Receipt) -> None:
        part, held = receipt.partition, receipt.held
        if self._parts.get(part.tp) is not part or part.open.get(held.offset) is not held:
            return  # revoked meanwhile, or finished twice: nothing to do
        del part.open[held.offset]
        queue = part.keys[held.key]
        queue.remove(held)
        if not queue:
            del part.keys[held.key]
        if part.paused and len(part.open) < self._max_buffered // 2:
            self._kafka.resume(part.tp)
            part.paused = False

    async def _commit(self, parts: list[_Partition]) -> None:
        offsets = {}
        for part in parts:
            point = part.commit_point()
            if point is not None and (part.committed is None or point > part.committed):
                offsets[part.tp] = point
        if not offsets:
            return
        try:
            await self._kafka.commit(offsets)
        except KafkaError as exc:  # a rebalance or a broker away: the inbox covers redelivery
            log.info("offset commit deferred: %s", exc)
            return
        for part in parts:
            if part.tp in offsets:
                part.committed = offsets[part.tp]

    async def revoked(self, tps: set[TopicPartition]) -> None:
        """Commit what is finished on partitions leaving this member, then forget them."""
        parts = [self._parts[tp] for tp in tps if tp in self._parts]
        await self._commit(parts)
        for tp in tps:
            self._parts.pop(tp, None)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: KafkaConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._consumer.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        return None
