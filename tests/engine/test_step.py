"""The step protocol's order and its hooks, seen from a hook: what a capability attaching to the
protocol (tracing, an outbox, an audit chain) can rely on."""

import asyncio
from typing import Any

from autonomic.adapters.model.scripted import ScriptedModel
from autonomic.bootstrap import build_store
from autonomic.core.entries import EntryKind, ToolResult
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.engine.step import Hook
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


class Recorder(Hook):
    """Records every hook point it is called at, with what the journal held then."""

    def __init__(self, refuse: str | None = None, stop_before_turn: int | None = None) -> None:
        self.seen: list[str] = []
        self.committed: list[Any] = []
        self.refuse = refuse
        self.stop_before_turn = stop_before_turn

    async def around_run(self, step, drive):
        self.seen.append("run:start")
        await drive()
        self.seen.append("run:end")

    async def before_model_call(self, step):
        self.seen.append(f"before_model_call turn={step.state.turns + 1}")
        if self.stop_before_turn == step.state.turns + 1:
            await step.stop(RunStatus.SUSPENDED, "a hook stopped it")
            return False
        return True

    async def after_model_call(self, step, turn):
        self.seen.append(f"after_model_call calls={[c.name for c in turn.tool_calls]}")

    async def around_tool_effect(self, step, tool, call, effect):
        intents = [i.tool for i in step.state.intents.values()]
        self.seen.append(f"effect {tool.name} intents={intents}")
        if tool.name == self.refuse:
            refused = ToolResult.failed(call.id, tool.name, "hook_refused", "no", refused=True)
            return refused, False
        return await effect()

    def after_tool_result(self, step, result):
        self.seen.append(f"result {result.tool} ok={result.ok}")
        return result

    def after_step(self, step, entry):
        self.seen.append(f"step {entry.kind.value}")

    def on_commit(self, session, entries):
        self.committed.extend(entries)
        self.seen.append("commit " + ",".join(e.kind.value for e in entries))

    async def after_run(self, step):
        self.seen.append(f"after_run {step.state.status.value}")


TURNS = [
    {"tool_calls": [{"name": "read", "arguments": {"n": 1}}]},
    {"tool_calls": [{"name": "write", "arguments": {"n": 2}}]},
    {"content": "done"},
]


def _run(url: str, hook: Recorder, turns: list[dict[str, Any]] = TURNS) -> tuple[Any, list[Any]]:
    async def go() -> tuple[Any, list[Any]]:
        store = build_store(url)
        await store.migrate()
        agent = Agent(name="rw", instructions="read, then write", tools=(read, write))
        model = ScriptedModel(list(turns))
        engine = Engine(
            store,
            AgentRegistry([agent]),
            lambda spec: model,
            runaway=Runaway(enabled=False),
            hooks=[hook],
        )
        try:
            run = await engine.start("rw", "go")
            final = await engine.run_to_end(run.id)
            return final, await store.load_journal(run.id)
        finally:
            await store.close()

    EFFECTS.clear()
    return asyncio.run(go())


def test_hooks_see_the_protocol_in_order_and_commits_see_the_whole_journal(store_url):
    hook = Recorder()
    run, journal = _run(store_url, hook)
    assert run.status is RunStatus.COMPLETED
    assert hook.seen == [
        "commit transition",  # the claim, before the run's own hooks are known
        "run:start",
        "before_model_call turn=1",
        "after_model_call calls=['read']",
        "step model.response",
        # an idempotent call: its intent rides with its result, so nothing was committed yet
        "effect read intents=['read']",
        "result read ok=True",
        "step tool.result",
        "commit model.response,tool.intent,tool.result",
        "before_model_call turn=2",
        "after_model_call calls=['write']",
        "step model.response",
        # a non-idempotent call: the intent is committed (write-ahead) before the effect
        "commit model.response,tool.intent",
        "effect write intents=['read', 'write']",
        "result write ok=True",
        "step tool.result",
        "commit tool.result",
        "before_model_call turn=3",
        "after_model_call calls=[]",
        "step model.response",
        "commit model.response,transition",
        "run:end",
        "after_run COMPLETED",
    ]
    assert [e.seq for e in hook.committed] == [e.seq for e in journal[1:]]
    assert [e.hash for e in hook.committed] == [e.hash for e in journal[1:]]
    assert EFFECTS == ["read 1", "write 2"]


def test_a_write_ahead_result_rides_with_the_next_write_of_the_same_turn(store_url):
    """Issue 17 item 2: two non-idempotent calls in one turn cost three commits, not four - the
    first call's result is committed with the second call's intent (no model call and no effect
    comes between); the last result of the turn is committed before the next model call."""
    hook = Recorder()
    writes = [
        {"tool_calls": [{"name": "write", "arguments": {"n": n}} for n in (1, 2, 3)]},
        {"tool_calls": [{"name": "write", "arguments": {"n": 4}}]},
        {"content": "done"},
    ]
    run, journal = _run(store_url, hook, writes)
    assert run.status is RunStatus.COMPLETED
    assert [s for s in hook.seen if s.startswith(("commit", "effect", "before_model"))] == [
        "commit transition",
        "before_model_call turn=1",
        "commit model.response,tool.intent",
        "effect write intents=['write']",
        "commit tool.result,tool.intent",
        "effect write intents=['write', 'write']",
        "commit tool.result,tool.intent",
        "effect write intents=['write', 'write', 'write']",
        "commit tool.result",
        "before_model_call turn=2",
        "commit model.response,tool.intent",
        "effect write intents=['write', 'write', 'write', 'write']",
        "commit tool.result",
        "before_model_call turn=3",
        "commit model.response,transition",
    ]
    assert EFFECTS == ["write 1", "write 2", "write 3", "write 4"]
    assert [e.seq for e in hook.committed] == [e.seq for e in journal[1:]]


def test_a_first_execution_result_carries_no_replayed_mark(sqlite_url):
    """Issue 17: ``replayed`` is journaled only on a re-run after recovery (``True``); a first
    execution's result leaves the key out instead of writing ``false`` on every step."""
    _, journal = _run(sqlite_url, Recorder())
    results = [e for e in journal if e.kind is EntryKind.TOOL_RESULT]
    assert len(results) == 2
    assert all("replayed" not in e.payload for e in results)
    assert all(not e.body.replayed for e in results)  # type: ignore[union-attr]


def test_a_hook_can_refuse_an_effect_and_stop_a_run(store_url):
    hook = Recorder(refuse="write", stop_before_turn=3)
    run, journal = _run(store_url, hook)
    assert EFFECTS == ["read 1"]  # the write was refused around its effect
    (refused,) = [
        e.body for e in journal if e.kind is EntryKind.TOOL_RESULT and e.body.tool == "write"
    ]
    assert refused.error == {"code": "hook_refused", "message": "no"}
    assert run.status is RunStatus.SUSPENDED
    assert run.status_reason == "a hook stopped it"
    assert hook.seen[-2:] == ["run:end", "after_run SUSPENDED"]


class SessionWatcher(Hook):
    """An ``on_commit`` hook, as tracing, metrics and the outbox are."""

    def __init__(self) -> None:
        self.told: list[Any] = []

    def on_commit(self, session, entries):
        self.told.append((session, list(entries)))


def test_the_commit_callback_does_not_hold_its_session_back():
    """The commit hooks' callback lives on the session; were it to hold the session, every
    run's session and state would be a reference cycle, freed only when the garbage collector
    runs - which it then does far more often, on every engine with a commit hook (tracing,
    metrics, an outbox): with tracing on, twice as many collections a step."""
    import gc
    import weakref

    from autonomic.engine.step import Hooks

    class Session:  # what the callback is given back: the session it was made for
        on_commit: Any = None

    watcher = SessionWatcher()
    session = Session()
    session.on_commit = Hooks([watcher]).committer(session)  # type: ignore[arg-type]
    session.on_commit(["entry"])
    assert watcher.told == [(session, ["entry"])]
    watcher.told.clear()
    held = weakref.ref(session)
    gc.disable()
    try:
        del session
        assert held() is None  # freed by its reference count alone: no cycle
    finally:
        gc.enable()


def test_each_point_holds_exactly_the_hooks_that_override_it_in_order():
    """``Hooks`` keeps a plan per tuple of hook classes: whatever classes, order and repeats,
    each point holds the hooks whose class overrides it, in the order given (``tool_effect``:
    those that override either of the pair ``before_tool_effect`` / ``after_tool_effect``)."""
    import itertools
    import random

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from autonomic.engine.step import _POINTS, Hooks

    async def _async(self: Any, *args: Any) -> None:
        return None

    def _sync(self: Any, *args: Any) -> None:
        return None

    asynchronous = {"around_run", "before_model_call", "after_model_call", "around_tool_effect",
                    "after_run"}  # fmt: skip
    kinds = []
    named = (*_POINTS, "after_tool_effect")
    for n, chosen in enumerate(
        itertools.chain.from_iterable(
            itertools.combinations(named, k) for k in (0, 1, 2, len(named))
        )
    ):
        body = {p: (_async if p in asynchronous else _sync) for p in chosen}
        points = set(chosen)
        if "after_tool_effect" in points:  # one of the pair: the hook observes both ends
            points.add("before_tool_effect")
        kinds.append((type(f"H{n}", (Hook,), body), frozenset(points)))
    random.Random(5).shuffle(kinds)
    kinds = kinds[:12]

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(0, len(kinds) - 1), max_size=6))
    def check(picks: list[int]) -> None:
        hooks = [kinds[i][0]() for i in picks]
        held = Hooks(hooks)
        assert held.all == tuple(hooks)
        for point in _POINTS:
            expected = tuple(h for h, i in zip(hooks, picks, strict=True) if point in kinds[i][1])
            held_at = "tool_effect" if point == "before_tool_effect" else point
            assert getattr(held, held_at) == expected, point

    check()


class Stop(BaseException):
    """Leaves a tool's effect the way a cancellation does (not a tool failure)."""


@tool(idempotent=True)
def halt() -> int:
    """A tool whose effect is cut short."""
    raise Stop


class Observer(Hook):
    """Only the synchronous points, plus an ``around_tool_effect`` to see where the pair sits."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.commits = 0

    def after_model_turn(self, step, turn):
        self.seen.append(f"turn {turn.turn} calls={[c.name for c in turn.tool_calls]}")

    def before_tool_effect(self, step, tool, call, intent):
        assert intent.call_id == call.id
        assert intent.key.startswith(step.session.run.id + ":")
        self.seen.append(f"before {tool.name}")
        return tool.name

    async def around_tool_effect(self, step, tool, call, effect):
        self.seen.append(f"around {tool.name}")
        return await effect()

    def after_tool_effect(self, began, result, error):
        outcome = f"ok={result.ok}" if result is not None else f"error={type(error).__name__}"
        self.seen.append(f"after {began} {outcome}")

    def on_commit(self, session, entries):
        self.commits += 1

    def on_transition(self, session, transition, at):
        assert session.run.status.value == transition.target  # the run has its new status
        assert at > 0
        self.seen.append(f"transition {transition.source}->{transition.target}")


def test_observers_see_turns_effects_and_transitions_through_the_synchronous_points(store_url):
    """The synchronous points an observing hook (tracing, metrics) uses: each model turn once,
    the ``before_tool_effect`` / ``after_tool_effect`` pair outside every ``around_tool_effect``
    with the call's intent and outcome, and ``on_transition`` only on the commits that change
    the run's status - not on a step's."""
    hook = Observer()
    run, _ = _run(store_url, hook)  # type: ignore[arg-type]
    assert run.status is RunStatus.COMPLETED
    assert hook.seen == [
        "transition PENDING->RUNNING",
        "turn 1 calls=['read']",
        "before read",
        "around read",
        "after read ok=True",
        "turn 2 calls=['write']",
        "before write",
        "around write",
        "after write ok=True",
        "turn 3 calls=[]",
        "transition RUNNING->COMPLETED",
    ]
    assert hook.commits == 5  # the claim, 3 step commits, the end: two carried a transition


def test_an_effect_cut_short_reaches_after_tool_effect_with_its_exception(sqlite_url):
    """A ``BaseException`` that leaves an effect (a cancellation, say) is handed to every
    observer's ``after_tool_effect`` - the last to begin first - then goes on."""
    import pytest

    first, second = Observer(), Observer()

    async def go() -> None:
        store = build_store(sqlite_url)
        await store.migrate()
        agent = Agent(name="h", instructions="halt", tools=(halt,))
        model = ScriptedModel([{"tool_calls": [{"name": "halt", "arguments": {}}]}])
        engine = Engine(
            store,
            AgentRegistry([agent]),
            lambda spec: model,
            runaway=Runaway(enabled=False),
            hooks=[first, second],
        )
        try:
            run = await engine.start("h", "go")
            await engine.run_to_end(run.id)
        finally:
            await store.close()

    order: list[str] = []
    for name, hook in (("first", first), ("second", second)):
        told = hook.after_tool_effect

        def noting(began, result, error, name=name, told=told):
            order.append(name)
            told(began, result, error)

        hook.after_tool_effect = noting  # type: ignore[method-assign]
    with pytest.raises(Stop):
        asyncio.run(go())
    assert first.seen[-3:] == ["before halt", "around halt", "after halt error=Stop"]
    assert second.seen[-3:] == ["before halt", "around halt", "after halt error=Stop"]
    assert order == ["second", "first"]


def test_an_operators_cancel_reaches_on_transition(sqlite_url):
    """A commit made outside a worker (an operator's cancel) is told to ``on_transition`` too:
    tracing ends the root span of the run it ends, whichever process ends it."""
    hook = Observer()

    async def go() -> None:
        store = build_store(sqlite_url)
        await store.migrate()
        agent = Agent(name="rw", instructions="-", tools=(read,))
        engine = Engine(
            store,
            AgentRegistry([agent]),
            lambda spec: ScriptedModel([]),
            runaway=Runaway(enabled=False),
            hooks=[hook],
        )
        try:
            run = await engine.start("rw", "go")
            await engine.cancel(run.id, reason="not needed")
        finally:
            await store.close()

    asyncio.run(go())
    assert hook.seen == ["transition PENDING->CANCELLED"]
