"""The transactional outbox: the events a step causes, written with the step, published after.

The protocol, top to bottom (``docs/events.md`` draws it):

1. **Stage.** Right before a run's commit, ``OutboxHook.stage_events`` reads the entries about to
   be committed and gives the events they cause (``run_events``): a run started, waiting for a
   human, completed, failed or suspended; an approval requested; an event the agent emitted
   (its ``emit_event`` tool's recorded result). Each event's id is derived from the entry that
   causes it (``<run id>.<seq>.<n>``), so the same step always yields the same ids.
2. **Commit.** The store writes them into ``outbox`` in the same transaction as the journal
   entries (``Store.commit(..., outbox=...)``, ``Store.create_run(..., outbox=...)``): a committed
   step always has its events, a step whose commit was refused (a lost lease, a crash before the
   commit) never does.
3. **Relay.** ``Relay`` reads committed, unsent events in order, publishes them in batches and
   marks them sent. A crash between publish and mark publishes them again: the bus drops a
   repeated event id (the embedded bus) or the consumers' inbox does (``engine/inbox.py``), so
   publish-then-mark is at-least-once on the wire and once in effect. A bus that is down leaves
   the events in the outbox; the relay retries with a back-off until it is back.

Every event carries the run's correlation id (the id of the conversation: the event that started
the run's own, or the run's id), its tenant and, when the run has one, its ``traceparent``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from autonomic.core import event_types as et
from autonomic.core.entries import (
    CompensationStep,
    DecisionRecord,
    RunStarted,
    SubtaskStep,
    ToolIntent,
    ToolResult,
    Transition,
)
from autonomic.core.envelope import new_event
from autonomic.core.events import Event
from autonomic.core.journal import Entry
from autonomic.core.run import Run, RunStatus
from autonomic.engine.delegation import Handoff, child_run_id, handoffs
from autonomic.engine.faults import Faults, NoFaults
from autonomic.engine.step import Hook
from autonomic.errors import AutonomicError, EventRejected
from autonomic.observability import genai
from autonomic.observability.metrics import current_metrics
from autonomic.observability.trace_context import TraceContext
from autonomic.observability.tracing import Tracing, current_tracing, traceparent_of
from autonomic.ports.bus import Bus
from autonomic.ports.store import Store
from autonomic.tools.delegate import DELEGATE_TOOL
from autonomic.tools.emit import EMIT_TOOL

log = logging.getLogger(__name__)

_TRACES_KEPT = 4096

_ENDS = {
    RunStatus.WAITING_FOR_HUMAN.value: et.RUN_WAITING,
    RunStatus.COMPLETED.value: et.RUN_COMPLETED,
    RunStatus.FAILED.value: et.RUN_FAILED,
    RunStatus.SUSPENDED.value: et.RUN_SUSPENDED,
}


def source_of(run_id: str) -> str:
    return f"autonomic://run/{run_id}"


def run_events(run: Run, entries: Sequence[Entry], trace: str | None = None) -> list[Event]:
    """The events ``entries`` of ``run`` cause, in journal order (pure: the same entries always
    give the same events, ids included).

    ``trace``: the ``traceparent`` of the run's root span as its journal records it (``None``:
    not recorded, or not known here); the events carry it - or the one derived from the run's id,
    which is what a run without a recorded one is traced under - so the relay's publish span
    hangs from the producing run."""
    events: list[Event] = []
    correlation = run.correlation_id or run.id
    for entry in entries:
        if isinstance(entry.body, RunStarted) and entry.body.trace:
            trace = entry.body.trace
    traceparent = (TraceContext.parse(trace) or TraceContext.of_run(run.id)).traceparent

    def add(entry: Entry, n: int, type_: str, data: dict[str, Any]) -> None:
        events.append(
            new_event(
                type_,
                data,
                source=source_of(run.id),
                id=f"{run.id}.{entry.seq}.{n}",
                correlation_id=correlation,
                subject=run.id,
                tenant=run.tenant,
                traceparent=traceparent,
                time_=entry.created_at,
            )
        )

    base = {"run_id": run.id, "agent": run.agent}
    for entry in entries:
        body = entry.body
        if isinstance(body, RunStarted):
            add(entry, 0, et.RUN_STARTED, {**base, "task": body.task, "tenant": run.tenant})
        elif isinstance(body, Transition) and body.target in _ENDS:
            data: dict[str, Any] = {**base, "reason": body.reason}
            if body.target == RunStatus.COMPLETED.value:
                data["output"] = body.output
            add(entry, 0, _ENDS[body.target], data)
            if run.parent_run_id is not None and body.target != RunStatus.WAITING_FOR_HUMAN.value:
                add(entry, 2, et.DELEGATION_COMPLETED, completed(run, body))
            if body.approval_id is not None:
                tool = _approval_tool(entries)
                add(
                    entry,
                    1,
                    et.APPROVAL_REQUESTED,
                    {**base, "approval_id": body.approval_id, "tool": tool},
                )
        elif isinstance(body, ToolIntent) and body.tool == DELEGATE_TOOL:
            add(entry, 0, et.DELEGATION_REQUESTED, requested(run, Handoff.of_intent(body)))
        elif isinstance(body, SubtaskStep | CompensationStep) and (
            handoff := handoffs([entry]).get(str(getattr(body, "key", "") or ""))
        ):
            add(entry, 0, et.DELEGATION_REQUESTED, requested(run, handoff))
        elif isinstance(body, ToolResult) and body.tool == EMIT_TOOL and body.ok:
            output = body.output if isinstance(body.output, dict) else {}
            kind, data_out = output.get("type"), output.get("data")
            if isinstance(kind, str):
                add(entry, 0, kind, data_out if isinstance(data_out, dict) else {})
    return events


def requested(run: Run, handoff: Handoff) -> dict[str, Any]:
    """A hand-off's event: which child run the parent's ``delegate`` call, or its coordinator's
    subtask or compensation, asks for."""
    return {
        "parent_run_id": run.id,
        "child_run_id": child_run_id(run.id, handoff.key),
        "key": handoff.key,
        "agent": handoff.agent,
        "capability": handoff.capability,
        "task": handoff.task,
    }


def completed(run: Run, transition: Transition) -> dict[str, Any]:
    """A child's end (or suspension): its parent may resume."""
    assert run.parent_run_id is not None
    return {
        "parent_run_id": run.parent_run_id,
        "child_run_id": run.id,
        "status": transition.target,
        "reason": transition.reason,
    }


def _approval_tool(entries: Sequence[Entry]) -> str:
    for entry in reversed(entries):
        if isinstance(entry.body, DecisionRecord):
            return entry.body.tool
    return "unknown"


class OutboxHook(Hook):
    """Stages every run's events in its commits (see the module docstring) and wakes the relay of
    this process once they are durable.

    Staging checks nothing, to keep the commit cheap: the runtime's own events are built here in
    their types' shapes, and an agent's were checked by its ``emit_event`` tool when it called
    it. The bus checks every event again when the relay publishes it; one it refuses is logged
    and skipped (``Relay``), never blocking the events behind it."""

    def __init__(self, *, committed: Callable[[], None] | None = None) -> None:
        self._wakes: list[Callable[[], None]] = [committed] if committed is not None else []
        self._staged: set[str] = set()
        self._traces: dict[str, str | None] = {}
        """The recorded root ``traceparent`` of each run this process drives (kept after the
        drive, a bounded number: a run's last commit may come after its steps)."""

    async def around_run(self, step: Any, drive: Callable[[], Awaitable[None]]) -> None:
        self._traces[step.session.run.id] = step.session.state.trace
        while len(self._traces) > _TRACES_KEPT:  # the oldest runs first (insertion order)
            self._traces.pop(next(iter(self._traces)))
        await drive()

    def stage_events(self, run: Run, entries: Sequence[Entry]) -> Sequence[Event]:
        events = run_events(run, entries, self._traces.get(run.id))
        if events:
            self._staged.add(run.id)
        return events

    def on_commit(self, session: Any, entries: Sequence[Entry]) -> None:
        run_id = session.run.id
        if run_id in self._staged:
            self._staged.discard(run_id)
            self.wake()

    def also_wake(self, wake: Callable[[], None]) -> None:
        """Also call ``wake`` when a commit with events is durable (another relay)."""
        self._wakes.append(wake)

    def wake(self) -> None:
        """Tell the relays there is something to publish."""
        for wake in self._wakes:
            wake()


def _end(spans: Sequence[Any], error: BaseException | None) -> None:
    """End a batch's publish spans (marked failed, with the error's type, when it failed)."""
    if not spans:
        return
    from opentelemetry.trace import Status, StatusCode

    for span in spans:
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()


class Relay:
    """Publishes committed outbox events in order, in batches, and marks them sent.

    Args:
        store: the store whose outbox is read.
        bus: where events go.
        batch: events per publish.
        interval: the longest it waits without looking (events committed by other processes).
    """

    def __init__(
        self,
        store: Store,
        bus: Bus,
        *,
        batch: int = 100,
        interval: float = 0.5,
        faults: Faults | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.batch = batch
        self.interval = interval
        self.faults = faults or NoFaults()
        """``relay_published``: a batch is on the bus, not yet marked sent (crash tests)."""
        self._wake = asyncio.Event()
        self.published = 0

    def wake(self) -> None:
        self._wake.set()

    async def relay_once(self) -> int:
        """Publish one batch of unsent events and mark it sent; how many went."""
        items = await self.store.outbox_pending(limit=self.batch)
        if not items:
            return 0
        seqs = [item.seq for item in items]
        tracing = current_tracing()
        spans: list[Any] = []
        if tracing is not None:  # a span per event; the event carries its publish span
            items, spans = self._traced(tracing, items)
        events = [item.event for item in items]
        started = time.perf_counter()
        try:
            await self.bus.publish(events)
        except EventRejected:
            sent = await self._one_by_one(items)
            seqs = sent
        except BaseException as exc:
            _end(spans, exc)
            raise
        _end(spans, None)
        metrics = current_metrics()
        if metrics is not None:
            metrics.phase_seconds.labels("messaging").observe(time.perf_counter() - started)
        self.faults.at("relay_published")
        await self.store.outbox_sent(seqs, now=time.time())
        self.published += len(seqs)
        return len(seqs)

    def _traced(self, tracing: Tracing, items: Sequence[Any]) -> tuple[list[Any], list[Any]]:
        """A ``publish`` span per event, under the producing run's root (the ``traceparent`` the
        outbox staged), and the items with that span's ``traceparent`` in their CloudEvent: a
        consumer's span becomes its child, in the producer's trace."""
        system = getattr(self.bus, "messaging_system", "autonomic")
        traced: list[Any] = []
        spans: list[Any] = []
        for item in items:
            event = item.event
            span = tracing.messaging(
                "publish",
                self.bus.topic_of(event.type),
                {
                    "messaging.message.id": event.id,
                    "messaging.message.conversation_id": event.correlation_id,
                    "cloudevents.event_type": event.type,
                    genai.CORRELATION_ID: event.correlation_id,
                },
                parent=event.traceparent,
                system=system,
            )
            spans.append(span)
            carried = replace(event, traceparent=traceparent_of(span))
            traced.append(replace(item, event=carried))
        return traced, spans

    async def _one_by_one(self, items: Sequence[Any]) -> list[int]:
        """A batch the bus refused: publish the good ones; a refused one is marked sent too (it
        would block every later event) and logged with the bus's reason."""
        done: list[int] = []
        for item in items:
            try:
                await self.bus.publish([item.event])
            except EventRejected as exc:
                log.error("outbox event %s refused by the bus, not sent: %s", item.event.id, exc)
            done.append(item.seq)
        return done

    async def drain(self) -> int:
        """Publish until the outbox is empty; how many went."""
        total = 0
        while True:
            sent = await self.relay_once()
            total += sent
            if sent < self.batch:
                return total

    async def run(self, stopping: asyncio.Event) -> None:
        """Relay until ``stopping`` is set: at once when woken, else every ``interval``; a bus
        that fails is retried with a growing delay (the events wait in the outbox)."""
        delay = self.interval
        while not stopping.is_set():
            self._wake.clear()
            try:
                await self.drain()
                delay = self.interval
            except AutonomicError as exc:
                log.warning("relay: publishing failed, retrying in %.1fs: %s", delay, exc)
                delay = min(delay * 2, 30.0)
            except OSError as exc:
                log.warning("relay: publishing failed, retrying in %.1fs: %s", delay, exc)
                delay = min(delay * 2, 30.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
