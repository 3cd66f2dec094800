"""The KPIs, checked against values computed by hand on a seeded set of runs: by the Python
computation `autonomic kpis` uses, by the SQL views of migration 0007 (both stores), and by the
command itself."""

import asyncio
import json
import subprocess
import sys

import pytest

from autonomic.bootstrap import build_store
from autonomic.core.entries import (
    ApprovalEvent,
    ModelCall,
    ModelTurn,
    Recovery,
    RunStarted,
    ToolResult,
    Transition,
)
from autonomic.core.journal import GENESIS_HASH, record
from autonomic.core.messages import Usage
from autonomic.core.run import Lease, Run, RunStatus
from autonomic.observability.kpis import kpis, percentile, run_facts

T0 = 1_000.0


def turn(n: int, cost: float, attempts: int | None = None) -> ModelTurn:
    call = ModelCall(Usage(10, 5), provider="p", cost_usd=cost, attempts=attempts)
    return ModelTurn(turn=n, content="x", tool_calls=(), model="m", call=call)


def result(attempts: int | None = None) -> ToolResult:
    return ToolResult("c1", "t", ok=True, output=1, attempts=attempts, latency_ms=5.0)


APPROVAL = ApprovalEvent("ap1", "c1", "decided", "approved", "b", "t", by=("alice",))
RECOVERY = Recovery(worker="w2", fence=2, journal_seq=2)
OPERATOR = Transition("SUSPENDED", "RUNNING", "forced", by="operator")

# (run id, agent, task type, status, seconds to end, entries after run.started)
SEED = [
    ("r1", "a", "t1", RunStatus.COMPLETED, 10, [turn(1, 0.01), result(), turn(2, 0.02)]),
    ("r2", "a", "t1", RunStatus.COMPLETED, 30, [turn(1, 0.05), RECOVERY, result(2), turn(2, 0)]),
    ("r3", "a", "t1", RunStatus.FAILED, 20, [turn(1, 0.04), result(3)]),
    ("r4", "a", "t1", RunStatus.COMPLETED, 50,
     [turn(1, 0), APPROVAL, RECOVERY, OPERATOR, result(), turn(2, 0)]),
    ("r5", "a", "t1", RunStatus.WAITING_FOR_HUMAN, 5, [turn(1, 0.1), APPROVAL]),
    ("r6", "b", "t2", RunStatus.CANCELLED, 2, []),
]  # fmt: skip

# by hand: (a, t1): 5 runs; ended r1-r4 (4), completed r1, r2, r4 (3): 3/4; steps to completion
# (3 + 3 + 3) / 3; transient r2, r3, r4, recovered without a human repair: r2 only: 1/3; a human
# acted in r4, r5: 2/5; cost (0.03 + 0.05 + 0.04 + 0 + 0.1) / 5; durations 10, 20, 30, 50.
# (b, t2): one cancelled run with no steps.
EXPECTED = {
    ("a", "t1"): dict(runs=5, ended=4, completed=3, completion_rate=0.75,
                      mean_steps_to_completion=3.0, recovery_rate=1 / 3,
                      human_intervention_rate=0.4, cost_per_task=0.044,
                      latency_p50=25.0, latency_p95=47.0, latency_p99=49.4),
    ("b", "t2"): dict(runs=1, ended=1, completed=0, completion_rate=0.0,
                      mean_steps_to_completion=None, recovery_rate=None,
                      human_intervention_rate=0.0, cost_per_task=0.0,
                      latency_p50=2.0, latency_p95=2.0, latency_p99=2.0),
}  # fmt: skip


def seeded() -> list[tuple[Run, list]]:
    out = []
    for run_id, agent, kind, status, took, bodies in SEED:
        started = RunStarted(agent, "1", "m", "", "task", (), 5)
        packed = []
        prev = GENESIS_HASH
        for seq, body in enumerate([started, *bodies], start=1):
            packed.append(record(run_id, seq, body, prev_hash=prev, created_at=T0 + seq))
            prev = packed[-1].entry.hash
        run = Run(
            id=run_id, agent=agent, agent_version="1", model="m", status=status, version=1,
            lease=Lease(owner=None, expires_at=0.0, fence=0), created_at=T0,
            updated_at=T0 + took, input={"task": "task"}, max_turns=5,
            metadata={"task_type": kind},
        )  # fmt: skip
        out.append((run, packed))
    return out


def check(row: dict, expected: dict) -> None:
    for key, want in expected.items():
        if want is None:
            assert row[key] is None, key
        else:
            assert row[key] == pytest.approx(want), key


def test_the_python_kpis_match_the_hand_values():
    facts = [run_facts(run, [p.entry for p in packed]) for run, packed in seeded()]
    rows = {(k.agent, k.task_type): k.to_dict() for k in kpis(facts)}
    assert set(rows) == set(EXPECTED)
    for key, expected in EXPECTED.items():
        check(rows[key], expected)


def test_percentiles_interpolate_like_percentile_cont():
    assert percentile([], 0.5) is None
    assert percentile([4.0], 0.99) == 4.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5


def test_the_sql_views_match_the_hand_values_on_both_stores(store_url, raw_execute):
    async def seed() -> None:
        store = build_store(store_url)
        await store.migrate()
        try:
            for run, packed in seeded():
                await store.create_run(run, packed)
        finally:
            await store.close()

    asyncio.run(seed())
    columns = ["agent", "task_type", "runs", "ended", "completed", "completion_rate",
               "mean_steps_to_completion", "recovery_rate", "human_intervention_rate",
               "cost_per_task"]  # fmt: skip
    rows = asyncio.run(raw_execute(f"SELECT {', '.join(columns)} FROM kpis ORDER BY agent"))
    assert len(rows) == 2
    for raw in rows:
        row = dict(zip(columns, raw, strict=True))
        expected = {k: v for k, v in EXPECTED[(row["agent"], row["task_type"])].items()
                    if not k.startswith("latency")}  # fmt: skip
        check({k: (float(v) if v is not None and k not in ("agent", "task_type") else v)
               for k, v in row.items()}, expected)  # fmt: skip
    facts = asyncio.run(
        raw_execute("SELECT run_id, steps, transient, human, ended_at FROM run_kpi_facts")
    )
    assert {r[0]: int(r[1]) for r in facts}["r4"] == 3
    assert {r[0]: r[4] for r in facts}["r5"] is None  # waiting: not ended


def test_the_command_prints_them_as_json_and_with_the_latency_breakdown(tmp_path):
    url = f"sqlite:///{tmp_path}/kpis.db"

    async def seed() -> None:
        store = build_store(url)
        await store.migrate()
        try:
            for run, packed in seeded():
                await store.create_run(run, packed)
        finally:
            await store.close()

    asyncio.run(seed())
    cli = [sys.executable, "-m", "autonomic.cli", "--db", url, "kpis"]
    done = subprocess.run([*cli, "--json", "--latency", "--agent", "a"], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    [row] = doc["kpis"]
    check(row, EXPECTED[("a", "t1")])
    assert doc["latency"]["tool"]["p50"] == pytest.approx(0.005)
    table = subprocess.run([*cli, "--latency"], capture_output=True, text=True, timeout=60,
                           env={"COLUMNS": "160", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "state_read" in table.stdout
    assert "0.25" in table.stdout
    piped = subprocess.run([*cli, "--latency"], capture_output=True, text=True, timeout=60,
                           env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert "…" not in piped.stdout  # no value cut to another (tests/cli/test_tables.py)
    assert "sandbox_provisioning" in piped.stdout
    recent = subprocess.run([*cli, "--since", "1h", "--json"], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert json.loads(recent.stdout)["kpis"] == []  # the seed is from 1970
    bad = subprocess.run([*cli, "--since", "yesterday"], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert bad.returncode in (1, 2)
    assert bad.stderr.startswith("error: --since 'yesterday' is not a duration")
