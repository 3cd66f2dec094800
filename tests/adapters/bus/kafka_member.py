"""One member of a Kafka consumer group in a process of its own, for the SIGKILL tests.

``python kafka_member.py URL GROUP NAME SINK [KILL_AFTER]``: consumes ``test.kafka.item``
events and, per event, in ONE SQLite transaction records its id in the inbox and appends the
effect (the sink): an id already in the inbox is skipped, so a redelivery never repeats an
effect. Every delivery (repeats included) is counted too. With ``KILL_AFTER``, the first member
of the group to commit its KILL_AFTER-th effect (the sink's ``victim`` table decides, so exactly
one) SIGKILLs itself right then, before acknowledging it: mid-batch, with the rest of its batch
in hand. Runs until killed from outside.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys

from autonomic.adapters.bus.kafka import KafkaBus
from autonomic.core.event_types import EventTypes

TYPE = os.environ.get("MEMBER_TYPE", "test.kafka.item")
"""The type consumed; ``autonomic.run.started`` in the crash trials (key: the correlation id)."""


def open_sink(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=60, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(
        "CREATE TABLE IF NOT EXISTS inbox (event_id TEXT PRIMARY KEY);"
        "CREATE TABLE IF NOT EXISTS effects (event_id TEXT, key TEXT, seq INTEGER, member TEXT);"
        "CREATE TABLE IF NOT EXISTS deliveries (event_id TEXT, member TEXT);"
        "CREATE TABLE IF NOT EXISTS victim (one INTEGER PRIMARY KEY CHECK (one = 1), member TEXT,"
        " event_id TEXT);"
    )
    return db


def apply(db: sqlite3.Connection, event_id: str, key: str, seq: int, member: str) -> bool:
    """The effect and its inbox row in one transaction; False when already processed."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("INSERT INTO deliveries VALUES (?, ?)", (event_id, member))
        if db.execute("SELECT 1 FROM inbox WHERE event_id = ?", (event_id,)).fetchone():
            db.execute("COMMIT")
            return False
        db.execute("INSERT INTO inbox VALUES (?)", (event_id,))
        db.execute("INSERT INTO effects VALUES (?, ?, ?, ?)", (event_id, key, seq, member))
        db.execute("COMMIT")
        return True
    except BaseException:
        db.execute("ROLLBACK")
        raise


def chosen(db: sqlite3.Connection, member: str, event_id: str) -> bool:
    """True for the one member that claims the victim's place first (with the event it dies
    holding)."""
    sql = "INSERT OR IGNORE INTO victim VALUES (1, ?, ?)"
    return db.execute(sql, (member, event_id)).rowcount == 1


async def main(url: str, group: str, name: str, sink: str, kill_after: int | None) -> None:
    types = EventTypes()
    if TYPE not in types:
        types.declare(TYPE)
    bus = KafkaBus(url, types=types)
    db = open_sink(sink)
    consumer = bus.consumer(group, [TYPE], name=name)
    done = 0
    print("ready", flush=True)
    while True:
        for delivery in await consumer.poll(max_events=50, wait=0.5):
            data = delivery.event.data
            key, seq = data.get("key", delivery.event.key), int(data.get("seq", 0))
            if apply(db, delivery.event.id, key, seq, name):
                done += 1
                if (
                    kill_after is not None
                    and done >= kill_after
                    and chosen(db, name, delivery.event.id)
                ):
                    os.kill(os.getpid(), signal.SIGKILL)
            await consumer.ack(delivery)


if __name__ == "__main__":
    url, group, name, sink = sys.argv[1:5]
    kill = int(sys.argv[5]) if len(sys.argv) > 5 else None
    asyncio.run(main(url, group, name, sink, kill))
