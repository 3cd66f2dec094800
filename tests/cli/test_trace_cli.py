"""Reasoning a model gave is journaled as fields and found again: by `autonomic trace search`
and by the SQL docs/audit.md shows (run here on SQLite, and on PostgreSQL)."""

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from autonomic.adapters.model.scripted import ScriptedModel
from autonomic.bootstrap import build_store
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.tools.contract import tool

CLI = [sys.executable, "-m", "autonomic.cli"]
DOC = Path(__file__).parents[2] / "docs" / "audit.md"
LONG = "because the ledger disagrees " * 100  # over the blob threshold: the payload is a blob


@tool(idempotent=True)
def refund(order: str) -> str:
    """Refund an order."""
    return "refunded"


TURNS = [
    {
        "content": '{"reasoning": "the customer was charged twice", "alternatives": ["ask support", "refund"], "confidence": 0.9, "decision": "refund"}',
        "tool_calls": [{"name": "refund", "arguments": {"order": "A-1"}}],
    },
    {"content": "<think>" + LONG + "</think>done", "reasoning": None},
]


async def _seed(url: str) -> str:
    store = build_store(url)
    await store.migrate()
    agent = Agent(name="refunds", instructions="x", tools=(refund,))
    engine = Engine(store, AgentRegistry([agent]), lambda spec: ScriptedModel(TURNS))
    run = await engine.start("refunds", "check order A-1")
    await engine.run_to_end(run.id)
    await store.close()
    return run.id


def autonomic(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ) | {"AUTONOMIC_DB": db, "COLUMNS": "250"}
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)


def test_trace_search_finds_turns_by_agent_tool_decision_and_text(sqlite_url):
    run_id = asyncio.run(_seed(sqlite_url))
    rows = json.loads(
        autonomic("trace", "search", "--tool", "refund", "--json", db=sqlite_url).stdout
    )
    assert len(rows) == 1
    [row] = rows
    assert row["run_id"] == run_id
    assert row["verdicts"] == ["allow"]
    assert row["reasoning"] == {
        "source": "structured",
        "thoughts": "the customer was charged twice",
        "alternatives": ["ask support", "refund"],
        "confidence": 0.9,
        "decision": "refund",
    }
    assert (
        len(
            json.loads(
                autonomic("trace", "search", "--decision", "allow", "--json", db=sqlite_url).stdout
            )
        )
        == 1
    )
    by_text = json.loads(
        autonomic("trace", "search", "--text", "LEDGER DISAGREES", "--json", db=sqlite_url).stdout
    )
    assert [r["turn"] for r in by_text] == [2]
    assert by_text[0]["reasoning"]["source"] == "tags"
    assert (
        json.loads(autonomic("trace", "search", "--agent", "other", "--json", db=sqlite_url).stdout)
        == []
    )
    text = autonomic("trace", "search", "--agent", "refunds", db=sqlite_url).stdout
    assert "considered: ask support" in text
    assert "confidence: 0.90" in text


def _doc_sql(dialect: str) -> str:
    block = re.search(rf"```sql\n-- {dialect}: reasoning\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert block, f"docs/audit.md has no {dialect} reasoning query"
    return block.group(1)


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_the_documented_sql_reads_reasoning_from_the_journal(store, request):
    url = request.getfixturevalue(f"{store}_url" if store == "sqlite" else "pg_url")
    run_id = asyncio.run(_seed(url))
    sql = _doc_sql("SQLite" if store == "sqlite" else "PostgreSQL")
    if store == "sqlite":
        import sqlite3

        from autonomic.adapters.store.sqlite import parse_sqlite_url

        conn = sqlite3.connect(parse_sqlite_url(url)[0])
        rows = conn.execute(sql).fetchall()
        conn.close()
    else:
        import psycopg

        with psycopg.connect(url) as conn:
            rows = conn.execute(sql).fetchall()
    got = {(r[0], r[1], r[2]) for r in rows}
    assert ("refunds", run_id, "the customer was charged twice") in got
    assert any(r[2] and r[2].startswith("because the ledger") for r in rows)
