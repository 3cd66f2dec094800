"""A span that is only a record until it ends: the cheap span for a run's turns, model calls
and tool calls.

The SDK's span is built for any caller: a lock, bounded and cleaned attributes, the sampler and
every processor's ``on_start`` on creation, all for each of the three or four spans a durable
step makes. The engine's spans need none of that: they are made by one task, with attribute
values the engine chose (strings, numbers, booleans, lists of strings), under a parent whose
sampling decision they follow (the run's root, decided once per trace by the configured
sampler, ``OTEL_TRACES_SAMPLER``). A ``RecordedSpan`` sets the fields a ``ReadableSpan`` reads
and, when it ends, hands itself to the provider's span processors, as the SDK's own span does:
the batch processor, then the exporter, see no difference.

It is a full ``opentelemetry.trace.Span``: it can be made current (``use_span``), children
started under it nest, ``set_attribute`` / ``set_status`` / ``record_exception`` work until it
ends. Imported only when tracing is on (it imports the SDK).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace as api
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, Tracer
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util import types

_UNSET = Status(StatusCode.UNSET)


def new_span_id() -> int:
    """64 random bits, never zero (as the SDK's ``RandomIdGenerator``)."""
    span_id = random.getrandbits(64)
    while span_id == 0:
        span_id = random.getrandbits(64)
    return span_id


class SpanSink:
    """Where recorded spans go when they end: the provider's processors, with the resource and
    instrumentation scope the provider's tracer stamps on its own spans (the resource read at
    the end, as the provider replaces it in a forked child)."""

    __slots__ = ("processor", "scope", "tracer")

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self.processor: SpanProcessor = tracer.span_processor
        self.scope: InstrumentationScope | None = getattr(tracer, "_instrumentation_scope", None)

    @property
    def resource(self) -> Resource:
        return self.tracer.resource

    def start(
        self,
        name: str,
        parent: api.SpanContext,
        attributes: dict[str, Any],
        start_ns: int | None = None,
    ) -> RecordedSpan:
        """A span under ``parent`` (which must be valid and sampled), in its trace."""
        context = api.SpanContext(
            parent.trace_id,
            new_span_id(),
            is_remote=False,
            trace_flags=parent.trace_flags,
            trace_state=parent.trace_state,
        )
        return RecordedSpan(self, name, context, parent, attributes, start_ns or time.time_ns())


class RecordedSpan(api.Span, ReadableSpan):
    """A recording span that is its own ``ReadableSpan`` once ended (see the module): the fields
    are the ones ``ReadableSpan`` reads, set here without its constructor's defaults."""

    def __init__(
        self,
        sink: SpanSink,
        name: str,
        context: api.SpanContext,
        parent: api.SpanContext,
        attributes: dict[str, Any],
        start_ns: int,
    ) -> None:
        self._sink = sink
        self._name = name
        self._context = context
        self._span_context = context  # typed for get_span_context (ReadableSpan's is Optional)
        self._parent = parent
        self._attributes = attributes
        self._values = attributes  # the same dict, typed as mutable
        self._start_time = start_ns
        self._end_time = None
        self._status = _UNSET
        self._events: list[Event] = []
        self._links = ()
        self._kind = api.SpanKind.INTERNAL
        self._instrumentation_info = None
        self._instrumentation_scope = sink.scope
        self._resource = sink.resource

    def get_span_context(self) -> api.SpanContext:
        return self._span_context

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        if self._end_time is None:
            # a sequence kept immutable, as the SDK keeps it
            self._values[key] = tuple(value) if isinstance(value, list) else value

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._end_time is None:
            self._events.append(Event(name, attributes, timestamp or time.time_ns()))

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end_time is not None:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        # as the SDK's span: OK is final, UNSET never overrides
        if self._status.status_code is StatusCode.OK or status.status_code is StatusCode.UNSET:
            return
        self._status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        event: dict[str, Any] = {
            "exception.type": type(exception).__name__,
            "exception.message": str(exception),
            "exception.escaped": str(escaped),
        }
        event.update(attributes or {})
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = end_time or time.time_ns()
        self._sink.processor.on_end(self)
