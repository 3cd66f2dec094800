"""Crash trials on Kafka: a producer (runs committed with their events in the outbox, relayed to
Kafka) and two consumers of one group (an inbox and a sink in one SQLite transaction), each
SIGKILLed at seeded random moments and started again. After each trial: every committed event
was delivered and processed exactly once, and nothing else was (no event from an aborted
transaction). 20 trials by default, 200 with ``--slow``."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).parent
RUNS = 12


def _spawn(args: list[str], log: Path, kill_at: str = "none:-1") -> subprocess.Popen[bytes]:
    env = {**os.environ, "MEMBER_TYPE": "autonomic.run.started", "KILL_AT": kill_at}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, *args], stdout=out, stderr=out, env=env)


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=60)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []  # not created yet
    finally:
        conn.close()


def _deliveries(sink: Path, event_id: str) -> int:
    rows = _rows(sink, f"SELECT count(*) FROM deliveries WHERE event_id = '{event_id}'")
    return int(str(rows[0][0])) if rows else 0


def _trial(seed: int, base_url: str, tmp: Path) -> None:
    rng = random.Random(seed)
    url = f"{base_url}?prefix=c{uuid.uuid4().hex[:8]}.&session_timeout_ms=2000"
    runs_db, sink = tmp / f"runs-{seed}.db", tmp / f"sink-{seed}.db"
    log = tmp / f"trial-{seed}.log"
    commands = {
        "producer": [str(HERE / "kafka_producer.py"), url, str(runs_db), str(RUNS)],
        "c0": [str(HERE / "kafka_member.py"), url, "crash", "c0", str(sink)],
        "c1": [str(HERE / "kafka_member.py"), url, "crash", "c1", str(sink)],
    }
    # seeded faults: the producer dies once at a chosen point of a chosen run; one consumer
    # dies right after a chosen effect, before acknowledging it; a consumer may be killed from
    # outside at a seeded moment too
    phase = rng.choice(["before_commit", "after_commit", "after_publish"])
    kill_at = f"{phase}:{rng.randrange(RUNS)}"
    member_kill = str(rng.randint(1, RUNS // 2))
    procs = {
        "producer": _spawn(commands["producer"], log, kill_at),
        "c0": _spawn([*commands["c0"], member_kill], log),
        "c1": _spawn([*commands["c1"], member_kill], log),
    }
    try:
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0.5, 3.0))  # chaos at a seeded moment
            victim = rng.choice(["c0", "c1"])
            if procs[victim].poll() is None:
                procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait()
                procs[victim] = _spawn(commands[victim], log)
        deadline = time.monotonic() + 240
        while procs["producer"].poll() != 0:
            assert time.monotonic() < deadline, f"seed {seed}: the producer never finished"
            for name in procs:  # who died of its injected fault starts again, without it
                if procs[name].poll() == -signal.SIGKILL:
                    procs[name] = _spawn(commands[name], log)
            if procs["producer"].poll() not in (None, 0, -signal.SIGKILL):
                raise AssertionError(f"seed {seed}: producer failed, see {log}")
            time.sleep(0.1)  # waiting on another process; bounded by the deadline
        committed = {r[0] for r in _rows(runs_db, "SELECT event_id FROM outbox")}
        assert len(committed) == RUNS, f"seed {seed}: {len(committed)} runs committed"
        while len(_rows(sink, "SELECT DISTINCT event_id FROM effects")) < len(committed):
            assert time.monotonic() < deadline, f"seed {seed}: events never arrived ({log})"
            for name in ("c0", "c1"):
                if procs[name].poll() == -signal.SIGKILL:
                    procs[name] = _spawn(commands[name], log)
            time.sleep(0.1)  # the consumers fill the sink; bounded by the deadline
        # the member that died after an effect and before its ack: that event must come again
        # (to it, restarted, or the other); wait for it, so a missing inbox would show
        victim = _rows(sink, "SELECT event_id FROM victim")
        while victim and _deliveries(sink, str(victim[0][0])) < 2:
            assert time.monotonic() < deadline, (
                f"seed {seed}: the killed member's event never came again"
            )
            for name in ("c0", "c1"):
                if procs[name].poll() == -signal.SIGKILL:
                    procs[name] = _spawn(commands[name], log)
            time.sleep(0.1)  # bounded by the deadline
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    effects = [r[0] for r in _rows(sink, "SELECT event_id FROM effects")]
    assert len(effects) == len(set(effects)), f"seed {seed}: an event was processed twice"
    assert set(effects) == committed, f"seed {seed}: lost or foreign events"


CI_TRIALS = 6
"""Few in CI: the generic bus crash harness (test_kafka_bus_crash.py) runs 20 more on Kafka."""
SLOW_TRIALS = 200


@pytest.mark.parametrize("seed", range(CI_TRIALS))
def test_kafka_crash_trial(kafka_url, tmp_path, seed):
    _trial(seed, kafka_url.partition("?")[0], tmp_path)


@pytest.mark.slow
def test_two_hundred_kafka_crash_trials(kafka_url, tmp_path, request):
    if not request.config.getoption("--slow"):
        pytest.skip("200 Kafka crash trials: run with --slow")
    for seed in range(CI_TRIALS, CI_TRIALS + SLOW_TRIALS):
        _trial(seed, kafka_url.partition("?")[0], tmp_path)
