"""The audit log's costs: anchoring per durable step, and ``audit verify`` over a million entries.

1. **Anchoring.** The engine benchmark's workload (a ReAct run of 10 durable tool steps, fake
   model, trivial tool; ``autonomic_bench.py``), sequential, with anchoring on and off in the same
   process, in alternating rounds (on, off, on, off ...) so the machine's drift cancels; reported:
   median per-step time of each and the difference per step. Off is a switch only this
   benchmark uses (``SqlStore._anchoring``); on PostgreSQL the log's lock row is taken either way
   (it is in the commit statement), so the difference there is the anchor's row and hash only.
   Also the pure CPU cost of building one commit's anchor body.
2. **Verify.** A SQLite file with ``--entries`` journal entries (10 per run, small payloads, one
   anchor per commit of 1-3 entries, as the engine writes them) is generated directly, then
   ``verify_store`` reads it all, as ``autonomic audit verify`` does (the journals' chains
   summed up in a child process while the log is read: ``verify_s``) and in one process
   (``verify_one_process_s``): seconds, and entries per second.

    .venv/bin/python benchmarks/audit_bench.py --store sqlite --runs 100 --rounds 5 --entries 1000000
    .venv/bin/python benchmarks/audit_bench.py --store postgres \\
        --pg-url postgresql://postgres@127.0.0.1:5432/test --entries 0 [--fleet 4]

3. **Fleet** (``--fleet N``, PostgreSQL): N worker processes (spawned), each with
   ``--in-flight`` runs at a time, commit to one database at once; steps per second with the
   audit log's lock row (every commit's transaction takes ``audit_head``) and without it (the
   commit statement stripped of the lock and the anchor), alternating rounds. The ratio is what
   the fleet-wide serialisation costs.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
import timeit
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import autonomic_bench as bench

from autonomic import build_store
from autonomic.audit.verify import verify_store
from autonomic.core.audit import AuditNote, anchor_body, record_digest, record_hash
from autonomic.core.canonical import canonical_json
from autonomic.core.journal import GENESIS_HASH, chain_hash


async def steps_ms(url: str, runs: int, anchoring: bool) -> tuple[float, float, float]:
    """Per-step wall time, this process's user CPU and its kernel CPU (ms): on a shared machine
    CPU time is what anchoring adds that does not depend on the neighbours. User CPU is the
    anchor's building and chaining (Python, SQLite); kernel CPU is mostly writing and syncing
    the bigger transaction (the log's page in the WAL), so they are reported apart."""
    store = build_store(url)
    store._anchoring = anchoring  # type: ignore[attr-defined]
    engine = bench.engine_for(store)
    await bench.one_run(engine)
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(runs):
        await bench.one_run(engine)
    elapsed, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    await store.close()
    steps = runs * bench.STEPS
    user = after.ru_utime - before.ru_utime
    system = after.ru_stime - before.ru_stime
    return elapsed / steps * 1000, user / steps * 1000, system / steps * 1000


def body_cost_us() -> float:
    """CPU time to build the anchor of one step's commit (decision-less: intent + result + turn)."""
    entries: list[tuple[int, str, str, dict[str, Any]]] = [
        (
            5,
            "model.response",
            "a" * 64,
            {
                "turn": 3,
                "content": None,
                "tool_calls": [{"id": "c3", "name": "add_one", "arguments": '{"arg":3}'}],
                "model": "fake",
            },
        ),
        (
            6,
            "tool.intent",
            "b" * 64,
            {
                "call_id": "c3",
                "tool": "add_one",
                "version": "1",
                "arguments": {"arg": 3},
                "key": "r:6",
                "idempotent": True,
            },
        ),
        (
            7,
            "tool.result",
            "c" * 64,
            {"call_id": "c3", "tool": "add_one", "ok": True, "output": {"value": 4}},
        ),
    ]
    note = AuditNote(levels={"add_one": "basic"})
    n = 20_000
    seconds = timeit.timeit(
        lambda: record_digest("anchor", "run_x", anchor_body("run_x", entries, note)), number=n
    )
    return seconds / n * 1e6


def make_log(path: Path, entries: int, seed: int = 7) -> tuple[int, int]:
    """A database of ``entries`` journal entries and their anchors, written directly."""
    rng = random.Random(seed)

    async def schema() -> None:
        store = build_store(f"sqlite:///{path}?synchronous=normal")
        await store.migrate()
        await store.close()

    asyncio.run(schema())
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    pos, head = 0, "0" * 64
    runs = entries // 10
    journal: list[tuple[Any, ...]] = []
    log: list[tuple[Any, ...]] = []
    run_rows: list[tuple[Any, ...]] = []
    for r in range(runs):
        run_id = f"run_{r:012d}"
        run_rows.append(
            (
                run_id,
                "default",
                "bench",
                "1",
                "fake",
                "COMPLETED",
                None,
                1,
                None,
                0,
                0,
                "{}",
                None,
                11,
                "{}",
                None,
                None,
                1e9,
                1e9,
            )
        )
        prev = GENESIS_HASH
        seq = 0
        while seq < 10:
            k = min(rng.randint(1, 3), 10 - seq)
            batch = []
            for _ in range(k):
                seq += 1
                kind = "model.response" if seq % 2 else "tool.result"
                payload = {"turn": seq, "content": None, "ok": True, "output": {"value": seq}}
                text = canonical_json(payload)
                address = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
                h = chain_hash(prev, seq, kind, address)
                prev = h
                journal.append((run_id, seq, kind, text, bytes.fromhex(h), 1e9))  # as SQLite does
                batch.append((seq, kind, h, payload))
            body = anchor_body(run_id, batch)
            pos += 1
            head = record_hash(head, pos, "anchor", record_digest("anchor", run_id, body))
            log.append((pos, "anchor", run_id, body, bytes.fromhex(head), 1e9))  # as SQLite does
        if len(journal) >= 100_000:
            db.executemany("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?)", journal)
            db.executemany("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?)", log)
            db.executemany(RUNS_INSERT, run_rows)
            journal, log, run_rows = [], [], []
    db.executemany("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?)", journal)
    db.executemany("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?)", log)
    db.executemany(RUNS_INSERT, run_rows)
    db.execute("COMMIT")
    db.close()
    return runs * 10, pos


RUNS_INSERT = (
    "INSERT INTO runs (id, tenant, agent, agent_version, model, status, status_reason, version, "
    "lease_owner, lease_expires_at, fence, input, output, max_turns, metadata, parent_run_id, "
    "correlation_id, created_at, updated_at) VALUES (" + ", ".join("?" * 19) + ")"
)
"""The run row's first 19 columns by name: later migrations add columns with defaults (0008:
capability, queued), which a bare ``VALUES`` of 19 broke."""


async def verify_seconds(url: str, *, split: bool = True) -> tuple[float, float, Any]:
    """Wall and this process's CPU seconds of a verify; ``split``: as the CLI does it."""
    from autonomic.cli.journal_check import chains_elsewhere

    store = build_store(url)
    start, cpu = time.perf_counter(), time.process_time()
    chains = await chains_elsewhere(store, url) if split else None
    report = await verify_store(store, chains=chains)
    elapsed, used = time.perf_counter() - start, time.process_time() - cpu
    await store.close()
    return elapsed, used, report


def _unlocked_commit(statement: str) -> str:
    """The PostgreSQL commit statement without the log's lock row and anchor (what a commit
    would cost if the audit log did not serialise the fleet): for ``--fleet`` only."""
    statement = statement.replace("audit_gate AS (SELECT pos FROM audit_head FOR UPDATE),", "")
    statement = statement.replace(" AND EXISTS (SELECT 1 FROM audit_gate)", "")
    start = statement.index(",\naudit_next AS (")
    end = statement.index("\nSELECT (SELECT version FROM head)")
    return statement[:start] + statement[end:]


def _fleet_member(url: str, runs: int, in_flight: int, locked: bool, out: Any) -> None:
    """One worker process of ``--fleet``: ``runs`` runs, ``in_flight`` at a time."""
    import autonomic.adapters.store.postgres as pg

    if not locked:
        pg._COMMIT = _unlocked_commit(pg._COMMIT)

    async def go() -> float:
        store = build_store(url)
        store._anchoring = locked  # type: ignore[attr-defined]
        engine = bench.engine_for(store)
        await bench.one_run(engine)
        gate = asyncio.Semaphore(in_flight)

        async def bounded() -> None:
            async with gate:
                await bench.one_run(engine)

        start = time.perf_counter()
        await asyncio.gather(*(bounded() for _ in range(runs)))
        elapsed = time.perf_counter() - start
        await store.close()
        return elapsed

    out.put(asyncio.run(go()))


def fleet_steps_per_s(url: str, members: int, runs: int, in_flight: int, locked: bool) -> float:
    """Steps per second of ``members`` worker processes committing to one PostgreSQL database
    at once (each with ``in_flight`` runs in flight), with the audit log's lock row or without."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_fleet_member, args=(url, runs, in_flight, locked, out))
        for _ in range(members)
    ]
    for proc in procs:
        proc.start()
    elapsed = [out.get() for _ in procs]  # each member's own driving time (not its start-up)
    for proc in procs:
        proc.join()
    assert all(proc.exitcode == 0 for proc in procs), "a fleet member failed"
    return float(members * runs * bench.STEPS / max(elapsed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--runs", type=int, default=100, help="runs per round (10 steps each)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--entries", type=int, default=1_000_000, help="0: skip the verify part")
    parser.add_argument("--workdir", default=tempfile.gettempdir())
    parser.add_argument(
        "--fleet",
        type=int,
        default=0,
        help="PostgreSQL only: also measure N worker processes committing at once, with the "
        "audit log's lock row and without it (fleet-wide serialisation)",
    )
    parser.add_argument("--in-flight", type=int, default=20)
    args = parser.parse_args()
    work = Path(args.workdir)
    if args.store == "sqlite":
        url = f"sqlite:///{work}/audit-bench-{uuid.uuid4().hex[:8]}.db"
    else:
        url = args.pg_url
    asyncio.run(bench.migrate(url))
    on: list[tuple[float, float, float]] = []
    off: list[tuple[float, float, float]] = []
    for _ in range(args.rounds):
        on.append(asyncio.run(steps_ms(url, args.runs, True)))
        off.append(asyncio.run(steps_ms(url, args.runs, False)))

    def median_diff(i: int) -> float:
        return round(statistics.median(a[i] - b[i] for a, b in zip(on, off, strict=True)), 4)

    def median(runs: list[tuple[float, float, float]], i: int) -> float:
        return round(statistics.median(r[i] for r in runs), 4)

    diffs = [a[0] - b[0] for a, b in zip(on, off, strict=True)]
    print(
        json.dumps(
            {
                "part": "anchoring",
                "store": args.store,
                "per_step_ms_on": median(on, 0),
                "per_step_ms_off": median(off, 0),
                "anchoring_ms_per_step": median_diff(0),
                "spread_ms": [round(min(diffs), 4), round(max(diffs), 4)],
                "user_cpu_ms_per_step_on": median(on, 1),
                "user_cpu_ms_per_step_off": median(off, 1),
                "anchoring_user_cpu_ms_per_step": median_diff(1),
                "anchoring_kernel_cpu_ms_per_step": median_diff(2),
                "anchoring_cpu_ms_per_step": round(
                    statistics.median(
                        a[1] + a[2] - b[1] - b[2] for a, b in zip(on, off, strict=True)
                    ),
                    4,
                ),
                "anchor_body_us_per_commit": round(body_cost_us(), 2),
            }
        )
    )
    if args.fleet and args.store == "postgres":
        locked: list[float] = []
        unlocked: list[float] = []
        for _ in range(args.rounds):
            locked.append(fleet_steps_per_s(url, args.fleet, args.runs, args.in_flight, True))
            unlocked.append(fleet_steps_per_s(url, args.fleet, args.runs, args.in_flight, False))
        print(
            json.dumps(
                {
                    "part": "fleet",
                    "store": "postgres",
                    "members": args.fleet,
                    "in_flight_each": args.in_flight,
                    "steps_per_s_with_log_lock": round(statistics.median(locked)),
                    "steps_per_s_without": round(statistics.median(unlocked)),
                    "ratio": round(statistics.median(locked) / statistics.median(unlocked), 3),
                    "samples": {"locked": [round(x) for x in locked], "unlocked": unlocked},
                }
            )
        )
    if args.entries:
        path = work / f"audit-verify-{uuid.uuid4().hex[:8]}.db"
        start = time.perf_counter()
        entries, records = make_log(path, args.entries)
        built = time.perf_counter() - start
        seconds, cpu, report = asyncio.run(verify_seconds(f"sqlite:///{path}"))
        assert report.ok, report.breaks[:3]
        assert report.entries == entries
        alone, alone_cpu, report = asyncio.run(verify_seconds(f"sqlite:///{path}", split=False))
        assert report.ok, report.breaks[:3]
        print(
            json.dumps(
                {
                    "part": "verify",
                    "store": "sqlite",
                    "entries": entries,
                    "records": records,
                    "verify_s": round(seconds, 2),
                    "verify_cpu_s": round(cpu, 2),
                    "verify_one_process_s": round(alone, 2),
                    "verify_one_process_cpu_s": round(alone_cpu, 2),
                    "entries_per_s": round(entries / seconds),
                    "generate_s": round(built, 1),
                }
            )
        )
        path.unlink()


if __name__ == "__main__":
    main()
