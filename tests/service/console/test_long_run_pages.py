"""A long run read a page at a time: the API's timeline page and the console's run page read the
rows they show and the entries that cost (``Store.page_journal``), never the whole journal, and
show what they showed when they read all of it."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from typing import Any

import pytest
from consoled import consoled

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.core.entries import ModelCall
from autonomic.core.journal import Entry
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec, Usage
from autonomic.core.run import Run, RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.governance.runaway.gate import Runaway
from autonomic.ports.store import Store
from autonomic.service.console import pages
from autonomic.service.spend_cache import SpendCache
from autonomic.tools.contract import tool

STEPS = 12
"""Tool calls of the long run: about 40 journal entries (a turn, an intent, a result each)."""
WINDOW = 10


@tool(idempotent=True)
def tick(n: int) -> int:
    """Count."""
    return n


def counting(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    done = sum(1 for m in messages if m.role is Role.TOOL)
    usage, cost = Usage(10, 2), 0.125
    if done >= STEPS:
        return ModelResponse(content="counted", usage=usage, provider="p", cost_usd=cost)
    call = ToolCall(f"c{done}", "tick", json.dumps({"n": done}))
    return ModelResponse(content=None, tool_calls=(call,), usage=usage, provider="p", cost_usd=cost)


async def long_run(store: Store) -> Run:
    agent = Agent(name="counter", instructions="count", tools=(tick,), max_turns=STEPS + 5)
    model = FunctionModel(counting, name="counter")
    engine = Engine(
        store, AgentRegistry([agent]), lambda spec: model, runaway=Runaway(enabled=False)
    )
    run = await engine.run("counter", "count", tenant="acme")
    assert run.status is RunStatus.COMPLETED, run.status_reason
    return run


class Reads:
    """A spy on a store's journal reads (the real reads run): which, and how many entries."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.whole: list[str] = []
        self.pages: list[tuple[str, dict[str, Any], int]] = []
        self.calls: list[str] = []
        load, page, calls = store.load_journal, store.page_journal, store.model_calls

        async def load_journal(run_id: str, **kwargs: Any) -> list[Entry]:
            self.whole.append(run_id)
            return await load(run_id, **kwargs)

        async def page_journal(run_id: str, **kwargs: Any) -> list[Entry]:
            found = await page(run_id, **kwargs)
            self.pages.append((run_id, kwargs, len(found)))
            return found

        async def model_calls(run_id: str) -> list[ModelCall]:
            self.calls.append(run_id)
            return await calls(run_id)

        monkeypatch.setattr(store, "load_journal", load_journal)
        monkeypatch.setattr(store, "model_calls", model_calls)
        monkeypatch.setattr(store, "page_journal", page_journal)

    def clear(self) -> None:
        self.whole.clear()
        self.pages.clear()
        self.calls.clear()

    def entries_read(self) -> int:
        return sum(n for _run, _kwargs, n in self.pages)


def test_the_api_timeline_page_reads_its_rows_and_the_cost_not_the_journal(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def go() -> None:
        async with consoled(store_url) as c:
            store = c.served.service.store
            run = await long_run(store)
            journal = await store.load_journal(run.id)
            assert len(journal) > 3 * STEPS
            member = await c.served.key("acme", "member")
            path = f"/runs/{run.id}/timeline"
            whole = (await c.served.client.get(f"{path}?limit=5000", headers=member)).json()
            assert [item["seq"] for item in whole["items"]] == [e.seq for e in journal]
            turns = STEPS + 1
            assert whole["cost"] == {
                "calls": turns,
                "input_tokens": 10 * turns,
                "output_tokens": 2 * turns,
                "cost_usd": 0.125 * turns,
                "providers": {
                    "p": {
                        "calls": turns,
                        "input_tokens": 10 * turns,
                        "output_tokens": 2 * turns,
                        "cost_usd": 0.125 * turns,
                    }
                },
            }
            reads = Reads(store, monkeypatch)
            c.served.service.spending = SpendCache()  # forget the cost the first view kept
            first = (await c.served.client.get(f"{path}?limit=5", headers=member)).json()
            assert first["items"] == whole["items"][:5]
            assert first["cost"] == whole["cost"]
            assert first["next_after"] == whole["items"][4]["seq"]
            later = await c.served.client.get(f"{path}?after=30&limit=5", headers=member)
            assert later.json()["items"] == [i for i in whole["items"] if i["seq"] > 30][:5]
            assert later.json()["cost"] == whole["cost"]
            assert reads.whole == [], "a page never reads the whole journal"
            assert reads.calls == [run.id], "the cost is read as the model calls alone, once"
            assert reads.entries_read() == 2 * (5 + 1), "a page and the next one's first row"
            past = await c.served.client.get(f"{path}?after={10**30}", headers=member)
            assert past.status_code == 200
            assert (past.json()["items"], past.json()["next_after"]) == ([], None)

    asyncio.run(go())


def test_the_console_draws_a_long_runs_latest_rows_from_its_tail(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "WINDOW", WINDOW)

    async def go() -> None:
        async with consoled(store_url) as c:
            store = c.served.service.store
            run = await long_run(store)
            journal = await store.load_journal(run.id)
            member = await c.browser("acme", "member", "ann")
            reads = Reads(store, monkeypatch)
            page = (await member.get(f"/console/runs/{run.id}")).text
            drawn = [int(s) for s in re.findall(r'<li id="step-(\d+)"', page)]
            assert drawn == [e.seq for e in journal[-WINDOW:]]
            earlier = len(journal) - WINDOW
            assert f"Show the {earlier} earlier steps" in page
            assert f"{STEPS + 1} · {10 * (STEPS + 1)}+{2 * (STEPS + 1)} tok" in page
            assert f"${0.125 * (STEPS + 1):.6f}" in page, "the whole run's cost, not the tail's"
            assert reads.whole == []
            assert reads.entries_read() == WINDOW
            assert reads.calls == [run.id]
            rest = (await member.get(f"/console/runs/{run.id}/timeline?before={drawn[0]}")).text
            assert [int(s) for s in re.findall(r'<li id="step-(\d+)"', rest)] == list(
                range(1, drawn[0])
            )
            assert reads.whole == [], "the earlier rows are read as a page too"
            every = (await member.get(f"/console/runs/{run.id}?all=1")).text
            assert re.findall(r'<li id="step-(\d+)"', every) == [str(e.seq) for e in journal]
            assert "earlier steps" not in every
            last = journal[-1].seq
            detail = await member.get(f"/console/runs/{run.id}/steps/{last}")
            assert detail.status_code == 200
            assert "counted" in detail.text
            missing = await member.get(f"/console/runs/{run.id}/steps/{last + 1}")
            assert missing.status_code == 404

    asyncio.run(go())
