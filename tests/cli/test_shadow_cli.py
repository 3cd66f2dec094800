"""``autonomic shadow mirror`` and ``report`` on a SQLite file: a user's candidate loaded from
``module:attribute`` mirrors live runs without writing, and the report compares them; bad
requests are one line with exit 2."""

import asyncio
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "autonomic.cli"]

AGENTS = """
import json
from autonomic.adapters.model.scripted import FunctionModel
from autonomic.bootstrap import register_function_model
from autonomic.core.messages import ModelResponse, ToolCall
from autonomic.engine.agent import Agent
from autonomic.tools.contract import ToolContext, tool


@tool
def send(to: str, ctx: ToolContext) -> str:
    with open(ctx.metadata["sink"], "a") as f:
        f.write(to + "\\n")
    return "sent"


def brain(prefix):
    def policy(messages, tools):
        if not any(m.role.value == "tool" for m in messages):
            return ModelResponse(content=None, tool_calls=(ToolCall("c1", "send", json.dumps({"to": "a"})),))
        return ModelResponse(content=prefix + " done")
    return policy


register_function_model("shadow-live", lambda: FunctionModel(brain("live"), name="live"))
register_function_model("shadow-cand", lambda: FunctionModel(brain("cand"), name="cand"))
LIVE = Agent("mailer", "mail", tools=[send], model="function:shadow-live")
CANDIDATE = Agent("mailer", "mail", tools=[send], model="function:shadow-cand", version="2")
NOT_AN_AGENT = 3
"""


def _run(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tmp)}
    env.pop("AUTONOMIC_SHADOW_DB", None)
    return subprocess.run(
        [*CLI, "--db", f"sqlite:///{tmp}/live.db", "shadow", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def test_mirror_then_report(tmp_path: Path) -> None:
    (tmp_path / "shadowagents.py").write_text(AGENTS)
    sys.path.insert(0, str(tmp_path))
    try:
        agents = importlib.import_module("shadowagents")
    finally:
        sys.path.remove(str(tmp_path))
    sink = tmp_path / "sink.txt"

    async def live() -> list[str]:
        from autonomic.bootstrap import build_model, build_store
        from autonomic.engine.agent import AgentRegistry
        from autonomic.engine.executor import Engine

        store = build_store(f"sqlite:///{tmp_path}/live.db")
        await store.migrate()
        engine = Engine(store, AgentRegistry([agents.LIVE]), build_model)
        ids = [
            (await engine.run("mailer", f"task {i}", metadata={"sink": str(sink)})).id
            for i in range(3)
        ]
        await engine.aclose()
        await store.close()
        return ids

    ids = asyncio.run(live())
    assert sink.read_text().count("a") == 3

    mirrored = _run(tmp_path, "mirror", "shadowagents:CANDIDATE", "--last", "3")
    assert mirrored.returncode == 0, mirrored.stderr
    assert mirrored.stdout.count("-> shadow COMPLETED") == 3
    assert sink.read_text().count("a") == 3  # the candidate wrote nothing
    assert (tmp_path / "live.shadow.db").exists()

    shown = _run(tmp_path, "report", "--json")
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)
    assert (row["pairs"], row["path_match"], row["output_match"]) == (3, 1.0, 0.0)
    assert row["writes_suppressed"] == 3
    table = _run(tmp_path, "report")
    assert "Live vs shadow" in table.stdout
    assert ids


def test_bad_requests_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "shadowagents.py").write_text(AGENTS)
    empty = _run(tmp_path, "report")
    assert empty.returncode == 0, empty.stderr
    assert "no shadow runs yet" in empty.stdout
    for args, expected in (
        (("mirror", "shadowagents:NOT_AN_AGENT", "x"), "is not an Agent"),
        (("mirror", "shadowagents:CANDIDATE", "--reads", "all", "x"), "--reads must be"),
        (("mirror", "shadowagents:CANDIDATE", "x"), "no SQLite database"),
    ):
        result = _run(tmp_path, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert expected in result.stderr
        assert "Traceback" not in result.stderr
