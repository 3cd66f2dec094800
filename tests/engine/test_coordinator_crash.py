"""A coordinator's 20-subtask graph driven by 3 worker processes that are SIGKILLed at seeded random
points of the step protocol and restarted: every subtask's effect happens exactly once, the
coordinator completes, and no child run is orphaned - on both stores. 6 seeded trials per store
in CI; ``--slow`` (or ``AUTONOMIC_SLOW=1``) adds 100 more per store."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autonomic.bootstrap import build_store
from autonomic.core.entries import SubtaskStep
from autonomic.core.run import RunStatus
from autonomic.testing.coordination import Ledger, kit_engine, orphans

POINTS = ("before_commit", "after_commit", "before_effect", "after_effect", "step_done")
WORKERS = 3
MAX_KILLS = 8
DEADLINE = 240.0
"""Seconds a trial may take before it is a failure (it takes a few on an idle machine)."""


def _spec(rng: random.Random, crash: float) -> str | None:
    if rng.random() >= crash:
        return None
    return f"{rng.choice(POINTS)}:{rng.randint(1, 12)}"


def _worker(db: str, ledger: Path, run_id: str, spec: str | None) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable, "-m", "autonomic.testing.coordination", "--db", db,
        "--ledger", str(ledger), "--until", run_id, "--deadline", str(DEADLINE),
    ]  # fmt: skip
    if spec is not None:
        argv += ["--crash", spec]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _trial(store_url: str, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    ledger = tmp_path / "ledger"

    async def enqueue() -> str:
        store = build_store(store_url)
        await store.migrate()
        try:
            return (await kit_engine(store, ledger).start("lead", {"seed": seed})).id
        finally:
            await store.close()

    run_id = asyncio.run(enqueue())
    fleet = [_worker(store_url, ledger, run_id, _spec(rng, 1.0)) for _ in range(WORKERS)]
    kills, errors = 0, []
    give_up = time.monotonic() + DEADLINE
    while fleet and time.monotonic() < give_up:
        proc = fleet.pop(0)
        try:
            _, err = proc.communicate(timeout=max(0.1, give_up - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            errors.append("a worker outlived the trial's deadline")
            continue
        if proc.returncode == -9:  # SIGKILLed at its fault point: a new worker takes its place
            kills += 1
            spec = _spec(rng, 0.5) if kills < MAX_KILLS else None
            fleet.append(_worker(store_url, ledger, run_id, spec))
        elif proc.returncode != 0:
            errors.append(err.decode()[-1500:])
    for proc in fleet:
        proc.kill()
    assert not errors, errors
    assert kills >= 1, f"seed {seed}: no worker reached its fault point"

    async def check() -> None:
        store = build_store(store_url)
        try:
            run = await store.get_run(run_id)
            assert run.status is RunStatus.COMPLETED, f"seed {seed}: {run.status_reason}"
            book = Ledger(ledger)
            assert sorted(book.applied()) == list(range(20)), f"seed {seed}: {book.records()}"
            assert await orphans(store, run_id) == [], f"seed {seed}"
            journal = await store.load_journal(run_id)
            dispatched = [
                e.body.node
                for e in journal
                if isinstance(e.body, SubtaskStep) and e.body.phase == "dispatch"
            ]
            assert sorted(dispatched) == sorted(set(dispatched))  # each handed off once
            assert len(dispatched) == 20
        finally:
            await store.close()

    asyncio.run(check())


@pytest.mark.parametrize("seed", range(6))
def test_a_20_subtask_graph_survives_sigkilled_workers(
    store_url: str, tmp_path: Path, seed: int
) -> None:
    _trial(store_url, tmp_path, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6, 106))
def test_a_20_subtask_graph_survives_sigkilled_workers_slow(
    store_url: str, tmp_path: Path, seed: int, request: pytest.FixtureRequest
) -> None:
    if not (request.config.getoption("--slow", default=False) or os.environ.get("AUTONOMIC_SLOW")):
        pytest.skip("100 seeded trials per store: run with --slow")
    _trial(store_url, tmp_path, seed)
