"""Circuit breakers in the engine, on every store: a failing tool's circuit opens and its calls are
refused before their intent (journaled), a half-open probe closes or reopens it, a refusal is
replayed and never re-asked, and an agent whose runs keep failing gets its new runs suspended."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.core.canonical import canonical_json
from autonomic.core.journal import EntryKind
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.governance.circuits import Circuits, RunLimits
from autonomic.tools.contract import Tool, tool
from autonomic.tools.operational import BreakerThresholds


def sync(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


class Backend:
    """The dependency behind the tool: up or down, and how often it was really called."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0


def _flaky(backend: Backend, *, idempotent: bool = False, protected: bool = True) -> Tool:
    @tool(
        name="fetch",
        idempotent=idempotent,
        breaker=BreakerThresholds(failure_rate=1.0, min_calls=2, open_seconds=60)
        if protected
        else None,
    )
    async def fetch(key: str) -> dict[str, Any]:
        """Fetch a record from the backend."""
        backend.calls += 1
        if backend.down:
            raise ConnectionError("backend unreachable")
        return {"key": key, "value": 1}

    return fetch


def _calls(n: int) -> Callable[[Sequence[Message], Sequence[ToolSpec]], ModelResponse]:
    """A brain that calls ``fetch`` ``n`` times, one call per turn, then answers."""

    def brain(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
        done = sum(1 for m in messages if m.role is Role.TOOL)
        if done < n:
            args = canonical_json({"key": f"k{done}"})
            call = ToolCall(id=f"c{done}", name="fetch", arguments=args)
            return ModelResponse(content=f"fetching k{done}", tool_calls=(call,))
        return ModelResponse(content="done")

    return brain


def _engine(store: Any, agent: Agent, brain: Any, circuits: Circuits | None = None) -> Engine:
    return Engine(
        store,
        AgentRegistry([agent]),
        lambda spec: FunctionModel(brain, name=spec),
        circuits=circuits,
    )


async def _results(store: Any, run_id: str) -> list[dict[str, Any]]:
    entries = await store.load_journal(run_id)
    return [e.payload for e in entries if e.kind is EntryKind.TOOL_RESULT]


@sync
async def test_failing_tool_opens_its_circuit_and_later_calls_are_refused_unexecuted(
    store_url: str, make_store: Any
) -> None:
    store = await make_store(store_url)
    try:
        backend = Backend()
        agent = Agent("fetcher", "fetch", tools=[_flaky(backend)], max_turns=10)
        engine = _engine(store, agent, _calls(4))
        run = await engine.run("fetcher", "fetch four")
        assert run.status is RunStatus.COMPLETED
        assert backend.calls == 2  # two failures opened the circuit; calls 3 and 4 never ran
        results = await _results(store, run.id)
        assert [r["error"]["code"] for r in results] == [
            "tool_error",
            "tool_error",
            "action_blocked",
            "action_blocked",
        ]
        assert "circuit tool:fetch is open" in results[2]["error"]["message"]
        entries = await store.load_journal(run.id)
        decisions = [e.payload for e in entries if e.kind is EntryKind.DECISION]
        assert [d["gate"] for d in decisions] == ["breaker", "breaker"]
        assert decisions[0]["evidence"]["circuit"]["state"] == "open"
        assert decisions[0]["evidence"]["circuit"]["failures"] == 2
        assert engine.circuits.state("tool:fetch").state == "open"
        assert "tool:fetch" in engine.circuits.snapshot()

        # Without thresholds in the contract, the same run calls the broken backend every time.
        unprotected = Backend()
        bare = Agent("fetcher", "fetch", tools=[_flaky(unprotected, protected=False)])
        run = await _engine(store, bare, _calls(4)).run("fetcher", "fetch four")
        assert unprotected.calls == 4
    finally:
        await store.close()


@sync
async def test_half_open_probe_closes_on_success_and_reopens_on_failure(
    store_url: str, make_store: Any
) -> None:
    store = await make_store(store_url)
    try:
        backend = Backend()
        agent = Agent("fetcher", "fetch", tools=[_flaky(backend)], max_turns=10)
        engine = _engine(store, agent, _calls(2))
        await engine.run("fetcher", "open it")
        assert engine.circuits.state("tool:fetch").state == "open"

        engine.circuits.expire("tool:fetch")  # the reset time has passed
        assert engine.circuits.state("tool:fetch").state == "half_open"
        run = await engine.run("fetcher", "probe while still down")
        assert backend.calls == 3  # exactly one probe went through...
        codes = [r["error"]["code"] for r in await _results(store, run.id)]
        assert codes == ["tool_error", "action_blocked"]  # ...and its failure reopened it
        assert engine.circuits.state("tool:fetch").state == "open"

        backend.down = False
        engine.circuits.expire("tool:fetch")
        run = await engine.run("fetcher", "probe once it is back")
        assert backend.calls == 5
        assert all(r["ok"] for r in await _results(store, run.id))
        assert engine.circuits.state("tool:fetch").state == "closed"
    finally:
        await store.close()


@sync
async def test_suspension_for_an_idempotent_tool_is_replayed_not_re_asked(
    store_url: str, make_store: Any
) -> None:
    store = await make_store(store_url)
    try:
        backend = Backend()
        agent = Agent("fetcher", "fetch", tools=[_flaky(backend, idempotent=True)], max_turns=10)
        engine = _engine(store, agent, _calls(3), Circuits(idempotent="suspend"))
        run = await engine.run("fetcher", "fetch three")
        assert run.status is RunStatus.SUSPENDED
        assert "suspended until the tool recovers" in (run.status_reason or "")
        assert backend.calls == 2

        # Another worker, whose breakers know nothing, resumes it once the backend is back: the
        # journaled refusal stands (the call is not re-asked nor executed); the model goes on.
        backend.down = False
        fresh = _engine(store, agent, _calls(3))
        await fresh.reopen(run.id, "backend fixed")
        run = await fresh.run_to_end(run.id)
        assert run.status is RunStatus.COMPLETED
        assert backend.calls == 2
        entries = await store.load_journal(run.id)
        assert len([e for e in entries if e.kind is EntryKind.DECISION]) == 1
    finally:
        await store.close()


@sync
async def test_an_agent_whose_runs_keep_failing_gets_new_runs_suspended(
    store_url: str, make_store: Any
) -> None:
    store = await make_store(store_url)
    try:
        backend = Backend()
        backend.down = False
        asked: list[int] = []

        def brain(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
            asked.append(1)
            return _calls(5)(messages, tools)  # never answers within max_turns=1: run FAILED

        agent = Agent("stuck", "fetch", tools=[_flaky(backend)], max_turns=1)
        circuits = Circuits(agents=RunLimits(threshold=2, reset_after=60))
        engine = _engine(store, agent, brain, circuits)
        for _ in range(2):
            assert (await engine.run("stuck", "try")).status is RunStatus.FAILED
        assert len(asked) == 2

        refused = await engine.run("stuck", "try again")
        assert refused.status is RunStatus.SUSPENDED
        assert len(asked) == 2  # the model was never asked
        entries = await store.load_journal(refused.id)
        assert entries[-1].payload["circuit"]["key"] == "agent:stuck"
        assert entries[-1].payload["circuit"]["state"] == "open"

        circuits.expire("agent:stuck")  # the probe run goes through, fails, reopens it
        assert (await engine.run("stuck", "probe")).status is RunStatus.FAILED
        assert len(asked) == 3
        assert (await engine.run("stuck", "after")).status is RunStatus.SUSPENDED
        assert circuits.state("agent:stuck").state == "open"
    finally:
        await store.close()


STRICT = """
workflow: strict
start: only
states:
  only:
    tools: [fetch]
    final: true
"""


@sync
async def test_a_workflow_whose_runs_keep_being_suspended_gets_new_runs_suspended(
    store_url: str, make_store: Any
) -> None:
    from autonomic.governance.policy.workflow import Workflow

    store = await make_store(store_url)
    try:
        backend = Backend()

        @tool(name="purge")
        async def purge() -> str:
            """Outside the workflow's allow-list."""
            return "purged"

        def brain(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
            return ModelResponse(content="purging", tool_calls=(ToolCall("c1", "purge", "{}"),))

        agent = Agent(
            "purger",
            "purge",
            tools=[_flaky(backend), purge],
            workflow=Workflow.from_text(STRICT, "strict.yaml"),
        )
        circuits = Circuits(workflows=RunLimits(threshold=2, reset_after=60))
        engine = _engine(store, agent, brain, circuits)
        for _ in range(2):
            run = await engine.run("purger", "go")
            assert run.status is RunStatus.SUSPENDED
            assert "security violation" in (run.status_reason or "")
        refused = await engine.run("purger", "go")
        assert refused.status is RunStatus.SUSPENDED
        assert (refused.status_reason or "").startswith("circuit workflow:strict is open")
        entries = await store.load_journal(refused.id)
        assert not [e for e in entries if e.kind is EntryKind.MODEL_RESPONSE]  # never started
    finally:
        await store.close()
