"""The bus crash harness: producer, relay and consumer processes SIGKILLed at random points, and
the exactly-once checks after. Generic over the bus URL (``sql``, ``kafka://...``): only the
store (outbox, inbox, the sink) must be a SQL database.

One **trial** (``run_trial``), seeded:

* a **producer** process commits ``events`` small "steps" - each a run created with one event in
  its outbox, in the same transaction (``Store.create_run(..., outbox=...)``) - and every fifth
  one also tries a commit that is refused (a stale version) carrying an ``aborted-*`` event;
* a **relay** process publishes the outbox (``engine/outbox.py``), in random batch sizes;
* two **consumer** processes of one group take the events; each records the event in the inbox
  and appends a row to a sink table *in the same transaction* (the effect), then acknowledges.

The harness SIGKILLs processes at random moments and restarts them; some processes are also
started to kill themselves at a precise protocol point (the producer right after a commit, the
relay between publishing a batch and marking it sent, a consumer between its effect and its ack).
Then it lets everything finish and checks: every committed event was processed, each exactly
once (no event twice in the sink), and no event of a refused commit exists anywhere.

``run_rebalance`` is the ordering check: 1,000 events over 50 keys published straight to the
bus, three consumers in a group, one SIGKILLed mid-batch; every event processed once, and each
key's events processed in publish order.

The roles run as ``python -m autonomic.testing.bus_crash ROLE ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from autonomic.adapters.store.sql import SqlStore, translate
from autonomic.core.envelope import new_event
from autonomic.core.event_types import EventType, EventTypes
from autonomic.core.run import Lease, Run, RunChanges, RunStatus
from autonomic.errors import AutonomicError, RunExists, StaleVersion
from autonomic.ports.bus import Bus, RetryPolicy

ITEM = "test.crash.item"
GROUP = "crash-consumers"
TYPES = EventTypes(
    (
        EventType(
            ITEM,
            {
                "type": "object",
                "properties": {"n": {"type": "integer"}, "key": {"type": "string"}},
                "required": ["n", "key"],
            },
        ),
    )
)
POINTS = ("producer_committed", "relay_published", "consumer_effect")

_SINK = {
    "sqlite": "CREATE TABLE IF NOT EXISTS bus_crash_sink (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
    "event_id TEXT NOT NULL, key TEXT NOT NULL, n INTEGER NOT NULL, member TEXT NOT NULL)",
    "postgres": "CREATE TABLE IF NOT EXISTS bus_crash_sink (seq BIGSERIAL PRIMARY KEY, "
    "event_id TEXT NOT NULL, key TEXT NOT NULL, n INTEGER NOT NULL, member TEXT NOT NULL)",
}
_INBOX = (
    "INSERT INTO inbox (grp, event_id, run_id, processed_at) VALUES (:grp, :event_id, NULL, :now) "
    "ON CONFLICT (grp, event_id) DO NOTHING RETURNING event_id"
)
_EFFECT = (
    "INSERT INTO bus_crash_sink (event_id, key, n, member) VALUES (:event_id, :key, :n, :member)"
)


class _DieAt:
    """SIGKILL this process the ``count``-th time ``point`` is reached (``--die-at``)."""

    def __init__(self, point: str | None, count: int) -> None:
        self.point = point
        self.count = count
        self.seen = 0

    def at(self, point: str) -> None:
        if point == self.point:
            self.seen += 1
            if self.seen >= self.count:
                os.kill(os.getpid(), signal.SIGKILL)


async def _open(db: str, bus_url: str) -> tuple[SqlStore, Bus]:
    from autonomic.bootstrap import build_store, open_bus

    store = build_store(db)
    assert isinstance(store, SqlStore)
    return store, open_bus(bus_url, store, types=TYPES)


# -- the roles (child processes) -------------------------------------------------------------------


async def _producer(args: argparse.Namespace, die: _DieAt) -> None:
    store, bus = await _open(args.db, args.bus)
    now = time.time()
    for i in range(args.events):
        key = f"k{i % args.keys}"
        event = new_event(
            ITEM, {"n": i, "key": key}, source="autonomic://crash", id=f"ev-{i}", correlation_id=key
        )
        run = Run(
            id=f"src-{i}",
            agent="crash-producer",
            agent_version="1",
            model="none",
            status=RunStatus.COMPLETED,
            version=1,
            lease=Lease(owner=None, expires_at=0.0, fence=0),
            created_at=now,
            updated_at=now,
            correlation_id=key,
        )
        try:
            await store.create_run(run, [], outbox=[event])
        except RunExists:
            continue  # committed before this process was restarted
        die.at("producer_committed")
        if i % 5 == 4:
            aborted = new_event(
                ITEM, {"n": -i, "key": key}, source="autonomic://crash", id=f"aborted-{i}"
            )
            try:
                await store.commit(
                    run.id,
                    expected_version=99,
                    fence=None,
                    entries=[],
                    changes=RunChanges(),
                    now=now,
                    outbox=[aborted],
                )
            except StaleVersion:
                pass
            else:
                raise AssertionError("a stale commit was accepted")
    await bus.aclose()
    await store.close()


async def _relay(args: argparse.Namespace, die: _DieAt) -> None:
    from autonomic.engine.outbox import Relay

    store, bus = await _open(args.db, args.bus)
    rng = random.Random(args.seed)  # noqa: S311 - reproducible chaos, not secrets
    relay = Relay(store, bus, batch=rng.randint(1, 12), interval=0.05, faults=die)
    while True:
        try:
            if await relay.relay_once() == 0:
                await asyncio.sleep(0.05)
        except AutonomicError:
            await asyncio.sleep(0.1)


async def _consumer(args: argparse.Namespace, die: _DieAt) -> None:
    store, bus = await _open(args.db, args.bus)
    consumer = bus.consumer(
        GROUP, [ITEM], name=args.name, retry=RetryPolicy(max_attempts=50, base_delay=0.05)
    )
    inbox = translate(_INBOX, store.paramstyle)
    effect = translate(_EFFECT, store.paramstyle)
    while True:
        try:
            batch = await consumer.poll(max_events=args.batch, wait=0.5)
        except AutonomicError:
            await asyncio.sleep(0.1)
            continue
        for delivery in batch:
            event = delivery.event
            async with store.transaction() as execute:
                fresh = args.no_inbox or await execute(
                    inbox, {"grp": GROUP, "event_id": event.id, "now": time.time()}
                )
                if fresh:
                    await execute(
                        effect,
                        {
                            "event_id": event.id,
                            "key": event.data["key"],
                            "n": event.data["n"],
                            "member": args.name,
                        },
                    )
            die.at("consumer_effect")
            await consumer.ack(delivery)


async def _publisher(args: argparse.Namespace, die: _DieAt) -> None:
    """``run_rebalance``'s source: publish straight to the bus, keys interleaved."""
    store, bus = await _open(args.db, args.bus)
    events = [
        new_event(
            ITEM,
            {"n": i, "key": f"k{i % args.keys}"},
            source="autonomic://crash",
            id=f"ev-{i}",
            correlation_id=f"k{i % args.keys}",
        )
        for i in range(args.events)
    ]
    for start in range(0, len(events), 100):
        await bus.publish(events[start : start + 100])
    await bus.aclose()
    await store.close()


ROLES = {
    "producer": _producer,
    "relay": _relay,
    "consumer": _consumer,
    "publisher": _publisher,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m autonomic.testing.bus_crash")
    parser.add_argument("role", choices=sorted(ROLES))
    parser.add_argument("--db", required=True)
    parser.add_argument("--bus", required=True)
    parser.add_argument("--name", default="member")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--events", type=int, default=30)
    parser.add_argument("--keys", type=int, default=5)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--die-at", choices=POINTS, default=None)
    parser.add_argument("--die-after", type=int, default=1)
    parser.add_argument(
        "--no-inbox", action="store_true", help="forget the inbox (the harness must catch it)"
    )
    args = parser.parse_args(argv)
    asyncio.run(ROLES[args.role](args, _DieAt(args.die_at, args.die_after)))


# -- the harness (the parent) -----------------------------------------------------------------------


@dataclass
class TrialReport:
    """What one trial saw; ``problems`` is empty when every check held."""

    seed: int
    committed: int
    processed: int
    kills: int
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        state = "ok" if not self.problems else "; ".join(self.problems)
        return (
            f"seed {self.seed}: {self.committed} committed, {self.processed} processed, "
            f"{self.kills} kills: {state}"
        )


class _Fleet:
    """The child processes of a trial, by role, restarted after each kill."""

    def __init__(self, db: str, bus: str, seed: int, common: list[str]) -> None:
        self.db, self.bus, self.seed = db, bus, seed
        self.common = common
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.args: dict[str, list[str]] = {}
        self.done: set[str] = set()

    def start(self, name: str, role: str, *extra: str) -> None:
        args = [role, "--db", self.db, "--bus", self.bus, "--name", name, *self.common, *extra]
        self.args[name] = args
        self._spawn(name, args)

    def _spawn(self, name: str, args: list[str]) -> None:
        old = self.procs.get(name)
        if old is not None:  # dead already (killed, or it killed itself): reap it
            old.wait()
            if old.stderr is not None:
                old.stderr.close()
        self.procs[name] = subprocess.Popen(  # noqa: S603 - our own module, fixed argv
            [sys.executable, "-m", "autonomic.testing.bus_crash", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def restart(self, name: str, *, die: list[str] | None = None) -> None:
        base = list(self.args[name])
        for flag in ("--die-at", "--die-after"):  # a restarted process dies only when killed
            if flag in base:
                i = base.index(flag)
                del base[i : i + 2]
        self._spawn(name, [*base, *(die or [])])

    def check(self) -> list[str]:
        """Restart what died (a self-kill at a point); note what finished; errors of a role."""
        errors: list[str] = []
        for name, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None or name in self.done:
                continue
            if code == 0:
                self.done.add(name)
            elif code == -signal.SIGKILL:
                self.restart(name)
            else:
                tail = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace")
                errors.append(f"{name} exited {code}: {tail.strip().splitlines()[-1:]}")
                self.done.add(name)
        return errors

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def stop(self) -> None:
        for name in list(self.procs):
            self.kill(name)
            proc = self.procs[name]
            if proc.stderr is not None:
                proc.stderr.close()


async def _prepare(db: str) -> None:
    from autonomic.bootstrap import build_store

    store = build_store(db)
    assert isinstance(store, SqlStore)
    await store.migrate()
    async with store.transaction() as execute:
        await execute(_SINK[store.dialect], None)
    await store.close()


async def _facts(db: str) -> dict[str, Any]:
    from autonomic.bootstrap import build_store

    store = build_store(db)
    assert isinstance(store, SqlStore)
    try:
        outbox = [r[0] for r in await store.query("SELECT event_id FROM outbox", {})]
        unsent = await store.query("SELECT count(*) FROM outbox WHERE sent_at IS NULL", {})
        sink = await store.query(
            "SELECT event_id, key, n, seq FROM bus_crash_sink ORDER BY seq", {}
        )
        inbox = [r[0] for r in await store.query("SELECT event_id FROM inbox", {})]
        events = [r[0] for r in await store.query("SELECT event_id FROM bus_events", {})]
        return {
            "outbox": outbox,
            "unsent": int(unsent[0][0]),
            "sink": sink,
            "inbox": inbox,
            "bus_events": events,
        }
    finally:
        await store.close()


def _wait_until(
    db: str, fleet: _Fleet, done: Any, deadline: float
) -> tuple[dict[str, Any], list[str]]:
    errors: list[str] = []
    facts: dict[str, Any] = {}
    while time.monotonic() < deadline:
        errors += fleet.check()
        facts = asyncio.run(_facts(db))
        if errors or done(facts):
            break
        time.sleep(0.1)  # the harness's pace while the fleet works (not a synchronisation)
    return facts, errors


def run_trial(
    db: str,
    bus: str,
    seed: int,
    *,
    events: int = 30,
    deadline: float = 90.0,
    broken_inbox: bool = False,
) -> TrialReport:
    """One seeded trial on a fresh database ``db`` (see the module docstring).

    ``broken_inbox``: consumers that skip the inbox, one of them killed between an effect and its
    ack - the duplicate the checks must report (proof that they can fail)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible chaos, not secrets
    asyncio.run(_prepare(db))
    common = ["--seed", str(seed), "--events", str(events), "--keys", "5"]
    fleet = _Fleet(db, bus, seed, common)

    def self_kill(point: str) -> list[str]:
        return ["--die-at", point, "--die-after", str(rng.randint(1, 4))]

    fleet.start(
        "producer", "producer", *(self_kill("producer_committed") if rng.random() < 0.5 else [])
    )
    fleet.start("relay", "relay", *(self_kill("relay_published") if rng.random() < 0.7 else []))
    for member in ("c1",) if broken_inbox else ("c1", "c2"):
        extra = self_kill("consumer_effect") if rng.random() < 0.5 else []
        if broken_inbox:  # one member, killed between its first effect and its ack
            extra = ["--no-inbox", "--die-at", "consumer_effect", "--die-after", "1"]
        fleet.start(member, "consumer", "--batch", str(rng.randint(1, 8)), *extra)
    kills = 0
    end = time.monotonic() + deadline
    try:
        for _ in range(0 if broken_inbox else rng.randint(2, 5)):
            time.sleep(rng.uniform(0.05, 0.6))  # a random moment to strike (chaos, not sync)
            victim = rng.choice(sorted(set(fleet.procs) - fleet.done))
            fleet.kill(victim)
            kills += 1
            fleet.restart(victim)

        def finished(facts: dict[str, Any]) -> bool:
            return (
                "producer" in fleet.done
                and facts["unsent"] == 0
                and len({row[0] for row in facts["sink"]}) >= len(facts["outbox"])
            )

        facts, errors = _wait_until(db, fleet, finished, end)
    finally:
        fleet.stop()
    facts = asyncio.run(_facts(db))
    report = TrialReport(seed, len(facts["outbox"]), len({r[0] for r in facts["sink"]}), kills)
    report.problems += errors
    committed = set(facts["outbox"])
    processed = Counter(row[0] for row in facts["sink"])
    if "producer" not in fleet.done:
        report.problems.append("the producer never finished")
    if len(committed) != events:
        report.problems.append(f"{len(committed)} of {events} steps committed")
    missing = committed - set(processed)
    if missing:
        report.problems.append(
            f"{len(missing)} committed events never processed: {sorted(missing)[:5]}"
        )
    twice = {e: c for e, c in processed.items() if c > 1}
    if twice:
        report.problems.append(f"{len(twice)} events processed more than once: {twice}")
    ghosts = {
        e
        for e in (*processed, *facts["bus_events"], *facts["outbox"], *facts["inbox"])
        if e.startswith("aborted-")
    }
    if ghosts:
        report.problems.append(f"events of refused commits exist: {sorted(ghosts)[:5]}")
    return report


@dataclass
class RebalanceReport:
    events: int
    processed: int
    duplicates: int
    out_of_order: list[str]
    killed: str
    problems: list[str] = field(default_factory=list)


def run_rebalance(
    db: str, bus: str, *, events: int = 1000, keys: int = 50, seed: int = 0, deadline: float = 240.0
) -> RebalanceReport:
    """1,000 keyed events, three consumers, one SIGKILLed mid-batch (module docstring)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible chaos, not secrets
    asyncio.run(_prepare(db))
    common = ["--seed", str(seed), "--events", str(events), "--keys", str(keys)]
    fleet = _Fleet(db, bus, seed, common)
    end = time.monotonic() + deadline
    # The victim must die *mid-batch* whatever the host's load, so the order of events is made,
    # not raced: every event is published first; the victim starts alone and takes a first batch
    # of 25 (50 keys, one event of each key out at a time); once its first effect is in the sink
    # the other two start; the victim kills itself at an effect inside that first batch.
    errors: list[str] = []
    facts: dict[str, Any] = {}
    victim = ""
    try:
        fleet.start("publisher", "publisher")
        while fleet.procs["publisher"].poll() is None and time.monotonic() < end:
            time.sleep(0.05)  # waiting for a child process to exit, bounded by the deadline
        if fleet.procs["publisher"].poll() != 0:
            errors.append("the publisher did not finish publishing")
        fleet.done.add("publisher")
        victim = rng.choice(["c1", "c2", "c3"])
        die = ["--die-at", "consumer_effect", "--die-after", str(rng.randint(2, 24))]
        fleet.start(victim, "consumer", "--batch", "25", *die)
        while not asyncio.run(_facts(db))["sink"] and time.monotonic() < end:
            if fleet.procs[victim].poll() is not None:
                break
            time.sleep(0.05)  # waiting for the victim's first effect, bounded by the deadline
        for member in ("c1", "c2", "c3"):
            if member != victim:
                fleet.start(member, "consumer", "--batch", "25")
        while time.monotonic() < end:
            for name, proc in fleet.procs.items():  # the victim stays dead: the others take over
                code = proc.poll()
                if code not in (None, 0, -signal.SIGKILL) and name not in fleet.done:
                    tail = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace")
                    errors.append(f"{name} exited {code}: {tail.strip().splitlines()[-1:]}")
                    fleet.done.add(name)
                elif code == 0:
                    fleet.done.add(name)
            facts = asyncio.run(_facts(db))
            if errors or len({r[0] for r in facts["sink"]}) >= events:
                break
            time.sleep(0.2)  # the harness's pace (not a synchronisation)
        killed = victim in fleet.procs and fleet.procs[victim].poll() == -signal.SIGKILL
    finally:
        fleet.stop()
    facts = asyncio.run(_facts(db))
    counts = Counter(row[0] for row in facts["sink"])
    by_key: dict[str, list[int]] = defaultdict(list)
    for _event_id, key, n, _seq in facts["sink"]:
        by_key[str(key)].append(int(n))
    disordered = [k for k, ns in by_key.items() if ns != sorted(ns)]
    report = RebalanceReport(
        events=events,
        processed=len(counts),
        duplicates=sum(c - 1 for c in counts.values()),
        out_of_order=disordered,
        killed=victim if killed else "",
        problems=errors,
    )
    if report.processed != events:
        report.problems.append(f"{events - report.processed} events never processed")
    if report.duplicates:
        report.problems.append(f"{report.duplicates} duplicate effects")
    if disordered:
        report.problems.append(f"keys out of order: {disordered[:5]}")
    if not killed:
        report.problems.append(f"{victim} was never killed mid-batch")
    return report


if __name__ == "__main__":
    main()
