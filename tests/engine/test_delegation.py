"""Durable delegation: a parent hands a subtask to a child run, waits as a row and resumes with the
child's outcome; failures and suspensions come back as observations; cancels cascade; the
delegation guards stop chains that go too deep, loop back, or bounce; bad hand-offs are refused
with a reason. On both stores."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from autonomic.bootstrap import build_store
from autonomic.core.entries import EntryKind
from autonomic.core.messages import Message, ModelResponse, ToolSpec
from autonomic.core.run import Run, RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.delegation import KEY, child_run_id
from autonomic.engine.executor import Engine
from autonomic.engine.worker import Worker
from autonomic.errors import ModelError, RunInputError
from autonomic.governance.runaway.delegation import DelegationPolicy
from autonomic.ports.store import Store
from autonomic.testing.delegation import answering, delegating, relaying, resolver
from autonomic.tools.capability import Capability

Policy = Callable[[Sequence[Message], Sequence[ToolSpec]], ModelResponse]


def failing(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    raise ModelError("the model refused the request")


def _no_input(run: Run) -> None:
    raise RunInputError("metadata.repo is missing", hint="give metadata repo=PATH")


SUM = Capability(
    "math.sum",
    input_schema={
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    },
    output_schema={
        "type": "object",
        "properties": {"sum": {"type": "number"}},
        "required": ["sum"],
    },
    cost=0.01,
    latency=1.0,
)


def _engine(store: Store, agents: list[Agent], policies: dict[str, Policy], **kw: Any) -> Engine:
    return Engine(
        store,
        AgentRegistry(agents),
        resolver(policies),
        **kw,
    )


def _go(url: str, scenario: Callable[[Store], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        store = build_store(url)
        await store.migrate()
        try:
            return await scenario(store)
        finally:
            await store.close()

    return asyncio.run(go())


async def _drain(engine: Engine) -> None:
    await Worker(engine, concurrency=2, poll_interval=0.01).run(until_idle=True)


def test_the_parent_waits_as_a_row_and_resumes_with_the_childs_result(store_url: str) -> None:
    async def scenario(store: Store) -> Any:
        boss = Agent("boss", "delegate sums", model="fn:boss", delegates_to=["math.sum"])
        adder = Agent("adder", "add", model="fn:adder", capabilities=[SUM])
        engine = _engine(
            store,
            [boss, adder],
            {"boss": delegating("math.sum", {"a": 2, "b": 3}), "adder": answering('{"sum": 5}')},
        )
        parent = await engine.start("boss", "add 2 and 3", tenant="acme", correlation_id="corr-1")
        first = await engine.run_to_end(parent.id)  # only the parent: it hands off and waits
        (child,) = await store.children(parent.id)
        child_id = child.id
        intent = next(
            e.body for e in await store.load_journal(parent.id) if e.kind is EntryKind.TOOL_INTENT
        )
        assert child_id == child_run_id(parent.id, intent.key)  # derived from (parent, step)
        await _drain(engine)
        return (
            first,
            child,
            await store.get_run(parent.id),
            await store.get_run(child_id),
            await store.load_journal(parent.id),
        )

    first, child, parent, done, journal = _go(store_url, scenario)
    assert first.status is RunStatus.WAITING_FOR_CHILD
    assert first.lease.owner is None  # waiting holds no worker
    assert child.parent_run_id == parent.id
    assert child.correlation_id == "corr-1"
    assert child.tenant == "acme"
    assert child.capability == "math.sum"
    assert child.metadata[KEY]["depth"] == 1
    assert [h["agent"] for h in child.metadata[KEY]["chain"]] == ["boss", "adder"]
    assert done.status is RunStatus.COMPLETED
    assert parent.status is RunStatus.COMPLETED
    results = [e.body for e in journal if e.kind is EntryKind.TOOL_RESULT]
    assert len(results) == 1
    assert results[0].ok
    assert results[0].output["output"] == {"sum": 5}
    assert json.loads(parent.output)["output"] == {"sum": 5}
    # the guards' silence is not journaled (like the runaway guards'); their refusals are
    intent = next(e for e in journal if e.kind is EntryKind.TOOL_INTENT)
    assert intent.body.arguments["agent"] == "adder"
    assert intent.seq < next(e.seq for e in journal if e.kind is EntryKind.TOOL_RESULT)


@pytest.mark.parametrize(
    ("child_policy", "check", "code", "words"),
    [
        (failing, None, "delegation_failed", "FAILED"),
        (answering("not json at all"), None, "capability_output_invalid", "not JSON"),
        (answering('{"total": 5}'), None, "capability_output_invalid", "output_schema"),
        (answering('{"sum": 5}'), _no_input, "delegation_suspended", "metadata.repo"),
    ],
    ids=["failed", "garbage", "schema", "suspended"],
)
def test_a_childs_failure_or_suspension_reaches_the_parent_as_an_observation(
    store_url: str, child_policy: Policy, check: Any, code: str, words: str
) -> None:
    async def scenario(store: Store) -> Any:
        boss = Agent("boss", "delegate", model="fn:boss", delegates_to=["adder"])
        adder = Agent("adder", "add", model="fn:adder", capabilities=[SUM], check=check)
        engine = _engine(
            store,
            [boss, adder],
            {"boss": delegating("adder", {"a": 1, "b": 2}), "adder": child_policy},
        )
        parent = await engine.start("boss", "add")
        await _drain(engine)
        return await store.get_run(parent.id), await store.load_journal(parent.id)

    parent, journal = _go(store_url, scenario)
    assert parent.status is RunStatus.COMPLETED, parent.status_reason  # it read the failure
    result = next(e.body for e in journal if e.kind is EntryKind.TOOL_RESULT)
    assert not result.ok
    assert result.error["code"] == code
    assert words in result.error["message"]


def test_cancelling_a_parent_cancels_its_children(store_url: str) -> None:
    async def scenario(store: Store) -> Any:
        boss = Agent("boss", "delegate", model="fn:boss", delegates_to=["mid"])
        mid = Agent("mid", "relay next: leaf", model="fn:mid", delegates_to=["leaf"])
        leaf = Agent("leaf", "work", model="fn:leaf")
        engine = _engine(
            store,
            [boss, mid, leaf],
            {"boss": delegating("mid", "do it"), "mid": relaying, "leaf": answering("done")},
        )
        parent = await engine.start("boss", "do it")
        await engine.run_to_end(parent.id)
        mid_run = (await store.children(parent.id))[0]
        await engine.run_to_end(mid_run.id)  # mid delegates to leaf and waits too
        leaf_run = (await store.children(mid_run.id))[0]
        await engine.cancel(parent.id, "no longer needed", by="alice")
        await _drain(engine)  # nothing left to do: the leaf is never driven
        return [await store.get_run(r) for r in (parent.id, mid_run.id, leaf_run.id)]

    runs = _go(store_url, scenario)
    assert [r.status for r in runs] == [RunStatus.CANCELLED] * 3
    assert "was cancelled" in (runs[2].status_reason or "")


def _chain(n: int) -> tuple[list[Agent], dict[str, Policy]]:
    """Agents a0 -> a1 -> ... each handing the task on to the next."""
    agents = [
        Agent(f"a{i}", f"relay next: a{i + 1}", model=f"fn:a{i}", delegates_to=[f"a{i + 1}"])
        for i in range(n)
    ]
    agents.append(Agent(f"a{n}", "work", model=f"fn:a{n}"))
    policies: dict[str, Policy] = {f"a{i}": relaying for i in range(n)}
    policies[f"a{n}"] = answering("done")
    return agents, policies


def test_the_depth_limit_holds_and_the_stop_is_journaled(store_url: str) -> None:
    async def scenario(store: Store) -> Any:
        agents, policies = _chain(10)
        engine = _engine(store, agents, policies, delegation=DelegationPolicy(max_depth=3))
        root = await engine.start("a0", "audit the repository")
        await _drain(engine)
        runs = await store.list_runs(limit=100)
        return root, runs, {r.id: await store.load_journal(r.id) for r in runs}

    _, runs, journals = _go(store_url, scenario)
    assert len(runs) == 4  # a0 and three hand-offs: the fourth was refused
    deepest = max(runs, key=lambda r: r.metadata.get(KEY, {}).get("depth", 0))
    assert deepest.metadata[KEY]["depth"] == 3
    assert deepest.status is RunStatus.SUSPENDED
    assert "delegation" in (deepest.status_reason or "")
    decision = [e.body for e in journals[deepest.id] if e.kind is EntryKind.DECISION][-1]
    assert decision.gate == "delegation"
    assert decision.evidence["code"] == "delegation.depth"


def test_a_cycle_back_to_an_agent_holding_the_task_is_refused(store_url: str) -> None:
    async def scenario(store: Store) -> Any:
        a = Agent("writer", "relay next: reviewer", model="fn:w", delegates_to=["reviewer"])
        b = Agent("reviewer", "relay next: writer", model="fn:r", delegates_to=["writer"])
        engine = _engine(store, [a, b], {"w": relaying, "r": relaying})
        root = await engine.start("writer", "fix the lint in a.py")
        await _drain(engine)
        return await store.list_runs(limit=100), root

    runs, _ = _go(store_url, scenario)
    handoffs = len(runs) - 1
    assert handoffs <= 3  # ping-pong stopped within 3 hand-offs
    stopped = [r for r in runs if r.status is RunStatus.SUSPENDED]
    assert len(stopped) == 1
    assert "cycle" in (stopped[0].status_reason or "")


@pytest.mark.parametrize(
    ("to", "task", "words"),
    [
        ("stranger", "x", "no agent or capability named 'stranger'"),
        ("adder", "x", "'adder' is not one of"),
        ("math.sum", {"a": "two", "b": 3}, "input_schema at a"),
        ("math.sum", "", "empty"),
    ],
    ids=["unknown-agent", "not-allowed", "bad-input", "empty"],
)
def test_bad_hand_offs_are_refused_with_a_reason_and_create_nothing(
    store_url: str, to: str, task: Any, words: str
) -> None:
    async def scenario(store: Store) -> Any:
        boss = Agent("boss", "delegate", model="fn:boss", delegates_to=["math.sum", "stranger"])
        adder = Agent("adder", "add", model="fn:adder", capabilities=[SUM])
        engine = _engine(
            store, [boss, adder], {"boss": delegating(to, task), "adder": answering('{"sum":1}')}
        )
        parent = await engine.start("boss", "go")
        await _drain(engine)
        return (
            await store.get_run(parent.id),
            await store.load_journal(parent.id),
            await store.children(parent.id),
        )

    parent, journal, children = _go(store_url, scenario)
    assert children == []
    result = next(e.body for e in journal if e.kind is EntryKind.TOOL_RESULT)
    assert result.error["code"] == "delegation_refused"
    assert words in result.error["message"]
    assert parent.status is RunStatus.COMPLETED


def test_engine_run_takes_a_delegating_agent_to_its_end_in_one_process(store_url: str) -> None:
    async def scenario(store: Store) -> Any:
        agents, policies = _chain(2)
        engine = _engine(store, agents, policies)
        final = await engine.run("a0", "audit the repository")
        return final, await store.list_runs(limit=10)

    final, runs = _go(store_url, scenario)
    assert final.status is RunStatus.COMPLETED
    assert sorted(r.status for r in runs) == [RunStatus.COMPLETED] * 3
