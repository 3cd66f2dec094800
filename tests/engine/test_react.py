"""The ReAct loop under the step protocol, on every store."""

import asyncio
import json

import pytest

from autonomic.adapters.model.scripted import ScriptedModel
from autonomic.bootstrap import build_store
from autonomic.core.journal import EntryKind
from autonomic.core.run import RunStatus
from autonomic.engine import executor as executor_module
from autonomic.engine import step as step_protocol
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.engine.worker import Worker
from autonomic.errors import ModelError
from autonomic.tools.contract import tool

EFFECTS: list[str] = []


@tool(idempotent=True)
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool(idempotent=False)
def send(text: str, ctx=None) -> str:  # type: ignore[no-untyped-def]
    """Send a message (not idempotent)."""
    EFFECTS.append(text)
    return "sent"


def _agent(max_turns: int = 10) -> Agent:
    return Agent(name="calc", instructions="add numbers", tools=(add, send), max_turns=max_turns)


def _call(name: str, **args: object) -> dict[str, object]:
    return {"name": name, "arguments": args}


class CountingStore:
    """Wraps a store and counts commits (a spy, not a fake: every call goes to the real store)."""

    def __init__(self, inner):
        self.inner = inner
        self.commits = 0
        self.other_writes = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def commit(self, *args, **kwargs):
        self.commits += 1
        return await self.inner.commit(*args, **kwargs)

    async def claim(self, *args, **kwargs):
        self.other_writes += 1
        return await self.inner.claim(*args, **kwargs)

    async def release_lease(self, *args, **kwargs):
        self.other_writes += 1
        return await self.inner.release_lease(*args, **kwargs)


async def _drive(
    url: str, turns: list[dict[str, object]], *, max_turns: int = 10, model=None, spy: bool = False
):
    store = build_store(url)
    await store.migrate()
    if spy:
        store = CountingStore(store)
    scripted = model or ScriptedModel(turns)
    engine = Engine(store, AgentRegistry([_agent(max_turns)]), lambda spec: scripted)
    run = await engine.start("calc", "add things")
    final = await engine.run_to_end(run.id)
    entries = await store.load_journal(run.id)
    await store.close()
    return final, entries, store


def test_a_run_completes_and_its_journal_holds_every_step(store_url):
    turns = [
        {"tool_calls": [_call("add", a=1, b=2)]},
        {"tool_calls": [_call("add", a=3, b=4)]},
        {"content": "3 and 7"},
    ]
    run, entries, store = asyncio.run(_drive(store_url, turns, spy=True))
    assert run.status is RunStatus.COMPLETED
    assert run.output == "3 and 7"
    kinds = [e.kind for e in entries]
    assert kinds == [
        EntryKind.RUN_STARTED,
        EntryKind.TRANSITION,
        EntryKind.MODEL_RESPONSE,
        EntryKind.TOOL_INTENT,
        EntryKind.TOOL_RESULT,
        EntryKind.MODEL_RESPONSE,
        EntryKind.TOOL_INTENT,
        EntryKind.TOOL_RESULT,
        EntryKind.MODEL_RESPONSE,
        EntryKind.TRANSITION,
    ]
    assert [e.payload["output"] for e in entries if e.kind is EntryKind.TOOL_RESULT] == [3, 7]
    intent = entries[3].payload
    assert intent["key"] == f"{run.id}:4"
    # claim transition + one commit per idempotent step + the completion: nothing more
    assert store.commits == 1 + 2 + 1
    assert store.other_writes == 1, "the claim; the completion commit released the lease"
    assert run.lease.owner is None


def test_engine_run_creates_the_run_leased_and_running_and_skips_the_claim(store_url):
    turns = [
        {"tool_calls": [_call("add", a=1, b=2)]},
        {"tool_calls": [_call("add", a=3, b=4)]},
        {"content": "3 and 7"},
    ]

    async def go():
        store = CountingStore(build_store(store_url))
        await store.migrate()
        engine = Engine(store, AgentRegistry([_agent()]), lambda spec: ScriptedModel(turns))
        final = await engine.run("calc", "add things")
        row = await store.get_run(final.id)
        entries = await store.load_journal(final.id)
        await store.close()
        return final, row, entries, store, engine.owner

    final, row, entries, store, owner = asyncio.run(go())
    assert final.status is RunStatus.COMPLETED
    assert final.output == row.output == "3 and 7"
    assert row.lease.owner is None
    assert row.lease.fence == 1
    assert store.commits == 2 + 1, "one per step and the completion; the create did the claim"
    assert store.other_writes == 0
    assert [e.kind for e in entries][:3] == [
        EntryKind.RUN_STARTED,
        EntryKind.TRANSITION,
        EntryKind.MODEL_RESPONSE,
    ]
    assert entries[1].payload == {
        "from": "PENDING",
        "to": "RUNNING",
        "reason": "claimed",
        "worker": owner,
    }
    assert not [e for e in entries if e.kind is EntryKind.RECOVERY]
    assert entries[3].payload["key"] == f"{final.id}:4"


class Boom(BaseException):
    """Stands in for a process dying at a fault point (the lease stays held): a BaseException,
    like ``autonomic.testing.crash.SimulatedCrash``, because the engine ends a run that an
    ordinary exception broke (an error is not a death)."""


class BoomAt:
    def __init__(self, point: str, count: int) -> None:
        self.point, self.left = point, count

    def at(self, point: str) -> None:
        if point == self.point:
            self.left -= 1
            if self.left == 0:
                raise Boom(point)


def test_a_run_started_by_engine_run_is_taken_over_after_its_owner_dies(store_url):
    """The lease ``Engine.run`` writes at creation is a real lease: it expires and is taken."""
    EFFECTS.clear()
    turns = [
        {"tool_calls": [_call("send", text="one")]},
        {"tool_calls": [_call("send", text="two")]},
        {"tool_calls": [_call("add", a=1, b=1)]},
        {"content": "sent both"},
    ]

    async def go():
        store = build_store(store_url)
        await store.migrate()
        registry = AgentRegistry([_agent()])
        dying = Engine(
            store,
            registry,
            lambda spec: ScriptedModel(turns),
            clock=lambda: 1000.0,
            faults=BoomAt("step_done", 1),
        )
        with pytest.raises(Boom):
            await dying.run("calc", "send things", run_id="run_" + "ab" * 16)
        held = await store.get_run("run_" + "ab" * 16)
        later = Engine(
            store, registry, lambda spec: ScriptedModel(turns), clock=lambda: 1000.0 + 3600
        )
        final = await later.run_to_end(held.id)
        entries = await store.load_journal(held.id)
        await store.close()
        return held, final, entries, later.owner

    held, final, entries, new_owner = asyncio.run(go())
    assert held.status is RunStatus.RUNNING
    assert held.lease.fence == 1
    assert held.lease.owner is not None
    assert final.status is RunStatus.COMPLETED
    assert final.lease.fence == 2
    assert EFFECTS == ["one", "two"], "the step done before the crash is not repeated"
    (recovery,) = [e for e in entries if e.kind is EntryKind.RECOVERY]
    assert recovery.payload["worker"] == new_owner


def test_a_non_idempotent_tool_is_written_ahead(store_url):
    EFFECTS.clear()
    turns = [{"tool_calls": [_call("send", text="hi")]}, {"content": "ok"}]
    run, _, store = asyncio.run(_drive(store_url, turns, spy=True))
    assert run.status is RunStatus.COMPLETED
    assert EFFECTS == ["hi"]
    # claim + intent before the effect + result after it + completion
    assert store.commits == 4


@pytest.mark.parametrize(
    ("call", "code"),
    [
        ({"name": "add", "arguments": '{"a": 1, "b": '}, "tool_arguments_invalid"),
        ({"name": "add", "arguments": {"a": "one", "b": 2}}, "tool_arguments_invalid"),
        ({"name": "rm_rf", "arguments": {}}, "unknown_tool"),
    ],
)
def test_bad_tool_calls_from_the_model_become_observations_not_crashes(store_url, call, code):
    turns = [
        {"tool_calls": [call]},
        {"tool_calls": [_call("add", a=1, b=1)]},
        {"content": "recovered"},
    ]
    run, entries, _ = asyncio.run(_drive(store_url, turns))
    assert run.status is RunStatus.COMPLETED
    results = [e.payload for e in entries if e.kind is EntryKind.TOOL_RESULT]
    assert results[0]["ok"] is False
    assert results[0]["error"]["code"] == code
    assert results[1]["output"] == 2
    assert not [
        e for e in entries if e.kind is EntryKind.TOOL_INTENT and e.payload["call_id"] == "call_1_1"
    ]


def test_the_turn_budget_fails_the_run_with_a_clear_reason(store_url):
    turns = [{"tool_calls": [_call("add", a=i, b=i)]} for i in range(10)]
    run, entries, _ = asyncio.run(_drive(store_url, turns, max_turns=3))
    assert run.status is RunStatus.FAILED
    assert "turn budget exhausted: 3 of 3" in (run.status_reason or "")
    assert sum(1 for e in entries if e.kind is EntryKind.MODEL_RESPONSE) == 3


class FailingModel:
    name = "failing"

    def __init__(self, retryable: bool):
        self.retryable = retryable
        self.calls = 0

    async def complete(self, messages, tools):
        self.calls += 1
        raise ModelError("server on fire", retryable=self.retryable)


@pytest.mark.parametrize(
    ("retryable", "status", "calls"), [(False, RunStatus.FAILED, 1), (True, RunStatus.SUSPENDED, 3)]
)
def test_model_errors_fail_or_suspend_the_run(store_url, monkeypatch, retryable, status, calls):
    monkeypatch.setattr(step_protocol, "MODEL_BACKOFF", 0.0)
    model = FailingModel(retryable)
    run, entries, _ = asyncio.run(_drive(store_url, [], model=model))
    assert run.status is status
    assert "server on fire" in (run.status_reason or "")
    assert model.calls == calls
    assert entries[-1].payload["error"]["code"] == "model_error"


def test_journal_bytes_per_step_stay_flat_as_the_conversation_grows(store_url):
    turns = [{"tool_calls": [_call("add", a=i, b=1)]} for i in range(60)] + [{"content": "done"}]
    run, entries, _ = asyncio.run(_drive(store_url, turns, max_turns=70))
    assert run.status is RunStatus.COMPLETED
    sizes = [len(json.dumps(e.payload)) for e in entries if e.kind is EntryKind.MODEL_RESPONSE]
    # the 60th model response is no bigger than the 5th (give or take digits): deltas, not prompts
    assert sizes[59] - sizes[4] < 20


def test_large_tool_output_is_stored_as_a_blob_and_read_back(store_url):
    @tool(idempotent=True)
    def big() -> str:
        """Return a lot."""
        return "z" * 50_000

    async def go():
        store = build_store(store_url)
        await store.migrate()
        model = ScriptedModel([{"tool_calls": [_call("big")]}, {"content": "ok"}])
        agent = Agent(name="big", instructions="", tools=(big,))
        engine = Engine(store, AgentRegistry([agent]), lambda spec: model)
        run = await engine.start("big", "go")
        await engine.run_to_end(run.id)
        entries = await store.load_journal(run.id)
        await store.close()
        return entries

    entries = asyncio.run(go())
    result = next(e for e in entries if e.kind is EntryKind.TOOL_RESULT)
    assert result.payload["output"] == "z" * 50_000


def test_workers_share_runs_and_each_run_is_driven_once(store_url):
    async def go():
        setup = build_store(store_url)
        await setup.migrate()
        model = ScriptedModel([{"tool_calls": [_call("add", a=1, b=1)]}, {"content": "2"}])
        registry = AgentRegistry([_agent()])
        creator = Engine(setup, registry, lambda spec: model)
        ids = [(await creator.start("calc", f"task {i}")).id for i in range(12)]
        stores = [build_store(store_url) for _ in range(3)]
        workers = [Worker(Engine(s, registry, lambda spec: model), concurrency=3) for s in stores]
        done = await asyncio.gather(*(w.run(until_idle=True) for w in workers))
        journals = [await setup.load_journal(i) for i in ids]
        runs = [await setup.get_run(i) for i in ids]
        for s in [*stores, setup]:
            await s.close()
        return done, journals, runs

    done, journals, runs = asyncio.run(go())
    assert sorted(r.id for batch in done for r in batch) == sorted(r.id for r in runs)
    assert all(r.status is RunStatus.COMPLETED for r in runs)
    for journal in journals:
        claims = [
            e for e in journal if e.kind is EntryKind.TRANSITION and e.payload["to"] == "RUNNING"
        ]
        assert len(claims) == 1
        assert not [e for e in journal if e.kind is EntryKind.RECOVERY]


def test_stop_finishes_the_current_step_and_releases_the_lease(store_url):
    """What SIGTERM does to a worker: the step in hand commits, the lease is free at once."""

    async def go():
        store = build_store(store_url)
        await store.migrate()
        engine_holder: list[Engine] = []

        @tool(idempotent=True)
        def step(i: int) -> int:
            """The first step asks the worker to stop while it runs."""
            if i == 0:
                engine_holder[0].stopping.set()
            return i

        turns = [{"tool_calls": [_call("step", i=i)]} for i in range(3)] + [{"content": "done"}]
        model = ScriptedModel(turns)
        agent = Agent(name="stepper", instructions="", tools=(step,))
        engine = Engine(store, AgentRegistry([agent]), lambda spec: model)
        engine_holder.append(engine)
        run = await engine.start("stepper", "go")
        stopped = await engine.run_to_end(run.id)
        row = await store.get_run(run.id)
        # another process picks it up straight away: no lease to wait for
        other = Engine(build_store(store_url), AgentRegistry([agent]), lambda spec: model)
        claimed = await other.claim()
        assert claimed is not None
        finished = await other.drive(claimed)
        await other.store.close()
        entries = await store.load_journal(run.id)
        await store.close()
        return stopped, row, finished, entries

    stopped, row, finished, entries = asyncio.run(go())
    assert stopped.status is RunStatus.RUNNING
    assert row.lease.owner is None
    results_before_stop = [e for e in entries if e.kind is EntryKind.TOOL_RESULT]
    assert results_before_stop[0].payload["output"] == 0
    assert finished.status is RunStatus.COMPLETED


def test_cancel_from_outside_stops_the_worker_at_its_next_commit(store_url):
    async def go():
        store = build_store(store_url)
        await store.migrate()
        holder: list[tuple[Engine, str]] = []

        @tool(idempotent=True)
        async def slow(i: int) -> int:
            """Cancelled from outside while running."""
            engine, run_id = holder[0]
            await engine.cancel(run_id, "operator says stop")
            return i

        turns = [{"tool_calls": [_call("slow", i=i)]} for i in range(3)] + [{"content": "done"}]
        model = ScriptedModel(turns)
        agent = Agent(name="slow", instructions="", tools=(slow,))
        outside = Engine(build_store(store_url), AgentRegistry([agent]), lambda spec: model)
        engine = Engine(store, AgentRegistry([agent]), lambda spec: model)
        run = await engine.start("slow", "go")
        holder.append((outside, run.id))
        final = await engine.run_to_end(run.id)
        entries = await store.load_journal(run.id)
        await store.close()
        await outside.store.close()
        return final, entries

    final, entries = asyncio.run(go())
    assert final.status is RunStatus.CANCELLED
    assert final.status_reason == "operator says stop"
    assert not [e for e in entries if e.kind is EntryKind.TOOL_RESULT]
    assert entries[-1].payload["to"] == "CANCELLED"


def test_owner_is_dead_only_for_local_processes_that_are_gone():
    import os
    import socket

    host = socket.gethostname()
    assert not executor_module.owner_is_dead(None)
    assert not executor_module.owner_is_dead(f"{host}:{os.getpid()}:x")
    assert not executor_module.owner_is_dead("other-host:1:x")
    assert executor_module.owner_is_dead(f"{host}:{2**22 + 12345}:x")


def test_a_lease_holder_is_dead_only_when_its_process_is_dead_for_certain():
    """Ids name the holder's pid namespace and start time: a live worker in another pid
    namespace with this host name (whose pid means nothing here) is not dead; a pid now
    another process's is; an exited process not yet reaped (a zombie) is."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    from autonomic import host_process

    host = socket.gethostname()
    _, namespace, start = host_process.identity()
    me = executor_module.worker_id()
    assert me.split(":")[1] == str(os.getpid())
    assert not executor_module.owner_is_dead(me)
    gone = 2**22 + 12345  # above pid_max: no process has it
    assert executor_module.owner_is_dead(f"{host}:{gone}:x:{namespace}-{start}")
    assert not executor_module.owner_is_dead(f"{host}:{gone}:x:{namespace + 1}-{start}")
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                          stdin=subprocess.PIPE) as child:  # fmt: skip
        child_start = host_process.start_time(child.pid)
        assert child_start is not None
        alive = f"{host}:{child.pid}:x:{namespace}-{child_start}"
        assert not executor_module.owner_is_dead(alive)
        assert executor_module.owner_is_dead(f"{host}:{child.pid}:x:{namespace}-{child_start + 1}")
        os.kill(child.pid, signal.SIGKILL)
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, left a zombie
        assert executor_module.owner_is_dead(alive)
