"""``autonomic demo --scenario swarm``: the code-audit swarm with two auditor worker processes (one
SIGKILLed mid-task), the lint ping-pong and the 47-level chain stopped by the delegation guards.
Run through the CLI, then checked in the database and the effect ledger, on both stores."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from autonomic.bootstrap import build_store
from autonomic.core.entries import EntryKind
from autonomic.core.run import Run, RunStatus
from autonomic.engine.delegation import KEY
from autonomic.examples.swarm.agent import ANALYZE, AUDIT, REPOSITORY, attempts, effects

CLI = [sys.executable, "-m", "autonomic.cli"]


def _demo(db: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AUTONOMIC_DB"} | {"COLUMNS": "200"}
    return subprocess.run(
        [*CLI, "--db", db, "demo", "--scenario", "swarm"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


async def _migrate(db: str) -> None:
    store = build_store(db)
    try:
        await store.migrate()  # PostgreSQL is never migrated implicitly (the embedded default is)
    finally:
        await store.close()


async def _read(db: str) -> tuple[list[Run], dict[str, list[Any]]]:
    store = build_store(db)
    try:
        runs = await store.list_runs(limit=1000)
        return runs, {r.id: await store.load_journal(r.id) for r in runs}
    finally:
        await store.close()


def _refusals(journal: list[Any]) -> list[dict[str, Any]]:
    return [
        dict(e.body.evidence)
        for e in journal
        if e.kind is EntryKind.DECISION and e.body.gate == "delegation"
    ]


def test_the_swarm_demo_audits_once_per_subtask_and_the_guards_stop_both_runaways(
    store_url: str, tmp_path: Path
) -> None:
    asyncio.run(_migrate(store_url))
    result = _demo(store_url, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "SIGKILL auditor-" in result.stdout
    runs, journals = asyncio.run(_read(store_url))
    by_agent: dict[str, list[Run]] = {}
    for run in runs:
        by_agent.setdefault(run.agent, []).append(run)

    # 1. the audit: one child per subtask, each COMPLETED; each subtask's effect exactly once
    (root,) = by_agent["coordinator"]
    assert root.status is RunStatus.COMPLETED
    children = [r for r in runs if r.parent_run_id == root.id]
    assert sorted(c.capability or "" for c in children) == sorted(
        [ANALYZE] + [AUDIT] * len(REPOSITORY)
    )
    assert all(c.status is RunStatus.COMPLETED for c in children)
    audited = sorted(c.input["task"]["file"] for c in children if c.capability == AUDIT)
    assert audited == sorted(REPOSITORY)  # no file audited by two children
    (repo,) = (tmp_path / "autonomic-demo").glob("swarm-*/repo")
    applied = effects(repo)
    assert sorted(e["key"] for e in applied) == sorted({e["key"] for e in applied})
    assert sorted(e["file"] for e in applied if e["tool"] == "audit_file") == sorted(REPOSITORY)
    assert len(applied) == len(children)
    tried = attempts(repo)
    auditors = {a["pid"] for a in tried if a["tool"] == "audit_file"}
    assert len(auditors) == 2  # both worker processes audited: the killed one and the other
    first = next(a for a in tried if a["tool"] == "audit_file")
    assert any(a["key"] == first["key"] and a["pid"] != first["pid"] for a in tried) or any(
        e["key"] == first["key"] and e["pid"] == first["pid"] for e in applied
    )  # the killed call was taken over by the other worker (or had already applied its effect)

    # 2. the ping-pong: refused on the third hand-off, journaled with the ping-pong finding
    writers = by_agent["writer"] + by_agent["reviewer"]
    assert len(writers) == 3  # the writer's run and two hand-offs
    (stopped,) = [r for r in writers if r.status is RunStatus.SUSPENDED]
    (refusal,) = _refusals(journals[stopped.id])
    assert "delegation.ping_pong" in [f["code"] for f in refusal["findings"]]

    # 3. the chain: stopped at the configured depth, the refusal journaled
    chain = [r for r in runs if r.agent.startswith("level-")]
    assert len(chain) == 6  # level-0 and five hand-offs of the 47
    deepest = max(chain, key=lambda r: r.metadata.get(KEY, {}).get("depth", 0))
    assert deepest.agent == "level-5"
    assert deepest.status is RunStatus.SUSPENDED
    (refusal,) = _refusals(journals[deepest.id])
    assert refusal["code"] == "delegation.depth"
    assert 'delegation.depth: "delegating to level-6 would make the chain 6 deep' in result.stdout
