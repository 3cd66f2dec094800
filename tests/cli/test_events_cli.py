"""``autonomic demo --scenario bus``, ``autonomic events`` and ``autonomic dlq``: two agents
talking over the embedded bus; publishing, reading, dead letters; bad input as one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "autonomic.cli"]
DEMO_AGENTS = "autonomic.examples.bus.agent:agents"


def autonomic(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AUTONOMIC_")}
    full |= {"COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=180
    )


def one_line_error(result: subprocess.CompletedProcess[str], says: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert says in result.stderr.splitlines()[0], result.stderr


def test_the_bus_demo_two_agents_talk_and_the_events_can_be_read(tmp_path: Path) -> None:
    result = autonomic("demo", "--scenario", "bus", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("code-analyzer: COMPLETED") == 2
    assert result.stdout.count("security-auditor: COMPLETED  audit of src/") == 2
    tail = autonomic(
        "events", "tail", "--type", "com.acme.audit.requested", "--json",
        "--agent", DEMO_AGENTS, cwd=tmp_path,
    )  # fmt: skip
    assert tail.returncode == 0, tail.stderr
    requests = [json.loads(line) for line in tail.stdout.splitlines()]
    # the worker drives both analyzers at once: which request is published first is the host's
    assert sorted(r["data"]["path"] for r in requests) == [
        "src/accounts/login.py",
        "src/payments/api.py",
    ]
    key = requests[0]["correlationid"]
    conversation = autonomic("events", "tail", "--correlation", key, cwd=tmp_path)
    kinds = [line.split()[1] for line in conversation.stdout.splitlines()]
    assert kinds.count("autonomic.run.started") == 2, "the analyzer and its auditor"
    assert kinds.count("autonomic.run.completed") == 2


def test_the_bus_demo_runs_over_kafka_with_one_option_more(tmp_path: Path) -> None:
    """The README's promise: the same two agents over Kafka with ``--bus kafka://...``."""
    url = os.environ.get("AUTONOMIC_TEST_KAFKA_URL")
    if not url:
        pytest.skip("AUTONOMIC_TEST_KAFKA_URL is unset (scripts/test starts Tansu and sets it)")
    prefix = f"{url}?prefix=demo{os.getpid()}{tmp_path.name[-6:]}."
    result = autonomic("demo", "--scenario", "bus", "--bus", prefix, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "a worker on the bus at kafka://" in result.stdout
    assert result.stdout.count("security-auditor: COMPLETED  audit of src/") == 2
    assert "events tail --bus kafka://" in result.stdout


def test_publish_then_a_worker_on_the_bus_starts_the_handler(tmp_path: Path) -> None:
    data = json.dumps({"path": "src/x.py", "findings": [{"rule": "weak-hash", "line": 9}]})
    published = autonomic(
        "events", "publish", "com.acme.audit.requested", "--data", data, "--key", "conv-1",
        "--agent", DEMO_AGENTS, cwd=tmp_path,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    assert published.stdout.startswith("published com.acme.audit.requested ")
    worker = autonomic(
        "worker", "--bus", "sql", "--until-idle", "--agent", DEMO_AGENTS, cwd=tmp_path
    )
    assert worker.returncode == 0, worker.stderr
    assert "handling com.acme.audit.requested" in worker.stderr
    assert "COMPLETED" in worker.stdout
    again = autonomic(
        "worker", "--bus", "sql", "--until-idle", "--agent", DEMO_AGENTS, cwd=tmp_path
    )
    assert "COMPLETED" not in again.stdout, "the event was handled once"
    listed = json.loads(autonomic("runs", "--json", cwd=tmp_path).stdout)
    assert [r["agent"] for r in listed] == ["security-auditor"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["publish", "autonomic.agent.message", "--data", "{nope"], "--data is not valid JSON"),
        (["publish", "com.acme.unknown", "--data", "{}"], "unknown event type 'com.acme.unknown'"),
        (
            ["publish", "autonomic.agent.message", "--data", '{"from_agent": "a", "body": 1}'],
            "data: 'to_agent' is a required property",
        ),
        (
            ["publish", "autonomic.agent.message", "--data", "@big.json"],
            "over the limit",
        ),
        (["publish", "autonomic.agent.message", "--data", "@missing.json"], "cannot read"),
        (["tail", "--type", "com.acme.unknown"], "unknown event type"),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], says: str) -> None:
    big = {"from_agent": "a", "to_agent": "b", "body": "x" * 300_000}
    (tmp_path / "big.json").write_text(json.dumps(big))
    one_line_error(autonomic("events", *args, cwd=tmp_path), says)


def test_an_unknown_bus_or_an_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    bad_bus = autonomic("dlq", "list", "--bus", "amqp://x", cwd=tmp_path)
    one_line_error(bad_bus, "unsupported bus URL")
    down = autonomic("--db", "postgresql://nobody@127.0.0.1:1/x", "dlq", "list", cwd=tmp_path)
    assert down.returncode == 1, down.stderr
    assert "Traceback" not in down.stderr
    assert "cannot reach PostgreSQL" in down.stderr


def test_dead_letters_listed_shown_retried_and_dropped(tmp_path: Path) -> None:
    """An audit request the auditor cannot start (its model spec is unknown here) is failed and
    dead-lettered; dlq shows it, retry sends it back, drop gives it up with a reason."""
    db = f"sqlite:///{tmp_path}/bus.db"
    import asyncio

    from autonomic.bootstrap import build_store, open_bus
    from autonomic.core.envelope import new_event
    from autonomic.examples.bus.agent import declare_types
    from autonomic.ports.bus import RetryPolicy

    async def poison() -> None:
        store = build_store(db)
        await store.migrate()
        bus = open_bus("sql", store, types=declare_types())
        await bus.publish(
            [
                new_event(
                    "autonomic.agent.message",
                    {"from_agent": "a", "to_agent": "b", "body": 1},
                    source="t",
                    id="ev-1",
                )
            ]
        )
        consumer = bus.consumer(
            "g", ["autonomic.agent.message"], name="m", retry=RetryPolicy(max_attempts=1)
        )
        for delivery in await consumer.poll(wait=2.0):
            await consumer.fail(delivery, "b is not listening")
        await consumer.close()
        await bus.aclose()
        await store.close()

    asyncio.run(poison())
    listed = autonomic("--db", db, "dlq", "list", "--json", cwd=tmp_path)
    (letter,) = json.loads(listed.stdout)
    assert letter["error"] == "b is not listening"
    assert letter["attempts"] == 1
    assert letter["event"]["id"] == "ev-1"
    shown = autonomic("--db", db, "dlq", "show", letter["id"], cwd=tmp_path)
    assert '"b is not listening"' in shown.stdout
    retried = autonomic("--db", db, "dlq", "retry", letter["id"], cwd=tmp_path)
    assert retried.returncode == 0, retried.stderr
    assert autonomic("--db", db, "dlq", "list", cwd=tmp_path).stdout.strip() == "no dead letters"
    one_line_error(
        autonomic("--db", db, "dlq", "drop", letter["id"], "--reason", "x", cwd=tmp_path),
        "no dead letter",
    )
    one_line_error(
        autonomic("--db", db, "dlq", "show", "dl-none", cwd=tmp_path), "no dead letter dl-none"
    )
