"""Open circuits as an operator sees them: ``autonomic show`` lists a run's refused calls with the
circuit's state, and ``autonomic breakers`` the circuits recent runs met."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.bootstrap import build_store
from autonomic.core.canonical import canonical_json
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.tools.contract import tool
from autonomic.tools.operational import BreakerThresholds

CLI = [sys.executable, "-m", "autonomic.cli"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AUTONOMIC_DB"} | {"COLUMNS": "200"}
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@tool(name="fetch", breaker=BreakerThresholds(failure_rate=1.0, min_calls=2, open_seconds=60))
async def fetch(key: str) -> dict[str, Any]:
    """A backend that is down."""
    raise ConnectionError(f"backend unreachable for {key}")


def _brain(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    done = sum(1 for m in messages if m.role is Role.TOOL)
    if done < 3:
        call = ToolCall(id=f"c{done}", name="fetch", arguments=canonical_json({"key": f"k{done}"}))
        return ModelResponse(content="fetching", tool_calls=(call,))
    return ModelResponse(content="done")


def test_show_and_breakers_list_the_open_circuit(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'runs.db'}"

    async def main() -> str:
        store = build_store(db)
        await store.migrate()
        try:
            agent = Agent("fetcher", "fetch", tools=[fetch], max_turns=10)
            models = lambda spec: FunctionModel(_brain, name=spec)  # noqa: E731
            run = await Engine(store, AgentRegistry([agent]), models).run("fetcher", "fetch")
            assert run.status is RunStatus.COMPLETED
            return run.id
        finally:
            await store.close()

    run_id = asyncio.run(main())
    shown = _cli("--db", db, "show", run_id, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "circuit tool:fetch open (2 consecutive failures" in shown.stdout
    listed = _cli("--db", db, "breakers", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert (
        f"tool:fetch: open (2 consecutive failures) - last refused call c2 (fetch) in {run_id}"
        in (listed.stdout)
    )
