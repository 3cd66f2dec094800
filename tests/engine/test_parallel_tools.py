"""A model's calls of one turn to idempotent tools run concurrently (the step protocol defers
their effects and acts them together), their decisions, intents and results journaled in the
model's order all the same; ``Agent(parallel_tools=False)`` runs them one after the other; a
non-idempotent call never overlaps another call. On both stores."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.bootstrap import build_store
from autonomic.core.entries import ToolIntent, ToolResult
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.tools.contract import tool

PARTS = 3
PATIENCE = 30.0
"""Seconds the concurrent calls wait for each other before giving up (a bound on failure, never a
synchronisation: they meet as soon as all have started)."""


class Meter:
    """How many calls are inside a tool at once, and the most seen."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.arrived = 0
        self.all_in = asyncio.Event()

    def enter(self) -> None:
        self.now += 1
        self.arrived += 1
        self.most = max(self.most, self.now)
        if self.arrived == PARTS:
            self.all_in.set()


def _engine(store: Any, meter: Meter, *, parallel: bool, meet: bool) -> Engine:
    @tool(idempotent=True)
    async def fetch(n: int) -> dict[str, int]:
        """Fetch part ``n`` (waits, inside, for the turn's other fetches when they meet)."""
        meter.enter()
        try:
            if meet:
                await asyncio.wait_for(meter.all_in.wait(), PATIENCE)
            else:
                await asyncio.sleep(0)
            return {"n": n}
        finally:
            meter.now -= 1

    @tool
    def post(text: str) -> str:
        """Post ``text`` (not idempotent: alone, written ahead)."""
        meter.enter()
        most = meter.now
        meter.now -= 1
        return f"posted with {most} in flight"

    def policy(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
        if any(m.role is Role.TOOL for m in messages):
            return ModelResponse("done")
        calls = [ToolCall(f"f{n}", "fetch", json.dumps({"n": n})) for n in range(PARTS)]
        calls.insert(1, ToolCall("bad", "fetch", json.dumps({"n": "two"})))  # refused in place
        calls.append(ToolCall("p", "post", json.dumps({"text": "hi"})))
        return ModelResponse(None, tuple(calls))

    agent = Agent(
        "fan", "fetch the parts", tools=(fetch, post), model="fn:fan", parallel_tools=parallel
    )
    return Engine(store, AgentRegistry([agent]), lambda spec: FunctionModel(policy, name=spec))


def _run(url: str, *, parallel: bool, meet: bool) -> tuple[Meter, Any, list[Any]]:
    async def go() -> tuple[Meter, Any, list[Any]]:
        store = build_store(url)
        await store.migrate()
        meter = Meter()
        try:
            run = await _engine(store, meter, parallel=parallel, meet=meet).run("fan", "parts")
            return meter, run, await store.load_journal(run.id)
        finally:
            await store.close()

    return asyncio.run(go())


def test_a_turns_idempotent_calls_run_together_and_are_journaled_in_order(store_url: str) -> None:
    meter, run, journal = _run(store_url, parallel=True, meet=True)
    assert run.status is RunStatus.COMPLETED, run.status_reason
    assert meter.most == PARTS  # all three fetches were inside at the same moment
    intents = [e.body.call_id for e in journal if isinstance(e.body, ToolIntent)]
    results = [e.body.call_id for e in journal if isinstance(e.body, ToolResult)]
    assert intents == ["f0", "f1", "f2", "p"]
    assert results == ["f0", "bad", "f1", "f2", "p"]  # the model's order, the refusal in place
    post = next(e.body for e in journal if isinstance(e.body, ToolResult) and e.body.call_id == "p")
    assert post.output == "posted with 1 in flight"  # the non-idempotent call ran alone


def test_parallel_tools_off_runs_them_one_after_the_other(store_url: str) -> None:
    meter, run, _ = _run(store_url, parallel=False, meet=False)
    assert run.status is RunStatus.COMPLETED, run.status_reason
    assert meter.most == 1
