"""Chaos: exceptions injected at every hook point, in tools, in a gate, in the agent's input check,
in the agent's brain, and in the store - 100 seeded runs on each store, driven by a worker.

What must hold: no run is left RUNNING (or PENDING); every run an injected error broke ended
FAILED (a bug) or SUSPENDED (``RunInputError``: an operator can fix it) with a one-line reason and
the error's type, place and digest in its last transition; a tool's exception is the call's error
result and the run goes on; the store failing left its run for recovery, which completed it; no
effect ran twice; and the worker never died.
"""

import asyncio
import json
import random
from collections import Counter
from typing import Any

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.bootstrap import build_store
from autonomic.core.entries import EntryKind, Transition
from autonomic.core.messages import ModelResponse, Role, ToolCall
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine, new_run_id
from autonomic.engine.step import Hook
from autonomic.engine.worker import Worker
from autonomic.errors import RunInputError, StoreUnavailable
from autonomic.governance.runaway.gate import Runaway
from autonomic.tools.contract import ToolContext, tool

RUNS_PER_STORE = 100
HOOK_POINTS = (
    "around_run",
    "before_model_call",
    "after_model_call",
    "after_model_turn",
    "before_tool_effect",
    "around_tool_effect:before",
    "around_tool_effect:after",
    "after_tool_effect",
    "after_tool_result",
    "after_step",
    "on_commit",
    "on_transition",
    "after_run",
)
POINTS = (*HOOK_POINTS, "check", "brain", "gate", "tool", "store")
ERRORS: dict[str, type[Exception]] = {
    "TypeError": TypeError,
    "KeyError": KeyError,
    "RuntimeError": RuntimeError,
    "ZeroDivisionError": ZeroDivisionError,
    "RunInputError": RunInputError,
}


class Chaos:
    """The plan of every run (by run id) and what fired where."""

    def __init__(self) -> None:
        self.plans: dict[str, dict[str, Any]] = {}
        self.hits: Counter[tuple[str, str]] = Counter()
        self.fired: dict[str, dict[str, Any]] = {}
        self.effects: Counter[tuple[str, str]] = Counter()

    def hit(self, run_id: str, point: str, *, ending: bool = False) -> None:
        """Raise the planned error if this is the planned occurrence of ``point`` in the run."""
        plan = self.plans.get(run_id)
        if plan is None or plan["point"] != point:
            return
        self.hits[(run_id, point)] += 1
        if self.hits[(run_id, point)] != plan["nth"]:
            return
        self.fired[run_id] = {**plan, "ending": ending}
        if point == "store":
            raise StoreUnavailable(f"chaos at {point}: the database went away")
        raise ERRORS[plan["error"]](f"chaos at {point}")


CHAOS = Chaos()


@tool(idempotent=True)
def read(n: int, ctx: ToolContext) -> int:
    """An idempotent read."""
    CHAOS.hit(ctx.run_id, "tool")
    CHAOS.effects[(ctx.run_id, f"read {n}")] += 1
    return n


@tool()
def write(n: int, ctx: ToolContext) -> str:
    """A non-idempotent write."""
    CHAOS.hit(ctx.run_id, "tool")
    CHAOS.effects[(ctx.run_id, f"write {n}")] += 1
    return "written"


def _call(turn: int, index: int, name: str, n: int) -> ToolCall:
    return ToolCall(id=f"call_{turn}_{index}", name=name, arguments=json.dumps({"n": n}))


def brain(messages, tools):
    """Read, write, read and write, then answer; the run id rides in the task."""
    run_id = next(m.content for m in messages if m.role is Role.USER)
    CHAOS.hit(run_id, "brain")
    turn = sum(1 for m in messages if m.role is Role.ASSISTANT) + 1
    script = {
        1: (_call(1, 1, "read", 1),),
        2: (_call(2, 1, "write", 2),),
        3: (_call(3, 1, "read", 3), _call(3, 2, "write", 4)),
    }
    if turn in script:
        return ModelResponse(content=f"turn {turn}", tool_calls=script[turn])
    return ModelResponse(content="done")


def check(run):
    CHAOS.hit(run.id, "check")


class ChaosGate:
    name = "chaos"

    async def check(self, action):
        run, _, _ = action.in_run()
        CHAOS.hit(run.id, "gate")
        return None


class ChaosHook(Hook):
    async def around_run(self, step, drive):
        CHAOS.hit(step.session.run.id, "around_run")
        await drive()

    async def before_model_call(self, step):
        CHAOS.hit(step.session.run.id, "before_model_call")
        return True

    async def after_model_call(self, step, turn):
        CHAOS.hit(step.session.run.id, "after_model_call")

    def after_model_turn(self, step, turn):
        CHAOS.hit(step.session.run.id, "after_model_turn")

    def before_tool_effect(self, step, tool, call, intent):
        CHAOS.hit(step.session.run.id, "before_tool_effect")
        return step.session.run.id

    def after_tool_effect(self, began, result, error):
        CHAOS.hit(began, "after_tool_effect")

    async def around_tool_effect(self, step, tool, call, effect):
        CHAOS.hit(step.session.run.id, "around_tool_effect:before")
        result = await effect()
        CHAOS.hit(step.session.run.id, "around_tool_effect:after")
        return result

    def after_tool_result(self, step, result):
        CHAOS.hit(step.session.run.id, "after_tool_result")
        return result

    def after_step(self, step, entry):
        CHAOS.hit(step.session.run.id, "after_step")

    def on_commit(self, session, entries):
        ending = any(
            e.kind is EntryKind.TRANSITION and e.body.target == RunStatus.COMPLETED.value
            for e in entries
        )
        CHAOS.hit(session.run.id, "on_commit", ending=ending)

    def on_transition(self, session, transition, at):
        ending = transition.target == RunStatus.COMPLETED.value
        CHAOS.hit(session.run.id, "on_transition", ending=ending)

    async def after_run(self, step):
        CHAOS.hit(step.session.run.id, "after_run", ending=True)


class ChaosStore:
    """The real store, whose commits fail when a run's plan says the database goes away."""

    def __init__(self, store) -> None:
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def commit(self, run_id, *args, **kwargs):
        CHAOS.hit(run_id, "store")
        return await self._store.commit(run_id, *args, **kwargs)


def _plan(seed: int) -> dict[str, Any]:
    """The first seeds fire every point once at its first occurrence; the rest are random."""
    rng = random.Random(seed)
    point, nth = (
        (POINTS[seed], 1) if seed < len(POINTS) else (rng.choice(POINTS), rng.randint(1, 3))
    )
    return {"point": point, "nth": nth, "error": rng.choice(sorted(ERRORS)), "seed": seed}


def _tool_error(error: str) -> str:
    """The error message of a tool call that raised ``error("chaos at tool")``."""
    if error == "RunInputError":
        return "chaos at tool"
    return "KeyError: 'chaos at tool'" if error == "KeyError" else f"{error}: chaos at tool"


def test_no_run_is_left_running_whatever_raises(store_url):
    now = [1_000_000.0]
    agent = Agent(name="chaos", instructions="", tools=(read, write), max_turns=8, check=check)

    async def go():
        store = build_store(store_url)
        await store.migrate()
        try:
            engine = Engine(
                ChaosStore(store),
                AgentRegistry([agent]),
                lambda spec: FunctionModel(brain, name="chaos"),
                runaway=Runaway(enabled=False),
                hooks=[ChaosHook()],
                gates=[ChaosGate()],
                clock=lambda: now[0],
            )
            ids = []
            for seed in range(RUNS_PER_STORE):
                run_id = new_run_id()
                CHAOS.plans[run_id] = _plan(seed)
                # the task is the run id, so the brain knows whose plan to follow
                await engine.start("chaos", run_id, run_id=run_id)
                ids.append(run_id)
            first = await Worker(engine, concurrency=4).run(until_idle=True)
            stranded = {
                r.id
                for r in await store.list_runs(limit=10_000)
                if r.status in (RunStatus.PENDING, RunStatus.RUNNING)
            }
            now[0] += 3600  # the leases of the runs the store failed expire: recovery takes them
            second = await Worker(engine, concurrency=4).run(until_idle=True)
            runs = {i: await store.get_run(i) for i in ids}
            journals = {i: await store.load_journal(i) for i in ids}
            return first, second, stranded, runs, journals
        finally:
            await store.close()

    first, second, stranded, runs, journals = asyncio.run(go())

    statuses = Counter(r.status for r in runs.values())
    assert statuses[RunStatus.RUNNING] == 0, statuses
    assert statuses[RunStatus.PENDING] == 0, statuses
    assert {r.id for r in first} | {r.id for r in second} == set(runs)  # the worker went on
    fired_at = {CHAOS.fired[i]["point"] for i in runs if i in CHAOS.fired}
    assert fired_at == set(POINTS)

    for run_id, run in runs.items():
        fired = CHAOS.fired.get(run_id)
        entries = journals[run_id]
        last = [e.body for e in entries if e.kind is EntryKind.TRANSITION][-1]
        assert isinstance(last, Transition)
        writes = [n for (rid, e), n in CHAOS.effects.items() if rid == run_id and "write" in e]
        assert all(n == 1 for n in writes), (run_id, writes)  # no effect ran twice
        if fired is None or fired["ending"]:  # nothing fired, or only after the run had ended
            assert run.status is RunStatus.COMPLETED, (fired, run.status_reason)
            continue
        if fired["point"] == "store":  # not failed: left for recovery, which took it over
            assert run_id in stranded
            assert run.status is RunStatus.COMPLETED or (
                run.status is RunStatus.WAITING_FOR_HUMAN
                and (run.status_reason or "").startswith("in doubt")
            ), run.status_reason
            continue
        if fired["point"] == "tool":  # a tool raising is the call's error result; the run goes on
            assert run.status is RunStatus.COMPLETED, run.status_reason
            failed = [e.body for e in entries if e.kind is EntryKind.TOOL_RESULT and not e.body.ok]
            retried = [
                e.body for e in entries if e.kind is EntryKind.TOOL_RESULT and e.body.attempts
            ]
            assert [r.error["message"] for r in failed] == [_tool_error(fired["error"])] or (
                not failed and retried  # an idempotent read raised once and its retry succeeded
            ), (failed, retried)
            continue
        want = RunStatus.SUSPENDED if fired["error"] == "RunInputError" else RunStatus.FAILED
        assert run.status is want, (fired, run.status, run.status_reason)
        reason = run.status_reason or ""
        assert "\n" not in reason
        assert f"chaos at {fired['point']}" in reason, reason
        assert last.target == want.value
        assert last.reason == reason
        error = last.error or {}
        assert error["type"] == fired["error"], error
        assert len(error["digest"]) == 16, error
        assert ":" in error["where"], error
        assert run.lease.owner is None
