"""A worker: claims runnable runs and drives them, a few at a time, until told to stop.

Stopping is graceful: ``stop()`` lets every run in hand finish the step it is on, commit, and
release its lease so another worker can take it at once. A worker that dies instead (SIGKILL, a lost
machine) leaves leases that expire after ``lease_ttl``; the next claimer bumps the fencing token, so
if the dead worker was only paused, it can never commit again.

A worker survives whatever a run does: the engine ends a run an unexpected error broke (with the
reason in its journal) and the worker goes on with the next; a store that fails leaves the run for
recovery, and a failed claim is retried at the next poll.

On a bus (``bus=``), a worker also runs the outbox relay of its process (``engine/outbox.py``) and
consumes the event types its agents handle, starting a run per event (``engine/inbox.py``) and
claiming it at once. Several workers share the events through their consumer group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from autonomic.core.run import Run, RunStatus
from autonomic.engine.executor import Engine
from autonomic.engine.failure import scrub
from autonomic.engine.inbox import GROUP, EventStarter
from autonomic.engine.outbox import OutboxHook, Relay
from autonomic.governance.approvals import ApprovalDesk
from autonomic.observability.notifier import AlertNotifier
from autonomic.ports.bus import Bus, RetryPolicy

log = logging.getLogger("autonomic.worker")

WAITING = (
    RunStatus.PENDING,
    RunStatus.RUNNING,
    RunStatus.WAITING_FOR_HUMAN,
    RunStatus.WAITING_FOR_CHILD,
    RunStatus.SUSPENDED,
)
"""The statuses whose runs the metrics count (the gauge ``autonomic_runs_current``)."""
VERSION_GRACE = 600.0
"""Seconds a run may wait for a worker with its agent version before it is suspended."""
OBSERVE_EVERY = 2.0
"""Seconds between two looks at the store for the gauges (idle polls are more frequent)."""


class Worker:
    """Claim-and-drive loop over one engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        concurrency: int = 4,
        poll_interval: float = 0.5,
        bus: Bus | None = None,
        group: str = GROUP,
        retry: RetryPolicy | None = None,
        metrics: bool = False,
        notifier: AlertNotifier | None = None,
        version_grace: float | None = VERSION_GRACE,
    ) -> None:
        """``bus``: relay the outbox and start runs from the events the engine's agents handle,
        as member of consumer group ``group`` (docs/events.md). ``metrics``: at idle polls, set
        the gauges a scrape reads (approvals pending and their age, breaker states;
        ``autonomic.observability.metrics``). ``notifier``: page about pending approvals
        (Alertmanager's webhook format) at the same moments. ``version_grace``: at idle polls,
        suspend the runs whose agent version no worker has announced for this long
        (docs/release-safety.md); ``None``: never. Either way the worker announces the versions
        it drives, at start and every third of the grace period (``VERSION_GRACE`` when
        ``None``), from a task of its own, so a worker busy for hours is still seen."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if version_grace is not None and not version_grace > 0:
            raise ValueError("version_grace must be a positive number of seconds")
        self.version_grace = version_grace
        self.announce_every = (version_grace or VERSION_GRACE) / 3
        self.engine = engine
        self.metrics = metrics
        self.notifier = notifier
        self._observed = -OBSERVE_EVERY
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.finished: list[Run] = []
        self._wake = asyncio.Event()
        self.bus = bus
        self.relay: Relay | None = None
        self.starter: EventStarter | None = None
        if bus is not None:
            self.relay = Relay(engine.store, bus)
            hook = next((h for h in engine.hooks if isinstance(h, OutboxHook)), None)
            if hook is None:
                engine.hooks.append(OutboxHook(committed=self.relay.wake))
            else:
                hook.also_wake(self.relay.wake)
            self.starter = EventStarter(
                engine, bus, group=group, retry=retry, started=lambda _run: self.nudge()
            )

    def nudge(self) -> None:
        """A run became runnable (started from an event): claim now, not at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the current steps, release the leases, return from ``run``."""
        self.engine.stopping.set()
        self._wake.set()

    async def run(self, *, until_idle: bool = False) -> list[Run]:
        """Drive runs until ``stop()``; with ``until_idle``, also return once nothing is runnable
        (on a bus: and the outbox is drained and no event is waiting)."""
        side: list[asyncio.Task[None]] = []
        await self._announce()  # before the first claim: a sweep elsewhere sees us at once
        side.append(asyncio.create_task(self._announcer()))
        if not until_idle:
            if self.relay is not None:
                side.append(asyncio.create_task(self.relay.run(self.engine.stopping)))
            if self.starter is not None:
                side.append(asyncio.create_task(self.starter.run(self.engine.stopping)))
        try:
            finished = await self._claim_and_drive(until_idle)
            if self.relay is not None:  # what the last steps committed leaves before we do
                with contextlib.suppress(Exception):
                    await self.relay.drain()
            return finished
        finally:
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)

    async def _bus_idle(self) -> bool:
        """``until_idle`` on a bus: relay what is committed, take in what waits; ``True`` when
        neither moved anything."""
        moved = 0
        if self.relay is not None:
            moved += await self.relay.drain()
        if self.starter is not None and self.starter.routes:
            if self.starter.consumer is None:
                self.starter.consumer = self.bus.consumer(  # type: ignore[union-attr]
                    self.starter.group,
                    self.starter.types,
                    name=self.starter.name,
                    retry=self.starter.retry,
                )
            moved += await self.starter.step(self.starter.consumer, wait=0.2)
        return moved == 0

    async def _claim_and_drive(self, until_idle: bool) -> list[Run]:
        slots = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        ended = 0  # drives that ended: one ending after a claim found nothing may have
        # reopened a run (a parent its children's ends woke), so idleness is decided only by a
        # claim that found nothing with no drive ending meanwhile

        def count_ended(_: asyncio.Task[None]) -> None:
            nonlocal ended
            ended += 1

        while not self.engine.stopping.is_set():
            await slots.acquire()
            if self.engine.stopping.is_set():
                slots.release()
                break
            ended_before = ended
            try:
                run = await self.engine.claim()
            except Exception as exc:  # the store is down: nothing was claimed; try again later
                slots.release()
                log.error(
                    "claiming a run failed: %s; retrying in %ss",
                    scrub(str(exc)),
                    self.poll_interval,
                )
                if until_idle and not tasks:
                    raise
                await self._pause()
                continue
            if run is None:
                slots.release()
                if self.metrics or self.notifier is not None:
                    await self._observe()
                if await self._sweep_approvals():
                    continue  # a decided approval reopened a run: claim it now
                if await self._sweep_delegations():
                    continue  # a child was admitted or a parent reopened: claim it now
                await self._sweep_versions()

                if until_idle and not tasks:
                    if ended != ended_before:
                        continue  # a drive ended since the claim: look again
                    if self.bus is not None and not await self._bus_idle():
                        continue
                    break
                if until_idle:
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    continue
                await self._pause()
                continue
            task = asyncio.create_task(self._drive(run, slots))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            task.add_done_callback(count_ended)
        if tasks:
            await asyncio.gather(*tasks)
        if self.starter is not None and self.starter.consumer is not None and until_idle:
            await self.starter.consumer.close()
        if self.engine.stopping.is_set():
            await self.engine.aclose()  # shut down: close the gateway's pools and Redis link
        return self.finished

    async def _pause(self) -> None:
        """Wait for the next poll (or a ``stop()``)."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def _announce(self) -> None:
        try:
            await self.engine.announce()
        except Exception as exc:  # the store is down: the next round says it again
            log.warning("announcing agent versions failed: %s", scrub(str(exc)))

    async def _announcer(self) -> None:
        """Say again which agent versions this worker drives, every ``announce_every`` seconds,
        until it stops (whether its slots are free or not)."""
        while not self.engine.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.engine.stopping.wait(), self.announce_every)
            if not self.engine.stopping.is_set():
                await self._announce()

    async def _sweep_versions(self) -> None:
        """When idle: suspend the runs whose agent version nobody has (``version_grace``)."""
        if self.version_grace is None:
            return
        try:
            await self.engine.suspend_unserved(self.version_grace)
        except Exception:
            log.exception("sweeping runs of undeployed agent versions failed; retrying later")

    async def _sweep_approvals(self) -> bool:
        """When idle, expire (deny as timeout) and escalate the approvals that are due; ``True``
        if an expiry reopened a run."""
        try:
            changed = await ApprovalDesk(self.engine.store, clock=self.engine.clock).sweep()
        except Exception:
            log.exception("approval sweep failed; retrying at the next idle poll")
            return False
        return any(a.status.final for a in changed)

    async def _sweep_delegations(self) -> bool:
        """When idle, admit queued children of limited capabilities and reopen parents whose
        child ended unnoticed (``engine/delegation.py``); ``True`` if anything became runnable."""
        try:
            return await self.engine.sweep_delegations() > 0
        except NotImplementedError:
            return False
        except Exception:
            log.exception("delegation sweep failed; retrying at the next idle poll")
            return False

    async def _observe(self) -> None:
        """Set the gauges that need a look at the store or the breakers (when idle: cheap)."""
        from autonomic.core.approval import ApprovalStatus
        from autonomic.observability.metrics import Metrics

        moment = time.monotonic()
        if moment - self._observed < OBSERVE_EVERY:
            return
        self._observed = moment
        m = Metrics.get()
        try:
            pending = await self.engine.store.list_approvals(
                status=ApprovalStatus.PENDING, limit=10_000
            )
        except Exception as exc:
            log.warning("metrics: listing approvals failed: %s", scrub(str(exc)))
            return
        now = self.engine.clock()
        if self.notifier is not None and pending:
            from autonomic.observability.notifier import approval_waiting

            alerts = [approval_waiting(a, now) for a in pending]
            try:
                await asyncio.to_thread(self.notifier.send, alerts)
            except OSError as exc:
                log.warning("alert webhook: %s", scrub(str(exc)))
        m.approvals_pending.set(len(pending))
        m.approval_oldest_age.set(max((now - a.created_at for a in pending), default=0.0))
        if pending:
            m.approval_next_expiry.set(min(a.expires_at - now for a in pending))
        for status in WAITING:
            try:
                runs = await self.engine.store.list_runs(status=status, limit=10_000)
            except Exception as exc:
                log.warning("metrics: listing runs failed: %s", scrub(str(exc)))
                return
            m.runs_current.labels(status.value).set(len(runs))
            if status is RunStatus.RUNNING:
                m.runs_stuck.set(sum(1 for r in runs if r.lease.expires_at < now))
        for key, state in self.engine.circuits.snapshot().items():
            for name in ("open", "half_open"):
                m.breakers_open.labels(key, name).set(1 if state.state == name else 0)
        await self._observe_bus(m)

    async def _observe_bus(self, m: Any) -> None:
        """The bus's gauges, from the bus itself: the outbox's backlog (events committed, not
        yet published) and the consumer group's lag (events published, not yet handled)."""
        if self.relay is not None:
            try:
                m.outbox_pending.set(await self.engine.store.outbox_backlog())
            except Exception as exc:
                log.warning("metrics: counting the outbox failed: %s", scrub(str(exc)))
        starter = self.starter
        if starter is not None and starter.consumer is not None:
            try:
                m.consumer_lag.labels(starter.group).set(await starter.consumer.lag())
            except Exception as exc:
                log.warning("metrics: reading the consumer lag failed: %s", scrub(str(exc)))

    async def _drive(self, run: Run, slots: asyncio.Semaphore) -> None:
        try:
            self.finished.append(await self.engine.drive(run))
            if run.capability is not None:  # its slot may be free now: admit the next child
                await self.engine.sweep_delegations()
        except Exception as exc:
            # The engine ends a run an unexpected error broke (FAILED or SUSPENDED, with the
            # reason); what reaches here is the store failing: the run is left for recovery.
            log.error(
                "run %s: %s: %s; left for recovery when its lease expires",
                run.id,
                type(exc).__name__,
                scrub(str(exc)),
            )
        finally:
            slots.release()
