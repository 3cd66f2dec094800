"""The fleet harness: three ``autonomic worker`` processes on PostgreSQL, SIGKILLed at random
while they drive demo runs; every run completes (in-doubt ones settled with ``autonomic settle``
from the bank's truth) with 0 duplicated effects. And the harness's checks can fail."""

import asyncio
import json
import sqlite3

import pytest

from autonomic.bootstrap import build_agents, build_model, build_store
from autonomic.engine.executor import Engine
from autonomic.examples.reconciliation.bank import create_bank
from autonomic.testing.fleet import Fleet, FleetConfig, expected_adjustments, run_fleet

pytestmark = pytest.mark.postgres

SEED = 20261120


@pytest.mark.timeout(600)  # a hang guard only: the harness stops itself at its own deadline
def test_a_fleet_killed_at_random_completes_every_run_once(pg_url, tmp_path):
    config = FleetConfig(
        url=pg_url,
        workdir=tmp_path,
        runs=12,
        workers=3,
        seed=SEED,
        kill_every=(1.0, 2.0),
        armed=0.5,
        deadline=240.0,
    )
    report = run_fleet(config)
    summary = "\n".join(report.lines())
    assert report.ok, summary
    assert report.statuses == {"COMPLETED": 12}, summary
    assert report.kills >= 1, summary  # the chaos happened
    assert report.duplicates == 0
    assert report.reports_filed == 12  # one report per bank, no more
    assert report.approvals >= 12, summary  # every run's large adjustment was approved
    # every run found in doubt was settled by the command (some more than once: killed again)
    assert report.settled >= report.in_doubt_runs, summary
    assert report.workers == 3
    assert report.spawned == 3 + report.kills + report.self_kills


def test_the_checks_count_a_duplicated_report_and_adjustment(sqlite_url, tmp_path):
    """A bank with its report filed twice and one adjusting entry posted twice under two keys
    (what a broken engine would leave) is counted as 2 duplicates and fails the trial."""
    bank = create_bank(tmp_path / "bank.db")
    fleet = Fleet(FleetConfig(url=sqlite_url, workdir=tmp_path, runs=1))

    async def go() -> None:
        store = build_store(sqlite_url)
        try:
            await store.migrate()
            engine = Engine(store, build_agents(None), build_model)
            run = await engine.start("reconciliation", json.dumps({"compute": "tool"}))
            fleet.banks[run.id] = bank
            fleet.report.runs = 1
            db = sqlite3.connect(bank)
            with db:
                db.executemany(
                    "INSERT INTO reports (run_id, title, body) VALUES (?, 'r', 'b')",
                    [(run.id,), (run.id,)],
                )
                db.executemany(
                    "INSERT INTO adjustments VALUES (?, 'a', ?, 1, 'r')",
                    [(f"k{i}", ref) for i, ref in enumerate([*expected_adjustments(), "FEE-NOV"])],
                )
            db.close()
            await fleet.check(store)
        finally:
            await store.close()

    asyncio.run(go())
    report = fleet.report
    assert report.duplicates == 2
    assert report.reports_filed == 2
    assert report.statuses == {"PENDING": 1}
    assert not report.ok
    assert "FAILED" in report.lines()[-1]
