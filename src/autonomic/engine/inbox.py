"""Runs started from events, each event processed once: the inbox.

A worker on a bus consumes the event types its agents handle (``Agent(handles=[...])``) as one
consumer group; members of the group (several workers) share the events. For each event and each
agent that handles its type:

1. the run id is **derived** from the group, the agent and the event id (``run_id_for``), so a
   redelivered event names the same run;
2. the run is created PENDING with the event's ``data`` as its task, the event's correlation id
   (the conversation continues), tenant and ``traceparent``, and the event recorded in the
   ``inbox`` - all in one transaction (``Engine.start(..., processed=...)``);
3. only then is the event acknowledged. A crash before the ack redelivers the event; its run
   exists already (``RunExists``), so nothing is started twice and the event is acknowledged.

Any worker then claims and drives the run (``engine/worker.py``); its results leave through the
outbox (``engine/outbox.py``). An event that cannot start a run (a task the agent refuses, an
unknown type) is failed, retried with back-off and dead-lettered with the reason; the store being
down is failed too, so the event comes back once it is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from typing import Any

from autonomic.core import event_types as et
from autonomic.core.run import Run
from autonomic.engine.executor import Engine
from autonomic.errors import AutonomicError, RunExists
from autonomic.observability import genai
from autonomic.observability.metrics import current_metrics
from autonomic.observability.tracing import (
    Tracing,
    current_tracing,
    starting_under,
    traceparent_of,
)
from autonomic.ports.bus import Bus, Consumer, Delivery, RetryPolicy
from autonomic.ports.store import Processed


def _failed(span: Any, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


log = logging.getLogger("autonomic.inbox")

GROUP = "autonomic-workers"
"""The consumer group of ``autonomic worker --bus`` (one per deployment)."""


def run_id_for(group: str, agent: str, event_id: str) -> str:
    """The id of the run ``agent`` starts for an event: the same for every redelivery."""
    digest = hashlib.sha256(f"{group}\x1f{agent}\x1f{event_id}".encode()).hexdigest()
    return f"run_ev_{digest[:26]}"


class EventStarter:
    """Consumes the types the engine's agents handle and starts their runs (module docstring).

    Args:
        engine: creates the runs (its store holds the inbox).
        bus: where the events come from.
        group: the consumer group; workers of one deployment share it.
        name: this member's name (the worker's id).
        retry: back-off and attempts before an event is dead-lettered.
        started: told about each run created (a worker claims it at once).
    """

    def __init__(
        self,
        engine: Engine,
        bus: Bus,
        *,
        group: str = GROUP,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        started: Callable[[Run], None] | None = None,
    ) -> None:
        self.engine = engine
        self.bus = bus
        self.group = group
        self.name = name or engine.owner
        self.retry = retry
        self.started = started
        self.routes: dict[str, list[str]] = {}
        for agent_name in engine.agents.names():
            for kind in engine.agents.get(agent_name).handles:
                self.routes.setdefault(kind, []).append(agent_name)
        self.delegates = any(engine.agents.get(n).delegates_to for n in engine.agents.names())
        """Some agent here delegates: hand-offs and child results travel as events, consumed here
        (``engine/delegation.py``)."""
        if self.delegates:
            engine.delegation.via_bus = True
            for kind in (et.DELEGATION_REQUESTED, et.DELEGATION_COMPLETED):
                self.routes.setdefault(kind, [])
        self.consumer: Consumer | None = None
        self._buried = 0
        """How many the consumer had dead-lettered at the last look (``_count_dead_letters``)."""

    @property
    def types(self) -> list[str]:
        return sorted(self.routes)

    async def handle(self, delivery: Delivery, *, via: str | None = None) -> list[Run]:
        """Start the runs of one event (or find them started); the runs created now.

        ``via``: the ``traceparent`` of the span that consumed the event (tracing on), recorded
        as the run's ``traceparent`` so its root span hangs from it; else the event's own."""
        event = delivery.event
        created: list[Run] = []
        if self.delegates and event.type == et.DELEGATION_REQUESTED:
            processed = Processed(f"{self.group}/delegation", event.id)
            child = await self.engine.delegation.requested(event.data, processed)
            if child is not None:
                created.append(child)
                if self.started is not None:
                    self.started(child)
            return created
        if self.delegates and event.type == et.DELEGATION_COMPLETED:
            parent = str(event.data.get("parent_run_id", ""))
            if await self.engine.deliver(parent) and self.started is not None:
                self.started(await self.engine.store.get_run(parent))
            return created
        traceparent = via or event.traceparent
        for agent in self.routes.get(event.type, []):
            metadata: dict[str, object] = {
                "event": {"id": event.id, "type": event.type, "source": event.source}
            }
            if traceparent:
                metadata["traceparent"] = traceparent
            try:
                with starting_under(via):
                    run = await self.engine.start(
                        agent,
                        event.data,
                        tenant=event.tenant,
                        metadata=metadata,
                        run_id=run_id_for(self.group, agent, event.id),
                        correlation_id=event.correlation_id,
                        processed=Processed(f"{self.group}/{agent}", event.id),
                        source=f"event:{event.type}",
                    )
            except RunExists:
                continue  # a redelivery: this event's run was started before
            created.append(run)
            if self.started is not None:
                self.started(run)
        return created

    async def step(self, consumer: Consumer, *, wait: float = 0.5) -> int:
        """Poll once and handle what came; how many events were acknowledged."""
        done = 0
        tracing = current_tracing()
        for delivery in await consumer.poll(max_events=50, wait=wait):
            with contextlib.ExitStack() as scope:
                via = None
                if tracing is not None:
                    span = scope.enter_context(self._consume_span(tracing, delivery))
                    via = traceparent_of(span)
                try:
                    await self.handle(delivery, via=via)
                except AutonomicError as exc:
                    log.warning("event %s: %s", delivery.event.id, exc)
                    if tracing is not None:
                        _failed(span, exc)
                    await consumer.fail(delivery, str(exc))
                    continue
                await consumer.ack(delivery)
                done += 1
        self._count_dead_letters(consumer)
        return done

    def _consume_span(self, tracing: Tracing, delivery: Delivery) -> Any:
        """The ``process`` span of one delivery: the child of the publish span the CloudEvent
        carries (the producer's trace), current while the event is handled - the runs it starts
        join that trace, their root spans under this one."""
        event = delivery.event
        return tracing.messaging_span(
            "process",
            delivery.topic,
            {
                "messaging.message.id": event.id,
                "messaging.message.conversation_id": event.correlation_id,
                "messaging.consumer.group.name": self.group,
                "messaging.message.delivery_attempt": delivery.attempt,
                "cloudevents.event_type": event.type,
                genai.CORRELATION_ID: event.correlation_id,
            },
            parent=event.traceparent,
            system=getattr(self.bus, "messaging_system", "autonomic"),
        )

    def _count_dead_letters(self, consumer: Consumer) -> None:
        """Add what the member dead-lettered since the last look to ``autonomic_dead_letters``."""
        buried = getattr(consumer, "dead_lettered", 0)
        grown, self._buried = buried - self._buried, buried
        metrics = current_metrics()
        if grown > 0 and metrics is not None:
            metrics.dead_letters.labels(self.group).inc(grown)

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until ``stopping`` is set, then leave the group."""
        if not self.routes:
            return
        consumer = self.bus.consumer(self.group, self.types, name=self.name, retry=self.retry)
        self.consumer, self._buried = consumer, 0
        try:
            while not stopping.is_set():
                try:
                    await self.step(consumer)
                except AutonomicError as exc:  # the bus or the store is down: try again soon
                    log.error("consuming events failed: %s; retrying", exc)
                    await asyncio.sleep(1.0)
        finally:
            await consumer.close()
