"""The lease is checked right before a non-idempotent effect, in one process, path by path.

Worker A drives a run whose one call is a non-idempotent write. At the ``before_effect`` fault
point (the intent is committed, the effect not started) the test moves A's clock and/or lets
worker B take the run over (B's clock is past A's lease; B claims from another thread with its
own store while A's loop waits, so the order is fixed without sleeping). Then A's lease check
runs: the effect starts only if A still holds the run.
"""

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import pytest

from autonomic.adapters.model.scripted import FunctionModel, assistant_turn
from autonomic.bootstrap import build_store
from autonomic.core.messages import ModelResponse, ToolCall
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine, new_run_id
from autonomic.engine.session import RunSession
from autonomic.errors import LeaseLost
from autonomic.tools.contract import ToolContext, tool

TTL = 30.0
writes: list[str] = []
fences: list[int] = []


@tool()
def write(text: str, ctx: ToolContext) -> str:
    """A non-idempotent write; notes that it started, and the fence it was given."""
    writes.append(ctx.run_id)
    fences.append(ctx.fence)
    return "written"


@pytest.fixture
def store_url(store_url_or_pooler: str) -> str:
    """Every lease test here runs on SQLite, PostgreSQL, and PostgreSQL behind pgBouncer's
    transaction pooling (``pooler=transaction``)."""
    return store_url_or_pooler


def _policy(messages, tools):
    if assistant_turn(messages) == 0:
        return ModelResponse(content=None, tool_calls=(ToolCall("c1", "write", '{"text": "x"}'),))
    return ModelResponse(content="done", tool_calls=())


AGENT = Agent(name="lease", instructions="write", tools=(write,), model="function:lease")
MODEL = FunctionModel(_policy, name="function:lease")


def _engine(store, **options):
    return Engine(store, AgentRegistry([AGENT]), lambda spec: MODEL, lease_ttl=TTL, **options)


class Clock:
    """Worker A's clock: real time, moved forward when the test says time passed."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def _after_a_lease() -> float:
    return time.time() + TTL + 1


class AtEffect:
    """Faults: run ``action`` (once) when the effect is about to start."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action

    def at(self, point: str) -> None:
        if point == "before_effect":
            self.action()


def _take_over(url: str, run_id: str) -> int:
    """Worker B claims the run (its clock past A's lease), from another thread and event loop
    with its own store; returns B's fence. Runs while A's loop is blocked at the fault point."""
    out: list[int] = []

    async def claim() -> None:
        store = build_store(url)
        try:
            b = _engine(store, clock=_after_a_lease)
            run = await b.claim(run_id, take_over_dead=False)
            assert run is not None, "B could not claim the run"
            out.append(run.lease.fence)
        finally:
            await store.close()

    thread = threading.Thread(target=asyncio.run, args=(claim(),))
    thread.start()
    thread.join()
    assert out, "B's claim failed"
    return out[0]


def _drive_a(url, *, expire_clock: bool, take_over: bool):
    writes.clear()
    fences.clear()
    clock = Clock()
    run_id = new_run_id()
    taken: list[int] = []

    def at_effect() -> None:
        if expire_clock:
            clock.offset = TTL + 5
        elif take_over:  # less than half the lease left by A's clock: A reads to be sure
            clock.offset = TTL * 0.6
        if take_over:
            taken.append(_take_over(url, run_id))

    async def go():
        store = build_store(url)
        try:
            await store.migrate()
            a = _engine(store, clock=clock, faults=AtEffect(at_effect))
            run = await a.run("lease", "go", run_id=run_id)
            return run, await store.get_run(run_id)
        finally:
            await store.close()

    run, stored = asyncio.run(go())
    return run, stored, taken


@pytest.mark.parametrize("expire_clock", [False, True], ids=["lease-valid", "lease-expired"])
def test_a_worker_whose_run_was_taken_over_does_not_start_the_effect(
    store_url, expire_clock, caplog
):
    caplog.set_level(logging.WARNING, logger="autonomic.engine")
    run, stored, taken = _drive_a(store_url, expire_clock=expire_clock, take_over=True)
    assert writes == []  # the effect never started
    assert stored.status is RunStatus.RUNNING  # B holds it now (its in-doubt call is B's to see)
    assert stored.lease.fence == taken[0] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(run.id in w and "fence 1" in w and "lost its lease" in w for w in warnings), warnings


def test_a_lease_expired_by_the_clock_but_not_taken_is_renewed_and_the_effect_runs(store_url):
    """A pause past the lease with nobody taking over: the conditional renewal proves nobody
    did, so the call runs (once, with the run's fence) instead of leaving the run in doubt."""
    run, _, _ = _drive_a(store_url, expire_clock=True, take_over=False)
    assert run.status is RunStatus.COMPLETED, run.status_reason
    assert writes == [run.id]
    assert fences == [1]


def test_a_fresh_lease_is_trusted_without_a_read_and_a_skewed_takeover_is_the_limit(store_url):
    """With more than half the lease left (the intent was just committed), the check asks the
    store nothing: a worker could only have claimed the run with a clock half a lease ahead.
    That is the tolerated skew - such a takeover is not seen before the effect (the fence still
    guards every commit, and ``ctx.fence`` lets the system changed refuse the stale writer)."""
    writes.clear()
    fences.clear()
    reads: list[str] = []

    async def go():
        store = build_store(store_url)
        try:
            await store.migrate()
            get_run = store.get_run

            async def counted(run_id):
                reads.append(run_id)
                return await get_run(run_id)

            store.get_run = counted
            a = _engine(store, faults=AtEffect(lambda: reads.clear()))
            return await a.run("lease", "go")
        finally:
            await store.close()

    run = asyncio.run(go())
    assert run.status is RunStatus.COMPLETED
    assert writes == [run.id]
    assert reads == []  # nothing read between the fault point and the effect


def test_the_tool_gets_the_runs_fence(store_url):
    run, _, _ = _drive_a(store_url, expire_clock=False, take_over=False)
    assert run.status is RunStatus.COMPLETED
    assert writes == [run.id]
    assert fences == [1]


def test_a_refused_heartbeat_says_so_and_marks_the_session_lost(store_url, caplog):
    """The heartbeat's renewal refused (the run was taken over): a warning naming the run and
    the fence, and the session's next lease check fails without asking the store."""
    caplog.set_level(logging.WARNING, logger="autonomic.engine")

    async def go():
        store = build_store(store_url)
        try:
            await store.migrate()
            a = Engine(store, AgentRegistry([AGENT]), lambda spec: MODEL, lease_ttl=0.003)
            started = await a.start("lease", "go")
            held = await a.claim(started.id)
            assert held is not None
            b = _engine(store, clock=_after_a_lease)
            assert await b.claim(started.id, take_over_dead=False) is not None
            session = RunSession(
                store, held, None, clock=a.clock, faults=a.faults, lease_ttl=a.lease_ttl
            )
            await a._heartbeat(held, lambda: session)  # returns once a renewal is refused
            reads = 0
            get_run = store.get_run

            async def counted(run_id):
                nonlocal reads
                reads += 1
                return await get_run(run_id)

            store.get_run = counted
            with pytest.raises(LeaseLost):
                await session.check_lease()
            assert reads == 0  # known lost: the store is not asked again
            return started.id
        finally:
            await store.close()

    run_id = asyncio.run(go())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(run_id in w and "fence 1" in w for w in warnings), warnings
