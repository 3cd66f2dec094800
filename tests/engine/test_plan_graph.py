"""Plan-and-Solve as a graph and Tree-of-Thoughts, on both stores: a graph plan is validated,
journaled and shown by layers (independent steps called together in one turn); a bad graph is
rejected with the reason; every candidate plan and score is journaled and a run resumed anywhere
in the middle never generates or scores a candidate again."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.core.entries import EntryKind
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec
from autonomic.core.run import RunStatus
from autonomic.core.state import fold
from autonomic.core.timeline import summarise
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.engine.planning import GRAPH_PLANNING_INSTRUCTIONS, Planning, read_plan
from autonomic.errors import InvalidInput
from autonomic.gateway.plan_cache import LocalPlanCache
from autonomic.testing.crash import RaiseAt, SimulatedCrash
from autonomic.tools.contract import tool


@tool(idempotent=True)
def lookup_order(order: str) -> dict[str, str]:
    """The order."""
    return {"order": order, "status": "shipped"}


@tool(idempotent=True)
def lookup_customer(order: str) -> dict[str, str]:
    """Who ordered it."""
    return {"customer": "c-" + order}


@tool(idempotent=True)
def draft(text: str) -> str:
    """The reply."""
    return "Dear customer: " + text


GRAPH = {
    "steps": [
        {"id": "o", "do": "Look up the order <n>", "tool": "lookup_order"},
        {"id": "c", "do": "Look up the customer of order <n>", "tool": "lookup_customer"},
        {"id": "d", "do": "Draft the reply", "tool": "draft", "after": ["o", "c"]},
    ]
}
WORDS = (("customer", "lookup_customer"), ("draft", "draft"), ("order", "lookup_order"))
LINE = re.compile(r"^(\d+)[a-z]?\. .*$", re.MULTILINE)


def actor(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    """Calls the tools of the plan's next layer together in one turn, then answers."""
    system = messages[0].content or ""
    _, _, plan = system.partition("\nPlan (")
    layers: dict[str, list[str]] = {}
    for m in LINE.finditer(plan):
        line = m.group(0).lower()
        name = next(n for word, n in WORDS if word in line)
        layers.setdefault(m.group(1), []).append(name)
    done = {m.tool_call_id for m in messages if m.role is Role.TOOL}
    turn = sum(1 for m in messages if m.role is Role.ASSISTANT)
    for number in sorted(layers):
        todo = [n for n in layers[number] if f"{n}-{number}" not in done]
        if todo:
            calls = tuple(
                ToolCall(f"{n}-{number}", n, json.dumps({"text" if n == "draft" else "order": "7"}))
                for n in todo
            )
            return ModelResponse(content=None, tool_calls=calls, model="actor")
    return ModelResponse(content=f"done after {turn} turns", model="actor")


def planner_answering(*answers: Any) -> FunctionModel:
    """A planner that answers ``answers[n-1]`` for candidate ``n`` (``answers[0]`` when the
    prompt is not a candidate's), and logs every call."""

    def policy(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
        last = messages[-1].content or ""
        found = re.search(r"candidate plan (\d+) of", last)
        number = int(found.group(1)) if found else 1
        CALLS["plan", number] += 1
        answer = answers[number - 1]
        return ModelResponse(
            content=answer if isinstance(answer, str) else json.dumps(answer), model="planner"
        )

    return FunctionModel(policy, name="function:planner")


CALLS: Counter[tuple[str, int]] = Counter()


def agent(**planning: Any) -> Agent:
    return Agent(
        name="grapher",
        instructions="Answer about orders.",
        tools=(lookup_order, lookup_customer, draft),
        model="function:actor",
        read_only=frozenset({"lookup_order", "lookup_customer"}),
        planning=Planning(
            model="function:planner",
            instructions=GRAPH_PLANNING_INSTRUCTIONS,
            **{"cache_ttl": None, **planning},
        ),
    )


def engine(store: Any, the_agent: Agent, planner: FunctionModel, **kw: Any) -> Engine:
    models = {
        "function:actor": FunctionModel(actor, name="function:actor"),
        "function:planner": planner,
        "function:scorer": FunctionModel(scoring_model, name="function:scorer"),
    }
    return Engine(store, AgentRegistry([the_agent]), models.__getitem__, **kw)


def scoring_model(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    plan = messages[-1].content or ""
    steps = len(re.findall(r"^\d+\. ", plan, re.MULTILINE))
    CALLS["score-model", steps] += 1
    content = "no idea" if steps == 1 else json.dumps({"score": steps, "reason": "longer"})
    return ModelResponse(content=content, model="scorer")


def test_a_graph_plan_is_journaled_and_its_independent_steps_called_together(store_url, make_store):
    async def main():
        store = await make_store(store_url)
        try:
            cache = LocalPlanCache()
            the_agent = agent(cache_ttl=600.0)
            eng = engine(store, the_agent, planner_answering(GRAPH), plan_cache=cache)
            first = await eng.run("grapher", "Order 7: where is it?")
            second = await eng.run("grapher", "Order 9: where is it?")
            return [(r, await store.load_journal(r.id)) for r in (first, second)]
        finally:
            await store.close()

    (first, entries), (second, again) = asyncio.run(main())
    assert first.status is RunStatus.COMPLETED
    plan = next(e.payload for e in entries if e.kind is EntryKind.PLAN)
    assert plan["steps"] == [
        "Look up the customer of order <n>",
        "Look up the order <n>",
        "Draft the reply",
    ]
    assert [n["id"] for n in plan["graph"]["nodes"]] == ["o", "c", "d"]
    state = fold(first.id, entries)
    system = state.messages[0].content or ""
    assert "1a. Look up the customer of order <n>\n1b. Look up the order <n>" in system
    assert "2. Draft the reply (after 1a, 1b)" in system
    assert "call their tools together" in system
    # the two independent look-ups were called in the same turn
    turns = [e.payload for e in entries if e.kind is EntryKind.MODEL_RESPONSE]
    assert [len(t.get("tool_calls") or ()) for t in turns] == [2, 1, 0]
    # the second run of the pattern reuses the graph from the cache
    cached = next(e.payload for e in again if e.kind is EntryKind.PLAN)
    assert cached["source"] == "cache"
    assert cached["graph"] == plan["graph"]
    assert second.status is RunStatus.COMPLETED


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (
            {"steps": [{"id": "a", "tool": "draft", "after": ["b"]}, {"id": "b", "after": ["a"]}]},
            "the plan graph is invalid: the graph has a cycle: a -> b -> a",
        ),
        (
            {"steps": [{"id": "a", "tool": "wire_money"}]},
            "node 'a' uses 'wire_money', which is not known",
        ),
        (
            {"steps": [{"id": "a", "tool": "draft", "after": ["ghost"]}]},
            "node 'a' waits for or references 'ghost'",
        ),
        (
            {"steps": [{"id": "a", "tool": "draft", "inputs": {"text": 5}}]},
            "node 'a' (draft): input 'text' is invalid",
        ),
    ],
    ids=["cycle", "unknown-tool", "missing-node", "schema"],
)
def test_a_bad_graph_is_rejected_with_the_reason_and_nothing_follows_it(
    sqlite_url, make_store, answer, reason
):
    async def main():
        store = await make_store(sqlite_url)
        try:
            eng = engine(store, agent(), planner_answering(answer))
            run = await eng.run("grapher", "Order 7: where is it?")
            return run, await store.load_journal(run.id)
        finally:
            await store.close()

    run, entries = asyncio.run(main())
    plan = next(e.payload for e in entries if e.kind is EntryKind.PLAN)
    assert reason in plan["rejected"]
    assert "steps" not in plan
    assert "graph" not in plan
    assert run.status is RunStatus.COMPLETED  # unplanned: the agent acts without a plan
    assert not any(e.kind is EntryKind.TOOL_INTENT for e in entries)


def test_a_list_plan_still_reads_as_a_chain():
    reading = read_plan('{"steps": ["one", "two"]}', 5, [])
    assert (reading.steps, reading.graph, reading.problem) == (("one", "two"), None, None)


# -- Tree-of-Thoughts ------------------------------------------------------------------------

SHORT = {"steps": [{"id": "d", "do": "Draft the reply", "tool": "draft"}]}


def by_length(steps: tuple[str, ...], graph: Any) -> float:
    CALLS["score", len(steps)] += 1
    return float(len(steps))


def test_candidates_are_journaled_scored_and_the_best_committed(store_url, make_store):
    CALLS.clear()

    async def main():
        store = await make_store(store_url)
        try:
            planner = planner_answering(SHORT, "garbage", GRAPH)
            eng = engine(store, agent(candidates=3, scorer=by_length), planner)
            run = await eng.run("grapher", "Order 7: where is it?")
            return run, await store.load_journal(run.id)
        finally:
            await store.close()

    run, entries = asyncio.run(main())
    assert run.status is RunStatus.COMPLETED
    candidates = [e.payload for e in entries if e.kind is EntryKind.PLAN_CANDIDATE]
    scores = [e.payload for e in entries if e.kind is EntryKind.PLAN_SCORE]
    assert [c["candidate"] for c in candidates] == [1, 2, 3]
    assert "neither JSON nor a numbered list" in candidates[1]["rejected"]
    assert [(s["candidate"], s["score"]) for s in scores] == [(1, 1.0), (3, 3.0)]
    assert scores[0]["by"].startswith("function:by_length")
    plan = next(e.payload for e in entries if e.kind is EntryKind.PLAN)
    assert plan["chosen"] == 3
    assert plan["graph"] == candidates[2]["graph"]
    # each candidate planned and scored once; the calls are charged to the run
    assert Counter({("plan", 1): 1, ("plan", 2): 1, ("plan", 3): 1, ("score", 1): 1,
                             ("score", 3): 1}) == CALLS  # fmt: skip
    assert fold(run.id, entries).model_calls >= 3 + 3  # three candidates, three turns
    assert (
        "candidate plan 3 scored 3 by function:by_length"
        in [summarise(e, width=200) for e in entries][
            [e.kind for e in entries].index(EntryKind.PLAN_SCORE) + 1
        ]
    )


def test_a_scoring_model_scores_and_a_garbage_score_counts_zero(sqlite_url, make_store):
    CALLS.clear()

    async def main():
        store = await make_store(sqlite_url)
        try:
            eng = engine(
                store,
                agent(candidates=2, scorer_model="function:scorer"),
                planner_answering(SHORT, GRAPH),
            )
            run = await eng.run("grapher", "Order 7: where is it?")
            return run, await store.load_journal(run.id)
        finally:
            await store.close()

    run, entries = asyncio.run(main())
    scores = [e.payload for e in entries if e.kind is EntryKind.PLAN_SCORE]
    assert [(s["candidate"], s["score"]) for s in scores] == [(1, 0.0), (2, 3.0)]
    assert scores[0]["reason"] == "the scorer's answer is not a score from 0 to 10"
    assert scores[1]["by"] == "model:function:scorer"
    assert next(e.payload for e in entries if e.kind is EntryKind.PLAN)["chosen"] == 2
    assert run.status is RunStatus.COMPLETED


@pytest.mark.parametrize(
    ("crash", "left"),
    [
        (("after_commit", 1), (1, 0, 0)),  # after candidate 1
        (("after_commit", 3), (3, 0, 0)),  # after candidate 3, before any score
        (("after_commit", 4), (3, 1, 0)),  # after the first score
        (("plan_scored", 1), (3, 2, 0)),  # every score committed, the choice not yet
        (("after_commit", 6), (3, 2, 1)),  # the choice committed (with the first turn)
    ],
    ids=["candidate-1", "all-candidates", "one-score", "before-choice", "after-choice"],
)
def test_a_resumed_run_never_generates_nor_scores_again(store_url, make_store, crash, left):
    CALLS.clear()

    async def main():
        store = await make_store(store_url)
        try:
            the_agent = agent(candidates=3, scorer=by_length)
            planner = planner_answering(SHORT, "garbage", GRAPH)
            first = engine(store, the_agent, planner, faults=RaiseAt(*crash))
            with pytest.raises(SimulatedCrash):
                await first.run("grapher", "Order 7: where is it?", run_id="run_tot")
            crashed = Counter(e.kind for e in await store.load_journal("run_tot"))
            kinds = (EntryKind.PLAN_CANDIDATE, EntryKind.PLAN_SCORE, EntryKind.PLAN)
            assert tuple(crashed[k] for k in kinds) == left
            later = engine(store, the_agent, planner, clock=lambda: time.time() + 3600)
            claimed = await later.claim("run_tot")
            assert claimed is not None
            final = await later.drive(claimed)
            return final, await store.load_journal("run_tot")
        finally:
            await store.close()

    final, entries = asyncio.run(main())
    assert final.status is RunStatus.COMPLETED
    kinds = Counter(e.kind for e in entries)
    assert kinds[EntryKind.PLAN_CANDIDATE] == 3
    assert kinds[EntryKind.PLAN_SCORE] == 2
    assert kinds[EntryKind.PLAN] == 1
    assert next(e.payload for e in entries if e.kind is EntryKind.PLAN)["chosen"] == 3
    # across the crash and the resume: each candidate generated once, each scored once
    assert all(count == 1 for count in CALLS.values()), CALLS
    assert set(CALLS) == {("plan", 1), ("plan", 2), ("plan", 3), ("score", 1), ("score", 3)}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"candidates": 0}, "candidates must be 1 to 10"),
        ({"scorer": by_length, "scorer_model": "x"}, "both a scorer function and a scorer_model"),
    ],
)
def test_bad_tree_of_thoughts_settings_are_refused(settings, message):
    with pytest.raises(InvalidInput, match=message):
        Planning(**settings)
