"""A span that is only a record until it ends: the cheap span for a run's turns, model calls
and tool calls.

The SDK's span is built for any caller: a lock, bounded and cleaned attributes, the sampler and
every processor's ``on_start`` on creation, all for each of the three or four spans a durable
step makes. The engine's spans need none of that: they are made by one task, with attribute
values the engine chose (strings, numbers, booleans, lists of strings), under a parent whose
sampling decision they follow (the run's root, decided once per trace by the configured
sampler, ``OTEL_TRACES_SAMPLER``). A ``RecordedSpan`` keeps its fields in slots and, when it
ends, hands one ``ReadableSpan`` - what the SDK's own span hands over - to the provider's span
processors: the batch processor, then the exporter, see no difference.

It is a full ``opentelemetry.trace.Span``: it can be made current (``use_span``), children
started under it nest, ``set_attribute`` / ``set_status`` / ``record_exception`` work until it
ends. Imported only when tracing is on (it imports the SDK).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
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

    __slots__ = ("processor", "tracer", "scope")

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


class RecordedSpan(api.Span):
    """A recording span that becomes a ``ReadableSpan`` when it ends (see the module)."""

    __slots__ = ("_sink", "_name", "_context", "_parent", "_attributes", "_start", "_status",
                 "_events", "_ended")  # fmt: skip

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
        self._parent = parent
        self._attributes = attributes
        self._start = start_ns
        self._status = _UNSET
        self._events: list[Event] | None = None
        self._ended = False

    @property
    def attributes(self) -> Mapping[str, Any]:
        """The attributes set so far (read by a child that copies the correlation id)."""
        return self._attributes

    def get_span_context(self) -> api.SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return not self._ended

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        if not self._ended:
            self._attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        if not self._ended:
            self._attributes.update(attributes)

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        if not self._ended:
            if self._events is None:
                self._events = []
            self._events.append(Event(name, attributes, timestamp or time.time_ns()))

    def update_name(self, name: str) -> None:
        if not self._ended:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._ended:
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
        if self._ended:
            return
        self._ended = True
        attributes = self._attributes
        for key, value in attributes.items():
            if isinstance(value, list):  # as the SDK keeps a sequence: immutable
                attributes[key] = tuple(value)
        sink = self._sink
        events: Sequence[Event] = tuple(self._events) if self._events else ()
        sink.processor.on_end(
            ReadableSpan(
                name=self._name,
                context=self._context,
                parent=self._parent,
                resource=sink.resource,
                attributes=attributes,
                events=events,
                status=self._status,
                start_time=self._start,
                end_time=end_time or time.time_ns(),
                instrumentation_scope=sink.scope,
            )
        )
