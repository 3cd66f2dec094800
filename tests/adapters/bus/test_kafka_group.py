"""Three members of one Kafka consumer group in processes of their own, 1,000 keyed events, one
member SIGKILLed mid-batch: per-key order held, nothing lost, nothing processed twice (counted by
a sink whose inbox shares the effect's transaction; ``kafka_member.py``)."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from autonomic.adapters.bus.kafka import KafkaBus
from autonomic.core.envelope import new_event
from autonomic.core.event_types import EventTypes

MEMBER = Path(__file__).with_name("kafka_member.py")
TYPE = "test.kafka.item"
KEYS, PER_KEY = 50, 20


def _publish(url: str) -> None:
    async def go() -> None:
        types = EventTypes()
        types.declare(TYPE)
        bus = KafkaBus(url, types=types)
        events = [
            new_event(TYPE, {"key": f"k{k}", "seq": s}, source="autonomic://test",
                      correlation_id=f"k{k}", id=f"k{k}-{s}")
            for s in range(PER_KEY)
            for k in range(KEYS)
        ]  # fmt: skip
        for start in range(0, len(events), 100):
            await bus.publish(events[start : start + 100])
        await bus.aclose()

    asyncio.run(go())


def _count(sink: Path, sql: str) -> int:
    if not sink.exists():
        return 0
    db = sqlite3.connect(sink, timeout=60)
    try:
        return int(db.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # the tables are not there yet
    finally:
        db.close()


def test_three_members_one_killed_mid_batch_lose_nothing_and_repeat_nothing(kafka_url, tmp_path):
    sink = tmp_path / "sink.db"
    env_python = sys.executable
    logs = [(tmp_path / f"m{i}.log").open("wb") for i in range(3)]
    command = [env_python, str(MEMBER), kafka_url, "g"]
    members = [
        subprocess.Popen([*command, f"m{i}", str(sink), "150"], stdout=subprocess.PIPE, stderr=log)
        for i, log in enumerate(logs)
    ]
    try:
        for member in members:
            assert member.stdout is not None
            assert member.stdout.readline().strip() == b"ready"
        _publish(kafka_url)
        deadline = time.monotonic() + 180
        while _count(sink, "SELECT count(*) FROM effects") < KEYS * PER_KEY:
            assert time.monotonic() < deadline, "the group did not finish the 1,000 events"
            dead = [m.returncode for m in members if m.poll() is not None]
            assert all(code == -signal.SIGKILL for code in dead), f"a member crashed: {dead}"
            time.sleep(0.2)  # watching a sink other processes fill; the deadline bounds it
    finally:
        for member in members:
            if member.poll() is None:
                member.kill()
            member.wait()
            assert member.stdout is not None
            member.stdout.close()
        for log in logs:
            log.close()

    db = sqlite3.connect(sink)
    victim = db.execute("SELECT member FROM victim").fetchone()
    assert victim is not None, "no member was killed"
    killed = [m for i, m in enumerate(members) if f"m{i}" == victim[0]]
    assert killed[0].returncode == -signal.SIGKILL
    effects = db.execute("SELECT event_id, key, seq, member FROM effects ORDER BY rowid").fetchall()
    ids = [e[0] for e in effects]
    assert len(ids) == KEYS * PER_KEY, "lost events"
    assert len(set(ids)) == len(ids), "an event was processed twice"
    for k in range(KEYS):
        assert [e[2] for e in effects if e[1] == f"k{k}"] == list(range(PER_KEY)), f"k{k} order"
    deliveries = db.execute("SELECT count(*) FROM deliveries").fetchone()[0]
    # the victim died after its effect and before its ack: that event at least came again
    assert deliveries > len(ids), "nothing was redelivered: the kill was not mid-batch"
    last_of_victim = max(i for i, e in enumerate(effects) if e[3] == victim[0])
    assert last_of_victim < len(effects) - 1, "the survivors never took over"
