"""The canary on real runs in both stores: routing by share, the sequential test over the runs'
outcomes, the decision journaled in the audit log, and an operator reversing it."""

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import pytest

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.audit.verify import verify_store
from autonomic.bootstrap import build_store
from autonomic.core.messages import Message, ModelResponse, ToolCall
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.errors import InvalidInput, NotFound
from autonomic.release.canary import Canary, CanaryHook, canary_state
from autonomic.release.sequential import SprtRule, Verdict
from autonomic.tools.contract import ToolSpec, tool


@tool(idempotent=True)
def lookup(key: str) -> str:
    return f"value of {key}"


def brain(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    """Answers at once when the task says so; loops on lookups (a failing run) otherwise."""
    task = str(messages[1].content)
    if "good" in task:
        return ModelResponse(content="done")
    return ModelResponse(content=None, tool_calls=(ToolCall("c", "lookup", '{"key": "k"}'),))


LIVE = Agent("billing", "bill", tools=[lookup], version="1", max_turns=2, model="fn")
CANDIDATE = Agent("billing", "bill better", tools=[lookup], version="2", max_turns=2, model="fn")


def engine(store: Any) -> Engine:
    return Engine(store, AgentRegistry([LIVE]), lambda spec: FunctionModel(brain, name="fn"))


async def run_arm(eng: Engine, canary: Canary, arm: str, good: bool, i: int) -> None:
    agent = CANDIDATE if arm == "candidate" else LIVE
    run = await eng.run(
        agent,
        f"task {i} {'good' if good else 'bad'}",
        metadata={"canary": {"arm": arm, "version": agent.version}},
    )
    assert run.status is (RunStatus.COMPLETED if good else RunStatus.FAILED)


def test_a_worse_candidate_is_rolled_back_and_an_operator_can_promote_it(store_url: str) -> None:
    asyncio.run(rolled_back_then_promoted(store_url))


async def rolled_back_then_promoted(store_url: str) -> None:
    store = build_store(store_url)
    await store.migrate()
    try:
        eng = engine(store)
        canary = Canary.of(
            store, LIVE, CANDIDATE, share=0.5, rule=SprtRule(min_pairs=5, max_pairs=200)
        )
        await canary.start(by="alice", reason="new prompt")
        rng = random.Random(5)
        verdict = Verdict.CONTINUE
        runs = 0
        while verdict is Verdict.CONTINUE:
            runs += 1
            await run_arm(eng, canary, "live", rng.random() >= 0.1, runs)
            await run_arm(eng, canary, "candidate", rng.random() >= 0.6, runs)
            status = await canary.evaluate()
            verdict = status.verdict
        assert verdict is Verdict.ROLLBACK
        assert runs <= 60
        state = await canary_state(store, "billing")
        assert state is not None
        assert state.phase == "rolled_back"
        assert state.by == "canary"
        assert "sequential test: rollback" in state.reason
        assert canary.arm("any run") == "live"  # every new run goes to the live version

        # a second evaluation does not journal the decision again
        await canary.evaluate()
        state = await canary_state(store, "billing")
        assert state is not None
        assert [a["act"] for a in state.acts] == [
            "canary.start",
            "canary.rollback",
        ]

        # the operator reverses it: the CLI's view (from the log alone) sees the same canary
        from_log = await Canary.from_log(store, "billing")
        promoted = await from_log.promote(by="bob", reason="the failures were a broken fixture")
        assert promoted.phase == "promoted"
        assert promoted.by == "bob"
        assert from_log.arm("any run") == "candidate"
        agent, meta = from_log.choose("any run", LIVE, CANDIDATE)
        assert agent is CANDIDATE
        assert meta == {"canary": {"arm": "candidate", "version": "2"}}
        report = await verify_store(store)
        assert report.ok, report
    finally:
        await store.close()


def test_routing_sends_about_the_share_and_checks_versions(store_url: str) -> None:
    asyncio.run(routing(store_url))


async def routing(store_url: str) -> None:
    store = build_store(store_url)
    await store.migrate()
    try:
        canary = Canary.of(store, LIVE, CANDIDATE, share=0.2)
        with pytest.raises(NotFound):
            await canary.refresh()
        await canary.start(by="alice")
        arms = [canary.arm(f"run_{i}") for i in range(2_000)]
        assert 0.15 < arms.count("candidate") / len(arms) < 0.25
        assert canary.arm("run_7") == canary.arm("run_7")
        with pytest.raises(InvalidInput, match="pass the live and the candidate"):
            canary.choose(next(f"run_{i}" for i in range(99) if arms[i] == "live"), CANDIDATE, LIVE)
    finally:
        await store.close()


def test_bad_canaries_are_refused() -> None:
    with pytest.raises(InvalidInput, match="another version"):
        Canary.of(None, LIVE, LIVE)  # type: ignore[arg-type]
    other = Agent("other", "x", version="2")
    with pytest.raises(InvalidInput, match="two versions of one agent"):
        Canary.of(None, LIVE, other)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="share"):
        Canary.of(None, LIVE, CANDIDATE, share=1.5)  # type: ignore[arg-type]


def test_the_hook_decides_without_anyone_asking(store_url: str) -> None:
    async def go() -> None:
        store = build_store(store_url)
        await store.migrate()
        try:
            canary = Canary.of(
                store, LIVE, CANDIDATE, share=0.5, rule=SprtRule(min_pairs=5, max_pairs=200)
            )
            await canary.start(by="alice")
            hook = CanaryHook(canary, every=2)
            eng = Engine(
                store,
                AgentRegistry([LIVE]),
                lambda spec: FunctionModel(brain, name="fn"),
                hooks=[hook],
            )
            for i in range(60):  # the candidate always fails, the live version never
                await run_arm(eng, canary, "live", True, i)
                await run_arm(eng, canary, "candidate", False, i)
                if canary.state is not None and canary.state.phase != "running":
                    break
            state = await canary_state(store, "billing")
            assert state is not None
            assert state.phase == "rolled_back"
            assert state.by == "canary"
            assert hook.last is not None
            assert hook.last.verdict is Verdict.ROLLBACK
        finally:
            await store.close()

    asyncio.run(go())
