"""Through the CLI: ``autonomic show`` prints a run's tree of child runs with status and cost, and
``autonomic agents`` lists agents with their capabilities and health."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from autonomic.bootstrap import build_store
from autonomic.engine.worker import Worker
from autonomic.testing.delegation import UNIT, fleet_engine

CLI = [sys.executable, "-m", "autonomic.cli"]
KIT = "autonomic.testing.delegation:kit_agents"


def autonomic(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AUTONOMIC_DB"} | {"COLUMNS": "200"}
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _delegated(db: str, tmp_path: Path, n: int) -> list[str]:
    async def go() -> list[str]:
        store = build_store(db)
        await store.migrate()
        try:
            engine = fleet_engine(store, tmp_path / "meter.json", hold=0)
            ids = [(await engine.start("boss", f"unit {i}")).id for i in range(n)]
            await Worker(engine, concurrency=2, poll_interval=0.01).run(until_idle=True)
            return ids
        finally:
            await store.close()

    return asyncio.run(go())


def test_show_prints_the_runs_tree_with_status_and_cost(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/autonomic.db"
    (parent,) = _delegated(db, tmp_path, 1)
    shown = autonomic("--db", db, "show", parent, "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    (child,) = json.loads(shown.stdout)["children"]
    assert child["agent"] == "unit"
    assert child["capability"] == UNIT
    assert child["status"] == "COMPLETED"
    assert child["depth"] == 1
    assert "cost_usd" in child
    text = autonomic("--db", db, "show", parent, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert f"└ {child['id']} unit [{UNIT}] COMPLETED" in text.stdout
    of_child = autonomic("--db", db, "show", child["id"], cwd=tmp_path)
    assert f"delegated by {parent}" in of_child.stdout


def test_agents_lists_capabilities_and_health(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/autonomic.db"
    _delegated(db, tmp_path, 3)
    listed = autonomic("--db", db, "agents", "--agent", KIT, "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = {(r["agent"], r["capability"]): r for r in json.loads(listed.stdout)}
    unit = rows[("unit", UNIT)]
    assert unit["ended"] == 3
    assert unit["success_rate"] == 1.0
    assert unit["p50_seconds"] is not None
    assert unit["breaker"] == "closed"
    assert unit["capabilities"][0]["name"] == UNIT
    assert unit["capabilities"][0]["concurrency"] == 2
    assert rows[("boss", "-")]["succeeded"] == 3
    text = autonomic("--db", db, "agents", "--agent", KIT, cwd=tmp_path)
    assert f"unit [{UNIT}]: 100% of 3 ended succeeded" in text.stdout


def test_show_draws_a_coordinators_graph_subtask_by_subtask(tmp_path: Path) -> None:
    from autonomic.core.coordination import OnFailure
    from autonomic.testing.coordination import kit_engine

    db = f"sqlite:///{tmp_path / 'graph.db'}"
    graph = {"nodes": [
        {"id": "a", "uses": "work.step", "inputs": {"n": 0}},
        {"id": "b", "uses": "work.step", "inputs": {"n": 1}},
        {"id": "c", "uses": "work.step", "inputs": {"n": 2}, "after": ["a", "b"]},
    ]}  # fmt: skip

    async def go() -> str:
        store = build_store(db)
        await store.migrate()
        try:
            engine = kit_engine(
                store, tmp_path / "ledger", graph=graph, failing=frozenset({1}), plan="prose",
                on_failure=OnFailure(retries=1, reassign=True, then="abort"),
            )  # fmt: skip
            run = await engine.start("lead", "three steps")
            await Worker(engine, concurrency=2, poll_interval=0.01).run(until_idle=True)
            return run.id
        finally:
            await store.close()

    run_id = asyncio.run(go())
    shown = autonomic("--db", db, "show", run_id, "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    drawn = json.loads(shown.stdout)["graph"]
    assert drawn["source"] == "template"
    assert "not JSON" in drawn["rejected"]
    nodes = {n["id"]: n for n in drawn["nodes"]}
    assert nodes["a"]["status"] == "done"
    assert nodes["b"]["status"] == "failed"
    assert nodes["b"]["attempts"] == 4  # twice on the first agent, once on each other
    assert nodes["c"] == nodes["c"] | {"status": "waiting", "after": ["a", "b"], "attempts": 0}
    text = autonomic("--db", db, "show", run_id, cwd=tmp_path)
    assert "graph (template, 3 subtasks): 1 done, 1 failed, 1 waiting" in text.stdout
