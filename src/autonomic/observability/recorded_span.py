"""A span that is only a record until it ends: the cheap span for a run's model and tool calls.

The SDK's span is built for any caller: a lock, bounded and cleaned attributes, the sampler and
every processor's ``on_start`` on creation, a ``SpanContext`` validated for each, all for each
of the two or three spans a durable step makes. The engine's spans need none of that: they are
made by one task, with attribute values the engine chose (strings, numbers, booleans, lists of
strings), under a parent whose sampling decision they follow (the run's root, decided once per
trace by the configured sampler, ``OTEL_TRACES_SAMPLER``). A ``RecordedSpan`` keeps its ids as
plain integers and the few fields that vary; what every span of the engine shares (its kind, no
links, the unset status, the resource and scope of the provider) is read from the class or the
sink. When it ends it goes to the provider's span processors, as the SDK's own span does - to
the batch processor's queue directly when that is the only processor (the check
``BatchSpanProcessor.on_end`` would make, "sampled", holds by construction) - and the exporter
sees a ``ReadableSpan`` (``context``, ``parent``, ``resource``... are built when read;
``otlp.encode_spans`` reads the integers instead).

It is a full ``opentelemetry.trace.Span``: it can be made current (``use_span``), children
started under it nest, ``set_attribute`` / ``set_status`` / ``record_exception`` work until it
ends. Imported only when tracing is on (it imports the SDK).
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import trace as api
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, Tracer
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util import types

_UNSET = UNSET_STATUS = Status(StatusCode.UNSET)
"""The status of every recorded span that has none (one object: the encoder knows it)."""
_ROOT = api.SpanContext(1, 1, is_remote=False, trace_flags=api.TraceFlags(api.TraceFlags.SAMPLED))
"""What a recorded root's context takes its flags and state from: sampled (only a sampled
root is recorded), no state."""
_getrandbits = random.getrandbits
_time_ns = time.time_ns


def new_span_id() -> int:
    """64 random bits, never zero (as the SDK's ``RandomIdGenerator``)."""
    span_id = _getrandbits(64)
    while span_id == 0:
        span_id = _getrandbits(64)
    return span_id


class SpanSink:
    """Where recorded spans go when they end: the provider's processors, with the resource and
    instrumentation scope the provider's tracer stamps on its own spans (the resource read when
    asked, as the provider replaces it in a forked child)."""

    __slots__ = (
        "_batch",
        "_emit",
        "_full",
        "_queue",
        "_seen",
        "_wake",
        "processor",
        "scope",
        "tracer",
    )

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self.processor: SpanProcessor = tracer.span_processor
        self.scope: InstrumentationScope | None = getattr(tracer, "_instrumentation_scope", None)
        self._seen: object = None
        self._emit: Callable[[ReadableSpan], None] = self.processor.on_end
        self._batch: Any = None
        """The batch processor's core when it is the provider's one processor, else ``None``."""
        self._queue: Any = None
        self._full = self._wake = 0

    @property
    def resource(self) -> Resource:
        return self.tracer.resource

    def emit(self, span: RecordedSpan) -> None:
        """Hand an ended span to the processors: straight into the batch processor's queue when
        it is the provider's one processor (re-checked when the provider's list changes).

        The queue is appended to as ``BatchProcessor.emit`` does - newest on the left, the worker
        woken once a batch is full, nothing taken after shutdown or when the queue is full (the
        processor then counts and logs the drop) - without its ``os.getpid()`` system call a
        span: a forked child's processor is reset by the handler it registers with
        ``os.register_at_fork``, which clears this same deque."""
        queue = self._queue
        if (
            queue is not None  # the batch processor alone
            and len(queue) < self._wake  # so no batch is full once it is in: no worker to wake
            and self.processor._span_processors is self._seen  # type: ignore[attr-defined]
            and not self._batch._shutdown
        ):
            queue.appendleft(span)
            return
        self._slow(span)

    def _slow(self, span: RecordedSpan) -> None:
        """``emit`` when a batch fills, the processors changed, the queue is full (the
        processor drops the span and counts it) or the processor is shut down."""
        processors = getattr(self.processor, "_span_processors", None)
        if processors is not self._seen:
            self._adopt(processors)
        queue = self._queue
        if queue is None or len(queue) >= self._full or self._batch._shutdown:
            self._emit(span)
            return
        queue.appendleft(span)
        if len(queue) > self._wake and not self._batch._worker_awaken.is_set():
            self._batch._worker_awaken.set()

    def _adopt(self, processors: object) -> None:
        self._seen = processors
        self._emit = self.processor.on_end
        self._batch = self._queue = None
        if isinstance(processors, tuple) and len(processors) == 1:
            only = processors[0]
            inner = getattr(only, "_batch_processor", None)
            if type(only) is BatchSpanProcessor and inner is not None:
                self._emit = inner.emit
                queue = getattr(inner, "_queue", None)
                full = getattr(inner, "_max_queue_size", None)
                wake = getattr(inner, "_max_export_batch_size", None)
                if (
                    isinstance(queue, deque)
                    and isinstance(full, int)
                    and isinstance(wake, int)
                    and hasattr(inner, "_shutdown")
                    and hasattr(inner, "_worker_awaken")
                ):
                    self._batch, self._queue = inner, queue
                    self._full, self._wake = full, wake - 1

    def start(
        self,
        name: str,
        parent: api.SpanContext,
        attributes: dict[str, Any],
        start_ns: int | None = None,
    ) -> RecordedSpan:
        """A span under ``parent`` (which must be valid and sampled), in its trace."""
        span = RecordedSpan(
            self,
            name,
            parent.trace_id,
            parent.span_id,
            parent.is_remote,
            parent,
            attributes,
            start_ns or _time_ns(),
        )
        if parent.trace_state:
            span._state = parent.trace_state
        return span

    def start_root(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        parent: api.SpanContext | None,
        attributes: dict[str, Any],
        start_ns: int,
    ) -> RecordedSpan:
        """A run's root with the ids its journal names (the caller asked the sampler): under
        ``parent`` (the span that consumed the event that started the run), else a root."""
        span = RecordedSpan(
            self,
            name,
            trace_id,
            parent.span_id if parent is not None else 0,
            parent.is_remote if parent is not None else False,
            parent,
            attributes,
            start_ns,
        )
        span._span_id = span_id
        if parent is not None and parent.trace_state:
            span._state = parent.trace_state
        return span

    def start_under(
        self,
        name: str,
        parent: RecordedSpan,
        attributes: dict[str, Any],
        start_ns: int | None = None,
    ) -> RecordedSpan:
        """A span under a recorded span (no ``SpanContext`` made for either)."""
        span = RecordedSpan(
            self,
            name,
            parent._trace_id,
            parent._span_id,
            False,
            parent,
            attributes,
            start_ns or _time_ns(),
        )
        if parent._state is not None:
            span._state = parent._state
        return span


class RecordedSpan(api.Span, ReadableSpan):
    """A recording span that is its own ``ReadableSpan`` once ended (see the module): its ids
    are integers, the ``SpanContext`` objects ``ReadableSpan`` reads are made when read."""

    # what every recorded span shares, read from the class
    _derived = False
    """Whether the span is a ``DerivedSpan`` (what ``otlp.encode_spans`` asks, not an
    ``isinstance`` - ``api.Span`` is an ABC)."""
    _kind = api.SpanKind.INTERNAL
    _links: tuple[Any, ...] = ()
    _events: list[Event] | tuple[()] = ()
    _status = _UNSET
    _end_time: int | None = None
    _instrumentation_info = None
    _state: api.TraceState | None = None
    """The trace state of the parent's context, when it has one (rare: the engine's roots
    have none)."""

    def __init__(
        self,
        sink: SpanSink,
        name: str,
        trace_id: int,
        parent_id: int,
        parent_remote: bool,
        parent: Any,
        attributes: dict[str, Any],
        start_ns: int,
    ) -> None:
        self._sink = sink
        self._name = name
        self._trace_id = trace_id
        self._span_id = new_span_id()
        self._parent_id = parent_id
        self._parent_remote = parent_remote
        self._parent_of = parent
        """The parent: a ``SpanContext`` or a ``RecordedSpan`` (its flags and state are ours)."""
        self._attributes = attributes
        self._start_time = start_ns

    # -- the ReadableSpan fields built when read -----------------------------------------------

    def _parent_context(self) -> api.SpanContext:
        """The context at the top of this span's chain of recorded parents (whose flags and
        state it carries); a root's own, sampled."""
        parent = self._parent_of
        while isinstance(parent, RecordedSpan):
            parent = parent._parent_of
        return parent if parent is not None else _ROOT

    @property
    def _context(self) -> api.SpanContext:  # type: ignore[override]
        root = self._parent_context()
        return api.SpanContext(
            self._trace_id,
            self._span_id,
            is_remote=False,
            trace_flags=root.trace_flags,
            trace_state=root.trace_state,
        )

    @property
    def _span_context(self) -> api.SpanContext:
        return self._context

    @property
    def _parent(self) -> api.SpanContext | None:  # type: ignore[override]
        parent = self._parent_of
        if isinstance(parent, RecordedSpan):
            return parent._context
        return parent  # type: ignore[no-any-return]

    @property
    def _resource(self) -> Resource:  # type: ignore[override]
        return self._sink.tracer.resource

    @property
    def _instrumentation_scope(self) -> InstrumentationScope | None:  # type: ignore[override]
        return self._sink.scope

    @property
    def _values(self) -> dict[str, Any]:
        return self._attributes  # type: ignore[return-value]

    def get_span_context(self) -> api.SpanContext:
        return self._context

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
            if not self._events:
                self._events = []
            self._events.append(Event(name, attributes, timestamp or _time_ns()))

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
        self._end_time = end_time or _time_ns()
        self._sink.emit(self)


class DerivedSpan(RecordedSpan):
    """A recorded span whose name and attributes are derived, when first read, from the values
    it keeps (a subclass says how: ``_derive_name``, ``_derive_attributes``) - so that making
    one costs the step a few references, and its attribute dictionary is built only if an
    exporter other than ours reads it.

    ``otlp.encode_spans`` asks ``_encoded`` instead: the span's OTLP encoding, put together from
    fragments the subclass keeps for what repeats (a run's ids, a model's or a tool's names). Once the attributes were read - or changed: ``set_attribute``
    works on the derived dictionary - they are encoded from the dictionary like any span's.
    Either way the bytes are the same (``tests/observability/test_otlp.py``)."""

    _derived = True
    """Until its attributes or name are read or changed (then ``False``: encoded from them)."""
    _attrs: dict[str, Any] | None = None
    _renamed: str | None = None

    @property
    def _attributes(self) -> dict[str, Any]:
        attrs = self._attrs
        if attrs is None:
            attrs = self._attrs = self._derive_attributes()
            self._derived = False
        return attrs

    @_attributes.setter
    def _attributes(self, attributes: dict[str, Any]) -> None:
        self._attrs = attributes
        self._derived = False

    @property
    def _name(self) -> str:
        renamed = self._renamed
        return renamed if renamed is not None else self._derive_name()

    @_name.setter
    def _name(self, name: str) -> None:
        self._renamed = name
        self._derived = False

    def _derive_name(self) -> str:
        raise NotImplementedError

    def _derive_attributes(self) -> dict[str, Any]:
        raise NotImplementedError

    def _encoded(self) -> bytes:
        """The span's OTLP encoding, the body of its field in its ``ScopeSpans`` (the encoder
        puts the tag and length before it; asked only while its name and attributes were
        neither read nor changed)."""
        raise NotImplementedError
