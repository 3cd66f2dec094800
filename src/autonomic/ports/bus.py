"""The event-bus port: publish events, consume them as a consumer group, acknowledge, redeliver,
dead-letter.

Two adapters satisfy it: the embedded SQL bus (in the run store's own SQLite file or PostgreSQL
database; nothing else to run) and Kafka. ``autonomic.testing.bus_conformance`` holds every
adapter to the behaviour written here.

Delivery is at least once; effects happen once because consumers record the ids of the events
they processed in the same transaction as the effect (the inbox) and an event that starts a run
derives the run id from the event id. So the bus may redeliver, and never loses an event it has
accepted.

Ordering and failure: events with one key (the correlation id) reach one group in the order they
were published. An event a consumer ``fail``s is redelivered after a back-off (exponential, with
jitter) until ``RetryPolicy.max_attempts``, then moved to the dead letters with its error, attempt
count and first / last failure times. While it waits, later events *of its key* wait behind it
(the conversation stays in order: a reply is never handled before the request it answers); events
of other keys keep flowing.

Reading what was published (``list_events``, the service's ``GET /events``) takes nothing from any
consumer group: a listing is newest first, a page at a time, behind an opaque cursor the adapter
gives out and checks when it comes back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from autonomic.core.events import Event


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failed event is retried before it is dead-lettered."""

    max_attempts: int = 5
    """Deliveries in all, the first included; after the last failure the event is dead-lettered."""
    base_delay: float = 0.5
    """Seconds before the second delivery; doubled for each later one."""
    max_delay: float = 60.0
    jitter: float = 0.5
    """Each delay is drawn from [delay * (1 - jitter), delay]."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """An event handed to one consumer of a group."""

    event: Event
    topic: str
    attempt: int
    """1 on the first delivery to this group."""
    receipt: Any
    """The adapter's handle for ``ack`` / ``fail`` (an offset, a lease); opaque to callers."""
    first_failure: float | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event a group gave up on, with why."""

    id: str
    """The dead letter's own id (``dlq show / retry / drop`` take it)."""
    event: Event
    topic: str
    group: str
    error: str
    attempts: int
    first_failure: float
    last_failure: float
    tenant: str = "default"
    """Whose event it is (the tenant it was published for): the service scopes letters by it."""


CURSOR_MAX_CHARS = 16_384
"""The longest ``list_events`` cursor an adapter gives out (a Kafka one names every partition
still to read); callers may refuse longer ones unread."""


@dataclass(frozen=True, slots=True)
class Listed:
    """A published event as a listing shows it."""

    event: Event
    position: str
    """Where it sits on the bus, as the adapter names it (``seq`` on the embedded bus,
    ``topic/partition/offset`` on Kafka): for people and logs, not an argument anywhere."""
    published_at: float
    """When the bus accepted it (epoch s; on Kafka the record's timestamp)."""


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of ``Bus.list_events``: newest first."""

    events: list[Listed]
    cursor: str | None
    """Pass back as ``cursor`` (with the same filters) for the next, older page; ``None``: no
    older events. A page may hold fewer events than asked and still have a cursor (Kafka stops
    reading at its time budget)."""


class Consumer(Protocol):
    """One member of a consumer group. Members of one group share a topic's keys between them;
    when one stops (or dies: its lease or session expires), another gets its keys, and every
    event it had not acknowledged is delivered again."""

    async def poll(self, *, max_events: int = 100, wait: float = 1.0) -> list[Delivery]:
        """Up to ``max_events`` deliveries, waiting at most ``wait`` seconds for the first."""
        ...

    async def ack(self, delivery: Delivery) -> None:
        """The event's effect is durable: never deliver it to this group again."""
        ...

    async def fail(self, delivery: Delivery, error: str) -> None:
        """The event could not be handled: redeliver after a back-off, or dead-letter it once its
        attempts are spent."""
        ...

    async def close(self) -> None:
        """Leave the group; unacknowledged events go to the remaining members."""
        ...

    dead_lettered: int
    """Events this member has dead-lettered since it joined (spent attempts, or unreadable at
    once): the ``autonomic_dead_letters_total`` counter is its growth."""

    async def lag(self) -> int:
        """Events of the group's topics this member could be handed that the group has not
        finished yet (the ``autonomic_consumer_lag`` gauge): on the embedded bus the whole
        group's backlog (any member may take any key), on Kafka that of the partitions this
        member owns."""
        ...


class Bus(Protocol):
    """Where events travel between runs, agents and workers."""

    def topic_of(self, event_type: str) -> str:
        """The topic an event type is published to (documented per adapter)."""
        ...

    async def publish(self, events: Sequence[Event]) -> None:
        """Accept ``events`` durably: when this returns, no crash loses them."""
        ...

    def consumer(
        self,
        group: str,
        types: Sequence[str],
        *,
        name: str,
        retry: RetryPolicy | None = None,
    ) -> Consumer:
        """Join ``group`` as member ``name``, consuming the topics of ``types``."""
        ...

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
        """Published events, newest first (by when the bus accepted them), at most ``limit``:
        of one tenant, type and correlation id, published at or after ``since``, when given.
        Another tenant's event never leaves the adapter. ``cursor`` is the previous page's;
        one this bus did not give out for these filters is ``InvalidInput``. Takes nothing
        from any consumer group; dead letters sent back to one group are not listed again."""
        ...

    async def dead_letters(
        self, *, group: str | None = None, tenant: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        """Dead letters, oldest first (of one group, of one tenant, when given)."""
        ...

    async def dead_letter(self, letter_id: str) -> DeadLetter:
        """One dead letter (``NotFound`` when there is none with that id)."""
        ...

    async def retry_dead_letter(self, letter_id: str) -> None:
        """Deliver the event to its group again (attempts start over) and remove the letter."""
        ...

    async def drop_dead_letter(self, letter_id: str, *, reason: str) -> None:
        """Remove the letter for good, keeping who-why in the record."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
