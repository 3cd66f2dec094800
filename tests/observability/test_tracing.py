"""Tracing as a hook: the span tree of a run, one trace across the processes that drive it, and
no content in spans unless the operator opts in (exported in memory here; the real OTLP
receiver is in test_trace_backend.py)."""

import asyncio
import json
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from autonomic.adapters.model.scripted import ScriptedModel
from autonomic.bootstrap import build_store
from autonomic.core.entries import RunStarted
from autonomic.core.run import Run, RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.engine.step import Hook
from autonomic.engine.tracing import TracingHook
from autonomic.governance.runaway.gate import Runaway
from autonomic.observability import genai
from autonomic.observability.trace_context import TraceContext
from autonomic.observability.tracing import Tracing, traceparent_of
from autonomic.tools.contract import tool

CANARY = "canary-7f3a9c"


@tool(idempotent=True)
def read(n: int, note: str = "") -> int:
    """An idempotent read."""
    return n


@tool()
def write(n: int) -> str:
    """A non-idempotent write."""
    return "written"


TURNS = [
    {"tool_calls": [{"name": "read", "arguments": {"n": 1, "note": CANARY}}]},
    {"tool_calls": [{"name": "write", "arguments": {"n": 2}}]},
    {"content": "done"},
]


class StopAt(Hook):
    def __init__(self, turn: int) -> None:
        self.turn = turn

    async def before_model_call(self, step):
        if step.state.turns + 1 == self.turn:
            await step.stop(RunStatus.SUSPENDED, "stopped for the test")
            return False
        return True


def engine(store: Any, hooks: list[Hook]) -> Engine:
    agent = Agent(name="rw", instructions="read, then write", tools=(read, write))
    return Engine(
        store,
        AgentRegistry([agent]),
        lambda spec: ScriptedModel(list(TURNS)),
        runaway=Runaway(enabled=False),
        hooks=hooks,
    )


def traced_run(sqlite_url: str, t: Tracing) -> tuple[Run, list[Any]]:
    """The ``rw`` agent's run on a fresh store with ``t``'s hook, and its journal."""

    async def go() -> tuple[Run, list[Any]]:
        store = build_store(sqlite_url)
        await store.migrate()
        try:
            run = await engine(store, [TracingHook(t)]).run("rw", "go")
            return run, await store.load_journal(run.id)
        finally:
            await store.close()

    return asyncio.run(go())


def tracing(content: bool = False) -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return Tracing.build(exporter, content=content), exporter


def spans_of(t: Tracing, exporter: InMemorySpanExporter) -> list[Any]:
    assert t.flush()
    return list(exporter.get_finished_spans())


def by_id(spans: list[Any]) -> dict[int, Any]:
    return {s.context.span_id: s for s in spans}


def parent_name(span: Any, index: dict[int, Any]) -> str | None:
    if span.parent is None:
        return None
    parent = index.get(span.parent.span_id)
    return parent.name if parent is not None else "<absent>"


def turn_of(span: Any, index: dict[int, Any]) -> int | None:
    """The turn a tool call hangs from: its parent is that turn's model call (``chat``) or a
    resumed turn's ``turn N`` span, with the turn's number."""
    parent = index.get(span.parent.span_id) if span.parent is not None else None
    if parent is None or not parent.name.startswith(("chat ", "turn ")):
        return None
    return int(parent.attributes[genai.TURN])


def test_a_run_is_one_trace_with_tools_under_their_turns(sqlite_url):
    t, exporter = tracing()

    run, journal = traced_run(sqlite_url, t)
    assert run.status is RunStatus.COMPLETED
    started = journal[0].body
    assert isinstance(started, RunStarted)
    recorded = TraceContext.parse(started.trace)
    assert recorded is not None

    spans = spans_of(t, exporter)
    index = by_id(spans)
    assert {s.context.trace_id for s in spans} == {recorded.trace_id}
    [root] = [s for s in spans if s.parent is None]
    assert root.name == "invoke_agent rw"
    assert root.context.span_id == recorded.span_id
    assert root.attributes[genai.RUN_STATUS] == "COMPLETED"
    names = sorted(s.name for s in spans)
    assert names.count("autonomic.drive") == 1
    # a turn is its model call's span (no span of its own), under the root
    assert not [n for n in names if n.startswith("turn")]
    chats = sorted((s for s in spans if s.name.startswith("chat")), key=lambda s: s.start_time)
    assert [c.attributes[genai.TURN] for c in chats] == [1, 2, 3]
    tools = {s.name: s for s in spans if s.name.startswith("execute_tool")}
    assert set(tools) == {"execute_tool read", "execute_tool write"}
    assert turn_of(tools["execute_tool read"], index) == 1
    assert turn_of(tools["execute_tool write"], index) == 2
    for name in tools:  # a tool call starts once its model call has ended
        assert tools[name].start_time >= index[tools[name].parent.span_id].end_time
    write_span = tools["execute_tool write"].attributes
    assert write_span[genai.IDEMPOTENCY_KEY].startswith(f"{run.id}:")
    assert write_span[genai.DECISION] == "allow"
    assert write_span[genai.TOOL_VERSION] == "1"
    for chat in chats:
        assert chat.parent.span_id == root.context.span_id
        assert chat.attributes[genai.OPERATION] == "chat"
        assert chat.attributes[genai.REQUEST_MODEL]
        assert genai.INPUT_TOKENS in chat.attributes
        assert genai.COST_USD in chat.attributes
    for span in spans:  # the correlation id on every span; no content by default
        assert span.attributes[genai.CORRELATION_ID] == run.id
        assert CANARY not in json.dumps(dict(span.attributes))


def test_content_goes_into_spans_only_when_opted_in(sqlite_url):
    t, exporter = tracing(content=True)

    traced_run(sqlite_url, t)
    [read_span] = [s for s in spans_of(t, exporter) if s.name == "execute_tool read"]
    assert CANARY in read_span.attributes[genai.TOOL_CALL_ARGUMENTS]


@pytest.mark.parametrize("first_traced", [True, False], ids=["recorded", "derived"])
def test_a_run_driven_by_two_processes_is_one_trace(sqlite_url, first_traced):
    """Two tracer providers stand for two processes: the first stops the run halfway, the second
    (after an operator reopens it) finishes it. A run created without tracing gets the trace
    derived from its id, so both halves still agree."""
    first, first_spans = tracing()
    second, second_spans = tracing()

    async def go() -> str:
        store = build_store(sqlite_url)
        await store.migrate()
        try:
            hooks: list[Hook] = [TracingHook(first)] if first_traced else []
            run = await engine(store, [*hooks, StopAt(2)]).run("rw", "go")
            assert run.status is RunStatus.SUSPENDED
            other = engine(store, [TracingHook(second)])
            await other.reopen(run.id, "go on")
            assert (await other.run_to_end(run.id)).status is RunStatus.COMPLETED
            return run.id
        finally:
            await store.close()

    run_id = asyncio.run(go())
    a = spans_of(first, first_spans) if first_traced else []
    b = spans_of(second, second_spans)
    spans = a + b
    assert len({s.context.trace_id for s in spans}) == 1
    roots = [s for s in spans if s.parent is None]
    assert [r.name for r in roots] == ["invoke_agent rw"]  # emitted once, by whoever ended it
    assert roots[0] in b
    if not first_traced:
        assert roots[0].context.trace_id == TraceContext.of_run(run_id).trace_id
    drives = [s for s in spans if s.name == "autonomic.drive"]
    assert len(drives) == (2 if first_traced else 1)
    assert all(d.parent.span_id == roots[0].context.span_id for d in drives)
    turns = [s for s in spans if s.name.startswith("chat ")]
    assert sorted(t.attributes[genai.TURN] for t in turns) == (
        [1, 2, 3] if first_traced else [2, 3]
    )
    assert all(t.parent.span_id == roots[0].context.span_id for t in turns)
    index = by_id(spans)
    [write_span] = [s for s in b if s.name == "execute_tool write"]
    assert turn_of(write_span, index) == 2


@pytest.mark.parametrize("ended_by", ["cancel", "worker"])
def test_the_root_span_is_ended_once_by_whichever_process_ends_the_run(sqlite_url, ended_by):
    """A run a worker stopped (suspended, waiting for a human) and an operator then cancels from
    another process (the CLI, the API) ends there: that process emits the root, once; a reopen
    (not an end) emits none, and the worker that finishes a reopened run emits it."""
    worker, worker_spans = tracing()
    operator, operator_spans = tracing()

    async def go() -> str:
        store = build_store(sqlite_url)
        await store.migrate()
        try:
            run = await engine(store, [TracingHook(worker), StopAt(2)]).run("rw", "go")
            assert run.status is RunStatus.SUSPENDED
            desk = engine(store, [TracingHook(operator)])
            if ended_by == "cancel":
                assert (await desk.cancel(run.id, "not needed")).status is RunStatus.CANCELLED
            else:
                await desk.reopen(run.id, "go on")
                finished = await engine(store, [TracingHook(worker)]).run_to_end(run.id)
                assert finished.status is RunStatus.COMPLETED
            return run.id
        finally:
            await store.close()

    run_id = asyncio.run(go())
    by_worker, by_operator = spans_of(worker, worker_spans), spans_of(operator, operator_spans)
    roots = [s for s in by_worker + by_operator if s.parent is None]
    assert [r.name for r in roots] == ["invoke_agent rw"]
    [root] = roots
    assert len({s.context.trace_id for s in by_worker + by_operator}) == 1
    if ended_by == "cancel":
        assert root in by_operator
        assert root.attributes[genai.RUN_STATUS] == "CANCELLED"
        assert root.attributes[genai.RUN_ID] == run_id
        assert not root.status.is_ok
    else:
        assert by_operator == []  # a reopen ends nothing
        assert root.attributes[genai.RUN_STATUS] == "COMPLETED"
    drives = [s for s in by_worker if s.name == "autonomic.drive"]
    assert drives
    assert all(d.parent.span_id == root.context.span_id for d in drives)


def test_the_bus_seam_makes_messaging_spans_under_the_current_span():
    t, exporter = tracing()
    parent = t.start("turn 1", None, {})
    with t.current(parent), t.messaging_span("publish", "runs.events") as span:
        carried = traceparent_of(span)
    spans = {s.name: s for s in spans_of(t, exporter)}
    published = spans["publish runs.events"]
    assert published.parent.span_id == spans["turn 1"].context.span_id
    assert published.attributes["messaging.operation.name"] == "publish"
    assert TraceContext.parse(carried) == TraceContext(
        published.context.trace_id, published.context.span_id
    )


def test_a_consumed_event_is_processed_under_the_publish_span_its_traceparent_names():
    from opentelemetry.trace import SpanKind

    t, exporter = tracing()
    producer = TraceContext.new()
    publish = t.messaging("publish", "orders", parent=producer.traceparent, system="kafka")
    carried = traceparent_of(publish)
    publish.end()
    with t.messaging_span("process", "orders", parent=carried):
        pass
    spans = {s.name: s for s in spans_of(t, exporter)}
    published, processed = spans["publish orders"], spans["process orders"]
    assert published.kind is SpanKind.PRODUCER
    assert published.parent.span_id == producer.span_id
    assert published.context.trace_id == producer.trace_id
    assert published.attributes["messaging.system"] == "kafka"
    assert processed.kind is SpanKind.CONSUMER
    assert processed.parent.span_id == published.context.span_id
    assert processed.context.trace_id == producer.trace_id


def test_the_configured_sampler_keeps_or_drops_a_runs_trace_whole_across_processes(
    sqlite_url, monkeypatch
):
    """OTEL_TRACES_SAMPLER decides per run trace, from its trace id, the same in every process:
    each run here is driven by two (a stop, then a reopen elsewhere); a sampled run has all its
    spans from both, a dropped one none - never half a tree."""
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    first, first_spans = tracing()
    second, second_spans = tracing()
    ratio = TraceIdRatioBased(0.5)

    async def go() -> list[tuple[str, int]]:
        store = build_store(sqlite_url)
        await store.migrate()
        runs = []
        try:
            for _ in range(8):
                run = await engine(store, [TracingHook(first), StopAt(2)]).run("rw", "go")
                other = engine(store, [TracingHook(second)])
                await other.reopen(run.id, "go on")
                assert (await other.run_to_end(run.id)).status is RunStatus.COMPLETED
                started = (await store.load_journal(run.id))[0].body
                assert isinstance(started, RunStarted)
                trace = TraceContext.parse(started.trace)
                assert trace is not None
                runs.append((run.id, trace.trace_id))
        finally:
            await store.close()
        return runs

    runs = asyncio.run(go())
    a, b = spans_of(first, first_spans), spans_of(second, second_spans)
    for run_id, trace_id in runs:
        kept = ratio.should_sample(None, trace_id, "x").decision.is_sampled()
        in_a = [s for s in a if s.context.trace_id == trace_id]
        in_b = [s for s in b if s.context.trace_id == trace_id]
        if not kept:
            assert in_a == [], run_id
            assert in_b == [], run_id
            continue
        names = sorted(s.name for s in in_a + in_b)
        assert names.count("invoke_agent rw") == 1
        assert names.count("autonomic.drive") == 2
        turns = {s.attributes[genai.TURN] for s in in_a + in_b if s.name.startswith("chat ")}
        assert turns == {1, 2, 3}
        assert {"execute_tool read", "execute_tool write"} <= set(names)


def test_a_sampler_that_drops_everything_leaves_no_span(sqlite_url, monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    t, exporter = tracing()

    assert traced_run(sqlite_url, t)[0].status is RunStatus.COMPLETED
    assert spans_of(t, exporter) == []


def test_a_sandbox_span_nests_under_the_tool_span_with_its_correlation_id(monkeypatch):
    """The tool call's span is a RecordedSpan; the sandbox tool finds it as the current span,
    hangs its own under it and copies the correlation id from it."""
    import autonomic.observability.tracing as tracing_module
    from autonomic.observability.recorded_span import RecordedSpan
    from autonomic.ports.sandbox import Ended, Result
    from autonomic.toolbox.python_exec import SandboxObservation

    t, exporter = tracing()
    monkeypatch.setattr(tracing_module, "_SHARED", t)
    tool = t.start(
        "execute_tool python_exec", t.under(TraceContext.new()), {genai.CORRELATION_ID: "c-1"}
    )
    assert isinstance(tool, RecordedSpan)
    with t.current(tool), SandboxObservation("namespace") as seen:
        seen.ended(Result(Ended.EXIT, 0, "", "", False, False, 0.01))
    spans = {s.name: s for s in spans_of(t, exporter)}
    box = spans["sandbox.execute namespace"]
    assert box.parent.span_id == spans["execute_tool python_exec"].context.span_id
    assert box.context.trace_id == tool.get_span_context().trace_id
    assert box.attributes[genai.CORRELATION_ID] == "c-1"
    assert box.attributes[genai.SANDBOX_END] == str(Ended.EXIT)


def test_a_recorded_span_keeps_the_sdk_spans_rules():
    """Status: OK is final and UNSET never overrides; nothing changes once ended; an exception
    inside ``current`` is recorded as an event with an ERROR status, as the SDK's span does."""
    from opentelemetry.trace import StatusCode

    t, exporter = tracing()
    parent = t.under(TraceContext.new())
    failing = t.start("failing", parent, {"a": 1})
    with pytest.raises(ValueError, match="boom"), t.current(failing):
        raise ValueError("boom")
    ok = t.start("ok", parent, {})
    ok.set_status(StatusCode.OK)
    ok.set_status(StatusCode.ERROR, "late")
    ok.set_attribute("list", ["x", "y"])
    ok.end()
    ok.set_attribute("after", 1)
    ok.end()  # a second end hands nothing over
    spans = {s.name: s for s in spans_of(t, exporter)}
    assert len(spans_of(t, exporter)) == 2
    assert spans["failing"].status.status_code is StatusCode.ERROR
    assert [e.name for e in spans["failing"].events] == ["exception"]
    assert spans["failing"].events[0].attributes["exception.message"] == "boom"
    assert spans["ok"].status.status_code is StatusCode.OK
    assert spans["ok"].attributes["list"] == ("x", "y")
    assert "after" not in spans["ok"].attributes


def test_a_span_started_under_a_span_hangs_from_it_with_sdk_spans_too():
    """The SDK path (``_sink`` off, as the benchmark's before) still puts a span under the span
    it is given, not under whatever is current."""
    for recorded in (True, False):
        t, exporter = tracing()
        if not recorded:
            t._sink = None
        parent = t.start("parent", t.under(TraceContext.new()), {})
        other = t.start("other", t.under(TraceContext.new()), {})
        with t.current(other):
            t.start("child", parent, {}).end()
        parent.end()
        spans = {s.name: s for s in spans_of(t, exporter)}
        assert spans["child"].parent.span_id == spans["parent"].context.span_id, recorded
        assert spans["child"].context.trace_id == spans["parent"].context.trace_id, recorded


def test_a_turn_resumed_by_another_process_hangs_its_tool_calls_from_a_turn_span(sqlite_url):
    """A turn is its model call's span - but a process that resumes a turn whose model call
    another made (and died after) has no such span: its tool calls hang from a ``turn N`` span
    of its own, under the root, with the turn's number; the model call's span is the first
    process's."""
    import time

    from autonomic.testing.crash import RaiseAt, SimulatedCrash

    first, first_spans = tracing()
    second, second_spans = tracing()
    agent = Agent(name="rw", instructions="read, then write", tools=(read, write))

    def engine_of(store: Any, t: Tracing, **kwargs: Any) -> Engine:
        return Engine(
            store,
            AgentRegistry([agent]),
            lambda spec: ScriptedModel(list(TURNS)),
            runaway=Runaway(enabled=False),
            hooks=[TracingHook(t)],
            **kwargs,
        )

    async def go() -> str:
        store = build_store(sqlite_url)
        await store.migrate()
        try:
            # the third commit: turn 2's model call and the write's intent; then it "dies"
            dying = engine_of(store, first, faults=RaiseAt("after_commit", 3), owner="dead")
            run = await dying.start("rw", "go")
            with pytest.raises(SimulatedCrash):
                await dying.run_to_end(run.id)
            rescuer = engine_of(store, second, clock=lambda: time.time() + 3600, owner="rescuer")
            doubted = await rescuer.run_to_end(run.id)
            assert doubted.status is RunStatus.WAITING_FOR_HUMAN  # the write is in doubt
            await rescuer.settle(run.id, executed=False, by="ops", reason="it did not run")
            final = await rescuer.run_to_end(run.id)
            assert final.status is RunStatus.COMPLETED, final.status_reason
            return run.id
        finally:
            await store.close()

    asyncio.run(go())
    a, b = spans_of(first, first_spans), spans_of(second, second_spans)
    index = by_id(a + b)
    [chat_2] = [s for s in a if s.name.startswith("chat ") and s.attributes[genai.TURN] == 2]
    [write_span] = [s for s in b if s.name == "execute_tool write"]
    turn = index[write_span.parent.span_id]
    assert turn in b
    assert turn.name == "turn 2"
    assert turn.attributes[genai.TURN] == 2
    assert turn.attributes[genai.RESUMED] is True
    [root] = [s for s in b if s.parent is None]
    assert turn.parent.span_id == root.context.span_id == chat_2.parent.span_id
    assert turn_of(write_span, index) == 2


def test_a_model_calls_span_is_ended_once_with_sdk_spans_too(sqlite_url, caplog):
    """A turn's span is its model call's, ended when the call returns: the hook does not end it
    again when the turn is over (the SDK's span warns of a second ``end``; the benchmark's
    before runs on SDK spans)."""
    t, exporter = tracing()
    t._sink = None

    traced_run(sqlite_url, t)
    names = sorted(s.name for s in spans_of(t, exporter))
    assert names.count("chat scripted") == 3
    assert "Calling end() on an ended span" not in caplog.text


def test_recorded_spans_go_into_the_batch_processors_queue_as_its_emit_puts_them(
    monkeypatch, caplog
):
    """A recorded span is appended to the batch processor's queue directly (not through its
    ``emit``, which makes a system call a span): a full batch wakes the exporter's thread, a
    full queue drops a span (the processor logs and counts it), nothing is taken after
    shutdown, and a processor added later gets the spans through the provider."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "3")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
    t, exporter = tracing()
    sink = t.sink
    assert sink is not None
    parent = t.under(TraceContext.new())
    t.start("a", parent, {}).end()
    batch = sink._batch
    assert batch is not None  # the fast path was taken
    assert batch._queue[0].name == "a"
    batch._worker_awaken.clear()
    batch._export_lock.acquire()  # the exporter's thread, once woken, waits for the test
    try:
        t.start("b", parent, {}).end()
        assert batch._worker_awaken.is_set()  # a batch is full: the exporter's thread is woken
        batch._queue.append(batch._queue[0])  # the queue is full (3)
        t.start("newest", parent, {}).end()
        # as the processor's own emit: logged and counted, the oldest span dropped
        assert [s.name for s in batch._queue] == ["newest", "b", "a"]
        assert "Queue full" in caplog.text
    finally:
        batch._export_lock.release()
    assert t.flush()
    other = InMemorySpanExporter()
    t.provider.add_span_processor(SimpleSpanProcessor(other))
    t.start("both", parent, {}).end()
    assert [s.name for s in other.get_finished_spans()] == ["both"]
    t.shutdown()
    t.start("late", parent, {}).end()
    assert "late" not in [s.name for s in exporter.get_finished_spans()]


@pytest.mark.parametrize(
    ("sampler", "keeps_all"),
    [
        (None, True),  # the SDK's default: parent-based over always_on
        ("always_on", True),
        ("parentbased_always_on", True),
        ("traceidratio", False),
        ("parentbased_traceidratio", False),
        ("always_off", False),
        ("parentbased_always_off", False),
    ],
)
def test_a_sampler_that_keeps_every_trace_is_not_asked_each_run(sampler, keeps_all, monkeypatch):
    """``sampled`` answers yes without the sampler when it keeps every root (twice a run saved);
    any other sampler is asked about each trace id, and its answer is the one given."""
    from opentelemetry.sdk.trace.sampling import Decision

    if sampler is not None:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    t, _ = tracing()
    asked: list[int] = []
    real = t.provider.sampler.should_sample

    def counting(context, trace_id, *rest, **named):  # type: ignore[no-untyped-def]
        asked.append(trace_id)
        return real(context, trace_id, *rest, **named)

    monkeypatch.setattr(t.provider.sampler, "should_sample", counting)
    ids = [TraceContext.new().trace_id for _ in range(40)]
    answers = [t.sampled(i) for i in ids]
    expected = [real(None, i, "x").decision is Decision.RECORD_AND_SAMPLE for i in ids]
    assert answers == expected
    assert asked == ([] if keeps_all else ids)


def test_a_turns_calls_acted_together_each_run_under_their_own_span(sqlite_url):
    """With ``parallel_tools`` a turn's idempotent calls run concurrently, each in a task of its
    own: each call's span is the current one while its effect runs (what a sandbox or an
    instrumented client nests under), none leaks into another call or past its effect, and all
    hang from the turn's model call."""
    from opentelemetry import trace as otel

    seen: dict[int, tuple[int, int]] = {}
    gate = asyncio.Event()

    @tool(idempotent=True)
    async def fetch(n: int) -> int:
        """Fetch one thing (every call waits for all three to have started)."""
        seen[n] = (otel.get_current_span().get_span_context().span_id, 0)
        if len(seen) == 3:
            gate.set()
        await gate.wait()
        seen[n] = (seen[n][0], otel.get_current_span().get_span_context().span_id)
        return n

    turns = [
        {"tool_calls": [{"name": "fetch", "arguments": {"n": n}} for n in (1, 2, 3)]},
        {"content": "done"},
    ]
    t, exporter = tracing()
    after: list[int] = []

    class After(Hook):
        def after_tool_result(self, step, result):
            after.append(otel.get_current_span().get_span_context().span_id)
            return result

    async def go() -> Run:
        store = build_store(sqlite_url)
        await store.migrate()
        agent = Agent(name="p", instructions="fetch", tools=(fetch,), parallel_tools=True)
        try:
            return await Engine(
                store,
                AgentRegistry([agent]),
                lambda spec: ScriptedModel(list(turns)),
                runaway=Runaway(enabled=False),
                hooks=[TracingHook(t), After()],
            ).run("p", "go")
        finally:
            await store.close()

    run = asyncio.run(go())
    assert run.status is RunStatus.COMPLETED
    spans = spans_of(t, exporter)
    index = by_id(spans)
    tools = [s for s in spans if s.name == "execute_tool fetch"]
    assert len(tools) == 3
    assert all(turn_of(s, index) == 1 for s in tools)
    ids = {s.context.span_id for s in tools}
    assert {before for before, _ in seen.values()} == ids  # each call under a span of its own
    assert all(before == later for before, later in seen.values())  # through the whole effect
    assert len(after) == 3
    assert not set(after) & ids  # none left current once the calls were over


def test_a_step_span_waiting_for_its_batch_keeps_no_container_of_the_step_alive(sqlite_url):
    """A span waits in the batch processor's queue until its batch is exported: every
    container it refers to lives as long, counts towards the garbage collector's next young
    collection and is walked by each. A step's spans refer only to what lives for the whole
    drive (the sink, the drive's ``StepSpans``, the tool, the turn's span) - not to the
    turn's ``ModelCall`` or ``Usage``, whose values they copy."""
    import gc

    from autonomic.engine.step_spans import ChatSpan, StepSpans, ToolSpan
    from autonomic.observability.recorded_span import RecordedSpan, SpanSink
    from autonomic.tools.contract import Tool

    t, exporter = tracing()
    run, _ = traced_run(sqlite_url, t)
    assert run.status is RunStatus.COMPLETED
    spans = [s for s in spans_of(t, exporter) if isinstance(s, ChatSpan | ToolSpan)]
    assert {type(s) for s in spans} == {ChatSpan, ToolSpan}
    drive_long = (SpanSink, StepSpans, Tool, RecordedSpan)
    for span in spans:
        held = [r for r in gc.get_referents(span) if gc.is_tracked(r) and not isinstance(r, type)]
        assert [r for r in held if not isinstance(r, drive_long)] == [], type(span).__name__
    chat = next(s for s in spans if isinstance(s, ChatSpan))
    assert chat.attributes[genai.INPUT_TOKENS] >= 0  # the copied values still make the span
