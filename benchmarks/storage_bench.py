"""What a step stores and what it commits: bytes and rows per step, commits per run (issue 17).

The workload of ``autonomic_bench.py`` (a ReAct run of 10 tool steps, fake model, trivial tool),
``--runs`` runs one after another on a fresh store per system and round, for:

* ``autonomic default``: the runaway guards on and the ``@tool`` default (not idempotent: the
  intent is committed before the effect, the result after it - write-ahead, two commits a step);
* ``autonomic write-ahead``: guards off, the same non-idempotent tool (item 2's cost alone);
* ``autonomic lean``: guards off, an idempotent tool (one commit a step);
* ``raw``: one INSERT+COMMIT per step (``peers/raw_floor.py``), the floor;
* ``langgraph`` and ``dbos`` as their peers run them (``peers/*.py``), when
  ``benchmarks/.venv-peers`` exists (raw also runs there; without it, raw runs in this venv).

How bytes are counted, per store, as the difference before and after the measured runs (a first
run before, so every system's tables exist): **SQLite** - ``dbstat``'s ``payload`` summed over
every table and its indexes (the bytes of the records in the b-tree cells, overflow included;
not the free space of partly filled pages); **PostgreSQL** - ``pg_total_relation_size`` summed over
every table of the database (pages on disk: tables, indexes, TOAST, tuple headers and, for an
updated row, its dead versions until vacuum) and, beside it, ``pg_column_size`` of every live row
(the row datums alone). Rows: rows added, every table. The audit log is counted with the journal:
the default writes one anchor per commit. Commits (autonomic): calls of ``Store.commit`` and
``Store.create_run`` during the measured runs. ms per step: wall time of the measured runs, median
of the rounds (each round runs the systems in turn).

Command: ``.venv/bin/python benchmarks/storage_bench.py --store sqlite --store postgres``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"
STEPS = 10

AUTONOMIC = (
    "autonomic default",
    "autonomic write-ahead",
    "autonomic lean",
    "autonomic write-ahead, 2 calls a turn",
    "autonomic lean, 2 calls a turn",
)
PAIRED = ", 2 calls a turn"
"""The same 10 tool steps proposed two at a time (5 turns): where a non-idempotent call's result
rides with the next call's intent (issue 17 item 2)."""
PEER_SYSTEMS = ("raw", "langgraph", "dbos")

Sizes = dict[str, tuple[int, int, int]]
"""Per table: (bytes, rows, row-datum bytes); the last is PostgreSQL's only (0 on SQLite)."""


# -- measuring a store -----------------------------------------------------------------------


def sqlite_sizes(path: str) -> Sizes:
    """Per table (its indexes included): ``dbstat`` payload bytes and rows."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT m.tbl_name, SUM(s.payload) FROM dbstat s "
            "JOIN sqlite_schema m ON m.name = s.name GROUP BY m.tbl_name"
        ).fetchall()
        out: Sizes = {}
        for table, payload in rows:
            if table.startswith("sqlite_"):
                continue
            (count,) = conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()
            out[str(table)] = (int(payload or 0), int(count), 0)
        return out
    finally:
        conn.close()


def pg_sizes(url: str) -> Sizes:
    """Per table of the database: ``pg_total_relation_size``, rows, ``pg_column_size`` of rows."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT n.nspname, c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg_toast%'"
        ).fetchall()
        out: Sizes = {}
        for schema, table, size in tables:
            row = conn.execute(
                f'SELECT COUNT(*), COALESCE(SUM(pg_column_size(t.*)), 0) FROM "{schema}"."{table}" t'
            ).fetchone()
            assert row is not None
            out[f"{schema}.{table}"] = (int(size), int(row[0]), int(row[1]))
        return out


def sizes(store: str, target: str) -> Sizes:
    return sqlite_sizes(target) if store == "sqlite" else pg_sizes(target)


def delta(before: Sizes, after: Sizes) -> Sizes:
    out: Sizes = {}
    for table, (b, r, d) in after.items():
        b0, r0, d0 = before.get(table, (0, 0, 0))
        if (b - b0, r - r0, d - d0) != (0, 0, 0):
            out[table] = (b - b0, r - r0, d - d0)
    return out


def report(
    system: str, store: str, runs: int, added: Sizes, seconds: float, commits: int | None
) -> dict[str, Any]:
    steps = runs * STEPS
    return {
        "system": system,
        "store": store,
        "runs": runs,
        "bytes_per_step": round(sum(v[0] for v in added.values()) / steps, 1),
        "row_bytes_per_step": round(sum(v[2] for v in added.values()) / steps, 1)
        if store == "postgres"
        else None,
        "rows_per_step": round(sum(v[1] for v in added.values()) / steps, 2),
        "commits_per_run": round(commits / runs, 2) if commits is not None else None,
        "ms_per_step": round(seconds * 1000 / steps, 4),
        "tables": {
            t: {"bytes_per_step": round(v[0] / steps, 1), "rows_per_step": round(v[1] / steps, 2)}
            for t, v in sorted(added.items())
        },
    }


# -- fresh stores --------------------------------------------------------------------------


@contextmanager
def fresh_target(store: str, workdir: Path, pg_url: str, name: str) -> Iterator[str]:
    """A new SQLite file or a new PostgreSQL database (dropped afterwards)."""
    tag = f"{name.replace(' ', '_').replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    if store == "sqlite":
        path = workdir / f"storage-{tag}.db"
        try:
            yield str(path)
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    import psycopg
    from psycopg import sql

    dbname = f"storage_{tag}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    base, _, _ = pg_url.rpartition("/")
    try:
        yield f"{base}/{dbname}"
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )


# -- autonomic, in this process -------------------------------------------------------------


async def autonomic_once(system: str, store: str, target: str, runs: int) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import autonomic_bench as ab

    from autonomic import Agent, AgentRegistry, Engine, FunctionModel, Runaway, build_store, tool

    @tool()
    async def add_one(arg: int) -> dict[str, int]:
        """The trivial tool, as ``@tool`` declares it by default (not idempotent)."""
        return {"value": arg + 1}

    default = system == "autonomic default"
    chosen = ab.add_one if system.startswith("autonomic lean") else add_one
    agent = Agent(name="bench", instructions="", tools=(chosen,), max_turns=STEPS + 1)
    url = f"sqlite:///{target}" if store == "sqlite" else target
    db = build_store(url)
    await db.migrate()
    kwargs: dict[str, Any] = {} if default else {"runaway": Runaway(enabled=False)}
    model = FunctionModel(paired_model, name="fake") if system.endswith(PAIRED) else ab.MODEL
    engine = Engine(db, AgentRegistry([agent]), lambda spec: model, **kwargs)
    commits = 0
    commit, create = db.commit, db.create_run

    async def counted_commit(*a: Any, **k: Any) -> int:
        nonlocal commits
        commits += 1
        return await commit(*a, **k)

    async def counted_create(*a: Any, **k: Any) -> Any:
        nonlocal commits
        commits += 1
        return await create(*a, **k)

    db.commit = counted_commit  # type: ignore[method-assign]
    db.create_run = counted_create  # type: ignore[method-assign]
    try:
        await ab.one_run(engine)  # warm-up: connections, caches, every table touched
        before = sizes(store, target)
        commits = 0
        start = time.perf_counter()
        for _ in range(runs):
            await ab.one_run(engine)
        seconds = time.perf_counter() - start
        counted = commits
    finally:
        await db.close()
    return report(system, store, runs, delta(before, sizes(store, target)), seconds, counted)


def paired_model(messages: Any, tools: Any) -> Any:
    """The benchmark's fake model, proposing the next two tool calls at once."""
    from autonomic.core.canonical import canonical_json
    from autonomic.core.messages import ModelResponse, Role, ToolCall

    done = sum(1 for m in messages if m.role is Role.TOOL)
    if done < STEPS:
        calls = tuple(
            ToolCall(f"c{n}", "add_one", canonical_json({"arg": n})) for n in (done + 1, done + 2)
        )
        return ModelResponse(content=None, tool_calls=calls, model="fake")
    return ModelResponse(content=f"done after {done} steps", model="fake")


# -- the peers, in their own venv -----------------------------------------------------------


def peer_once(system: str, store: str, target: str, runs: int) -> dict[str, Any]:
    """Run in the peers' venv (``--peer``): one system's runs, measured as above."""
    sys.path.insert(0, str(PEERS))
    import peer_common as pc

    run: Callable[[str], None]
    if system == "raw":
        import raw_floor

        journal = (
            raw_floor.SqliteJournal(Path(target))
            if store == "sqlite"
            else raw_floor.PgJournal(target)
        )

        def run(run_id: str) -> None:
            pc.verify_run(run_id, raw_floor.run_sync(journal, run_id))

        closing: Callable[[], None] = journal.close
    elif system == "langgraph":
        import langgraph_peer as lg

        ctx = lg.sync_saver(store, target)
        graph = lg.build_graph(ctx.__enter__(), False)

        def run(run_id: str) -> None:
            lg.run_one(graph, run_id)

        def closing() -> None:
            ctx.__exit__(None, None, None)
    else:
        import dbos_peer

        dbos_peer.quiet_logs()
        ctx = dbos_peer.launched(store, target)
        ctx.__enter__()
        run = dbos_peer.run_one

        def closing() -> None:
            ctx.__exit__(None, None, None)

    try:
        run(f"warm-{uuid.uuid4().hex[:8]}")
        before = sizes(store, target)
        start = time.perf_counter()
        for run_id in pc.new_run_ids("bytes", runs):
            run(run_id)
        seconds = time.perf_counter() - start
    finally:
        closing()
    return report(system, store, runs, delta(before, sizes(store, target)), seconds, None)


def peer_via_venv(system: str, store: str, target: str, runs: int) -> dict[str, Any] | None:
    python = PEERS_PYTHON if PEERS_PYTHON.exists() else None
    if python is None:
        if system != "raw":
            return None
        python = Path(sys.executable)
    command = [str(python), __file__, "--peer", system, "--store", store, "--target", target]
    done = subprocess.run(
        [*command, "--runs", str(runs)],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if done.returncode != 0:
        print(f"{system}/{store} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- the table ------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| store | system | bytes/step | x raw | rows/step | commits/run | ms/step | x raw |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for store in ("sqlite", "postgres"):
        mine = [r for r in rows if r["store"] == store]
        raw = next((r for r in mine if r["system"] == "raw"), None)
        for r in mine:
            b = f"{r['bytes_per_step']:.0f}"
            if r["row_bytes_per_step"] is not None:
                b += f" ({r['row_bytes_per_step']:.0f})"
            xb = f"x{r['bytes_per_step'] / raw['bytes_per_step']:.2f}" if raw else ""
            xt = f"x{r['ms_per_step'] / raw['ms_per_step']:.2f}" if raw else ""
            commits = r["commits_per_run"] if r["commits_per_run"] is not None else ""
            lines.append(
                f"| {store} | {r['system']} | {b} | {xb} | {r['rows_per_step']:.2f} | "
                f"{commits} | {r['ms_per_step']:.3f} | {xt} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--store", action="append", choices=["sqlite", "postgres"])
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=HERE / ".work")
    parser.add_argument("--system", action="append", choices=AUTONOMIC + PEER_SYSTEMS)
    parser.add_argument("--peer", choices=PEER_SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:  # a child in the peers' venv
        print(json.dumps(peer_once(args.peer, args.store[0], args.target, args.runs)))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    systems = args.system or list(AUTONOMIC + PEER_SYSTEMS)
    print(f"load average at start: {os.getloadavg()}", file=sys.stderr)
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for store in args.store or ["sqlite"]:
        for _ in range(args.rounds):
            for system in systems:
                with fresh_target(store, args.workdir.resolve(), args.pg_url, system) as target:
                    if system in AUTONOMIC:
                        got = asyncio.run(autonomic_once(system, store, target, args.runs))
                    else:
                        got = peer_via_venv(system, store, target, args.runs)
                if got is not None:
                    results.setdefault((store, system), []).append(got)
    rows = []
    for samples in results.values():
        best = dict(samples[0])
        best["ms_per_step"] = statistics.median(s["ms_per_step"] for s in samples)
        best["rounds"] = len(samples)
        rows.append(best)
        print(json.dumps(best), flush=True)
    print(table(rows))
    print(f"load average at end: {os.getloadavg()}", file=sys.stderr)


if __name__ == "__main__":
    main()
