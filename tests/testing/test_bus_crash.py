"""The bus crash harness on the embedded bus, both stores: producer, relay and consumer processes
SIGKILLed at random points - every committed event processed exactly once, no event of a refused
commit anywhere; three consumers, 1,000 keyed events, one killed mid-batch - per-key order held,
nothing lost or repeated. ``--slow`` runs 200 trials per store."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from autonomic.testing.bus_crash import run_rebalance, run_trial

BUS = "sql?lease_ttl=1&poll_interval=0.05"
CI_TRIALS = 10
"""Per store: 20 trials of the embedded bus in all."""
SLOW_TRIALS = 200


@pytest.mark.parametrize("seed", range(CI_TRIALS))
def test_crashes_anywhere_deliver_every_committed_event_exactly_once(store_url, seed):
    report = run_trial(store_url, BUS, 1000 + seed)
    assert report.problems == [], str(report)
    assert report.committed == report.processed == 30
    assert report.kills >= 2


def test_the_checks_catch_a_consumer_without_an_inbox(sqlite_url):
    report = run_trial(sqlite_url, BUS, 7, broken_inbox=True)
    assert any("more than once" in p for p in report.problems), str(report)


def test_three_consumers_one_killed_mid_batch_keep_order_and_lose_nothing(store_url):
    report = run_rebalance(store_url, "sql?lease_ttl=2&poll_interval=0.05", seed=3)
    assert report.problems == [], report
    assert report.processed == 1000
    assert report.duplicates == 0
    assert report.out_of_order == []
    assert report.killed


@contextmanager
def _fresh(kind: str, tmp_path: Path, i: int) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/trial-{i}.db"
        return
    import psycopg

    base = os.environ.get("AUTONOMIC_TEST_PG_URL") or "postgresql://postgres@127.0.0.1:5432/test"
    schema = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_hundred_crash_trials(kind, tmp_path, request):
    if not (request.config.getoption("--slow", default=False) or os.environ.get("AUTONOMIC_SLOW")):
        pytest.skip("200 bus crash trials per store: run with --slow (or AUTONOMIC_SLOW=1)")
    if kind == "postgres":
        request.getfixturevalue("pg_server")
    failures = []
    for i in range(SLOW_TRIALS):
        with _fresh(kind, tmp_path, i) as url:
            report = run_trial(url, BUS, 5000 + i)
        if report.problems:
            failures.append(str(report))
    assert failures == []
