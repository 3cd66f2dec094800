"""``autonomic canary``: status from the audit log, an operator's promote and rollback journaled,
and an agent without a canary is one line with exit 2."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from autonomic.bootstrap import build_store
from autonomic.engine.agent import Agent
from autonomic.release.canary import Canary, canary_state

CLI = [sys.executable, "-m", "autonomic.cli"]


def _run(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--db", f"sqlite:///{db}", "canary", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_status_promote_rollback(tmp_path: Path) -> None:
    db = tmp_path / "a.db"

    async def start() -> None:
        store = build_store(f"sqlite:///{db}")
        await store.migrate()
        live, candidate = Agent("billing", "x", version="1"), Agent("billing", "y", version="2")
        await Canary.of(store, live, candidate, share=0.25).start(by="alice")
        await store.close()

    asyncio.run(start())
    shown = _run(db, "status", "billing", "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert (report["phase"], report["share"], report["verdict"]) == ("running", 0.25, "continue")

    rolled = _run(db, "rollback", "billing", "--reason", "bad answers", "--as", "bob")
    assert rolled.returncode == 0, rolled.stderr
    assert "rolled back by bob; new runs go to version 1" in rolled.stdout
    promoted = _run(db, "promote", "billing", "--as", "carol")
    assert "promoted by carol; new runs go to version 2" in promoted.stdout
    text = _run(db, "status", "billing")
    assert "phase: promoted" in text.stdout
    assert "carol" in text.stdout

    async def acts() -> list[str]:
        store = build_store(f"sqlite:///{db}")
        state = await canary_state(store, "billing")
        await store.close()
        assert state is not None
        return [f"{a['act']}:{a['by']}" for a in state.acts]

    assert asyncio.run(acts()) == [
        "canary.start:alice",
        "canary.rollback:bob",
        "canary.promote:carol",
    ]


def test_an_agent_without_a_canary_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    asyncio.run(_migrated(db))
    result = _run(db, "status", "nobody")
    assert result.returncode == 2, result.stderr
    assert "agent nobody has no canary" in result.stderr
    assert "Traceback" not in result.stderr


async def _migrated(db: Path) -> None:
    store = build_store(f"sqlite:///{db}")
    await store.migrate()
    await store.close()
