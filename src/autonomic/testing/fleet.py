"""A fleet harness: real worker processes on one database, SIGKILLed at random while they drive
demo runs, and the proof that nothing was lost or done twice.

The crash harness (``autonomic.testing.crash``) kills one process at one fault point and resumes
in-process; this one is what an operator's cluster goes through. It creates one demo bank per run
(``examples/reconciliation/bank.py``) and enqueues that many reconciliation runs, starts
``workers`` ``autonomic worker`` subprocesses with a short lease, and then, until every run is
COMPLETED or the deadline passes, plays everything around them:

* the chaos: every 1-3 s (seeded) it SIGKILLs a random worker and starts a replacement; some
  replacements are armed with ``AUTONOMIC_CRASH_AT`` (``before_effect``/``after_effect`` at a
  random count), which kills them at a tool's effect - the report call among them, so runs end
  *in doubt* on both sides (filed, not filed);
* the controller: it approves the large adjusting entry every run asks for;
* the person who settles: a run waiting *in doubt* about its ``file_report`` call is settled with
  ``autonomic settle`` (the command, as a person runs it), from the truth in the run's bank:
  ``--executed --result {"report_id": N, "filed": true}`` when the report is in its ``reports``
  table, ``--not-executed`` when it is not.

Then it checks: every run COMPLETED (none FAILED, SUSPENDED, CANCELLED or stuck), every bank holds
exactly one report and each adjusting entry exactly once (0 duplicates), every journal's hash
chain intact (``crash.journal.chain_problems``). ``python -m autonomic.testing.fleet --db URL``
prints a one-screen report and exits 1 if any of that fails.

The supervisor never shares a lock, a pipe or a connection with the processes it kills: workers
write their output to files, and all it knows it reads from the store and the banks. POSIX only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from autonomic.adapters.store.rows import redact_url
from autonomic.bootstrap import build_agents, build_model, build_store
from autonomic.core.approval import ApprovalStatus
from autonomic.core.journal import EntryKind
from autonomic.core.run import RunStatus
from autonomic.core.state import fold
from autonomic.engine.executor import Engine
from autonomic.errors import ApprovalRefused
from autonomic.examples.reconciliation.bank import (
    ACCOUNT,
    DATE,
    LEDGER,
    STATEMENT,
    connect_bank,
    create_bank,
)
from autonomic.governance.approvals import ApprovalDesk
from autonomic.ports.store import Store
from autonomic.testing.crash.journal import chain_problems

AGENT = "reconciliation"
REPORT_TOOL = "file_report"
CONTROLLER = "fleet-controller"
"""Who approves and settles (not the runs' requester, ``fleet``)."""
ARMED_POINTS = ("before_effect", "after_effect")
"""Where an armed worker kills itself: a call's intent committed and its effect not started
(a report then is *not executed*), or its effect done and its result not committed (*executed*)."""


def expected_adjustments() -> frozenset[str]:
    """The references the demo agent posts an adjusting entry for: lines missing from the
    ledger and amounts that differ (computed from the demo bank's data, not from the agent)."""
    book = {ref: amount for ref, _, amount in LEDGER}
    bank = {ref: amount for ref, _, amount in STATEMENT}
    return frozenset(ref for ref, amount in bank.items() if book.get(ref) != amount)


@dataclass(frozen=True)
class FleetConfig:
    """One fleet trial. ``kill_every``: the range of seconds between two SIGKILLs; ``armed``: the
    share of replacement workers armed with ``AUTONOMIC_CRASH_AT`` (``armed_max``: the highest
    count); ``deadline``: seconds after which the trial stops and reports what is stuck."""

    url: str
    workdir: Path
    runs: int = 40
    workers: int = 3
    seed: int = 0
    kill_every: tuple[float, float] = (1.0, 3.0)
    lease_ttl: float = 2.0
    concurrency: int = 4
    armed: float = 0.4
    armed_max: int = 8
    deadline: float = 600.0
    poll: float = 0.2


@dataclass
class FleetReport:
    """What a fleet trial did and found. ``ok``: every guarantee held."""

    url: str
    seed: int
    runs: int = 0
    workers: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    """Workers the supervisor SIGKILLed."""
    self_kills: int = 0
    """Armed workers that SIGKILLed themselves at their fault point."""
    other_exits: list[str] = field(default_factory=list)
    """Workers that ended any other way (a crash of the worker itself: a failure)."""
    spawned: int = 0
    takeovers: int = 0
    """``recovery`` entries: a worker took over a run another had left RUNNING."""
    approvals: int = 0
    in_doubt_runs: int = 0
    settled_executed: int = 0
    settled_not_executed: int = 0
    reports_filed: int = 0
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def settled(self) -> int:
        return self.settled_executed + self.settled_not_executed

    @property
    def ok(self) -> bool:
        return (
            not self.problems
            and not self.other_exits
            and self.duplicates == 0
            and self.statuses[RunStatus.COMPLETED.value] == self.runs
        )

    def lines(self) -> list[str]:
        """The report as it fits on one screen."""
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items())) or "none"
        lines = [
            f"fleet on {self.url} (seed {self.seed}): {self.runs} runs, {self.workers} workers, "
            f"{self.seconds:.1f} s",
            f"  runs:        {statuses}",
            f"  chaos:       {self.kills} workers SIGKILLed by the supervisor, {self.self_kills} "
            f"at an armed fault point; {self.spawned} worker processes in all",
            f"  takeovers:   {self.takeovers} (runs picked up from a dead worker)",
            f"  approvals:   {self.approvals} given by {CONTROLLER}",
            f"  in doubt:    {self.in_doubt_runs} runs; settled with `autonomic settle`: "
            f"{self.settled_executed} executed, {self.settled_not_executed} not executed",
            f"  effects:     {self.reports_filed} reports filed; {self.duplicates} duplicates",
        ]
        lines += [f"  worker exit: {line}" for line in self.other_exits[:5]]
        lines += [f"  PROBLEM:     {p}" for p in self.problems[:10]]
        if len(self.problems) > 10:
            lines.append(f"  ... and {len(self.problems) - 10} more problems")
        lines.append("OK: every guarantee held" if self.ok else "FAILED: see the problems above")
        return lines


# -- the demo banks --------------------------------------------------------------------------


def bank_reports(bank: Path) -> list[tuple[int, str]]:
    """The reports filed in ``bank``: (id, run id) in filing order. The truth about
    ``file_report``: what a person settling an in-doubt run would look at."""
    db = connect_bank(bank)
    try:
        return [(int(i), str(r)) for i, r in db.execute("SELECT id, run_id FROM reports")]
    finally:
        db.close()


def bank_adjustments(bank: Path) -> Counter[str]:
    """How many adjusting entries ``bank`` holds per reference."""
    db = connect_bank(bank)
    try:
        return Counter(str(r) for (r,) in db.execute("SELECT reference FROM adjustments"))
    finally:
        db.close()


# -- the worker processes --------------------------------------------------------------------


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    armed: str | None
    log: Path


class Fleet:
    """The supervisor of one fleet trial (``run_fleet`` runs one)."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)  # noqa: S311 - a reproducible schedule, not a secret
        self.report = FleetReport(
            url=redact_url(config.url), seed=config.seed, workers=config.workers
        )
        self.banks: dict[str, Path] = {}
        self.workers: list[_Worker] = []
        self._settling: dict[str, asyncio.Task[None]] = {}
        self._settle_tries: Counter[str] = Counter()
        self._in_doubt: set[str] = set()

    # workers

    def _spawn(self, *, arm: bool) -> None:
        config = self.config
        env = {k: v for k, v in os.environ.items() if k != "AUTONOMIC_CRASH_AT"}
        armed = None
        if arm:
            armed = f"{self.rng.choice(ARMED_POINTS)}:{self.rng.randint(1, config.armed_max)}"
            env["AUTONOMIC_CRASH_AT"] = armed
        self.report.spawned += 1
        log = config.workdir / f"worker-{self.report.spawned}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
                [
                    sys.executable,
                    "-m",
                    "autonomic.cli",
                    "--db",
                    config.url,
                    "worker",
                    "--lease-ttl",
                    str(config.lease_ttl),
                    "--concurrency",
                    str(config.concurrency),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C of the supervisor is not delivered to them
            )
        self.workers.append(_Worker(process, armed, log))

    def _reap(self) -> None:
        """Replace the workers that ended by themselves (armed ones at their fault point)."""
        for worker in list(self.workers):
            code = worker.process.poll()
            if code is None:
                continue
            self.workers.remove(worker)
            if code == -signal.SIGKILL and worker.armed:
                self.report.self_kills += 1
            else:
                self.report.other_exits.append(
                    f"pid {worker.process.pid} exited {code} (log {worker.log})"
                )
            self._spawn(arm=self.rng.random() < self.config.armed)

    def _kill_one(self) -> None:
        if not self.workers:
            return
        worker = self.rng.choice(self.workers)
        self.workers.remove(worker)
        with contextlib.suppress(ProcessLookupError):
            worker.process.send_signal(signal.SIGKILL)
        code = worker.process.wait()  # reaped now: its pid reads as dead to a claimer
        if code == -signal.SIGKILL:
            self.report.kills += 1
        else:  # it ended by itself just before
            self.report.other_exits.append(f"pid {worker.process.pid} exited {code}")
        self._spawn(arm=self.rng.random() < self.config.armed)

    def _stop_all(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
        self.workers.clear()

    # the humans around the fleet

    async def _enqueue(self, store: Store) -> None:
        engine = Engine(store, build_agents(None), build_model)
        task = json.dumps({"account": ACCOUNT, "date": DATE, "compute": "tool"})
        for i in range(self.config.runs):
            bank = create_bank((self.config.workdir / f"bank-{i + 1}.db").resolve())
            run = await engine.start(AGENT, task, metadata={"bank": str(bank)}, requester="fleet")
            self.banks[run.id] = bank
        self.report.runs = self.config.runs

    async def _approve(self, store: Store) -> None:
        desk = ApprovalDesk(store)
        for approval in await store.list_approvals(status=ApprovalStatus.PENDING, limit=1000):
            if approval.run_id not in self.banks:
                continue
            try:
                await desk.approve(approval.id, by=CONTROLLER, reason="checked by the fleet")
            except ApprovalRefused:
                continue  # decided meanwhile
            self.report.approvals += 1

    async def _settle(self, store: Store, run_id: str) -> None:
        """Settle ``run_id``'s in-doubt report call with the command, from the bank's truth."""
        pending = fold(run_id, await store.load_journal(run_id)).in_doubt()
        if pending is None or pending.intent is None:
            return  # settled meanwhile: the status is read again at the next poll
        if pending.intent.tool != REPORT_TOOL:
            self.report.problems.append(
                f"run {run_id} is in doubt about {pending.intent.tool}, not {REPORT_TOOL}"
            )
            return
        filed = [i for i, r in bank_reports(self.banks[run_id]) if r == run_id]
        found: list[str]
        if filed:
            result = json.dumps({"report_id": filed[0], "filed": True})
            found = ["--executed", "--result", result]
            reason = f"report {filed[0]} is in the bank's reports table"
        else:
            found = ["--not-executed"]
            reason = "no report for this run in the bank's reports table"
        command = [sys.executable, "-m", "autonomic.cli", "--db", self.config.url, "settle"]
        command += [run_id, *found, "--reason", reason, "--as", CONTROLLER]
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            self._settle_tries[run_id] += 1
            if self._settle_tries[run_id] >= 3:
                text = output.decode(errors="replace").strip().splitlines()
                self.report.problems.append(
                    f"autonomic settle {run_id} exited {process.returncode}: "
                    f"{text[-1] if text else ''}"
                )
            return
        if filed:
            self.report.settled_executed += 1
        else:
            self.report.settled_not_executed += 1

    async def _tend(self, store: Store, open_runs: set[str]) -> None:
        """One look at every unfinished run: approve, settle, or note where it ended."""
        await self._approve(store)
        for run_id in sorted(open_runs):
            run = await store.get_run(run_id)
            if run.status is RunStatus.COMPLETED:
                open_runs.discard(run_id)
            elif run.status.terminal or run.status is RunStatus.SUSPENDED:
                open_runs.discard(run_id)
                self.report.problems.append(
                    f"run {run_id} ended {run.status.value}: {run.status_reason}"
                )
            elif run.status is RunStatus.WAITING_FOR_HUMAN and (run.status_reason or "").startswith(
                "in doubt"
            ):
                self._in_doubt.add(run_id)
                task = self._settling.get(run_id)
                if (task is None or task.done()) and self._settle_tries[run_id] < 3:
                    self._settling[run_id] = asyncio.create_task(self._settle(store, run_id))

    # the trial

    async def run(self) -> FleetReport:
        config = self.config
        config.workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        store = build_store(config.url)
        try:
            await store.migrate()
            await self._enqueue(store)
            open_runs = set(self.banks)
            for _ in range(config.workers):
                self._spawn(arm=False)
            next_kill = time.monotonic() + self.rng.uniform(*config.kill_every)
            while open_runs and time.monotonic() - started < config.deadline:
                self._reap()
                if time.monotonic() >= next_kill:
                    self._kill_one()
                    next_kill = time.monotonic() + self.rng.uniform(*config.kill_every)
                await self._tend(store, open_runs)
                await asyncio.sleep(config.poll)  # the next look at the store, not a wait on it
            self._stop_all()
            for task in self._settling.values():
                await task
            for run_id in sorted(open_runs):
                run = await store.get_run(run_id)
                self.report.problems.append(
                    f"run {run_id} still {run.status.value} after {config.deadline:.0f} s: "
                    f"{run.status_reason or 'no reason'}"
                )
            await self.check(store)
        finally:
            self._stop_all()
            await store.close()
        self.report.seconds = time.monotonic() - started
        return self.report

    async def check(self, store: Store) -> None:
        """The guarantees, read from the store and the banks after the fleet stopped."""
        report = self.report
        report.in_doubt_runs = len(self._in_doubt)
        wanted = expected_adjustments()
        for run_id, bank in sorted(self.banks.items()):
            run = await store.get_run(run_id)
            report.statuses[run.status.value] += 1
            entries = await store.load_journal(run_id)
            report.takeovers += sum(1 for e in entries if e.kind is EntryKind.RECOVERY)
            report.problems += [f"run {run_id}: {p}" for p in chain_problems(entries)]
            filed = bank_reports(bank)
            report.reports_filed += len(filed)
            if run.status is RunStatus.COMPLETED and len(filed) != 1:
                report.problems.append(f"run {run_id} COMPLETED with {len(filed)} reports filed")
            report.duplicates += max(0, len(filed) - 1)
            adjusted = bank_adjustments(bank)
            report.duplicates += sum(n - 1 for n in adjusted.values() if n > 1)
            if run.status is RunStatus.COMPLETED and set(adjusted) != wanted:
                report.problems.append(
                    f"run {run_id} COMPLETED with adjustments {sorted(adjusted)}, "
                    f"not {sorted(wanted)}"
                )


def run_fleet(config: FleetConfig) -> FleetReport:
    """Run one fleet trial (no event loop may be running) and return its report."""
    return asyncio.run(Fleet(config).run())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m autonomic.testing.fleet",
        description="Run demo runs on a fleet of workers that are SIGKILLed at random; check "
        "that every run completes (in-doubt ones settled by `autonomic settle`) with 0 "
        "duplicated effects.",
    )
    parser.add_argument("--db", required=True, help="database URL (PostgreSQL for a fleet)")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="banks and worker logs (default: a temp dir)")
    parser.add_argument("--kill-min", type=float, default=1.0, help="seconds between kills, least")
    parser.add_argument("--kill-max", type=float, default=3.0, help="seconds between kills, most")
    parser.add_argument("--lease-ttl", type=float, default=2.0)
    parser.add_argument("--armed", type=float, default=0.4, help="share of armed replacements")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds before giving up")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.workers < 1 or not 0 < args.kill_min <= args.kill_max:
        parser.error("--runs and --workers must be at least 1, 0 < --kill-min <= --kill-max")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="autonomic-fleet-"))
    config = FleetConfig(
        url=args.db,
        workdir=workdir,
        runs=args.runs,
        workers=args.workers,
        seed=args.seed,
        kill_every=(args.kill_min, args.kill_max),
        lease_ttl=args.lease_ttl,
        armed=args.armed,
        deadline=args.deadline,
    )
    report = run_fleet(config)
    print("\n".join(report.lines()))
    print(f"banks and worker logs: {workdir}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "Fleet",
    "FleetConfig",
    "FleetReport",
    "bank_adjustments",
    "bank_reports",
    "expected_adjustments",
    "main",
    "run_fleet",
]
