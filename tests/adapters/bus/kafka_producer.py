"""A producer in a process of its own, for the Kafka crash trials: runs committed with their
events in the outbox (SQLite), relayed to Kafka.

``python kafka_producer.py URL DB COUNT``: creates runs ``r0`` .. ``r{COUNT-1}`` (a run that
exists already - a restart after a kill - is skipped), each creation staging ``run.started`` in
the outbox in the same transaction, and relays after each; then drains the outbox and prints
``done``. Killed anywhere (before a commit, between commit and publish, between publish and the
relay's mark), a restart finishes the job: committed events are published later, again perhaps,
never lost. ``KILL_AT=PHASE:I`` (``before_commit``, ``after_commit``, ``after_publish``) makes it
SIGKILL itself at that point of run I.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence

from autonomic.adapters.bus.kafka import KafkaBus
from autonomic.adapters.model.scripted import ScriptedModel
from autonomic.bootstrap import build_store
from autonomic.core.events import Event
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.engine.outbox import OutboxHook, Relay
from autonomic.errors import BusUnavailable, RunExists
from autonomic.governance.runaway.gate import Runaway

PHASE, _, AT = os.environ.get("KILL_AT", "none:-1").partition(":")


def die(phase: str, i: int) -> None:
    if phase == PHASE and i == int(AT):
        os.kill(os.getpid(), signal.SIGKILL)


class DyingBus(KafkaBus):
    """Dies after a publish the broker accepted, before the relay marks it sent."""

    current = -1

    async def publish(self, events: Sequence[Event]) -> None:
        await super().publish(events)
        die("after_publish", self.current)


async def main(url: str, db: str, count: int) -> None:
    store = build_store(f"sqlite:///{db}")
    await store.migrate()
    model = ScriptedModel([{"content": "done"}])
    engine = Engine(
        store, AgentRegistry([Agent(name="a", instructions="answer")]), lambda spec: model,
        runaway=Runaway(enabled=False), hooks=[OutboxHook()],
    )  # fmt: skip
    bus = DyingBus(url)
    relay = Relay(store, bus, batch=7)
    for i in range(count):
        bus.current = i
        die("before_commit", i)
        with contextlib.suppress(RunExists):  # a restart: created before the kill
            await engine.start("a", f"task {i}", run_id=f"r{i}")
        die("after_commit", i)
        with contextlib.suppress(BusUnavailable):  # the events wait in the outbox
            await relay.relay_once()
    while await store.outbox_pending():
        await relay.drain()
    print("done", flush=True)
    await relay.bus.aclose()
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
