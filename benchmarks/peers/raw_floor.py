"""Raw floor peer: one journal INSERT + COMMIT per step, no framework.

This is the least any durable agent runtime can pay per step on a given
store: the step's record must be committed (and, with default settings,
fsynced) before the next step starts.  A run is 10 step rows plus one final
answer row; resume reads the journal back and continues after the last row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import threading
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import peer_common as pc
import psycopg
from psycopg.types.json import Jsonb

SYSTEM = "raw"
SQLITE_DDL = (
    "CREATE TABLE IF NOT EXISTS journal ("
    " run_id TEXT NOT NULL, step INTEGER NOT NULL, payload TEXT NOT NULL,"
    " PRIMARY KEY (run_id, step))"
)
PG_DDL = (
    "CREATE TABLE IF NOT EXISTS journal ("
    " run_id TEXT NOT NULL, step INTEGER NOT NULL, payload JSONB NOT NULL,"
    " PRIMARY KEY (run_id, step))"
)
INSERT_SQLITE = "INSERT INTO journal (run_id, step, payload) VALUES (?, ?, ?)"
INSERT_PG = "INSERT INTO journal (run_id, step, payload) VALUES (%s, %s, %s)"
SELECT_SQLITE = "SELECT payload FROM journal WHERE run_id = ? ORDER BY step"
SELECT_PG = "SELECT payload FROM journal WHERE run_id = %s ORDER BY step"

Record = tuple[int, dict[str, Any]]


class Journal(Protocol):
    """What the synchronous driver needs from a store."""

    def record(self, run_id: str, step: int, payload: dict[str, Any]) -> None:
        """Durably append one step record (INSERT + COMMIT)."""

    def load(self, run_id: str) -> list[dict[str, Any]]:
        """Read a run's records back in step order."""


# --------------------------------------------------------------------------- #
# The ReAct loop as a generator: the caller persists each yielded record
# before asking for the next, so sync and async drivers share one loop.
# --------------------------------------------------------------------------- #


def react_records(run_id: str, results: list[pc.ToolResult]) -> Generator[Record, None, None]:
    """Yield (step, payload) records; resumes only after the caller committed."""
    while True:
        decision = pc.fake_model(len(results))
        if decision["action"] == "final":
            yield len(results) + 1, {"answer": decision["answer"]}
            return
        pc.PROBE.tool_called(run_id)
        result = pc.add_one(int(decision["arg"]))
        yield len(results) + 1, {"decision": decision, "result": result}
        results.append(result)
        pc.PROBE.step_durable(run_id, len(results))


def run_sync(
    journal: Journal, run_id: str, results: list[pc.ToolResult] | None = None
) -> list[pc.ToolResult]:
    """Drive one run (or the rest of one) against a synchronous journal."""
    done = results if results is not None else []
    for step, payload in react_records(run_id, done):
        journal.record(run_id, step, payload)
    return done


def resume_sync(journal: Journal, run_id: str) -> list[pc.ToolResult]:
    """Rebuild state from the journal and finish the run."""
    rows = journal.load(run_id)
    results = [row["result"] for row in rows if "result" in row]
    return run_sync(journal, run_id, results)


# --------------------------------------------------------------------------- #
# SQLite.
# --------------------------------------------------------------------------- #


class SqliteJournal:
    """One WAL-mode connection shared behind a lock.

    SQLite has a single writer per file, so serialising in-process is the
    cheapest way to use it (no busy-handler back-off sleeps between
    connections); that is what a floor should measure.
    """

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(SQLITE_DDL)
        self.conn.commit()
        self.lock = threading.Lock()

    def record(self, run_id: str, step: int, payload: dict[str, Any]) -> None:
        """INSERT one row and COMMIT (sqlite3 opens the transaction implicitly)."""
        with self.lock:
            self.conn.execute(INSERT_SQLITE, (run_id, step, json.dumps(payload)))
            self.conn.commit()

    def load(self, run_id: str) -> list[dict[str, Any]]:
        """Read a run's journal rows in order."""
        with self.lock:
            rows = self.conn.execute(SELECT_SQLITE, (run_id,)).fetchall()
        return [json.loads(row[0]) for row in rows]

    def durability(self) -> tuple[bool, str]:
        """Settings in effect on the connection that does the writes."""
        mode = str(self.conn.execute("PRAGMA journal_mode").fetchone()[0])
        sync = int(self.conn.execute("PRAGMA synchronous").fetchone()[0])
        fsync, note = pc.sqlite_durability(mode, sync)
        return fsync, note + " (sqlite3 defaults; only journal_mode=WAL set)"

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def sqlite_concurrent_round(journal: SqliteJournal, ids: list[str], n: int) -> None:
    """`n` threads drive runs against the shared, locked connection."""
    with ThreadPoolExecutor(max_workers=n) as pool:
        for run_id, results in zip(ids, pool.map(lambda r: run_sync(journal, r), ids), strict=True):
            pc.verify_run(run_id, results)


# --------------------------------------------------------------------------- #
# PostgreSQL.
# --------------------------------------------------------------------------- #


class PgJournal:
    """A single psycopg 3 connection: INSERT then COMMIT per step."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url)
        self.conn.execute(PG_DDL)
        self.conn.commit()

    def record(self, run_id: str, step: int, payload: dict[str, Any]) -> None:
        """INSERT one row and COMMIT."""
        self.conn.execute(INSERT_PG, (run_id, step, Jsonb(payload)))
        self.conn.commit()

    def load(self, run_id: str) -> list[dict[str, Any]]:
        """Read a run's journal rows in order."""
        rows = self.conn.execute(SELECT_PG, (run_id,)).fetchall()
        self.conn.commit()
        return [dict(row[0]) for row in rows]

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


async def pg_async_worker(conn: psycopg.AsyncConnection[Any], queue: asyncio.Queue[str]) -> None:
    """Drain run ids from the queue, one run at a time on this connection."""
    while True:
        try:
            run_id = queue.get_nowait()
        except asyncio.QueueEmpty:
            return
        results: list[pc.ToolResult] = []
        for step, payload in react_records(run_id, results):
            await conn.execute(INSERT_PG, (run_id, step, Jsonb(payload)))
            await conn.commit()
        pc.verify_run(run_id, results)


async def pg_concurrent_rounds(url: str, concurrency: int, runs: int, rounds: int) -> list[float]:
    """Time rounds of `runs` runs, `concurrency` in flight on as many connections."""
    conns = [await psycopg.AsyncConnection.connect(url) for _ in range(concurrency)]
    loop = asyncio.get_running_loop()
    try:

        async def one_round(count: int) -> float:
            queue: asyncio.Queue[str] = asyncio.Queue()
            for run_id in pc.new_run_ids("conc", count):
                queue.put_nowait(run_id)
            start = loop.time()
            await asyncio.gather(*(pg_async_worker(c, queue) for c in conns))
            return loop.time() - start

        await one_round(concurrency)
        samples = [await one_round(runs) for _ in range(rounds)]
        for index, seconds in enumerate(samples):
            pc.log(f"[raw/postgres concurrent] round {index + 1}: {seconds:.3f}s")
        return samples
    finally:
        for conn in conns:
            await conn.close()


# --------------------------------------------------------------------------- #
# Benchmark driver.
# --------------------------------------------------------------------------- #


def sequential_round(journal: Journal, runs: int) -> None:
    """`runs` runs one after another."""
    for run_id in pc.new_run_ids("seq", runs):
        pc.verify_run(run_id, run_sync(journal, run_id))


@contextmanager
def open_journal(store: str, target: str) -> Iterator[SqliteJournal | PgJournal]:
    """Open the right journal for the store and always close it."""
    journal: SqliteJournal | PgJournal
    journal = SqliteJournal(Path(target)) if store == "sqlite" else PgJournal(target)
    try:
        yield journal
    finally:
        journal.close()


def crash_child(args: argparse.Namespace) -> None:
    """Subprocess entry: start a run and get SIGKILLed after step 5."""
    pc.PROBE.crash_child = True
    with open_journal(args.store, args.target) as journal:
        run_sync(journal, args.crash_child)
    raise RuntimeError("crash child survived past step 5")


def throughput_samples(
    mode: pc.Mode, args: argparse.Namespace, journal: Journal, target: str
) -> list[float]:
    """Per-round wall times for the sequential or concurrent mode."""
    label = f"{SYSTEM}/{args.store} {mode}"
    if mode == "sequential":
        return pc.measure_rounds(
            label,
            args.rounds,
            lambda i: sequential_round(journal, pc.WARMUP_RUNS if i < 0 else args.runs),
        )
    if isinstance(journal, SqliteJournal):
        return pc.measure_rounds(
            label,
            args.rounds,
            lambda i: sqlite_concurrent_round(
                journal,
                pc.new_run_ids("conc", args.concurrency if i < 0 else args.runs),
                args.concurrency,
            ),
        )
    return asyncio.run(pg_concurrent_rounds(target, args.concurrency, args.runs, args.rounds))


def resume_result(
    args: argparse.Namespace,
    journal: Journal,
    target: str,
    durability: tuple[bool, str],
) -> pc.ResultRow:
    """Crash runs in children and resume them on the already-open journal."""
    first, complete = pc.measure_resume(
        label=f"{SYSTEM}/{args.store} resume",
        trials=args.resume_runs,
        crash=lambda r: pc.spawn_crash_child(__file__, args.store, target, r),
        resume=lambda r: resume_sync(journal, r),
    )
    return pc.resume_row(
        system=SYSTEM,
        store=args.store,
        first_step_s=first,
        complete_s=complete,
        durability=durability,
    )


def run_benchmark(args: argparse.Namespace, target: str) -> None:
    """Run the requested modes against an already-fresh store."""
    with open_journal(args.store, target) as journal:
        durability = (
            journal.durability() if isinstance(journal, SqliteJournal) else pc.pg_durability(target)
        )
        for mode in pc.selected_modes(args):
            if mode == "resume":
                pc.emit(resume_result(args, journal, target, durability))
                continue
            samples = throughput_samples(mode, args, journal, target)
            pc.emit(
                pc.throughput_row(
                    system=SYSTEM,
                    store=args.store,
                    mode=mode,
                    runs=args.runs,
                    samples=samples,
                    durability=durability,
                )
            )


def main() -> None:
    """CLI entry point."""
    args = pc.parse_args(__doc__ or SYSTEM)
    if args.crash_child:
        crash_child(args)
        return
    pc.install_deadline(args.timeout_s)
    if args.store == "sqlite":
        path = pc.fresh_sqlite_path(args.workdir, SYSTEM)
        try:
            run_benchmark(args, str(path))
        finally:
            pc.remove_sqlite(path)
    else:
        with pc.fresh_pg_database(args.pg_url, SYSTEM) as url:
            run_benchmark(args, url)


if __name__ == "__main__":
    main()
