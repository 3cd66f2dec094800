"""The hand-written OTLP encoder writes what the SDK's encoder writes: parsed back with the
official protobuf classes, the two requests are equal, message for message - for a run's real
spans and for spans with everything the engine's never carry (events, links, error status,
remote parents, trace state, every attribute type, two resources and scopes)."""

from typing import Any

from opentelemetry import trace as api
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, TraceState
from test_tracing import traced_run, tracing

from autonomic.observability.otlp import encode_spans
from autonomic.observability.recorded_span import RecordedSpan
from autonomic.observability.trace_context import TraceContext as TraceContext


def assert_same_request(spans: list[Any]) -> None:
    ours = ExportTraceServiceRequest.FromString(encode_spans(spans))
    theirs = sdk_encode(spans)
    assert ours == theirs
    # and byte for byte what protobuf itself writes for that message
    assert encode_spans(spans) == theirs.SerializeToString(deterministic=True)


def test_a_runs_spans_encode_as_the_sdk_encodes_them(sqlite_url):
    t, exporter = tracing()

    traced_run(sqlite_url, t)
    t.messaging("publish", "orders").end()  # the bus's spans are the SDK's, in the same request
    assert t.flush()
    spans = list(exporter.get_finished_spans())
    [root] = [s for s in spans if s.parent is None and s.name.startswith("invoke_agent")]
    assert isinstance(root, RecordedSpan)  # the engine's spans, its run's root included ...
    assert any(not isinstance(s, RecordedSpan) for s in spans)  # ... and an SDK span
    assert_same_request(spans)
    assert_same_request(spans)  # again: from the kept attribute encodings this time


def test_every_field_and_attribute_type_encodes_as_the_sdk_encodes_it():
    exporter = InMemorySpanExporter()
    spans: list[Any] = []
    for service in ("a", "b"):
        provider = TracerProvider(resource=Resource.create({"service.name": service, "n": 3}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        for scope in ("one", "two"):
            tracer = provider.get_tracer(scope, "1.2", schema_url="https://x/schema")
            remote = api.SpanContext(
                0xABC,
                0xDEF,
                is_remote=True,
                trace_flags=api.TraceFlags(1),
                trace_state=TraceState([("k", "v"), ("w", "z")]),
            )
            parent = api.set_span_in_context(api.NonRecordingSpan(remote))
            for kind in SpanKind:
                span = tracer.start_span(
                    f"span {kind.name}",
                    context=parent if kind is SpanKind.SERVER else None,
                    kind=kind,
                    attributes={
                        "s": "text é",
                        "empty": "",
                        "t": True,
                        "f": False,
                        "i": 7,
                        "zero": 0,
                        "neg": -5,
                        "big": 2**40,
                        "d": 2.5,
                        "dz": 0.0,
                        "strs": ["x", "y"],
                        "ints": [1, -2],
                        "bools": [True],
                        "floats": [0.5],
                        "long": "x" * 300,
                    },
                    links=[Link(remote, {"why": "cause"})],
                )
                span.add_event("happened", {"at": 1, "ok": True})
                span.add_event("bare")
                with tracer.start_as_current_span("child") as child:
                    child.record_exception(ValueError("no"))
                    child.set_status(Status(StatusCode.ERROR, "broke"))
                span.set_status(StatusCode.OK)
                span.end()
    spans = list(exporter.get_finished_spans())
    assert len(spans) == 2 * 2 * len(SpanKind) * 2
    assert_same_request(spans)
    assert_same_request(spans)


def test_recorded_spans_with_all_they_can_carry_encode_as_the_sdk_encodes_them():
    """A recorded span keeps its ids as integers and builds its SpanContext objects only when
    read: the byte encoder reads the integers, the SDK's encoder the objects - the same
    request, for a remote parent with a trace state, a recorded span under a recorded span,
    events, and each status."""
    t, exporter = tracing()
    remote = api.SpanContext(
        0xABC, 0xDEF, is_remote=True, trace_flags=api.TraceFlags(1),
        trace_state=TraceState([("k", "v")]),
    )  # fmt: skip
    under = api.set_span_in_context(api.NonRecordingSpan(remote))
    turn = t.start("chat m", under, {"n": 1, "l": ["a", "b"]})
    failing = t.start("execute_tool x", turn, {"x": 1.5})
    failing.add_event("note", {"k": "v"})
    failing.record_exception(ValueError("boom"))
    failing.set_status(Status(StatusCode.ERROR, "boom"))
    failing.end()
    ok = t.start("execute_tool y", turn, {})
    ok.set_status(StatusCode.OK)
    ok.end()
    turn.end()
    plain = t.start("turn 2", t.under(TraceContext.new()), {"s": "é"})
    plain.end()
    consumed = TraceContext.new()
    under_event = t.root(TraceContext(consumed.trace_id, 0x1234), "invoke_agent b", 1.5, {},
                         parent=consumed)  # fmt: skip
    under_event.set_status(Status(StatusCode.ERROR, "FAILED"))
    under_event.end(end_time=2_000_000_000)
    t.root(TraceContext.new(), "invoke_agent a", 1.0, {"autonomic.run.id": "r"}).end()
    assert t.flush()
    spans = list(exporter.get_finished_spans())
    assert len(spans) == 6
    assert all(isinstance(s, RecordedSpan) for s in spans)
    child = next(s for s in spans if s.name == "execute_tool x")
    assert child.parent.span_id == turn.get_span_context().span_id
    assert child.context.trace_state == remote.trace_state
    roots = {s.name: s for s in spans if s.name.startswith("invoke_agent")}
    assert roots["invoke_agent a"].parent is None
    assert roots["invoke_agent b"].parent.span_id == consumed.span_id
    assert roots["invoke_agent b"].context.span_id == 0x1234
    assert_same_request(spans)


def test_a_steps_derived_spans_encode_as_the_sdk_encodes_them_with_content_and_failures(
    sqlite_url,
):
    """The model and tool calls' spans are ``DerivedSpan``s, encoded from fragments kept per
    drive while their attributes were not read: the same bytes as the SDK's encoder makes of
    the attributes they derive - with content on (long texts: multi-byte lengths), a finish
    reason, a failing call (ERROR status), a tool that sets an attribute on its own span while
    it runs (then encoded from the changed dictionary), and the fragments reused by a second
    run."""
    import asyncio

    from opentelemetry import trace as otel

    from autonomic.adapters.model.scripted import ScriptedModel
    from autonomic.bootstrap import build_store
    from autonomic.engine.agent import Agent, AgentRegistry
    from autonomic.engine.executor import Engine
    from autonomic.engine.step_spans import ChatSpan, ToolSpan
    from autonomic.engine.tracing import TracingHook
    from autonomic.governance.runaway.gate import Runaway
    from autonomic.observability import genai
    from autonomic.tools.contract import tool

    @tool(idempotent=True)
    def note(text: str) -> str:
        """Notes ``text`` on its own span."""
        otel.get_current_span().set_attribute("note.length", len(text))
        return text * 3

    @tool(idempotent=True)
    def boom(n: int) -> int:
        """Always fails."""
        raise ValueError(f"no {n}")

    long = "é" * 150
    turns = [
        {"tool_calls": [{"name": "note", "arguments": {"text": long}}]},
        {"tool_calls": [{"name": "boom", "arguments": {"n": 1}}]},
        {"content": "done " + long},
    ]
    t, exporter = tracing(content=True)

    async def go() -> None:
        store = build_store(sqlite_url)
        await store.migrate()
        try:
            agent = Agent(name="n", instructions="note", tools=(note, boom))
            engine = Engine(
                store,
                AgentRegistry([agent]),
                lambda spec: ScriptedModel(list(turns)),
                runaway=Runaway(enabled=False),
                hooks=[TracingHook(t)],
            )
            for _ in range(2):
                await engine.run("n", "go")
        finally:
            await store.close()

    asyncio.run(go())
    assert t.flush()
    spans = list(exporter.get_finished_spans())
    derived = [s for s in spans if isinstance(s, ChatSpan | ToolSpan)]
    assert len(derived) == 2 * (3 + 2)
    untouched = [s for s in derived if s._attrs is None]
    assert len(untouched) == 2 * 4  # the note's span was changed while it ran
    ours = ExportTraceServiceRequest.FromString(encode_spans(spans))  # from the fragments
    assert [s._attrs for s in untouched] == [None] * len(untouched)
    assert ours == sdk_encode(spans)  # reads (derives) every span's attributes
    assert_same_request(spans)  # and again, from the derived dictionaries
    notes = [s for s in derived if s.name == "execute_tool note"]
    assert all(s.attributes["note.length"] == 150 for s in notes)
    assert all(s.attributes[genai.OK] is True for s in notes)
    assert all(long in s.attributes[genai.TOOL_CALL_RESULT] for s in notes)
    booms = [s for s in derived if s.name == "execute_tool boom"]
    assert all(s.status.status_code is StatusCode.ERROR for s in booms)
    assert all(s.attributes[genai.OK] is False for s in booms)
    chats = [s for s in derived if isinstance(s, ChatSpan)]
    assert {c.attributes[genai.FINISH_REASONS] for c in chats} == {("tool_calls",), ("stop",)}


def test_a_tool_span_ended_by_an_exception_encodes_as_the_sdk_encodes_it():
    """An exception that leaves a tool call's effect ends its span with the exception as an
    event and an ERROR status (as ``Tracing.current`` does for any span); a cancellation just
    ends it."""
    from autonomic.core.messages import ToolCall
    from autonomic.engine.step_spans import StepSpans, ToolSpan
    from autonomic.tools.contract import tool

    @tool()
    def act(n: int) -> int:
        """Acts."""
        return n

    t, exporter = tracing()
    trace = TraceContext.new()
    sink = t.sink
    assert sink is not None
    root = api.get_current_span(t.under(trace)).get_span_context()
    steps = StepSpans(
        sink, root, run_id="r", correlation_id="c", worker="w", model="m", content=False
    )
    turn = t.start("turn 1", t.under(trace), {})
    failed = ToolSpan(steps, turn, act, ToolCall("c1", "act", "{}"), 1, None, None)
    failed.raised(ValueError("broke"))
    cancelled = ToolSpan(steps, turn, act, ToolCall("c2", "act", "{}"), 1, None, None)
    cancelled.raised(KeyboardInterrupt())
    turn.end()
    assert t.flush()
    spans = list(exporter.get_finished_spans())
    assert len(spans) == 3
    assert_same_request(spans)
    by_call = {s.attributes.get("gen_ai.tool.call.id"): s for s in spans}
    assert by_call["c1"].status.status_code is StatusCode.ERROR
    assert [e.name for e in by_call["c1"].events] == ["exception"]
    assert by_call["c2"].status.status_code is StatusCode.UNSET
    assert by_call["c2"].parent.span_id == turn.get_span_context().span_id
