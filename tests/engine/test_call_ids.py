"""Model servers that repeat, reuse or leave out tool-call ids: every call still runs once.

Before calls were keyed by their position, a server that sent the same id on every turn (a
proxy's mock does, some local servers too) saw its later calls silently skipped - their id
already had a result - and the run ended "turn budget exhausted". Here a model proposes the
same plan under each way of naming calls, scripted in-process and over HTTP through the
OpenAI-compatible test server; each tool counts its effects.
"""

import asyncio
import json
from collections import Counter

import pytest

from autonomic.adapters.model.openai_compat import OpenAICompatModel
from autonomic.adapters.model.scripted import FunctionModel, assistant_turn
from autonomic.bootstrap import build_store
from autonomic.core.canonical import canonical_json
from autonomic.core.entries import (
    EntryKind,
    ModelCall,
    ModelTurn,
    ToolIntent,
    ToolResult,
    Transition,
)
from autonomic.core.journal import record
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall
from autonomic.core.run import RunChanges, RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.testing.openai_server import REPEATED_ID, OpenAITestServer, completion
from autonomic.tools.contract import ToolContext, tool

EFFECTS: Counter[str] = Counter()
KEYS: dict[str, list[str]] = {}


@tool()
def write(op: str, ctx: ToolContext) -> str:
    """A non-idempotent write."""
    EFFECTS[op] += 1
    KEYS.setdefault(op, []).append(ctx.idempotency_key)
    return f"wrote {op}"


@tool(idempotent=True)
def read(op: str, ctx: ToolContext) -> str:
    """An idempotent read."""
    EFFECTS[op] += 1
    KEYS.setdefault(op, []).append(ctx.idempotency_key)
    return f"read {op}"


PLAN = [
    [("write", "w1"), ("read", "r1")],
    [("write", "w2"), ("write", "w3")],
    [("read", "r2")],
]
"""Three turns of calls (two of them with two calls each), then the final answer."""
OPS = [op for turn in PLAN for _, op in turn]


def _ids(style: str, turn: int, count: int) -> list[str]:
    if style == "repeat":
        return [REPEATED_ID] * count  # one id, on every call of every turn
    if style == "none":
        return [""] * count
    return [f"call_{turn}_{i}" for i in range(count)]


def _policy(style: str):
    def decide(messages, tools):
        turn = assistant_turn(messages) + 1
        if turn > len(PLAN):
            return ModelResponse(content="done", tool_calls=())
        calls = PLAN[turn - 1]
        ids = _ids(style, turn, len(calls))
        return ModelResponse(
            content=None,
            tool_calls=tuple(
                ToolCall(i, name, canonical_json({"op": op}))
                for i, (name, op) in zip(ids, calls, strict=True)
            ),
        )

    return decide


AGENT = Agent(
    name="ids",
    instructions="apply the plan",
    tools=(write, read),
    model="function:ids",
    max_turns=len(PLAN) + 1,  # no turn to spare: a skipped call cannot be made up for
)


def _engine(store, model):
    return Engine(store, AgentRegistry([AGENT]), lambda spec: model)


def _answered_pairs(messages):
    """(ids on each assistant message with calls, ids its tool messages answer)."""
    pairs, current = [], None
    for m in messages:
        if m.role is Role.ASSISTANT:
            current = ([c.id for c in m.tool_calls], [])
            if m.tool_calls:
                pairs.append(current)
        elif m.role is Role.TOOL and current is not None:
            current[1].append(m.tool_call_id)
    return pairs


@pytest.mark.parametrize("style", ["distinct", "repeat", "none"])
def test_every_call_runs_once_however_the_server_names_it(store_url, style):
    EFFECTS.clear()
    seen: list[list[Message]] = []
    policy = _policy(style)

    def watching(messages, tools):
        seen.append(list(messages))
        return policy(messages, tools)

    model = FunctionModel(watching, name="function:ids")

    async def go():
        store = build_store(store_url)
        try:
            await store.migrate()
            return await _engine(store, model).run("ids", "go")
        finally:
            await store.close()

    run = asyncio.run(go())
    assert run.status is RunStatus.COMPLETED, run.status_reason
    assert Counter(OPS) == EFFECTS, EFFECTS
    assert max(EFFECTS.values()) == 1
    # what the model read back: every call answered once, ids distinct within an answer
    pairs = _answered_pairs(seen[-1])
    assert [len(ids) for ids, _ in pairs] == [len(t) for t in PLAN]
    for ids, answered in pairs:
        assert answered == ids
        assert len(set(ids)) == len(ids)
    if style == "none":
        assert [ids for ids, _ in pairs] == [
            ["call_1_0", "call_1_1"],
            ["call_2_0", "call_2_1"],
            ["call_3_0"],
        ]


def _server_policy(body):
    """The plan, over HTTP: the turn is the number of assistant messages so far."""
    turn = sum(1 for m in body["messages"] if m["role"] == "assistant") + 1
    if turn > len(PLAN):
        return completion("done")
    return completion(
        None,
        [
            (f"call_{turn}_{i}", name, json.dumps({"op": op}))
            for i, (name, op) in enumerate(PLAN[turn - 1])
        ],
    )


@pytest.mark.parametrize("mode", ["repeat", "none"])
def test_a_server_that_repeats_or_omits_call_ids_over_http(sqlite_url, mode):
    EFFECTS.clear()
    with OpenAITestServer(default=_server_policy, call_ids=mode) as server:
        model = OpenAICompatModel("test-model", base_url=server.base_url, api_key="k")

        async def go():
            store = build_store(sqlite_url)
            try:
                await store.migrate()
                return await _engine(store, model).run("ids", "go")
            finally:
                await model.aclose()
                await store.close()

        run = asyncio.run(go())
    assert run.status is RunStatus.COMPLETED, run.status_reason
    assert Counter(OPS) == EFFECTS, EFFECTS
    # the last request holds the whole conversation as the server received it
    final = server.requests[-1]["messages"]
    calls = [[c["id"] for c in m["tool_calls"]] for m in final if m.get("tool_calls")]
    answered = [m["tool_call_id"] for m in final if m["role"] == "tool"]
    assert answered == [i for ids in calls for i in ids]
    if (
        mode == "repeat"
    ):  # the server's id goes back as it came; a repeat within an answer is told apart
        assert calls == [[REPEATED_ID, f"{REPEATED_ID}_1"]] * 2 + [[REPEATED_ID]]
    else:
        assert calls == [["call_1_0", "call_1_1"], ["call_2_0", "call_2_1"], ["call_3_0"]]


def test_a_run_journaled_before_positions_resumes_without_redoing_a_done_call(store_url):
    """A run journaled by 0.1 (no positions): its done call is not redone, its started
    idempotent call is re-run with the key it was given then."""
    EFFECTS.clear()
    KEYS.clear()

    def finish(messages, tools):
        return ModelResponse(content="done", tool_calls=())

    model = FunctionModel(finish, name="function:ids")

    async def go():
        store = build_store(store_url)
        try:
            await store.migrate()
            engine = _engine(store, model)
            run = await engine.start("ids", "go")
            journal = await store.load_journal(run.id)
            prev, seq = journal[-1].hash, journal[-1].seq
            rid = run.id
            bodies = [
                ModelTurn(
                    1,
                    None,
                    (
                        ToolCall("c1", "write", '{"op": "w1"}'),
                        ToolCall("c2", "read", '{"op": "r1"}'),
                    ),
                    "function:ids",
                    ModelCall(),
                ),
                ToolIntent("c1", "write", "1", {"op": "w1"}, f"{rid}:{seq + 2}", False),
                ToolResult("c1", "write", ok=True, output="wrote w1"),
                ToolIntent("c2", "read", "1", {"op": "r1"}, f"{rid}:{seq + 4}", True),
            ]
            bodies.insert(0, Transition("PENDING", "RUNNING", "claimed", worker="old:1:x"))
            packed = []
            for body in bodies:
                seq += 1
                p = record(rid, seq, body, prev_hash=prev, created_at=run.created_at)
                packed.append(p)
                prev = p.entry.hash
            assert all("position" not in p.entry.payload for p in packed)
            await store.commit(
                rid,
                expected_version=run.version,
                fence=None,
                entries=packed,
                changes=RunChanges(status=RunStatus.RUNNING, status_reason="claimed"),
                now=run.created_at,
            )
            claimed = await engine.claim(rid)
            assert claimed is not None
            final = await engine.drive(claimed)
            return final, await store.load_journal(rid)
        finally:
            await store.close()

    final, entries = asyncio.run(go())
    assert final.status is RunStatus.COMPLETED, final.status_reason
    assert Counter({"r1": 1}) == EFFECTS, EFFECTS  # w1 was done: not redone
    (intent,) = [
        e for e in entries if e.kind is EntryKind.TOOL_INTENT and e.payload["call_id"] == "c2"
    ]
    assert KEYS["r1"] == [intent.payload["key"]]
    replayed = [e.payload for e in entries if e.kind is EntryKind.TOOL_RESULT][-1]
    assert (replayed["call_id"], replayed["replayed"], replayed["position"]) == ("c2", True, [1, 1])
