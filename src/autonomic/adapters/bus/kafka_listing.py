"""Listing published events on Kafka (``KafkaBus.list_events``), newest first, a bounded page at a
time, without a consumer group.

Kafka has no query language and no order across partitions, so a listing reads. One reader per
request (borrowed from ``Readers``, started ones kept between requests), with **no group** (nothing is committed, no member joins or leaves, no group's offsets
move): it is assigned the partitions of the event-type topics (one topic with ``type=``; else
every topic of the bus's prefix but its own dead-letter and retry topics) and reads each
partition **backwards**, a chunk at a time: seek to ``upper - chunk``, read forward to ``upper``,
keep the events that pass the filters (tenant, type, correlation id, ``since``) and move ``upper``
down. The partitions' newest-first streams are merged by the record's timestamp (when the broker
accepted it, as the embedded bus orders by publish order); a partition whose kept events are used
up is read further back before anything older is emitted, so the page is in order.

What bounds a request: ``limit`` events, and a **time budget** (``list_budget_ms``, default
2000). A chunk starts at twice the page's share of each partition (``2 * (limit + 1) /
partitions``, at least 8) and doubles each time a partition is read again (a filter that keeps few
events costs reads, not requests); when one partition runs dry, every partition close to dry is
read back in the same round trip. Records are decoded only when the merge reaches them, and the
filters are tried on the parsed JSON first (the CloudEvents SDK's decode costs ten times more). When the budget runs out, the
page holds what is in order so far and the cursor says where each partition stopped: the next
request goes on from there, so a page may be short, or empty, and still have a cursor.

Where a partition ends: a first page starts each partition at the end ListOffsets reports, less a
chunk, and reads forward until its position reaches the high watermark **of a fetch response**.
Tansu 0.6 (the test broker) answers ListOffsets with the base offset of the last batch plus one,
short of the end when that batch holds several records, while its fetch responses carry the right
high watermark; reading on past ListOffsets' answer until a fetch says the end is reached finds
the records it misses. Later pages never look at the end: they read below the offsets in the
cursor.

What is never returned: another tenant's events (the tenant filter is applied to every event
decoded here, before anything leaves the adapter, whatever the cursor says), and anything that is
not one of our CloudEvents (no value, not JSON, not a CloudEvent, a tenant that is not a string):
skipped, counted in ``skipped``, never a failure of the listing.

The cursor (``event_cursor``) holds, per topic, the offset below which each partition still has
unread events (``-1``: nothing left), bound to the filters it was made for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from autonomic.adapters.bus import event_cursor
from autonomic.core.envelope import decode
from autonomic.core.events import Event
from autonomic.errors import EventRejected
from autonomic.ports.bus import EventPage, Listed

FROM_END = -2
"""A cursor's offset for a partition the budget ended the page before reading: from its end."""
MIN_CHUNK = 8
"""The fewest records a partition is read back by."""
MAX_CHUNK = 5_000
"""The most records one partition is read back by in one step."""
FETCH_BYTES = 256 * 1024
"""Bytes a fetch may bring per partition (a chunk read back needs little; the default is 1 MiB)."""


@dataclass(frozen=True, slots=True)
class _Found:
    stamp: int
    """The record's timestamp (ms): the merge order."""
    offset: int
    value: bytes | None
    """The record's value, decoded only when the merge reaches it (see ``_event``)."""


@dataclass
class _Partition:
    tp: TopicPartition
    upper: int | None
    """Every offset at or above it is read (or not part of this listing); ``None``: the end, not
    yet known (a first page)."""
    chunk: int
    done: bool = False
    found: list[_Found] = field(default_factory=list)
    """Records read (published since ``since``), not yet looked at; ascending offsets (the
    newest last)."""

    def resume_at(self) -> int:
        """The ``upper`` a next page starts from: above the newest kept, unemitted event
        (``FROM_END``: not read at all yet; ``-1``: nothing left)."""
        if self.found:
            return self.found[-1].offset + 1
        if self.done:
            return -1
        return FROM_END if self.upper is None else self.upper


@dataclass(frozen=True, slots=True)
class Source:
    """Where a listing reads: what it needs of the ``KafkaBus`` (which builds it)."""

    bootstrap: str
    prefix: str
    topic_of: Callable[[str], str]
    own_topics: frozenset[str]
    """The bus's own topics (dead letters, settled letters): never listed."""
    retry_prefix: str
    """Topics a retried letter goes back to its group by: never listed again."""
    fetch_max_wait_ms: int
    request_timeout_ms: int

    def is_event_topic(self, topic: str) -> bool:
        if not topic.startswith(self.prefix) or topic.startswith("__"):
            return False
        return topic not in self.own_topics and not topic.startswith(self.retry_prefix)


@dataclass(frozen=True, slots=True)
class Filters:
    tenant: str | None
    event_type: str | None
    correlation: str | None
    since: float | None

    def may_keep(self, attributes: dict[str, Any]) -> bool:
        """Whether an envelope with these (structured-mode) attributes could pass ``keep``:
        ``False`` only when the decoded event surely would not (read as ``decode`` reads them)."""
        tenant = attributes.get("tenant") or "default"
        correlation = attributes.get("correlationid") or str(attributes.get("id"))
        return (
            (self.tenant is None or tenant == self.tenant)
            and (self.event_type is None or str(attributes.get("type")) == self.event_type)
            and (self.correlation is None or correlation == self.correlation)
        )

    def keep(self, event: Event) -> bool:
        return (
            (self.tenant is None or event.tenant == self.tenant)
            and (self.event_type is None or event.type == self.event_type)
            and (self.correlation is None or event.correlation_id == self.correlation)
        )


class Readers:
    """Readers of no group kept between listings, at most ``size`` at once.

    Starting a reader fetches the whole cluster's metadata, and so does asking it for the topics:
    tens of milliseconds each on a broker with many topics, more than reading a page. So a
    listing borrows a started reader (one listing at a time per reader: its assignment and
    positions are the listing's; ``_read_back`` assigns anew) and gives it back paused; one that
    failed is stopped, not kept. Each reader's list of topics is kept ``TOPICS_TTL`` seconds: a topic
    created meanwhile is listed after that, or at once when ``type=`` names it. Like the bus's
    producer, the readers belong to the event loop that started them: one bus, one loop.
    """

    TOPICS_TTL = 5.0

    def __init__(self, source: Source, size: int = 4) -> None:
        self.source = source
        self.size = size
        self._idle: list[AIOKafkaConsumer] = []
        self._slots: asyncio.Semaphore | None = None
        self._topics: dict[int, tuple[float, dict[str, list[int]]]] = {}

    def _new(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.source.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=min(self.source.fetch_max_wait_ms, 50),
            max_partition_fetch_bytes=FETCH_BYTES,
            request_timeout_ms=self.source.request_timeout_ms,
        )

    @contextlib.asynccontextmanager
    async def borrow(self, start_timeout: float) -> AsyncIterator[AIOKafkaConsumer]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        async with self._slots:
            reader = self._idle.pop() if self._idle else None
            if reader is None:
                reader = self._new()
                try:
                    await asyncio.wait_for(reader.start(), start_timeout)
                except BaseException:
                    await self._stop(reader)
                    raise
            kept = False
            try:
                yield reader
                # Paused, not unassigned: an empty assignment makes aiokafka's next metadata
                # refresh one of every topic (the cost this pool avoids).
                reader.pause(*reader.assignment())
                kept = True
            finally:
                if kept:
                    self._idle.append(reader)
                else:
                    await self._stop(reader)

    async def topics(
        self, reader: AIOKafkaConsumer, *, must_have: str | None
    ) -> dict[str, list[int]]:
        """The cluster's topics and their partitions, as ``reader`` last read them (within
        ``TOPICS_TTL``; read again when ``must_have`` is missing).

        Read from the metadata answer itself: the reader's own view of the cluster
        (``partitions_for_topic``) covers only the topics it was last assigned."""
        at, known = self._topics.get(id(reader), (float("-inf"), {}))
        stale = time.monotonic() - at > self.TOPICS_TTL
        if stale or (must_have is not None and must_have not in known):
            cluster = await reader._client.fetch_all_metadata()
            known = {
                topic: sorted(cluster.partitions_for_topic(topic) or ())
                for topic in cluster.topics()
            }
            self._topics[id(reader)] = (time.monotonic(), known)
        return known

    async def _stop(self, reader: AIOKafkaConsumer) -> None:
        self._topics.pop(id(reader), None)
        with contextlib.suppress(Exception):
            await reader.stop()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for reader in idle:
            await self._stop(reader)


class KafkaListing:
    """One ``list_events`` request on a ``KafkaBus`` (``source``): see the module docstring."""

    def __init__(
        self, source: Source, filters: Filters, *, limit: int, budget: float, start_timeout: float
    ) -> None:
        self.source = source
        self.start_timeout = start_timeout
        self.filters = filters
        self.limit = max(1, limit)
        self.budget = budget
        self.query = event_cursor.fingerprint(
            filters.tenant, filters.event_type, filters.correlation, filters.since
        )
        self.skipped = 0
        """Records that were not readable events (see the module docstring)."""
        self._deadline = 0.0

    async def page(self, readers: Readers, cursor: str | None) -> EventPage:
        """The page after ``cursor`` (the first without one), read by a reader borrowed from
        ``readers``. Raises what aiokafka raises when the broker does not answer (the bus turns
        it into ``BusUnavailable``)."""
        resume = self._read_cursor(cursor) if cursor is not None else None
        self._deadline = time.monotonic() + self.budget
        async with readers.borrow(self.start_timeout) as reader:
            wanted = self._wanted_topic()
            known = await readers.topics(reader, must_have=wanted)
            parts = self._partitions(known, self._topics(set(known)), resume)
            if not parts:
                return EventPage(events=[], cursor=None)
            shown = await self._merge(reader, parts)
        return EventPage(events=shown, cursor=self._cursor(parts))

    # -- where to read ---------------------------------------------------------------------

    def _wanted_topic(self) -> str | None:
        if self.filters.event_type is None:
            return None
        return self.source.topic_of(self.filters.event_type)

    def _topics(self, existing: set[str]) -> list[str]:
        wanted = self._wanted_topic()
        if wanted is not None:
            return [wanted] if wanted in existing else []
        return sorted(t for t in existing if self.source.is_event_topic(t))

    def _partitions(
        self,
        known: dict[str, list[int]],
        topics: list[str],
        resume: dict[str, list[int]] | None,
    ) -> list[_Partition]:
        parts: list[_Partition] = []
        if resume is not None:
            for topic, uppers in resume.items():
                if topic not in topics:
                    raise event_cursor.bad()
                for number, upper in enumerate(uppers):
                    if upper > 0 or upper == FROM_END:
                        at = None if upper == FROM_END else upper
                        parts.append(_Partition(TopicPartition(topic, number), at, 0))
        else:
            for topic in topics:
                for number in known[topic]:
                    parts.append(_Partition(TopicPartition(topic, number), None, 0))
        chunk = min(MAX_CHUNK, max(MIN_CHUNK, -(-2 * (self.limit + 1) // max(1, len(parts)))))
        for p in parts:
            p.chunk = chunk
        return parts

    def _read_cursor(self, cursor: str) -> dict[str, list[int]]:
        state = event_cursor.read(cursor, self.query)
        at = state.get("at")
        if not isinstance(at, dict) or not at:
            raise event_cursor.bad()
        for topic, uppers in at.items():
            if (
                not self.source.is_event_topic(topic)
                or not isinstance(uppers, list)
                or not 0 < len(uppers) <= 10_000
                or not all(type(u) is int and FROM_END <= u < 2**62 for u in uppers)
            ):
                raise event_cursor.bad()
        return at

    def _cursor(self, parts: list[_Partition]) -> str | None:
        at: dict[str, list[int]] = {}
        for p in parts:
            uppers = at.setdefault(p.tp.topic, [])
            uppers.extend([-1] * (p.tp.partition + 1 - len(uppers)))
            uppers[p.tp.partition] = p.resume_at()
        left = {
            topic: uppers
            for topic, uppers in at.items()
            if any(u > 0 or u == FROM_END for u in uppers)
        }
        return event_cursor.make(self.query, {"at": left}) if left else None

    # -- reading and merging -----------------------------------------------------------------

    def _left(self) -> float:
        return self._deadline - time.monotonic()

    async def _merge(self, reader: AIOKafkaConsumer, parts: list[_Partition]) -> list[Listed]:
        """Emit up to ``limit`` events newest first, reading partitions back as they run dry."""
        shown: list[Listed] = []
        while len(shown) < self.limit:
            if any(not p.done and not p.found for p in parts):
                if self._left() <= 0:
                    break
                # One partition ran dry: read it back, and with it every one that soon will
                # (one round trip for many partitions rather than one each).
                low = [p for p in parts if not p.done and len(p.found) < max(1, p.chunk // 4)]
                await self._read_back(reader, low)
                continue
            ready = [p for p in parts if p.found]
            if not ready:
                break  # every partition read to its start
            if self._left() <= 0:
                break
            newest = max(ready, key=lambda p: (p.found[-1].stamp, p.tp.topic, p.tp.partition))
            one = newest.found.pop()
            event = self._event(one.value)
            if event is not None:
                where = f"{newest.tp.topic}/{newest.tp.partition}/{one.offset}"
                shown.append(Listed(event, where, one.stamp / 1000))
        return shown

    async def _read_back(self, reader: AIOKafkaConsumer, parts: list[_Partition]) -> None:
        """Read each of ``parts`` back by its chunk; a partition the budget cut short keeps its
        ``upper`` (read again by the next page), so nothing is skipped."""
        start: dict[TopicPartition, int] = {}
        ends = await reader.end_offsets([p.tp for p in parts if p.upper is None])
        # Assigned anew each time, never resumed from a pause: a new assignment wakes aiokafka's
        # fetcher at once, a resume waits for its idle loop (up to 200 ms).
        reader.assign([p.tp for p in parts])
        for p in parts:
            upper = p.upper if p.upper is not None else int(ends.get(p.tp, 0))
            start[p.tp] = max(0, upper - p.chunk)
            reader.seek(p.tp, start[p.tp])
        by_tp = {p.tp: p for p in parts}
        records: dict[TopicPartition, list[Any]] = {p.tp: [] for p in parts}
        pending = set(by_tp)
        try:
            while pending and self._left() > 0:
                wait = max(1, min(200, int(self._left() * 1000)))
                batch = await reader.getmany(*pending, timeout_ms=wait)
                for tp, got in batch.items():
                    bound = by_tp[tp].upper
                    records[tp].extend(r for r in got if bound is None or r.offset < bound)
                for tp in list(pending):
                    position = await reader.position(tp)
                    bound = by_tp[tp].upper
                    high = reader.highwater(tp)
                    if (bound is not None and position >= bound) or (
                        high is not None and position >= high
                    ):
                        pending.discard(tp)
                        reader.pause(tp)
        finally:
            reader.pause(*pending)
        for p in parts:
            if p.tp in pending:
                continue  # cut short by the budget: read again next time
            self._keep(p, start[p.tp], records[p.tp])

    def _keep(self, p: _Partition, start: int, records: list[Any]) -> None:
        since = self.filters.since  # compared as ``published_at`` is shown: ms / 1000
        kept = [
            _Found(int(r.timestamp), int(r.offset), r.value)
            for r in records
            if since is None or r.timestamp / 1000 >= since
        ]
        p.found = kept + p.found  # read below everything kept before: older, so first
        p.upper = start
        older = since is not None and bool(records) and records[0].timestamp / 1000 < since
        p.done = start == 0 or older
        p.chunk = min(MAX_CHUNK, p.chunk * 2)

    def _event(self, value: bytes | None) -> Event | None:
        """The record's event when it is one of ours and passes the filters, else ``None``.

        The SDK's decode costs about 0.15 ms a record, ten times a JSON parse: the filters are
        first tried on the parsed envelope's attributes (what ``decode`` would read them from),
        and only a record that passes is decoded - and filtered again, on the event itself."""
        if value is None:
            self.skipped += 1
            return None
        try:
            attributes = json.loads(value)
        except (ValueError, UnicodeDecodeError):
            self.skipped += 1
            return None
        if not isinstance(attributes, dict) or not self.filters.may_keep(attributes):
            return None
        try:
            event = decode(value)
        except (EventRejected, ValueError, TypeError, KeyError, UnicodeDecodeError):
            self.skipped += 1
            return None
        return event if self.filters.keep(event) else None
