"""DBOS peer: a @DBOS.workflow looping over @DBOS.step model and tool calls.

Mapping: a model call and a tool call are each a DBOS step (their outputs are
checkpointed in the system database before the step returns), so one ReAct
step is two DBOS steps; the 11th model call (the final answer) is a step too,
and the workflow's own status row is written at start and at completion.

The system database is a SQLite file (DBOS's default kind of URL,
sqlite:///path) or a fresh PostgreSQL database.  Sequential runs call the
workflow directly; concurrent runs call it from a thread pool (DBOS's sync
workflows are thread-based).  Resume is DBOS recovery of the PENDING workflow
left by a SIGKILLed child: `DBOS._recover_pending_workflows(["local"])`, the
same routine DBOS runs at launch and behind its admin/Conductor recovery.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import peer_common as pc
from dbos import DBOS, DBOSConfig, SetWorkflowID
from dbos._dbos import _get_dbos_instance

SYSTEM = "dbos"
APP_VERSION = "peer-bench"  # fixed so the crash child and parent match
RESULT_POLL_S = 0.01  # handle.get_result polls the DB for recovered runs
REPLAY_STARTED: dict[str, float] = {}  # resumed run -> workflow body entered


# --------------------------------------------------------------------------- #
# Workflow and steps (registered at import, before DBOS.launch()).
# --------------------------------------------------------------------------- #


@DBOS.step()
def model_step(run_id: str, completed_steps: int) -> pc.Decision:
    """The fake model call, checkpointed as a DBOS step."""
    return pc.fake_model(completed_steps)


@DBOS.step()
def tool_step(run_id: str, arg: int) -> pc.ToolResult:
    """The tool call, checkpointed as a DBOS step."""
    pc.PROBE.tool_called(run_id)
    return pc.add_one(arg)


@DBOS.workflow()
def react_run(run_id: str) -> list[pc.ToolResult]:
    """The ReAct loop.  On recovery DBOS replays it, returning recorded step
    outputs for steps already done, so only steps 6.. really execute."""
    if run_id in pc.PROBE.watched:
        REPLAY_STARTED.setdefault(run_id, time.perf_counter())
    results: list[pc.ToolResult] = []
    while True:
        decision = model_step(run_id, len(results))
        if decision["action"] == "final":
            return results
        results.append(tool_step(run_id, int(decision["arg"])))
        # tool_step returned => its output row is committed in the system DB.
        pc.PROBE.step_durable(run_id, len(results))


def run_one(run_id: str) -> None:
    """Start one run with its id as the workflow id and wait for it."""
    with SetWorkflowID(run_id):
        results = react_run(run_id)
    pc.verify_run(run_id, results)


# --------------------------------------------------------------------------- #
# Lifecycle and durability introspection.
# --------------------------------------------------------------------------- #


def dbos_config(store: str, target: str) -> DBOSConfig:
    """Default DBOS configuration pointing at the benchmark's system DB."""
    url = f"sqlite:///{target}" if store == "sqlite" else target
    return {
        "name": "dbos-peer",
        "system_database_url": url,
        "application_version": APP_VERSION,
        "log_level": "WARNING",
    }


@contextmanager
def launched(store: str, target: str) -> Iterator[None]:
    """DBOS(config) + launch(), always destroyed so connections are released."""
    DBOS(config=dbos_config(store, target))
    DBOS.launch()
    try:
        yield
    finally:
        DBOS.destroy(destroy_registry=False)


def sqlite_settings() -> tuple[str, int]:
    """journal_mode/synchronous on a connection from DBOS's own engine.

    DBOS exposes no public engine handle, hence the private accessors.
    """
    engine = _get_dbos_instance()._sys_db.engine
    with engine.connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
    if mode is None or sync is None:
        raise RuntimeError("could not read SQLite PRAGMAs from DBOS's engine")
    return str(mode), int(sync)


def durability(store: str, target: str) -> tuple[bool, str]:
    """Whether a DBOS step commit waits for fsync, with DBOS defaults."""
    if store == "sqlite":
        fsync, note = pc.sqlite_durability(*sqlite_settings())
        note += " (DBOS default: it sets no journal_mode/synchronous)"
    else:
        fsync, note = pc.pg_durability(target)
    return fsync, note + "; 2 DBOS steps per ReAct step + workflow status rows"


# --------------------------------------------------------------------------- #
# Modes.
# --------------------------------------------------------------------------- #


def sequential_round(runs: int) -> None:
    """`runs` workflows one after another."""
    for run_id in pc.new_run_ids("seq", runs):
        run_one(run_id)


def concurrent_round(pool: ThreadPoolExecutor, runs: int) -> None:
    """`runs` workflows from a pool whose size bounds the number in flight."""
    for future in [pool.submit(run_one, r) for r in pc.new_run_ids("conc", runs)]:
        future.result()


def resume(run_id: str) -> list[pc.ToolResult]:
    """DBOS recovery of the crashed run's PENDING workflow.

    Recovery re-enqueues it on DBOS's internal queue, whose worker dequeues
    and replays it; we wait on the probe for step 6 (no DB polling that could
    slow the measured step), then on the workflow handle for the result.
    """
    start = time.perf_counter()
    handles = DBOS._recover_pending_workflows(["local"])
    ids = [h.get_workflow_id() for h in handles]
    if ids != [run_id]:
        raise RuntimeError(f"expected to recover {run_id}, recovered {ids}")
    pc.PROBE.wait_first_step(run_id)
    queued_ms = (REPLAY_STARTED[run_id] - start) * 1000
    replay_ms = (pc.PROBE.first_step_at[run_id] - REPLAY_STARTED[run_id]) * 1000
    pc.log(
        f"[{SYSTEM}] {run_id}: {queued_ms:.1f}ms until dequeued, "
        f"{replay_ms:.2f}ms replay of 1-5 + step 6"
    )
    return list(handles[0].get_result(polling_interval_sec=RESULT_POLL_S))


def crash_child(args: argparse.Namespace) -> None:
    """Subprocess entry: start a workflow and get SIGKILLed after step 5."""
    pc.PROBE.crash_child = True
    with launched(args.store, args.target):
        run_one(args.crash_child)
    raise RuntimeError("crash child survived past step 5")


def samples_for(mode: pc.Mode, args: argparse.Namespace) -> list[float]:
    """Per-round wall times for the sequential or concurrent mode."""
    label = f"{SYSTEM}/{args.store} {mode}"
    if mode == "sequential":
        return pc.measure_rounds(
            label,
            args.rounds,
            lambda i: sequential_round(pc.WARMUP_RUNS if i < 0 else args.runs),
        )
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        return pc.measure_rounds(
            label,
            args.rounds,
            lambda i: concurrent_round(pool, args.concurrency if i < 0 else args.runs),
        )


def emit_mode(mode: pc.Mode, args: argparse.Namespace, target: str, dur: tuple[bool, str]) -> None:
    """Measure one mode and print its JSON line."""
    if mode != "resume":
        pc.emit(
            pc.throughput_row(
                system=SYSTEM,
                store=args.store,
                mode=mode,
                runs=args.runs,
                samples=samples_for(mode, args),
                durability=dur,
            )
        )
        return
    first, complete = pc.measure_resume(
        label=f"{SYSTEM}/{args.store} resume",
        trials=args.resume_runs,
        crash=lambda r: pc.spawn_crash_child(__file__, args.store, target, r),
        resume=resume,
    )
    note = dur[1] + "; resume = recovery via internal queue (polled every ~1s)"
    pc.emit(
        pc.resume_row(
            system=SYSTEM,
            store=args.store,
            first_step_s=first,
            complete_s=complete,
            durability=(dur[0], note),
        )
    )


def run_benchmark(args: argparse.Namespace, target: str) -> None:
    """Launch DBOS once on the fresh system DB and run the requested modes."""
    with launched(args.store, target):
        dur = durability(args.store, target)
        for mode in pc.selected_modes(args):
            emit_mode(mode, args, target, dur)


def quiet_logs() -> None:
    """DBOS logs at INFO to the console by default; keep stderr readable."""
    logging.getLogger("dbos").setLevel(logging.WARNING)


def main() -> None:
    """CLI entry point."""
    args = pc.parse_args(__doc__ or SYSTEM)
    quiet_logs()
    if args.crash_child:
        crash_child(args)
        return
    pc.install_deadline(args.timeout_s)
    if args.store == "sqlite":
        path = pc.fresh_sqlite_path(args.workdir, SYSTEM)
        try:
            run_benchmark(args, str(path.resolve()))
        finally:
            pc.remove_sqlite(path)
    else:
        with pc.fresh_pg_database(args.pg_url, SYSTEM) as url:
            run_benchmark(args, url)


if __name__ == "__main__":
    main()
