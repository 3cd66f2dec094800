"""The shared bus crash harness (``autonomic.testing.bus_crash``) on Kafka: producer, relay and
consumer processes SIGKILLed at random and protocol points, every committed event processed
exactly once, nothing from a refused commit; three consumers, 1,000 keyed events, one killed
mid-batch, per-key order held. The store is SQLite (the outbox, inbox and sink live there)."""

from __future__ import annotations

import uuid

import pytest

from autonomic.testing.bus_crash import run_rebalance, run_trial

CI_TRIALS = 20


def _bus(kafka_url: str) -> str:
    base = kafka_url.partition("?")[0]
    return f"{base}?prefix=x{uuid.uuid4().hex[:8]}.&session_timeout_ms=2000&fetch_max_wait_ms=20"


@pytest.mark.parametrize("seed", range(CI_TRIALS))
def test_crashes_anywhere_deliver_every_committed_event_exactly_once_on_kafka(
    kafka_url, tmp_path, seed
):
    report = run_trial(f"sqlite:///{tmp_path}/trial.db", _bus(kafka_url), 2000 + seed)
    assert report.problems == [], str(report)
    assert report.committed == report.processed == 30
    assert report.kills >= 2


def test_the_checks_catch_a_consumer_without_an_inbox_on_kafka(kafka_url, tmp_path):
    report = run_trial(f"sqlite:///{tmp_path}/t.db", _bus(kafka_url), 7, broken_inbox=True)
    assert any("more than once" in p for p in report.problems), str(report)


def test_three_kafka_consumers_one_killed_mid_batch_keep_order_and_lose_nothing(
    kafka_url, tmp_path
):
    report = run_rebalance(f"sqlite:///{tmp_path}/r.db", _bus(kafka_url), seed=3)
    assert report.problems == [], report
    assert report.processed == 1000
    assert report.duplicates == 0
    assert report.out_of_order == []
    assert report.killed
