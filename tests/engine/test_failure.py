"""An unexpected error in a step ends the run with one journaled reason; it never leaves the run
RUNNING, never leaks a secret, and the store failing is not mistaken for it."""

import asyncio
import json
from typing import Any

import pytest

from autonomic.adapters.model.scripted import FunctionModel, ScriptedModel
from autonomic.bootstrap import build_store
from autonomic.core.entries import EntryKind, Transition
from autonomic.core.messages import ModelResponse, Role, ToolCall
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.engine.failure import Failure, scrub
from autonomic.engine.step import Hook
from autonomic.engine.worker import Worker
from autonomic.errors import RunInputError, StoreUnavailable
from autonomic.governance.runaway.gate import Runaway
from autonomic.tools.contract import tool

EFFECTS: list[str] = []


@tool(idempotent=True)
def read(n: int) -> int:
    """An idempotent read."""
    EFFECTS.append(f"read {n}")
    return n


@tool()
def write(n: int) -> str:
    """A non-idempotent write."""
    EFFECTS.append(f"write {n}")
    return "written"


TURNS = [
    {"tool_calls": [{"name": "read", "arguments": {"n": 1}}]},
    {"tool_calls": [{"name": "write", "arguments": {"n": 2}}]},
    {"content": "done"},
]


def _agent(**extra: Any) -> Agent:
    return Agent(name="rw", instructions="read, then write", tools=(read, write), **extra)


def _engine(store, *, model=None, hooks=(), agent=None, **kwargs) -> Engine:
    model = model or ScriptedModel(list(TURNS))
    return Engine(
        store,
        AgentRegistry([agent or _agent()]),
        lambda spec: model,
        runaway=Runaway(enabled=False),
        hooks=list(hooks),
        **kwargs,
    )


def _last_transition(entries) -> Transition:
    (last,) = [e for e in entries if e.kind is EntryKind.TRANSITION][-1:]
    assert isinstance(last.body, Transition)
    return last.body


def _drive(url: str, **kwargs) -> tuple[Any, list[Any]]:
    async def go():
        store = build_store(url)
        await store.migrate()
        try:
            engine = _engine(store, **kwargs)
            run = await engine.start("rw", "go")
            final = await engine.run_to_end(run.id)
            assert final.status is (await store.get_run(run.id)).status
            return final, await store.load_journal(run.id)
        finally:
            await store.close()

    EFFECTS.clear()
    return asyncio.run(go())


# -- agent code ------------------------------------------------------------------------------------


def _buggy_brain(messages, tools):
    answered = [m for m in messages if m.role is Role.TOOL]
    if answered:
        return ModelResponse(content=answered[0].content["missing"])  # a TypeError: str index
    call = ToolCall(id="c1", name="read", arguments='{"n": 1}')
    return ModelResponse(content=None, tool_calls=(call,))


def test_a_bug_in_agent_code_fails_the_run_with_a_one_line_reason_and_a_digest(store_url):
    run, entries = _drive(store_url, model=FunctionModel(_buggy_brain, name="buggy"))
    assert run.status is RunStatus.FAILED
    reason = run.status_reason or ""
    assert "\n" not in reason
    assert reason.startswith("unexpected TypeError in _buggy_brain (engine/test_failure.py:")
    assert "string indices must be integers" in reason
    last = _last_transition(entries)
    assert last.source == "RUNNING"
    assert last.target == "FAILED"
    assert last.reason == reason
    error = last.error or {}
    assert error["type"] == "TypeError"
    assert error["code"] == "unexpected_error"
    assert error["in"] == "_buggy_brain"
    assert error["where"].startswith("engine/test_failure.py:")
    assert len(error["digest"]) == 16
    assert "Traceback" not in json.dumps([e.payload for e in entries])
    # what the step had done before the bug is journaled: the read and its result
    assert [e.kind for e in entries].count(EntryKind.TOOL_RESULT) == 1
    assert EFFECTS == ["read 1"]


def test_the_same_bug_gives_the_same_digest_in_every_run(sqlite_url):
    first, _ = _drive(sqlite_url, model=FunctionModel(_buggy_brain, name="buggy"))
    second, _ = _drive(sqlite_url, model=FunctionModel(_buggy_brain, name="buggy"))
    assert first.id != second.id
    assert first.status_reason == second.status_reason


# -- hooks -----------------------------------------------------------------------------------------


class RaiseAfterEffect(Hook):
    """A hook whose bug shows only after the effect ran (the result is lost)."""

    def __init__(self, tool: str) -> None:
        self.tool = tool

    async def around_tool_effect(self, step, tool, call, effect):
        result = await effect()
        if tool.name == self.tool:
            raise KeyError("span")
        return result


def test_a_hook_failing_after_a_non_idempotent_effect_says_it_may_have_taken_effect(store_url):
    run, entries = _drive(store_url, hooks=[RaiseAfterEffect("write")])
    assert EFFECTS == ["read 1", "write 2"]
    assert run.status is RunStatus.FAILED
    last = _last_transition(entries)
    assert last.in_doubt is not None
    assert last.in_doubt.tool == "write"
    assert "KeyError" in (run.status_reason or "")
    assert f"write call {last.in_doubt.call_id} had started" in (run.status_reason or "")
    assert "may have taken effect" in (run.status_reason or "")
    results = [e.body.tool for e in entries if e.kind is EntryKind.TOOL_RESULT]
    assert results == ["read"]  # the journal does not claim the write's result


def test_a_hook_failing_after_an_idempotent_effect_fails_the_run_without_doubt(store_url):
    run, entries = _drive(store_url, hooks=[RaiseAfterEffect("read")])
    assert run.status is RunStatus.FAILED
    assert _last_transition(entries).in_doubt is None
    assert "may have taken effect" not in (run.status_reason or "")
    assert EFFECTS == ["read 1"]


class FailingCommitHook(Hook):
    """Raises from ``on_commit`` at the n-th commit (and at every later one)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = 0

    def on_commit(self, session, entries):
        self.seen += 1
        if self.seen >= self.n:
            raise RuntimeError("exporter down")


def test_a_commit_hook_that_keeps_failing_cannot_keep_the_run_running(store_url):
    run, entries = _drive(store_url, hooks=[FailingCommitHook(2)])
    assert run.status is RunStatus.FAILED
    assert "RuntimeError" in (run.status_reason or "")
    assert _last_transition(entries).target == "FAILED"


# -- inputs: suspended, fixed, resumed -------------------------------------------------------------


def _needs_path(run):
    if "path" not in run.metadata:
        raise RunInputError(
            "this run has no path: metadata.path is not set",
            hint=f'autonomic resume {run.id} --force --metadata \'{{"path": "P"}}\'',
        )


def test_a_missing_input_suspends_the_run_and_reopening_with_it_completes(store_url):
    async def go():
        store = build_store(store_url)
        await store.migrate()
        try:
            engine = _engine(store, agent=_agent(check=_needs_path))
            run = await engine.start("rw", "go")
            suspended = await engine.run_to_end(run.id)
            await engine.reopen(run.id, "given the path", metadata={"path": "/tmp/p"})
            done = await engine.run_to_end(run.id)
            return suspended, done, await store.load_journal(run.id)
        finally:
            await store.close()

    EFFECTS.clear()
    suspended, done, entries = asyncio.run(go())
    assert suspended.status is RunStatus.SUSPENDED
    assert suspended.status_reason == (
        "this run has no path: metadata.path is not set "
        f'(autonomic resume {suspended.id} --force --metadata \'{{"path": "P"}}\')'
    )
    assert done.status is RunStatus.COMPLETED
    assert done.metadata == {"path": "/tmp/p"}
    transitions = [e.body for e in entries if e.kind is EntryKind.TRANSITION]
    assert [t.target for t in transitions] == ["RUNNING", "SUSPENDED", "RUNNING", "COMPLETED"]
    assert transitions[1].error["code"] == "run_input_invalid"
    assert transitions[2].metadata == {"path": "/tmp/p"}
    assert EFFECTS == ["read 1", "write 2"]  # nothing ran before the input was there


# -- the store failing is not the run failing ------------------------------------------------------


class FlakyStore:
    """A store whose n-th commit fails as if the database went away."""

    def __init__(self, store, n: int) -> None:
        self._store = store
        self.n = n
        self.commits = 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def commit(self, *args, **kwargs):
        self.commits += 1
        if self.commits == self.n:
            raise StoreUnavailable("cannot reach the database")
        return await self._store.commit(*args, **kwargs)


def test_the_store_failing_leaves_the_run_for_recovery_not_failed(store_url):
    async def go():
        store = build_store(store_url)
        await store.migrate()
        try:
            flaky = FlakyStore(store, 3)
            now = [1000.0]
            engine = _engine(flaky, clock=lambda: now[0])
            run = await engine.start("rw", "go")
            with pytest.raises(StoreUnavailable):
                await engine.run_to_end(run.id)
            left = await store.get_run(run.id)
            now[0] += 3600  # the lease expires; another worker recovers the run
            later = _engine(store, clock=lambda: now[0])
            final = await later.run_to_end(run.id)
            return left, final
        finally:
            await store.close()

    EFFECTS.clear()
    left, final = asyncio.run(go())
    assert left.status is RunStatus.RUNNING
    assert left.lease.owner is not None
    assert final.status is RunStatus.COMPLETED


# -- the worker goes on --------------------------------------------------------------------------


def _brain(messages, tools):
    task = next(m.content for m in messages if m.role is Role.USER)
    if task == "crash":
        raise ZeroDivisionError("division by zero")
    return ModelResponse(content=f"did {task}")


def test_a_worker_ends_a_broken_run_and_goes_on_with_the_next(store_url):
    async def go():
        store = build_store(store_url)
        await store.migrate()
        try:
            engine = _engine(store, model=FunctionModel(_brain, name="brain"))
            broken = await engine.start("rw", "crash")
            fine = await engine.start("rw", "the rest")
            finished = await Worker(engine, concurrency=1).run(until_idle=True)
            return (
                finished,
                await store.get_run(broken.id),
                await store.get_run(fine.id),
            )
        finally:
            await store.close()

    finished, broken, fine = asyncio.run(go())
    assert {r.id for r in finished} == {broken.id, fine.id}
    assert broken.status is RunStatus.FAILED
    assert broken.status_reason.startswith("unexpected ZeroDivisionError in _brain")
    assert broken.lease.owner is None
    assert fine.status is RunStatus.COMPLETED


def test_a_worker_survives_a_store_that_fails_a_claim(sqlite_url):
    async def go():
        store = build_store(sqlite_url)
        await store.migrate()
        try:
            engine = _engine(store, model=FunctionModel(_brain, name="brain"))
            run = await engine.start("rw", "something")
            claims = [0]
            real = engine.claim

            async def claim(*args, **kwargs):
                claims[0] += 1
                if claims[0] == 1:
                    raise StoreUnavailable("cannot reach the database")
                return await real(*args, **kwargs)

            driven = asyncio.Event()
            drive = engine.drive

            async def drive_and_tell(run):
                try:
                    return await drive(run)
                finally:
                    driven.set()

            engine.claim = claim  # type: ignore[method-assign]
            engine.drive = drive_and_tell  # type: ignore[method-assign]
            worker = Worker(engine, concurrency=1, poll_interval=0.01)
            task = asyncio.create_task(worker.run())
            await driven.wait()
            worker.stop()
            await task
            return await store.get_run(run.id), claims[0]
        finally:
            await store.close()

    run, claims = asyncio.run(go())
    assert run.status is RunStatus.COMPLETED
    assert claims >= 2


# -- the failure's text --------------------------------------------------------------------------


def test_secrets_in_an_exception_message_never_reach_the_journal():
    text = (
        "connect postgresql://app:hunter2@db:5432/x failed; api_key=sk-live-0123456789abcdef "
        "Authorization: Bearer abc.def.ghi password='pa55'"
    )
    line = scrub(text)
    for secret in ("hunter2", "0123456789abcdef", "abc.def.ghi", "pa55"):
        assert secret not in line
    assert "postgresql://app:***@db:5432/x" in line

    try:
        raise ValueError(text + "\n" + "x" * 1000)
    except ValueError as exc:
        failure = Failure.of(exc)
    assert "hunter2" not in json.dumps(failure.to_dict())
    assert "\n" not in failure.message
    assert len(failure.message) <= 300
    assert failure.status is RunStatus.FAILED
    assert failure.where.startswith("engine/test_failure.py:")


@tool()
def leaky(n: int) -> int:
    """A tool whose error message carries a credential."""
    raise ConnectionError("cannot reach postgresql://svc:hunter2@db/x")


def test_a_tool_raising_is_its_error_result_with_where_and_no_secret(sqlite_url):
    turns = [
        {"tool_calls": [{"name": "leaky", "arguments": {"n": 1}}]},
        {"content": "could not"},
    ]
    agent = Agent(name="rw", instructions="", tools=(leaky,))
    run, entries = _drive(sqlite_url, model=ScriptedModel(turns), agent=agent)
    assert run.status is RunStatus.COMPLETED  # the model read the error and answered
    (result,) = [e.body for e in entries if e.kind is EntryKind.TOOL_RESULT]
    assert result.error["code"] == "tool_error"
    assert result.error["message"] == "ConnectionError: cannot reach postgresql://svc:***@db/x"
    assert result.error["where"].startswith("engine/test_failure.py:")
    assert len(result.error["digest"]) == 16
    assert "hunter2" not in json.dumps([e.payload for e in entries])
