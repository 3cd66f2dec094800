"""The event bus over Kafka (``kafka://host:port[,host:port]``), through aiokafka.

Why aiokafka rather than confluent-kafka: the bus port is asyncio, and aiokafka is asyncio all the
way down - a poll, a commit, a publish are awaitables, and the rebalance listener is a coroutine,
so a member commits what it has finished *before* its partitions move to another member, inside
the rebalance. confluent-kafka (librdkafka) is faster at raw producing, but its poll and flush
block the event loop (a thread per consumer to hide it) and its revocation callback runs inside
a blocking poll. Both were tried against Tansu 0.6.0 (the test broker): both produce, join groups
and commit; aiokafka's members join and rebalance in about a second with a 2 s session.
aiokafka ships no type information (mypy reads it as ``Any``: pyproject's override).

Topics (the mapping ``topic_of`` implements):

* an event type's topic is ``PREFIX + type`` (``com.acme.audit.requested`` stays as it is;
  any character Kafka refuses in a topic name becomes ``_``); created on first use with
  ``partitions`` partitions. ``PREFIX`` is empty unless the URL says ``?prefix=...``.
* ``PREFIX + "autonomic.dlq"``: the dead letters (one partition; one JSON record per letter:
  the original event in structured CloudEvents form, topic, group, error, attempts, first and
  last failure times);
* ``PREFIX + "autonomic.dlq.settled"``: one small record per ``dlq retry`` / ``dlq drop``
  (letter, action, reason, when). ``dead_letters`` reads both topics back from the beginning and
  shows the letters nothing has settled - the dead letters are stored in Kafka alone;
* ``PREFIX + "autonomic.retry." + group``: a retried letter's event, delivered to that group only
  (every member of the group also consumes it), so other groups never see it twice.

A record is one event in CloudEvents' structured mode (the Kafka protocol binding): the value is
the JSON envelope of ``autonomic.core.envelope`` (the same bytes the embedded bus stores; one
codec, through the ``cloudevents`` SDK), the ``content-type`` header says
``application/cloudevents+json``. Events are checked against their declared types when published
(a bad batch is refused whole) and when consumed: what is not a CloudEvent of a known type with
valid ``data`` is dead-lettered at once with the reason (retrying cannot mend it).

Records are keyed by the correlation id, so one conversation stays on one partition of a
topic, in order. Order is per topic, so per event type: a consumer of two types may see a key's
events of different types in either order (docs/kafka.md).
Producers ask for ``acks=all``: ``publish`` returns once the broker has the events. A broker that
is down (at start or mid-run) makes ``publish`` raise ``BusUnavailable`` after
``request_timeout_ms``; nothing was accepted, so the outbox keeps the events and the relay tries
again.

URL options: ``prefix``, ``partitions`` (default 3), ``session_timeout_ms`` (default 10000; the
tests use 2000 so a killed member's partitions move quickly), ``request_timeout_ms`` (5000),
``fetch_max_wait_ms`` (100: how long the broker may hold an idle fetch; Kafka answers a held fetch
as soon as data arrives, Tansu 0.6 only when the wait ends, so on Tansu it bounds the latency -
the benchmark uses 5), ``list_budget_ms`` (2000: the most one ``list_events`` page reads for,
``kafka_listing``).

Listing what was published (``list_events``, the service's ``GET /events``) reads the event-type
topics back with a reader of no group: ``kafka_listing``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from autonomic.adapters.bus.kafka_consumer import KafkaConsumer
from autonomic.adapters.bus.kafka_listing import Filters, KafkaListing, Readers, Source
from autonomic.core.envelope import CONTENT_TYPE, decode, encode
from autonomic.core.event_types import EventTypes
from autonomic.core.events import Event
from autonomic.errors import BusUnavailable, ConfigError, EventRejected, InvalidInput, NotFound
from autonomic.ports.bus import Consumer, DeadLetter, EventPage, RetryPolicy

if logging.getLogger("aiokafka").level == logging.NOTSET:
    # aiokafka logs each failed connection attempt at ERROR; the bus reports a broker it cannot
    # reach once, as ``BusUnavailable`` with what to do. Configure the logger to see them again.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

_TOPIC_CHARS = re.compile(r"[^a-zA-Z0-9._-]")
_GROUP_CHARS = re.compile(r"[^a-zA-Z0-9._-]")


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """What a ``kafka://`` URL says."""

    bootstrap: str
    prefix: str = ""
    partitions: int = 3
    session_timeout_ms: int = 10_000
    request_timeout_ms: int = 5_000
    fetch_max_wait_ms: int = 100
    list_budget_ms: int = 2_000

    @classmethod
    def from_url(cls, url: str) -> KafkaSettings:
        parts = urlsplit(url)
        if parts.scheme != "kafka" or not parts.netloc:
            raise ConfigError(
                f"not a Kafka bus URL: {url!r}", hint="use kafka://host:9092[,host2:9092]"
            )
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        numeric = (
            "partitions",
            "session_timeout_ms",
            "request_timeout_ms",
            "fetch_max_wait_ms",
            "list_budget_ms",
        )
        unknown = set(query) - {"prefix", *numeric}
        if unknown:
            raise ConfigError(
                f"unknown Kafka URL option {sorted(unknown)[0]!r}",
                hint="options: prefix, " + ", ".join(numeric),
            )
        try:
            numbers = {k: int(query[k]) for k in numeric if k in query}
        except ValueError:
            raise ConfigError(f"a Kafka URL option in {url!r} is not a whole number") from None
        if any(n <= 0 for n in numbers.values()):
            raise ConfigError("Kafka URL options partitions and *_ms must be positive")
        prefix = query.get("prefix", "")
        if _TOPIC_CHARS.search(prefix):
            raise ConfigError(f"Kafka topic prefix {prefix!r} may hold only a-z A-Z 0-9 . _ -")
        return cls(bootstrap=parts.netloc, prefix=prefix, **numbers)


@dataclass(frozen=True, slots=True)
class _Letter:
    letter: DeadLetter
    offset: int


class KafkaBus:
    """A ``Bus`` (see ``autonomic.ports.bus``) over a Kafka cluster."""

    messaging_system = "kafka"
    """What the publish and consume spans name as ``messaging.system``."""

    def __init__(self, url: str, *, types: EventTypes | None = None) -> None:
        self.settings = KafkaSettings.from_url(url)
        self.types = types or EventTypes.default()
        self._consumers: list[KafkaConsumer] = []
        self._producer: AIOKafkaProducer | None = None
        self._producer_lock = asyncio.Lock()
        self._topics: set[str] = set()
        self.dlq_topic = self.settings.prefix + "autonomic.dlq"
        self.settled_topic = self.settings.prefix + "autonomic.dlq.settled"
        self._readers = Readers(
            Source(
                bootstrap=self.settings.bootstrap,
                prefix=self.settings.prefix,
                topic_of=self.topic_of,
                own_topics=frozenset((self.dlq_topic, self.settled_topic)),
                retry_prefix=self.settings.prefix + "autonomic.retry.",
                fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
                request_timeout_ms=self.settings.request_timeout_ms,
            )
        )

    # -- topics --------------------------------------------------------------------------

    def topic_of(self, event_type: str) -> str:
        if not event_type:
            raise InvalidInput("an event type is empty", hint="use a reverse-DNS name")
        return (self.settings.prefix + _TOPIC_CHARS.sub("_", event_type))[:249]

    def retry_topic(self, group: str) -> str:
        return (self.settings.prefix + "autonomic.retry." + _GROUP_CHARS.sub("_", group))[:249]

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create the topics not yet known to exist (an existing one is left as it is)."""
        missing = [t for t in dict.fromkeys(topics) if t not in self._topics]
        if not missing:
            return
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.settings.bootstrap,
            request_timeout_ms=self.settings.request_timeout_ms,
        )
        try:
            await asyncio.wait_for(admin.start(), self._timeout())
            for topic in missing:
                one = topic in (self.dlq_topic, self.settled_topic)
                new = NewTopic(topic, 1 if one else self.settings.partitions, 1)
                with contextlib.suppress(TopicAlreadyExistsError):
                    await asyncio.wait_for(admin.create_topics([new]), self._timeout())
        except (TimeoutError, KafkaError, OSError) as exc:
            raise self._unavailable(exc) from None
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        self._topics.update(missing)

    # -- producing -----------------------------------------------------------------------

    async def _producer_started(self) -> AIOKafkaProducer:
        async with self._producer_lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.settings.bootstrap,
                    acks="all",
                    linger_ms=1,
                    request_timeout_ms=self.settings.request_timeout_ms,
                )
                try:
                    await asyncio.wait_for(producer.start(), self._timeout())
                except (TimeoutError, KafkaError, OSError) as exc:
                    with contextlib.suppress(Exception):
                        await producer.stop()
                    raise self._unavailable(exc) from None
                self._producer = producer
            return self._producer

    async def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        for event in events:  # the whole batch is refused before any of it is sent
            self.types.check(event)
        await self._send([self._record(e, self.topic_of(e.type)) for e in events])

    @staticmethod
    def _record(event: Event, topic: str) -> tuple[str, bytes, bytes, Any]:
        """(topic, key, value, headers): structured mode, keyed by the correlation id."""
        headers = [("content-type", CONTENT_TYPE.encode())]
        return topic, event.correlation_id.encode(), encode(event), headers

    def _decode(self, value: bytes | None) -> Event:
        if value is None:
            raise EventRejected("the record has no value (not a CloudEvent)")
        event = decode(value)
        self.types.check(event)
        return event

    async def _send(self, records: Sequence[tuple[str, bytes, bytes, Any]]) -> None:
        """Send every record and wait until the broker has each (all or raise)."""
        await self.ensure_topics([r[0] for r in records])
        producer = await self._producer_started()
        try:
            futures = [
                await producer.send(topic, value=value, key=key, headers=headers)
                for topic, key, value, headers in records
            ]
            await asyncio.wait_for(asyncio.gather(*futures), self._timeout())
        except (TimeoutError, KafkaError, OSError) as exc:
            self._topics.clear()  # a broker that comes back (a new cluster) may lack them
            raise self._unavailable(exc) from None

    def consumer(
        self,
        group: str,
        types: Sequence[str],
        *,
        name: str,
        retry: RetryPolicy | None = None,
    ) -> Consumer:
        if not group or not types:
            raise InvalidInput("a consumer needs a group and at least one event type")
        topics = [self.topic_of(t) for t in types] + [self.retry_topic(group)]

        async def prepare() -> None:
            await self.ensure_topics(topics)

        async def dead_letter(
            event: Event, topic: str, error: str, attempts: int, first: float, last: float
        ) -> None:
            letter = {
                "id": uuid.uuid4().hex[:16],
                "event": json.loads(encode(event)),
                "topic": topic,
                "group": group,
                "error": error[:4000],
                "attempts": attempts,
                "first_failure": first,
                "last_failure": last,
            }
            value = json.dumps(letter, ensure_ascii=False).encode()
            await self._send([(self.dlq_topic, event.correlation_id.encode(), value, [])])

        member = KafkaConsumer(
            bootstrap=self.settings.bootstrap,
            group_id=self.settings.prefix + group,
            topics=topics,
            name=name,
            retry=retry or RetryPolicy(),
            decode=self._decode,
            dead_letter=dead_letter,
            prepare=prepare,
            session_timeout_ms=self.settings.session_timeout_ms,
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
        )
        self._consumers.append(member)
        return member

    # -- listing -------------------------------------------------------------------------

    async def list_events(
        self,
        *,
        tenant: str | None = None,
        event_type: str | None = None,
        correlation: str | None = None,
        since: float | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> EventPage:
        """Read the event-type topics back, newest first, within ``list_budget_ms``
        (``kafka_listing``: no consumer group; a page may be short and still have a cursor)."""
        listing = KafkaListing(
            self._readers.source,
            Filters(tenant, event_type, correlation, since),
            limit=limit,
            budget=self.settings.list_budget_ms / 1000,
            start_timeout=self._timeout(),
        )
        try:
            # The budget bounds the reading; this bounds everything else too (a broker that
            # stops answering mid-page), so a request never hangs.
            bound = self.settings.list_budget_ms / 1000 + 2 * self._timeout()
            return await asyncio.wait_for(listing.page(self._readers, cursor), bound)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise self._unavailable(exc) from None

    # -- dead letters --------------------------------------------------------------------

    async def _read_all(self, topic: str) -> list[tuple[int, Any]]:
        """Every record of a one-partition topic, from the beginning to the current end.

        The end is the high watermark a fetch response reports (Tansu's ListOffsets answer is
        wrong; its fetch responses are right), so this reads until the position reaches it.
        """
        await self.ensure_topics([topic])
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
            request_timeout_ms=self.settings.request_timeout_ms,
        )
        tp = TopicPartition(topic, 0)
        out: list[tuple[int, Any]] = []
        deadline = time.monotonic() + self._timeout()
        try:
            await asyncio.wait_for(reader.start(), self._timeout())
            reader.assign([tp])
            await reader.seek_to_beginning(tp)
            while True:
                batch = await reader.getmany(tp, timeout_ms=100)
                for record in batch.get(tp, []):
                    with contextlib.suppress(ValueError, UnicodeDecodeError):
                        out.append((record.offset, json.loads(record.value)))
                high = reader.highwater(tp)
                if high is not None and await reader.position(tp) >= high:
                    return out
                if time.monotonic() > deadline:
                    raise TimeoutError
        except (TimeoutError, KafkaError, OSError) as exc:
            raise self._unavailable(exc) from None
        finally:
            with contextlib.suppress(Exception):
                await reader.stop()

    async def _open_letters(self) -> list[_Letter]:
        settled: dict[tuple[str, str], int] = {}
        for _, mark in await self._read_all(self.settled_topic):
            with contextlib.suppress(KeyError, TypeError):
                pair = (mark["group"], mark["event_id"])
                settled[pair] = max(settled.get(pair, -1), int(mark["upto"]))
        seen: set[tuple[str, str]] = set()
        letters = []
        for offset, raw in await self._read_all(self.dlq_topic):
            try:
                event = decode(json.dumps(raw["event"]))
                letter = DeadLetter(
                    id=raw["id"],
                    event=event,
                    tenant=event.tenant,
                    topic=raw["topic"],
                    group=raw["group"],
                    error=raw["error"],
                    attempts=int(raw["attempts"]),
                    first_failure=float(raw["first_failure"]),
                    last_failure=float(raw["last_failure"]),
                )
            except (KeyError, TypeError, ValueError, EventRejected):
                continue  # not a letter of ours
            pair = (letter.group, letter.event.id)
            if offset <= settled.get(pair, -1) or pair in seen:
                continue  # settled, or the same failure dead-lettered twice (a redelivery)
            seen.add(pair)
            letters.append(_Letter(letter, offset))
        return letters

    async def dead_letters(
        self, *, group: str | None = None, tenant: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        letters = [x.letter for x in await self._open_letters()]
        return [
            x
            for x in letters
            if (group is None or x.group == group) and (tenant is None or x.tenant == tenant)
        ][:limit]

    async def _find(self, letter_id: str) -> _Letter:
        for found in await self._open_letters():
            if found.letter.id == letter_id:
                return found
        raise NotFound(f"no dead letter {letter_id!r}", hint="list them: autonomic dlq list")

    async def dead_letter(self, letter_id: str) -> DeadLetter:
        return (await self._find(letter_id)).letter

    async def _settle(self, found: _Letter, action: str, reason: str) -> None:
        letter = found.letter
        mark = {
            "letter": letter.id,
            "group": letter.group,
            "event_id": letter.event.id,
            "upto": found.offset,
            "action": action,
            "reason": reason,
            "at": time.time(),
        }
        value = json.dumps(mark, ensure_ascii=False).encode()
        await self._send([(self.settled_topic, letter.id.encode(), value, [])])

    async def retry_dead_letter(self, letter_id: str) -> None:
        found = await self._find(letter_id)
        event = found.letter.event
        await self._send([self._record(event, self.retry_topic(found.letter.group))])
        await self._settle(found, "retried", "")

    async def drop_dead_letter(self, letter_id: str, *, reason: str) -> None:
        if not reason.strip():
            raise InvalidInput("dropping a dead letter needs a reason", hint="--reason TEXT")
        await self._settle(await self._find(letter_id), "dropped", reason)

    async def aclose(self) -> None:
        await self._readers.aclose()
        for member in self._consumers:
            await member.close()
        self._consumers.clear()
        if self._producer is not None:
            producer, self._producer = self._producer, None
            with contextlib.suppress(Exception):
                await producer.stop()

    # -- errors --------------------------------------------------------------------------

    def _timeout(self) -> float:
        return self.settings.request_timeout_ms / 1000 + 1.0

    def _unavailable(self, exc: BaseException) -> BusUnavailable:
        what = type(exc).__name__ if isinstance(exc, asyncio.TimeoutError) else str(exc)
        return BusUnavailable(
            f"the Kafka broker at {self.settings.bootstrap} does not answer ({what})",
            hint="start the broker or fix the kafka:// URL; the outbox keeps events until it is back",
        )
