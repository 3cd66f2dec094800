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
