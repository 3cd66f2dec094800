"""A fresh worker's first step imports nothing: what the engine's first use needs is imported and
built while the engine is made (before its first claim), so a worker started after a crash does
not pay for it inside the step it resumes (benchmarks/README.md, "A fresh worker process after
kill -9")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

WORKLOAD = """
import asyncio, json, sys
from autonomic import Agent, AgentRegistry, Engine, FunctionModel, build_store, tool
from autonomic.core.canonical import canonical_json
from autonomic.core.messages import ModelResponse, Role, ToolCall


@tool(idempotent=True)
async def add_one(arg: int) -> dict[str, int]:
    \"\"\"Add one.\"\"\"
    return {"value": arg + 1}


def model(messages, tools):
    done = sum(1 for m in messages if m.role is Role.TOOL)
    if done < 2:
        call = ToolCall(f"c{done + 1}", "add_one", canonical_json({"arg": done + 1}))
        return ModelResponse(content=None, tool_calls=(call,), model="fake")
    return ModelResponse(content="done", model="fake")


def engine(store):
    agent = Agent(name="count", instructions="", tools=(add_one,), max_turns=4)
    return Engine(store, AgentRegistry([agent]), lambda spec: FunctionModel(model, name="fake"))
"""

START = """
async def main():
    store = build_store(sys.argv[1])
    await store.migrate()
    run = await engine(store).start("count", "count to two")
    await store.close()
    print(run.id)

asyncio.run(main())
"""

RESUME = """
async def main():
    store = build_store(sys.argv[1])
    await store.verify()
    made = engine(store)  # what `autonomic worker` does before its first claim
    before = set(sys.modules)
    final = await made.run_to_end(sys.argv[2])
    await store.close()
    print(json.dumps({"status": final.status.value, "new": sorted(set(sys.modules) - before)}))

asyncio.run(main())
"""


def _python(code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", WORKLOAD + code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_the_first_run_a_fresh_worker_drives_imports_no_module(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db"
    run_id = _python(START, url)
    outcome = json.loads(_python(RESUME, url, run_id))
    assert outcome["status"] == "COMPLETED"
    assert outcome["new"] == []  # e.g. the runaway guards' embedder: made with the engine
