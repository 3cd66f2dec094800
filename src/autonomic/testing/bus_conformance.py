"""The conformance suite of the ``Bus`` port (``autonomic.ports.bus``): what every adapter must do,
checked the same way against the embedded SQL bus and Kafka.

Each check needs a fresh, empty bus namespace (a new database schema, a new topic prefix) and one
thing from you:

* ``open_bus(types)``: a coroutine returning a **new** bus instance on that namespace, checking
  events against ``types`` (the checks open several, as several processes would; each is closed
  by the check). Members of a group that stop without ``close`` must lose their hold within a few
  seconds on the buses you give (a short lease or session timeout), or the "dies" check waits
  ``DEATH_TIMEOUT`` in vain.

With pytest, one test per check::

    from autonomic.testing.bus_conformance import CHECKS, run_check

    @pytest.mark.parametrize("check", CHECKS)
    def test_bus_conformance(check, my_namespace):
        asyncio.run(run_check(check, open_bus=lambda types: MyBus(my_namespace, types=types)))

What the checks hold an adapter to (the port's docstring says why):

* delivery is at least once; an acknowledged event is never delivered to that group again, even to
  a new member on a new connection; every group gets every event;
* a member that closes, or dies (stops without closing), gives up what it had not acknowledged,
  and another member gets it;
* **per key, at most one event of a group is out at a time**: an event of key K is never handed out
  while an earlier event of K is unacknowledged (being handled, or waiting for a retry). That is
  how order survives failures: a reply is never handled before the request it answers;
* ``fail`` redelivers after a back-off (``RetryPolicy``: never sooner than ``base_delay * (1 -
  jitter)``), and after ``max_attempts`` deliveries in all the event becomes a ``DeadLetter`` with
  the error, the attempts and the first and last failure times; later events of its key then flow;
* a failing key never holds back other keys;
* dead letters are listed oldest first, shown by id, retried (delivered to their group again,
  attempts starting over) or dropped with a reason (gone from the list);
* a member says how many events of its topics the group has not finished (``lag``: delivered
  and unacknowledged ones count) and how many it dead-lettered (``dead_lettered``);
* ``list_events`` shows a tenant its own published events only, newest first (``published_at``
  never rises down the list; one key's events in reverse publish order), page after page without
  a gap or a repeat until the cursor is ``None``; filters by type, correlation id and ``since``;
  refuses a cursor it did not give out, or gave out for other filters (``InvalidInput``); and
  takes nothing from any group;
* ``publish`` refuses, whole, a batch holding an event of an unknown type, one whose ``data``
  breaks its schema (the message names the field) or an oversized one (``EventRejected``).

Nothing here sleeps to synchronise: a check polls until what it waits for arrives, up to a
generous deadline (a busy machine is slow, never wrong); the only timing asserted is a lower
bound (the back-off), which a slow machine cannot break.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from autonomic.core.envelope import new_event
from autonomic.core.event_types import EventType, EventTypes
from autonomic.core.events import Event
from autonomic.errors import EventRejected, InvalidInput, NotFound
from autonomic.ports.bus import Bus, Consumer, Delivery, Listed, RetryPolicy

OpenBus = Callable[[EventTypes], Awaitable[Bus]]
"""Returns a new bus instance on the namespace under test, checking events against the types."""

ITEM = "test.conformance.item"
OTHER = "test.conformance.other"
DEADLINE = 30.0
"""How long a check waits for something that must arrive (generous: a busy 2-core machine)."""
DEATH_TIMEOUT = 30.0
"""How long a check waits for a dead member's events to reach another member."""
QUIET = 0.3
"""How long a check polls to see that nothing (more) arrives."""
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.2, max_delay=1.0, jitter=0.5)


def conformance_types(*, max_data_bytes: int = 4096) -> EventTypes:
    """The types the checks publish: ``test.conformance.item`` (``{"n": int, "key": str}``) and
    ``test.conformance.other`` (any object)."""
    return EventTypes(
        (
            EventType(
                ITEM,
                {
                    "type": "object",
                    "properties": {"n": {"type": "integer"}, "key": {"type": "string"}},
                    "required": ["n"],
                },
            ),
            EventType(OTHER, {"type": "object"}),
        ),
        max_data_bytes=max_data_bytes,
    )


def item(n: int, key: str = "k", *, type_: str = ITEM, tenant: str = "default") -> Event:
    """An event of the suite's item type, ordered by ``key``."""
    return new_event(
        type_,
        {"n": n, "key": key},
        source="autonomic://conformance",
        correlation_id=key,
        tenant=tenant,
    )


async def collect(
    consumer: Consumer,
    count: int,
    *,
    deadline: float = DEADLINE,
    ack: bool = False,
) -> list[Delivery]:
    """Poll until ``count`` deliveries arrived (acking each when ``ack``) or the deadline passed."""
    got: list[Delivery] = []
    end = time.monotonic() + deadline
    while len(got) < count and time.monotonic() < end:
        batch = await consumer.poll(max_events=count - len(got), wait=0.2)
        for delivery in batch:
            if ack:
                await consumer.ack(delivery)
        got.extend(batch)
    return got


async def quiet(consumer: Consumer, *, wait: float = QUIET) -> list[Delivery]:
    """What arrives within ``wait`` seconds (the checks expect nothing)."""
    got: list[Delivery] = []
    end = time.monotonic() + wait
    while time.monotonic() < end:
        got.extend(await consumer.poll(max_events=100, wait=0.05))
    return got


def _numbers(deliveries: Sequence[Delivery]) -> list[int]:
    return [int(d.event.data["n"]) for d in deliveries]


async def listing(bus: Bus, *, limit: int = 100, **filters: Any) -> list[Listed]:
    """Every page of ``bus.list_events(**filters)``, followed to the end (a bounded number of
    pages: a Kafka page may be short, never endless)."""
    shown: list[Listed] = []
    cursor: str | None = None
    for _ in range(500):
        page = await bus.list_events(cursor=cursor, limit=limit, **filters)
        assert len(page.events) <= limit, "a page held more events than asked"
        shown.extend(page.events)
        cursor = page.cursor
        if cursor is None:
            return shown
    raise AssertionError("the listing never ended")


class BusConformance:
    """The checks, as methods named ``check_*``; see the module docstring."""

    def __init__(self, open_bus: OpenBus) -> None:
        self._open_bus = open_bus
        self._opened: list[Bus] = []
        self.types = conformance_types()

    async def bus(self, types: EventTypes | None = None) -> Bus:
        bus = await self._open_bus(types or self.types)
        self._opened.append(bus)
        return bus

    @staticmethod
    def group() -> str:
        return f"g-{uuid.uuid4().hex[:12]}"

    @classmethod
    def all_checks(cls) -> list[str]:
        return sorted(name for name in vars(cls) if name.startswith("check_"))

    async def run(self, name: str) -> None:
        check = getattr(self, name, None)
        if not name.startswith("check_") or check is None:
            raise ValueError(f"unknown bus conformance check {name!r}")
        try:
            await check()
        finally:
            for bus in self._opened:
                await bus.aclose()

    # -- publish and consume ----------------------------------------------------------------------

    async def check_published_events_reach_a_group_whole_and_in_order(self) -> None:
        bus = await self.bus()
        events = [item(i) for i in range(5)]
        await bus.publish(events)
        consumer = bus.consumer(self.group(), [ITEM], name="m1")
        got = await collect(consumer, 5, ack=True)
        assert [d.event for d in got] == events, "the group must get every event, as published"
        assert all(d.attempt == 1 for d in got), "a first delivery is attempt 1"
        assert all(d.topic == bus.topic_of(ITEM) for d in got)
        assert await quiet(consumer) == [], "acknowledged events must not come again"
        await consumer.close()

    async def check_every_group_gets_every_event(self) -> None:
        bus = await self.bus()
        await bus.publish([item(1, "a"), item(2, "b")])
        for group in (self.group(), self.group()):
            consumer = bus.consumer(group, [ITEM], name="m1")
            got = await collect(consumer, 2, ack=True)
            assert sorted(_numbers(got)) == [1, 2], f"group {group} missed events"
            await consumer.close()

    async def check_a_consumer_gets_only_the_types_it_asked_for(self) -> None:
        bus = await self.bus()
        other = new_event(OTHER, {"x": 1}, source="autonomic://conformance")
        await bus.publish([other, item(1)])
        consumer = bus.consumer(self.group(), [ITEM], name="m1")
        got = await collect(consumer, 1, ack=True)
        assert _numbers(got) == [1]
        assert await quiet(consumer) == [], "an event of a type not asked for was delivered"
        await consumer.close()

    async def check_acknowledged_events_stay_acknowledged_for_a_new_member(self) -> None:
        first = await self.bus()
        group = self.group()
        await first.publish([item(1), item(2, "j")])
        consumer = first.consumer(group, [ITEM], name="m1")
        await collect(consumer, 2, ack=True)
        await consumer.close()
        second = await self.bus()
        late = second.consumer(group, [ITEM], name="m2")
        assert await quiet(late) == [], "a new member got events the group had acknowledged"
        await late.close()

    async def check_events_published_while_consuming_arrive(self) -> None:
        bus = await self.bus()
        consumer = bus.consumer(self.group(), [ITEM], name="m1")
        assert await quiet(consumer, wait=0.1) == []
        other = await self.bus()
        await other.publish([item(7)])
        got = await collect(consumer, 1, ack=True)
        assert _numbers(got) == [7]
        await consumer.close()

    # -- members leaving --------------------------------------------------------------------------

    async def check_a_closed_members_unacknowledged_events_go_to_another(self) -> None:
        bus = await self.bus()
        group = self.group()
        await bus.publish([item(1, "a"), item(2, "b")])
        leaving = bus.consumer(group, [ITEM], name="m1")
        held = await collect(leaving, 2)
        assert sorted(_numbers(held)) == [1, 2]
        await leaving.close()
        other = await self.bus()
        staying = other.consumer(group, [ITEM], name="m2")
        again = await collect(staying, 2, ack=True)
        assert sorted(_numbers(again)) == [1, 2], "a closed member's events were not redelivered"
        assert {d.event.id for d in again} == {d.event.id for d in held}, "an id changed"
        await staying.close()

    async def check_a_dead_members_unacknowledged_events_go_to_another(self) -> None:
        """A member that stops without closing (its process died) loses its hold once its lease
        or session expires; what it had not acknowledged goes to another member."""
        dying_bus = await self.bus()
        group = self.group()
        await dying_bus.publish([item(1, "a")])
        dying = dying_bus.consumer(group, [ITEM], name="dies")
        assert _numbers(await collect(dying, 1)) == [1]
        await dying_bus.aclose()  # no close(): the member simply stops
        self._opened.remove(dying_bus)
        other = await self.bus()
        heir = other.consumer(group, [ITEM], name="heir")
        got = await collect(heir, 1, deadline=DEATH_TIMEOUT, ack=True)
        assert _numbers(got) == [1], "a dead member's event was never redelivered"
        assert got[0].attempt >= 1
        await heir.close()

    async def check_members_of_a_group_share_the_events_without_duplicates(self) -> None:
        bus = await self.bus()
        group = self.group()
        events = [item(i, f"k{i % 7}") for i in range(40)]
        await bus.publish(events)
        members = [bus.consumer(group, [ITEM], name=f"m{i}") for i in range(3)]
        seen: list[int] = []
        end = time.monotonic() + DEADLINE
        while len(seen) < 40 and time.monotonic() < end:
            for member in members:
                for delivery in await member.poll(max_events=5, wait=0.05):
                    seen.append(int(delivery.event.data["n"]))
                    await member.ack(delivery)
        assert sorted(seen) == list(range(40)), "lost or duplicated events between members"
        for member in members:
            await member.close()

    # -- order ------------------------------------------------------------------------------------

    async def check_one_key_is_handed_out_one_event_at_a_time_in_order(self) -> None:
        bus = await self.bus()
        await bus.publish([item(i, "same") for i in range(6)])
        consumer = bus.consumer(self.group(), [ITEM], name="m1")
        order: list[int] = []
        end = time.monotonic() + DEADLINE
        while len(order) < 6 and time.monotonic() < end:
            batch = await consumer.poll(max_events=10, wait=0.2)
            assert len(batch) <= 1, "two events of one key were out at once"
            for delivery in batch:
                order.append(int(delivery.event.data["n"]))
                await consumer.ack(delivery)
        assert order == list(range(6)), "one key's events came out of order"
        await consumer.close()

    async def check_a_failing_key_holds_back_only_its_own_later_events(self) -> None:
        bus = await self.bus()
        await bus.publish([item(1, "bad"), item(2, "bad"), item(3, "good"), item(4, "good")])
        consumer = bus.consumer(
            self.group(),
            [ITEM],
            name="m1",
            retry=RetryPolicy(max_attempts=5, base_delay=30.0, max_delay=30.0, jitter=0.0),
        )
        handled: list[int] = []
        end = time.monotonic() + DEADLINE
        while len(handled) < 2 and time.monotonic() < end:
            for delivery in await consumer.poll(max_events=10, wait=0.2):
                n = int(delivery.event.data["n"])
                if n == 1:
                    await consumer.fail(delivery, "poison")
                else:
                    assert n != 2, "an event was handed out while an earlier one of its key waits"
                    handled.append(n)
                    await consumer.ack(delivery)
        assert handled == [3, 4], "a failing key held back another key"
        assert await quiet(consumer) == [], "the failed key's events came back before the back-off"
        await consumer.close()

    # -- failure, back-off, dead letters ----------------------------------------------------------

    async def check_a_failed_event_comes_back_after_a_backoff_then_is_dead_lettered(self) -> None:
        bus = await self.bus()
        group = self.group()
        poison = item(1, "p")
        await bus.publish([poison, item(2, "p")])
        consumer = bus.consumer(group, [ITEM], name="m1", retry=FAST_RETRY)
        failed_at: list[float] = []
        attempts: list[int] = []
        end = time.monotonic() + DEADLINE
        while len(attempts) < FAST_RETRY.max_attempts and time.monotonic() < end:
            for delivery in await consumer.poll(max_events=1, wait=0.2):
                assert delivery.event == poison, "a later event of the key overtook the failure"
                attempts.append(delivery.attempt)
                now = time.monotonic()
                if failed_at:
                    least = FAST_RETRY.base_delay * (1 - FAST_RETRY.jitter) * 0.9
                    waited = now - failed_at[-1]
                    assert waited >= least, f"redelivered after {waited:.3f}s, before the back-off"
                failed_at.append(time.monotonic())
                await consumer.fail(delivery, f"boom {delivery.attempt}")
        assert attempts == [1, 2, 3], f"expected attempts 1..3, got {attempts}"
        nxt = await collect(consumer, 1, ack=True)
        assert _numbers(nxt) == [2], "the key's next event must flow once the poison is dead"
        letters = await bus.dead_letters(group=group)
        assert len(letters) == 1
        letter = letters[0]
        assert letter.event == poison
        assert letter.group == group
        assert letter.attempts == 3
        assert letter.error == "boom 3", "the dead letter carries the last error"
        assert letter.first_failure <= letter.last_failure
        assert letter.topic == bus.topic_of(ITEM)
        await consumer.close()

    async def check_a_member_reports_its_lag_and_what_it_dead_lettered(self) -> None:
        """What a worker's metrics read: events not yet finished by the group (delivered but
        unacknowledged ones included) and the events the member dead-lettered."""
        bus = await self.bus()
        group = self.group()
        await bus.publish([item(1, "a"), item(2, "b"), item(3, "c")])
        consumer = bus.consumer(group, [ITEM], name="m1", retry=RetryPolicy(max_attempts=1))
        got = await collect(consumer, 3)
        assert sorted(_numbers(got)) == [1, 2, 3]
        assert await consumer.lag() == 3, "delivered but unfinished events are still behind"
        assert consumer.dead_lettered == 0
        by_number = {int(d.event.data["n"]): d for d in got}
        await consumer.ack(by_number[1])
        await consumer.fail(by_number[2], "cannot handle")  # its only attempt: dead-lettered
        assert consumer.dead_lettered == 1
        assert await consumer.lag() == 1, "acknowledged and dead-lettered events are finished"
        await consumer.ack(by_number[3])
        assert await consumer.lag() == 0
        await consumer.close()

    async def check_a_poison_event_never_stops_other_keys(self) -> None:
        bus = await self.bus()
        group = self.group()
        await bus.publish([item(0, "poison")] + [item(i, f"k{i}") for i in range(1, 11)])
        consumer = bus.consumer(group, [ITEM], name="m1", retry=FAST_RETRY)
        good: list[int] = []
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            for delivery in await consumer.poll(max_events=20, wait=0.1):
                if delivery.event.data["key"] == "poison":
                    await consumer.fail(delivery, "cannot handle")
                else:
                    good.append(int(delivery.event.data["n"]))
                    await consumer.ack(delivery)
            if len(good) == 10 and await bus.dead_letters(group=group):
                break
        assert sorted(good) == list(range(1, 11)), "other keys stopped behind a poison event"
        assert [d.event.data["n"] for d in await bus.dead_letters(group=group)] == [0]
        await consumer.close()

    async def check_dead_letters_are_shown_retried_and_dropped(self) -> None:
        bus = await self.bus()
        group = self.group()
        once = RetryPolicy(max_attempts=1, base_delay=0.01)
        await bus.publish([item(1, "a"), item(2, "b")])
        consumer = bus.consumer(group, [ITEM], name="m1", retry=once)
        for delivery in await collect(consumer, 2):
            await consumer.fail(delivery, f"no {delivery.event.data['n']}")
        letters = await bus.dead_letters(group=group)
        assert sorted(int(letter.event.data["n"]) for letter in letters) == [1, 2]
        assert all(letter.attempts == 1 for letter in letters)
        by_n = {int(letter.event.data["n"]): letter for letter in letters}
        shown = await bus.dead_letter(by_n[1].id)
        assert shown.event == by_n[1].event
        assert shown.error == "no 1"
        await bus.retry_dead_letter(by_n[1].id)
        again = await collect(consumer, 1)
        assert _numbers(again) == [1], "a retried dead letter was not delivered again"
        assert again[0].attempt == 1, "a retried dead letter starts its attempts over"
        await consumer.ack(again[0])
        await bus.drop_dead_letter(by_n[2].id, reason="checked by hand: obsolete")
        assert await bus.dead_letters(group=group) == []
        for letter_id in (by_n[1].id, by_n[2].id):
            try:
                await bus.dead_letter(letter_id)
            except NotFound:
                continue
            raise AssertionError(f"dead letter {letter_id} is still shown")
        other = self.group()
        fresh = bus.consumer(other, [ITEM], name="m1")
        got = await collect(fresh, 2, ack=True)
        assert sorted(_numbers(got)) == [1, 2], "a retry must reach only its own group once more"
        assert await quiet(fresh) == []
        await consumer.close()
        await fresh.close()

    async def check_dead_letters_keep_their_tenant(self) -> None:
        """The service shows a tenant only its own dead letters: a letter says whose event it is,
        the list filters by it, and a retry delivers the event under the same tenant."""
        bus = await self.bus()
        group = self.group()
        once = RetryPolicy(max_attempts=1, base_delay=0.01)
        await bus.publish([item(1, "a", tenant="acme"), item(2, "b", tenant="globex")])
        consumer = bus.consumer(group, [ITEM], name="m1", retry=once)
        for delivery in await collect(consumer, 2):
            await consumer.fail(delivery, "no")
        letters = await bus.dead_letters(group=group)
        assert sorted(x.tenant for x in letters) == ["acme", "globex"]
        (acme,) = await bus.dead_letters(group=group, tenant="acme")
        assert acme.event.data["n"] == 1
        assert acme.tenant == "acme"
        assert (await bus.dead_letter(acme.id)).tenant == "acme"
        assert await bus.dead_letters(group=group, tenant="initech") == []
        await bus.retry_dead_letter(acme.id)
        (again,) = await collect(consumer, 1, ack=True)
        assert again.event.tenant == "acme", "a retried event changed tenant"
        await consumer.close()

    # -- listing ----------------------------------------------------------------------------------

    async def check_a_listing_shows_one_tenants_events_newest_first_page_by_page(self) -> None:
        bus = await self.bus()
        acme = [item(i, f"k{i % 3}", tenant="acme") for i in range(10)]
        globex = [item(100 + i, f"k{i % 2}", tenant="globex") for i in range(4)]
        for one in [*acme[:4], *globex[:2], *acme[4:], *globex[2:]]:
            await bus.publish([one])  # one at a time: each accepted after the one before
        for limit in (3, 100):
            shown = await listing(bus, tenant="acme", limit=limit)
            numbers = [int(x.event.data["n"]) for x in shown]
            assert sorted(numbers) == list(range(10)), f"pages lost or repeated events: {numbers}"
            assert {x.event.tenant for x in shown} == {"acme"}, "another tenant's event was listed"
            stamps = [x.published_at for x in shown]
            assert stamps == sorted(stamps, reverse=True), "the listing is not newest first"
            for key in ("k0", "k1", "k2"):
                mine = [int(x.event.data["n"]) for x in shown if x.event.correlation_id == key]
                assert mine == sorted(mine, reverse=True), f"key {key} is not newest first"
            newest = next(x for x in shown if x.event == acme[-1])
            assert shown[0].published_at == newest.published_at, "the newest event is not first"
        assert sorted(int(x.event.data["n"]) for x in await listing(bus, tenant="globex")) == [
            100,
            101,
            102,
            103,
        ]
        assert len(await listing(bus)) == 14, "without a tenant every tenant's events are listed"
        nobody = await bus.list_events(tenant="initech")
        assert (nobody.events, nobody.cursor) == ([], None)
        consumer = bus.consumer(self.group(), [ITEM], name="m1")
        got = await collect(consumer, 14, ack=True)
        assert len(got) == 14, "listing took events from a group"
        await consumer.close()

    async def check_a_listing_filters_by_type_correlation_and_time(self) -> None:
        bus = await self.bus()
        other = new_event(OTHER, {"x": 1}, source="autonomic://conformance", tenant="acme")
        await bus.publish([item(1, "a", tenant="acme"), other, item(2, "b", tenant="acme")])
        await bus.publish([item(3, "a", tenant="acme"), item(4, "a", tenant="globex")])
        only = await listing(bus, tenant="acme", event_type=OTHER)
        assert [x.event for x in only] == [other]
        items = await listing(bus, tenant="acme", event_type=ITEM)
        assert sorted(int(x.event.data["n"]) for x in items) == [1, 2, 3]
        keyed = await listing(bus, tenant="acme", correlation="a")
        assert [int(x.event.data["n"]) for x in keyed] == [3, 1]
        newest = (await bus.list_events(tenant="acme", limit=1)).events[0]
        since = await listing(bus, tenant="acme", since=newest.published_at)
        assert newest.event in [x.event for x in since], "since left out an event published then"
        assert all(x.published_at >= newest.published_at for x in since)
        future = await bus.list_events(tenant="acme", since=newest.published_at + 3600)
        assert (future.events, future.cursor) == ([], None)

    async def check_a_listing_refuses_a_cursor_it_did_not_give_out(self) -> None:
        bus = await self.bus()
        await bus.publish([item(i, f"k{i}", tenant="acme") for i in range(3)])
        first = await bus.list_events(tenant="acme", limit=1)
        assert first.cursor is not None, "three events listed one at a time need a cursor"
        tampered = first.cursor[:-6] + ("AAAAAA" if first.cursor[-6:] != "AAAAAA" else "BBBBBB")
        cases: list[tuple[str, dict[str, Any]]] = [
            ("not-a-cursor", {"tenant": "acme"}),
            ("", {"tenant": "acme"}),
            ("eyJ2IjoxfQ", {"tenant": "acme"}),
            (tampered, {"tenant": "acme"}),
            (first.cursor, {"tenant": "globex"}),
            (first.cursor, {"tenant": "acme", "event_type": OTHER}),
        ]
        for bad, filters in cases:
            try:
                await bus.list_events(cursor=bad, limit=1, **filters)
            except InvalidInput:
                continue
            raise AssertionError(f"the cursor {bad[:40]!r} for {filters} was not InvalidInput")
        rest = await bus.list_events(tenant="acme", cursor=first.cursor, limit=10)
        assert len(rest.events) + len(first.events) <= 3

    # -- refusals ---------------------------------------------------------------------------------

    async def check_publish_refuses_a_bad_batch_whole(self) -> None:
        bus = await self.bus()
        good = item(1)
        cases: list[tuple[Event, str]] = [
            (new_event("test.conformance.nobody", {}, source="autonomic://t"), "unknown event"),
            (new_event(ITEM, {"n": "one"}, source="autonomic://t"), "data.n"),
            (new_event(ITEM, {"key": "k"}, source="autonomic://t"), "'n' is a required"),
            (new_event(OTHER, {"blob": "x" * 5000}, source="autonomic://t"), "over the limit"),
        ]
        for bad, says in cases:
            refusal = ""
            try:
                await bus.publish([good, bad])
            except EventRejected as exc:
                refusal = str(exc)
            assert refusal, f"publish accepted a bad event ({says})"
            assert says in refusal, f"the refusal {refusal} does not say {says!r}"
        consumer = bus.consumer(self.group(), [ITEM, OTHER], name="m1")
        assert await quiet(consumer) == [], "part of a refused batch was published"
        await consumer.close()

    async def check_an_unknown_dead_letter_is_not_found(self) -> None:
        bus = await self.bus()
        for call in (
            bus.dead_letter("dl-none"),
            bus.retry_dead_letter("dl-none"),
            bus.drop_dead_letter("dl-none", reason="x"),
        ):
            try:
                await call
            except NotFound:
                continue
            raise AssertionError("an unknown dead letter id was not NotFound")


CHECKS: list[str] = BusConformance.all_checks()
"""The names of all checks, for ``pytest.mark.parametrize``."""


async def run_check(name: str, *, open_bus: OpenBus) -> None:
    """Run one check on a fresh namespace (see the module docstring)."""
    await BusConformance(open_bus).run(name)


async def run_all(fresh_namespace: Callable[[], Awaitable[OpenBus]]) -> None:
    """Run every check, each on the namespace ``fresh_namespace()`` sets up."""
    for name in CHECKS:
        await run_check(name, open_bus=await fresh_namespace())


def data_of(deliveries: Sequence[Delivery]) -> list[Any]:
    """The ``data`` of each delivery, in order (a helper for adapter tests)."""
    return [d.event.data for d in deliveries]
