"""The embedded event bus: durable topics in the run store's own SQLite file or PostgreSQL
database, so one machine needs nothing else (``--bus sql``, the default).

What lives where (migration 0004, ``docs/events.md``):

* ``bus_events``: every event once per topic, in publish order (``seq``). A topic is the event
  type (``topic_of`` is the identity). Publishing the same event id again changes nothing, so a
  relay that crashed after publishing and before marking its outbox rows sent may publish again.
* ``bus_cursors``: per consumer group **and key**, the last acknowledged ``seq`` and a lease on the
  key's next event (owner, expiry), its attempts, when it may be delivered again (the back-off)
  and its failures. The next event of a key is handed to one member at a time; so a key's events
  reach a group in order, a failing one holds back later events of its key only, and the other
  keys flow. A member that closes releases its leases; one that dies loses them when they expire
  (``lease_ttl``; every poll renews the member's leases), and another member gets its events.
* ``bus_dead_letters``: events a group gave up on (after ``RetryPolicy.max_attempts``, or
  undecodable or refused by their type's schema at once), with error, attempts and first and last
  failure times; ``retry`` sends one back to its group only (a new row of ``bus_events`` for that
  group), ``drop`` keeps it with the reason, out of the list.

Publishes on PostgreSQL take a transaction-scoped advisory lock: sequence numbers are handed out
before commit, and two publishers committing out of order could otherwise let a consumer
acknowledge a later event of a key before an earlier one became visible. SQLite's writers are
serialised anyway. Wake-ups: ``wake.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from autonomic.adapters.bus import event_cursor
from autonomic.adapters.bus.wake import CHANNEL, LocalWake, PostgresListener, Wakeable
from autonomic.adapters.store.sql import Params, Row, SqlStore, translate
from autonomic.core.envelope import decode, encode
from autonomic.core.event_types import EventTypes
from autonomic.core.events import Event
from autonomic.errors import EventRejected, NotFound
from autonomic.ports.bus import DeadLetter, Delivery, EventPage, Listed, RetryPolicy

UNDECODABLE = "autonomic.bus.undecodable"
"""The type a dead letter shows for an envelope that could not be read at all."""


def backoff(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds before delivery ``attempt + 1`` after ``attempt`` failed: ``base_delay`` doubled
    per earlier failure, capped at ``max_delay``, drawn from ``[delay * (1 - jitter), delay]`` so
    that members retrying together spread out."""
    delay = min(policy.max_delay, policy.base_delay * 2 ** max(0, attempt - 1))
    low = delay * (1 - policy.jitter)
    return (rng or random).uniform(low, delay)


@dataclass(frozen=True, slots=True)
class Receipt:
    """What ``ack`` and ``fail`` need: the cursor row and the seq this delivery was."""

    group: str
    topic: str
    key: str
    seq: int
    acked_before: int
    owner: str


class _Sql:
    """The bus's statements in neutral SQL (``:name``); translated per dialect by ``SqlBus``."""

    insert_event = (
        "INSERT INTO bus_events (topic, key, event_id, type, tenant, only_group, dedupe, "
        "envelope, published_at) VALUES (:topic, :key, :event_id, :type, :tenant, :only_group, "
        ":dedupe, :envelope, :now) ON CONFLICT (dedupe) DO NOTHING"
    )
    heads = """SELECT e.seq, e.topic, e.key, e.envelope, COALESCE(c.acked_seq, 0),
       COALESCE(c.attempts, 0), c.first_failure
FROM bus_events e
LEFT JOIN bus_cursors c ON c.grp = :grp AND c.topic = e.topic AND c.key = e.key
WHERE e.topic IN ({topics}) AND (e.only_group = '' OR e.only_group = :grp)
  AND e.seq > COALESCE(c.acked_seq, 0)
  AND (c.grp IS NULL OR (c.lease_until < :now AND c.visible_at <= :now))
  AND NOT EXISTS (
      SELECT 1 FROM bus_events p
      WHERE p.topic = e.topic AND p.key = e.key AND p.seq < e.seq
        AND p.seq > COALESCE(c.acked_seq, 0) AND (p.only_group = '' OR p.only_group = :grp))
ORDER BY e.seq
LIMIT :limit"""
    claim = """INSERT INTO bus_cursors (grp, topic, key, acked_seq, attempts, visible_at,
    lease_owner, lease_until)
VALUES (:grp, :topic, :key, 0, 1, 0, :owner, :until)
ON CONFLICT (grp, topic, key) DO UPDATE SET attempts = bus_cursors.attempts + 1,
    lease_owner = :owner, lease_until = :until
WHERE bus_cursors.lease_until < :now AND bus_cursors.visible_at <= :now
  AND bus_cursors.acked_seq = :acked
RETURNING attempts"""
    renew = (
        "UPDATE bus_cursors SET lease_until = :until "
        "WHERE grp = :grp AND lease_owner = :owner AND lease_until >= :now"
    )
    release = (
        "UPDATE bus_cursors SET lease_owner = NULL, lease_until = 0 "
        "WHERE grp = :grp AND lease_owner = :owner"
    )
    ack = """UPDATE bus_cursors SET acked_seq = :seq, attempts = 0, visible_at = 0,
    lease_owner = NULL, lease_until = 0, first_failure = NULL, last_failure = NULL,
    last_error = NULL
WHERE grp = :grp AND topic = :topic AND key = :key AND acked_seq < :seq"""
    back_off = """UPDATE bus_cursors SET lease_owner = NULL, lease_until = 0,
    visible_at = :visible_at, first_failure = COALESCE(first_failure, :now),
    last_failure = :now, last_error = :error
WHERE grp = :grp AND topic = :topic AND key = :key AND acked_seq = :acked
  AND lease_owner = :owner
RETURNING attempts"""
    lag = """SELECT COUNT(*)
FROM bus_events e
LEFT JOIN bus_cursors c ON c.grp = :grp AND c.topic = e.topic AND c.key = e.key
WHERE e.topic IN ({topics}) AND (e.only_group = '' OR e.only_group = :grp)
  AND e.seq > COALESCE(c.acked_seq, 0)"""
    cursor = (
        "SELECT attempts, first_failure FROM bus_cursors "
        "WHERE grp = :grp AND topic = :topic AND key = :key AND acked_seq = :acked"
    )
    bury = """INSERT INTO bus_dead_letters (id, grp, topic, key, seq, envelope, error, attempts,
    first_failure, last_failure, state)
VALUES (:id, :grp, :topic, :key, :seq, :envelope, :error, :attempts, :first_failure, :now,
    'dead')"""
    letters = """SELECT d.id, d.grp, d.topic, d.envelope, d.error, d.attempts, d.first_failure,
    d.last_failure, d.key, COALESCE(e.tenant, 'default')
FROM bus_dead_letters d LEFT JOIN bus_events e ON e.seq = d.seq
WHERE d.state = 'dead' AND (CAST(:grp AS TEXT) IS NULL OR d.grp = :grp)
  AND (CAST(:tenant AS TEXT) IS NULL OR COALESCE(e.tenant, 'default') = :tenant)
ORDER BY d.last_failure, d.id LIMIT :limit"""
    letter = """SELECT d.id, d.grp, d.topic, d.envelope, d.error, d.attempts, d.first_failure,
    d.last_failure, d.key, COALESCE(e.tenant, 'default')
FROM bus_dead_letters d LEFT JOIN bus_events e ON e.seq = d.seq
WHERE d.id = :id AND d.state = 'dead'"""
    history = """SELECT seq, envelope, published_at FROM bus_events
WHERE only_group = '' AND (CAST(:tenant AS TEXT) IS NULL OR tenant = :tenant)
  AND (CAST(:type AS TEXT) IS NULL OR type = :type)
  AND (CAST(:correlation AS TEXT) IS NULL OR key = :correlation)
  AND published_at >= :since AND seq < :before
ORDER BY seq DESC LIMIT :limit"""
    resolve = (
        "UPDATE bus_dead_letters SET state = :state, reason = :reason, resolved_at = :now "
        "WHERE id = :id AND state = 'dead' RETURNING id"
    )


class SqlBus:
    """The ``Bus`` port over a ``SqlStore``'s database. See the module docstring.

    Args:
        store: the run store whose database holds the bus (migrated: 0004 creates its tables).
        types: the event types checked on publish and on delivery.
        lease_ttl: how long a member holds a key's event without polling again; a dead member's
            events go to another member after this.
        poll_interval: the longest a waiting consumer goes without reading the database (the
            fallback when no wake-up arrives: other processes on SQLite, a back-off expiring).
    """

    messaging_system = "autonomic"
    """What the publish and consume spans name as ``messaging.system`` (the embedded bus)."""

    def __init__(
        self,
        store: SqlStore,
        *,
        types: EventTypes | None = None,
        lease_ttl: float = 30.0,
        poll_interval: float | None = None,
        clock: Any = time.time,
    ) -> None:
        self.store = store
        self.types = types or EventTypes.default()
        self.lease_ttl = lease_ttl
        self._postgres = store.dialect == "postgres"
        self.poll_interval = (
            poll_interval if poll_interval is not None else (0.5 if self._postgres else 0.05)
        )
        self._clock = clock
        self._where = store.url
        self._sql = {
            name: translate(value, store.paramstyle)
            for name, value in vars(_Sql).items()
            if isinstance(value, str) and not name.startswith("__")
        }
        # No listener behind a transaction pooler: a LISTEN needs a session of its own.
        listen_url = store.listen_url
        self._listener = PostgresListener(listen_url, self._where) if listen_url else None
        self._consumers: list[SqlConsumer] = []
        self.closed = False

    def statement(self, name: str) -> str:
        return self._sql[name]

    def now(self) -> float:
        return float(self._clock())

    # -- the port -------------------------------------------------------------------------------

    def topic_of(self, event_type: str) -> str:
        """One topic per event type: the topic is the type's name."""
        return event_type

    async def publish(self, events: Sequence[Event]) -> None:
        """Check every event, then insert them all in one transaction (or none)."""
        for event in events:
            self.types.check(event)
        if not events:
            return
        rows = [self._event_row(e, only_group="", dedupe=None) for e in events]
        async with self.store.transaction() as execute:
            if self._postgres:
                await execute(
                    "SELECT pg_advisory_xact_lock(hashtext('autonomic.bus.publish'))", None
                )
            for params in rows:
                await execute(self._sql["insert_event"], params)
            if self._postgres:
                await execute(f"SELECT pg_notify('{CHANNEL}', '')", None)
        LocalWake.wake(self._where)

    def _event_row(self, event: Event, *, only_group: str, dedupe: str | None) -> Params:
        topic = self.topic_of(event.type)
        return {
            "topic": topic,
            "key": event.key,
            "event_id": event.id,
            "type": event.type,
            "tenant": event.tenant,
            "only_group": only_group,
            "dedupe": dedupe or f"{topic}\x1f{event.id}",
            "envelope": encode(event).decode(),
            "now": self.now(),
        }

    def consumer(
        self,
        group: str,
        types: Sequence[str],
        *,
        name: str,
        retry: RetryPolicy | None = None,
    ) -> SqlConsumer:
        if not types:
            raise EventRejected(
                "a consumer needs at least one event type", hint="name the types it handles"
            )
        consumer = SqlConsumer(self, group, [self.topic_of(t) for t in types], name, retry)
        self._consumers.append(consumer)
        if self._listener is not None:
            self._listener.start()
        return consumer

    async def dead_letters(
        self, *, group: str | None = None, tenant: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        rows = await self.store.query(
            self._sql["letters"], {"grp": group, "tenant": tenant, "limit": limit}
        )
        return [_letter(row) for row in rows]

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
        """Published events, newest first (``seq`` order), one query of ``limit + 1`` rows (the
        extra one says whether an older page exists). Reads the topics only: it takes nothing
        from any consumer group. Retries of dead letters (rows for one group) are not listed
        again. The cursor holds the last ``seq`` shown."""
        limit = max(1, limit)
        query = event_cursor.fingerprint(tenant, event_type, correlation, since)
        before = 2**62
        if cursor is not None:
            seq = event_cursor.read(cursor, query).get("before")
            if type(seq) is not int or not 1 <= seq < 2**62:
                raise event_cursor.bad()
            before = seq
        params = {
            "tenant": tenant,
            "type": event_type,
            "correlation": correlation,
            "since": since if since is not None else -1e300,
            "before": before,
            "limit": limit + 1,
        }
        found = []
        for seq, envelope, published_at in await self.store.query(self._sql["history"], params):
            try:
                event = decode(str(envelope))
            except EventRejected as exc:
                event = _undecodable(str(seq), str(envelope), str(exc), float(published_at))
            found.append(Listed(event, str(seq), float(published_at)))
        more = len(found) > limit
        found = found[:limit]
        last = int(found[-1].position) if more else None
        return EventPage(
            events=found,
            cursor=event_cursor.make(query, {"before": last}) if last is not None else None,
        )

    async def dead_letter(self, letter_id: str) -> DeadLetter:
        rows = await self.store.query(self._sql["letter"], {"id": letter_id})
        if not rows:
            raise NotFound(
                f"no dead letter {letter_id}", hint="`autonomic dlq list` shows the dead letters"
            )
        return _letter(rows[0])

    async def retry_dead_letter(self, letter_id: str) -> None:
        """Send the event to its group once more (a row only that group reads), attempts from 1."""
        rows = await self.store.query(self._sql["letter"], {"id": letter_id})
        if not rows:
            raise NotFound(
                f"no dead letter {letter_id}", hint="`autonomic dlq list` shows the dead letters"
            )
        _, group, topic, envelope, *_, key, tenant = rows[0]
        now = self.now()
        params = {
            "topic": topic,
            "key": key,
            "event_id": _event_id(envelope, letter_id),
            "type": topic,
            "tenant": tenant,
            "only_group": group,
            "dedupe": f"retry:{letter_id}",
            "envelope": envelope,
            "now": now,
        }
        async with self.store.transaction() as execute:
            if self._postgres:
                await execute(
                    "SELECT pg_advisory_xact_lock(hashtext('autonomic.bus.publish'))", None
                )
            resolved = await execute(
                self._sql["resolve"],
                {"id": letter_id, "state": "retried", "reason": None, "now": now},
            )
            if resolved:
                await execute(self._sql["insert_event"], params)
            if self._postgres:
                await execute(f"SELECT pg_notify('{CHANNEL}', '')", None)
        if not resolved:
            raise NotFound(f"no dead letter {letter_id} (retried or dropped meanwhile)")
        LocalWake.wake(self._where)

    async def drop_dead_letter(self, letter_id: str, *, reason: str) -> None:
        if not reason.strip():
            raise EventRejected("dropping a dead letter needs a reason", hint="--reason TEXT")
        async with self.store.transaction() as execute:
            resolved = await execute(
                self._sql["resolve"],
                {"id": letter_id, "state": "dropped", "reason": reason, "now": self.now()},
            )
        if not resolved:
            raise NotFound(
                f"no dead letter {letter_id}", hint="`autonomic dlq list` shows the dead letters"
            )

    async def aclose(self) -> None:
        """Stop listening. Members are not closed: a process that ends without closing them is
        a member that died, and its leases expire (what the conformance suite checks)."""
        self.closed = True
        for consumer in self._consumers:
            consumer.detach()
        if self._listener is not None:
            await self._listener.aclose()


class SqlConsumer(Wakeable):
    """One member of a consumer group on the embedded bus."""

    def __init__(
        self,
        bus: SqlBus,
        group: str,
        topics: list[str],
        name: str,
        retry: RetryPolicy | None,
    ) -> None:
        super().__init__()
        self.bus = bus
        self.group = group
        self.topics = sorted(set(topics))
        self.owner = f"{name}:{uuid.uuid4().hex[:8]}"
        self.retry = retry or RetryPolicy()
        marks = ", ".join(f":topic{i}" for i in range(len(self.topics)))
        self._heads = translate(_Sql.heads.replace("{topics}", marks), bus.store.paramstyle)
        self._lag = translate(_Sql.lag.replace("{topics}", marks), bus.store.paramstyle)
        self._topic_params = {f"topic{i}": t for i, t in enumerate(self.topics)}
        self._closed = False
        self.dead_lettered = 0
        LocalWake.join(bus._where, self)

    def detach(self) -> None:
        LocalWake.leave(self.bus._where, self)
        self._closed = True

    async def poll(self, *, max_events: int = 100, wait: float = 1.0) -> list[Delivery]:
        end = time.monotonic() + max(0.0, wait)
        while True:
            self.woken.clear()
            got = await self._take(max_events)
            left = end - time.monotonic()
            if got or left <= 0 or self._closed:
                return got
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.woken.wait(), min(left, self.bus.poll_interval))

    async def _take(self, limit: int) -> list[Delivery]:
        """Renew this member's leases, then lease the next event of free keys (one per key)."""
        bus, sql = self.bus, self.bus._sql
        now = bus.now()
        until = now + bus.lease_ttl
        base = {"grp": self.group, "owner": self.owner, "now": now, "until": until}
        deliveries: list[Delivery] = []
        dead: list[tuple[Row, str]] = []
        async with bus.store.transaction() as execute:
            await execute(sql["renew"], base)
            heads = await execute(self._heads, {**base, **self._topic_params, "limit": limit})
            for seq, topic, key, envelope, acked, _attempts, first_failure in heads:
                claimed = await execute(
                    sql["claim"], {**base, "topic": topic, "key": key, "acked": acked}
                )
                if not claimed:
                    continue  # another member took it meanwhile
                attempt = int(claimed[0][0])
                receipt = Receipt(self.group, topic, key, int(seq), int(acked), self.owner)
                try:
                    event = decode(envelope)
                    bus.types.check(event)
                except EventRejected as exc:
                    dead.append(
                        ((seq, topic, key, envelope, acked, attempt, first_failure), str(exc))
                    )
                    continue
                deliveries.append(
                    Delivery(
                        event=event,
                        topic=topic,
                        attempt=attempt,
                        receipt=receipt,
                        first_failure=first_failure,
                    )
                )
        for (seq, topic, key, envelope, acked, attempt, first_failure), error in dead:
            receipt = Receipt(self.group, topic, key, int(seq), int(acked), self.owner)
            await self._bury(receipt, envelope, error, attempt, first_failure)
        return deliveries

    async def lag(self) -> int:
        async with self.bus.store.transaction() as execute:
            rows = await execute(self._lag, {"grp": self.group, **self._topic_params})
        return int(rows[0][0]) if rows else 0

    async def ack(self, delivery: Delivery) -> None:
        r = _receipt(delivery)
        async with self.bus.store.transaction() as execute:
            await execute(
                self.bus._sql["ack"], {"grp": r.group, "topic": r.topic, "key": r.key, "seq": r.seq}
            )

    async def fail(self, delivery: Delivery, error: str) -> None:
        r = _receipt(delivery)
        if delivery.attempt >= self.retry.max_attempts:
            envelope = encode(delivery.event).decode()
            await self._bury(r, envelope, error, delivery.attempt, delivery.first_failure)
            return
        bus = self.bus
        now = bus.now()
        params = {
            "grp": r.group,
            "topic": r.topic,
            "key": r.key,
            "acked": r.acked_before,
            "owner": r.owner,
            "now": now,
            "error": error,
            "visible_at": now + backoff(self.retry, delivery.attempt),
        }
        async with bus.store.transaction() as execute:
            await execute(bus._sql["back_off"], params)

    async def _bury(
        self,
        r: Receipt,
        envelope: str,
        error: str,
        attempts: int,
        first_failure: float | None,
    ) -> None:
        """Dead-letter the key's current event and let the key's next event flow, atomically."""
        bus = self.bus
        now = bus.now()
        async with bus.store.transaction() as execute:
            current = await execute(
                bus._sql["cursor"],
                {"grp": r.group, "topic": r.topic, "key": r.key, "acked": r.acked_before},
            )
            if not current:
                return  # acknowledged or buried by another member meanwhile
            first = current[0][1] if current[0][1] is not None else first_failure
            await execute(
                bus._sql["bury"],
                {
                    "id": f"dl-{uuid.uuid4().hex[:16]}",
                    "grp": r.group,
                    "topic": r.topic,
                    "key": r.key,
                    "seq": r.seq,
                    "envelope": envelope,
                    "error": error,
                    "attempts": attempts,
                    "first_failure": first if first is not None else now,
                    "now": now,
                },
            )
            await execute(
                bus._sql["ack"], {"grp": r.group, "topic": r.topic, "key": r.key, "seq": r.seq}
            )
        self.dead_lettered += 1

    async def close(self) -> None:
        """Leave the group: release every lease at once, so other members get the events."""
        if self._closed:
            return
        self.detach()
        async with self.bus.store.transaction() as execute:
            await execute(self.bus._sql["release"], {"grp": self.group, "owner": self.owner})


def _receipt(delivery: Delivery) -> Receipt:
    if not isinstance(delivery.receipt, Receipt):
        raise EventRejected("this delivery did not come from the embedded bus")
    return delivery.receipt


def _event_id(envelope: str, fallback: str) -> str:
    try:
        return decode(envelope).id
    except EventRejected:
        return fallback


def _undecodable(ident: str, envelope: str, error: str, when: float) -> Event:
    return Event(
        type=UNDECODABLE,
        source="autonomic://bus",
        id=ident,
        data={"raw": envelope[:2000], "error": error},
        correlation_id=ident,
        time=when,
    )


def _letter(row: Row) -> DeadLetter:
    letter_id, group, topic, envelope, error, attempts, first, last, _key, tenant = row[:10]
    try:
        event = decode(envelope)
    except EventRejected as exc:
        event = _undecodable(str(letter_id), str(envelope), str(exc), float(last))
    return DeadLetter(
        tenant=str(tenant),
        id=str(letter_id),
        event=event,
        topic=str(topic),
        group=str(group),
        error=str(error),
        attempts=int(attempts),
        first_failure=float(first),
        last_failure=float(last),
    )
