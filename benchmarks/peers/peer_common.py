"""Shared harness for the peer benchmarks (LangGraph, DBOS, raw floor).

Every peer runs the *same* workload, so the fake model, the tool, the CLI, the
timing rules, the crash protocol and the JSON Lines schema live here once.  The
peer scripts only map the workload onto their system.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

STEPS_PER_RUN = 10
CRASH_AFTER_STEP = 5
RESUMED_STEPS = STEPS_PER_RUN - CRASH_AFTER_STEP
WARMUP_RUNS = 5
CHILD_TIMEOUT_S = 120.0
RESUME_TIMEOUT_S = 60.0

Store = Literal["sqlite", "postgres"]
Mode = Literal["sequential", "concurrent", "resume"]
Decision = dict[str, Any]
ToolResult = dict[str, int]


# --------------------------------------------------------------------------- #
# The workload: a deterministic fake model and a trivial tool.
# --------------------------------------------------------------------------- #


def fake_model(completed_steps: int) -> Decision:
    """Decide the next action like a ReAct model would, without any latency.

    At step i (1-based) the model calls the tool with argument i; once
    STEPS_PER_RUN tool results exist it returns a final answer.
    """
    if completed_steps < STEPS_PER_RUN:
        return {"action": "tool", "tool": "add_one", "arg": completed_steps + 1}
    return {"action": "final", "answer": f"done after {completed_steps} steps"}


def add_one(arg: int) -> ToolResult:
    """The trivial tool: cheap on purpose so that persistence dominates."""
    return {"value": arg + 1}


def expected_results() -> list[ToolResult]:
    """What every complete run must have produced, used to verify peers."""
    return [add_one(i) for i in range(1, STEPS_PER_RUN + 1)]


# --------------------------------------------------------------------------- #
# Crash / resume probe.
# --------------------------------------------------------------------------- #


@dataclass
class Probe:
    """Hooks every peer calls so crash and resume are defined identically.

    `step_durable(run_id, n)` must be called at the earliest point where the
    system guarantees step n is durably recorded.  In a crash child it
    SIGKILLs the process after CRASH_AFTER_STEP; in the parent it timestamps
    the first step completed after a resume and wakes anyone waiting for it.
    """

    crash_child: bool = False
    watched: dict[str, threading.Event] = field(default_factory=dict)
    first_step_at: dict[str, float] = field(default_factory=dict)
    tool_calls: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def tool_called(self, run_id: str) -> None:
        """Count tool executions per run to prove a resume skips done steps."""
        if run_id in self.watched:
            with self.lock:
                self.tool_calls[run_id] = self.tool_calls.get(run_id, 0) + 1

    def step_durable(self, run_id: str, completed_steps: int) -> None:
        """Crash (child) or timestamp (parent) at a durable step boundary."""
        if self.crash_child and completed_steps == CRASH_AFTER_STEP:
            os.kill(os.getpid(), signal.SIGKILL)
        if completed_steps == CRASH_AFTER_STEP + 1 and run_id in self.watched:
            with self.lock:
                self.first_step_at.setdefault(run_id, time.perf_counter())
            self.watched[run_id].set()

    def watch(self, run_id: str) -> None:
        """Start observing a run that is about to be resumed in this process."""
        with self.lock:
            self.watched[run_id] = threading.Event()

    def wait_first_step(self, run_id: str) -> None:
        """Block (no polling) until the resumed run's step 6 is durable."""
        if not self.watched[run_id].wait(RESUME_TIMEOUT_S):
            raise TimeoutError(f"{run_id}: step 6 not reached after resume")


PROBE = Probe()


# --------------------------------------------------------------------------- #
# CLI.
# --------------------------------------------------------------------------- #


def parse_args(description: str) -> argparse.Namespace:
    """Parse the CLI every peer shares (plus the hidden crash-child flags)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--store", choices=["sqlite", "postgres"], required=True)
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--resume-runs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("benchmarks/.work"))
    parser.add_argument("--modes", default="sequential,concurrent,resume", help="comma list")
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--crash-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--target", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--fresh-resume", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def install_deadline(seconds: float) -> None:
    """Bound the whole script: raise in the main thread so cleanup still runs."""

    def _expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"benchmark exceeded its {seconds:.0f}s deadline")

    signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def log(message: str) -> None:
    """Progress goes to stderr so stdout stays pure JSON Lines."""
    print(message, file=sys.stderr, flush=True)


def new_run_ids(prefix: str, count: int) -> list[str]:
    """Fresh ids per round so no run ever finds an earlier checkpoint."""
    tag = uuid.uuid4().hex[:8]
    return [f"{prefix}-{tag}-{i}" for i in range(count)]


# --------------------------------------------------------------------------- #
# Stores: fresh SQLite file / fresh PostgreSQL database, always cleaned up.
# --------------------------------------------------------------------------- #


def fresh_sqlite_path(workdir: Path, system: str) -> Path:
    """A new SQLite file path in workdir, with any leftovers removed."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{system}-{os.getpid()}.sqlite"
    remove_sqlite(path)
    return path


def remove_sqlite(path: Path) -> None:
    """Delete a SQLite database together with its WAL/SHM/journal files."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def pg_url_with_database(url: str, dbname: str) -> str:
    """URL form (usable by psycopg, SQLAlchemy and DBOS) pointing at `dbname`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


@contextlib.contextmanager
def fresh_pg_database(admin_url: str, system: str) -> Iterator[str]:
    """Create a throwaway database, yield its URL, and always drop it."""
    dbname = f"peer_{system}_{os.getpid()}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        ident = sql.Identifier(dbname)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    try:
        yield pg_url_with_database(admin_url, dbname)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


# --------------------------------------------------------------------------- #
# Durability introspection: does a COMMIT wait for fsync?
# --------------------------------------------------------------------------- #

SQLITE_SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def sqlite_durability(journal_mode: str, synchronous: int) -> tuple[bool, str]:
    """Classify SQLite settings read from the system's own connection.

    In WAL mode only FULL/EXTRA sync the WAL on every commit (NORMAL defers it
    to checkpoints); in rollback-journal modes NORMAL already syncs on commit.
    """
    mode = journal_mode.lower()
    name = SQLITE_SYNC_NAMES.get(synchronous, str(synchronous))
    fsync = synchronous >= 2 if mode == "wal" else synchronous >= 1
    how = "each COMMIT fsyncs" if fsync else "COMMIT does NOT wait for fsync"
    note = f"SQLite journal_mode={mode} synchronous={name}({synchronous}): {how}"
    if mode != "wal":
        note += " (rollback journal: several fsyncs per commit)"
    return fsync, note


def pg_durability(url: str) -> tuple[bool, str]:
    """Read fsync/synchronous_commit from the server for the bench database."""
    names = ("fsync", "synchronous_commit", "wal_sync_method")
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(names),)
        ).fetchall()
    values = {str(name): str(setting) for name, setting in rows}
    # Every synchronous_commit level but "off" waits for the local WAL flush.
    waits = values["synchronous_commit"] != "off"
    fsync = values["fsync"] == "on" and waits
    how = "COMMIT waits for WAL flush" if fsync else "COMMIT does NOT wait for fsync"
    note = (
        f"PostgreSQL fsync={values['fsync']} "
        f"synchronous_commit={values['synchronous_commit']} "
        f"wal_sync_method={values['wal_sync_method']}: {how}"
    )
    return fsync, note


# --------------------------------------------------------------------------- #
# Timing and reporting.
# --------------------------------------------------------------------------- #


@dataclass
class ResultRow:
    """One JSON Lines record; the schema shared by all peers."""

    system: str
    store: str
    mode: str
    runs: int
    steps_per_run: int
    rounds: int
    seconds: float
    per_step_ms: float
    runs_per_s: float | None
    resume_first_step_ms: float | None
    fsync: bool
    durability_note: str


def emit(row: ResultRow) -> None:
    """Print one result line immediately so partial output survives failures."""
    print(json.dumps(asdict(row)), flush=True)


def throughput_row(
    *,
    system: str,
    store: str,
    mode: Mode,
    runs: int,
    samples: list[float],
    durability: tuple[bool, str],
) -> ResultRow:
    """Build a sequential/concurrent row from per-round wall times."""
    seconds = statistics.median(samples)
    return ResultRow(
        system=system,
        store=store,
        mode=mode,
        runs=runs,
        steps_per_run=STEPS_PER_RUN,
        rounds=len(samples),
        seconds=round(seconds, 4),
        per_step_ms=round(seconds * 1000 / (runs * STEPS_PER_RUN), 4),
        runs_per_s=round(runs / seconds, 2),
        resume_first_step_ms=None,
        fsync=durability[0],
        durability_note=durability[1],
    )


def resume_row(
    *,
    system: str,
    store: str,
    first_step_s: list[float],
    complete_s: list[float],
    durability: tuple[bool, str],
) -> ResultRow:
    """Build a resume row: median over crashed runs.

    `seconds` is resume-trigger -> resumed run finished (steps 6..10 plus the
    final answer); per_step_ms divides it by the RESUMED_STEPS steps redone.
    """
    seconds = statistics.median(complete_s)
    return ResultRow(
        system=system,
        store=store,
        mode="resume",
        runs=len(complete_s),
        steps_per_run=STEPS_PER_RUN,
        rounds=1,
        seconds=round(seconds, 4),
        per_step_ms=round(seconds * 1000 / RESUMED_STEPS, 4),
        runs_per_s=None,
        resume_first_step_ms=round(statistics.median(first_step_s) * 1000, 3),
        fsync=durability[0],
        durability_note=durability[1],
    )


def measure_rounds(label: str, rounds: int, run_round: Callable[[int], None]) -> list[float]:
    """Time `run_round(i)` for each round after one untimed warm-up call.

    The warm-up (round index -1) pays imports, connections and lazy setup so
    the timed rounds measure steady-state cost only.
    """
    run_round(-1)
    samples: list[float] = []
    for index in range(rounds):
        start = time.perf_counter()
        run_round(index)
        seconds = time.perf_counter() - start
        log(f"[{label}] round {index + 1}/{rounds}: {seconds:.3f}s")
        samples.append(seconds)
    return samples


# --------------------------------------------------------------------------- #
# Crash protocol.
# --------------------------------------------------------------------------- #


def spawn_crash_child(script: str, store: str, target: str, run_id: str) -> None:
    """Run one ReAct run in a subprocess that SIGKILLs itself after step 5.

    The parent blocks on the child's exit (no sleeps) and insists it died by
    SIGKILL, i.e. mid-run with steps 1..5 durable and nothing after.
    """
    cmd = [
        sys.executable,
        script,
        "--store",
        store,
        "--target",
        target,
        "--crash-child",
        run_id,
    ]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, timeout=CHILD_TIMEOUT_S, check=False)
    if proc.returncode != -signal.SIGKILL:
        raise RuntimeError(f"crash child exited with {proc.returncode}, not SIGKILL")


def measure_resume(
    *,
    label: str,
    trials: int,
    crash: Callable[[str], None],
    resume: Callable[[str], list[ToolResult]],
) -> tuple[list[float], list[float]]:
    """Crash `trials` runs in children and resume each one in this process.

    Returns (first-step latencies, full-resume latencies) in seconds, measured
    from the resume trigger with the system already initialised.
    """
    first: list[float] = []
    complete: list[float] = []
    for run_id in new_run_ids("resume", trials):
        crash(run_id)
        PROBE.watch(run_id)
        start = time.perf_counter()
        results = resume(run_id)
        end = time.perf_counter()
        verify_resumed(run_id, results)
        first.append(PROBE.first_step_at[run_id] - start)
        complete.append(end - start)
        log(f"[{label}] resume {run_id}: first step {first[-1] * 1000:.2f}ms")
    return first, complete


def verify_resumed(run_id: str, results: list[ToolResult]) -> None:
    """A resume must finish the run and must not redo the 5 durable steps."""
    if results != expected_results():
        raise RuntimeError(f"{run_id}: wrong results after resume: {results}")
    redone = PROBE.tool_calls.get(run_id, 0)
    if redone != RESUMED_STEPS:
        raise RuntimeError(f"{run_id}: {redone} tool calls on resume, expected 5")
    if run_id not in PROBE.first_step_at:
        raise RuntimeError(f"{run_id}: step 6 was never observed")


def verify_run(run_id: str, results: list[ToolResult]) -> None:
    """Cheap correctness check so a broken mapping cannot look fast."""
    if results != expected_results():
        raise RuntimeError(f"{run_id}: unexpected results {results}")


def selected_modes(args: argparse.Namespace) -> list[Mode]:
    """The modes requested on the CLI, in canonical order."""
    wanted = {m.strip() for m in str(args.modes).split(",") if m.strip()}
    order: tuple[Mode, ...] = ("sequential", "concurrent", "resume")
    return [m for m in order if m in wanted]
