"""Traces over OTLP/HTTP, configured by the standard ``OTEL_*`` variables.

``Tracing.from_environment()`` is ``None`` - and the OpenTelemetry SDK is never imported - unless
an endpoint is set (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``)
and neither ``OTEL_SDK_DISABLED=true`` nor ``OTEL_TRACES_EXPORTER=none`` turns it off. The SDK
reads the rest itself: ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_EXPORTER_OTLP_HEADERS``, the batch processor's ``OTEL_BSP_*``.

A run's spans are pinned to the trace its journal names (``trace_context``): the root span's
ids are chosen, not drawn (``root``; on the SDK's path, through an id generator that takes the
next ids from a context variable), so whichever process ends the run emits the root with the
ids every other process already used as the parent.

A run's spans - its root, drives, model calls (a turn's span), tool calls, the sandbox's - are
``RecordedSpan``s (``recorded_span.py``: the SDK's span without its per-span lock, attribute
cleaning and sampler call), exported by ``otlp.FastOTLPSpanExporter`` (the request's protobuf
bytes written directly). A run's trace is sampled by the configured sampler
(``OTEL_TRACES_SAMPLER``) from its trace id, so every process that drives it decides alike.

``AUTONOMIC_TRACE_CONTENT=1`` lets prompts, answers and tool arguments/results into spans; off
by default, and even then secrets are masked (``scrub``). The outbox relay and the inbox use
``Tracing.messaging_span`` for each publish and consume (``engine/outbox.py``,
``engine/inbox.py``).
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from autonomic.errors import ConfigError
from autonomic.observability.trace_context import TraceContext

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from autonomic.observability.recorded_span import SpanSink

_PINNED: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar(
    "autonomic_pinned_ids", default=None
)
_JOINING: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar(
    "autonomic_joining", default=None
)
_LOCK = threading.Lock()
_SHARED: Tracing | None = None
_attach: Any = None  # opentelemetry.context's, bound when the first Tracing is made
_detach: Any = None

Attributes = Mapping[str, str | int | float | bool | list[str] | tuple[str, ...]]


def enabled_by_environment(env: Mapping[str, str] | None = None) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces to be exported."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def content_enabled(env: Mapping[str, str] | None = None) -> bool:
    """``AUTONOMIC_TRACE_CONTENT=1``: prompts and tool content may go into spans."""
    env = os.environ if env is None else env
    return env.get("AUTONOMIC_TRACE_CONTENT", "").strip() in ("1", "true", "yes")


def _keeps_every_root(sampler: object) -> bool:
    """Whether ``sampler`` records every root it is asked about: ``always_on``, or parent-based
    over ``always_on`` (the SDK's default), which for a root without a parent is the same. Any
    other sampler (``traceidratio``...) is asked each time."""
    from opentelemetry.sdk.trace import sampling

    if sampler is sampling.ALWAYS_ON:
        return True
    return (
        type(sampler) is sampling.ParentBased
        and getattr(sampler, "_root", None) is sampling.ALWAYS_ON
    )


class Tracing:
    """A tracer provider exporting over OTLP/HTTP with a batch processor, and the span helpers
    the engine, the sandbox tool and the bus use."""

    def __init__(self, provider: TracerProvider, *, content: bool = False) -> None:
        from opentelemetry import trace as api

        from autonomic.observability.recorded_span import RecordedSpan
        from autonomic.observability.recorded_span import SpanSink as Sink

        global _attach, _detach
        from opentelemetry import context

        _attach, _detach = context.attach, context.detach

        self._api: Any = api  # kept: ``start`` and ``current`` run a few times a step
        self._recorded = RecordedSpan
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("autonomic")
        self.content = content
        self._sink: SpanSink | None = Sink(self.tracer)  # type: ignore[arg-type]
        """``None``: every span is the SDK's (only ``observability_bench`` sets it, to measure
        what recorded spans save)."""
        self._flags = (
            api.TraceFlags(api.TraceFlags.DEFAULT),
            api.TraceFlags(api.TraceFlags.SAMPLED),
        )
        """A root's trace flags, not sampled and sampled (indexed by the sampler's answer)."""
        self._keeps_all = _keeps_every_root(provider.sampler)
        """The sampler keeps every run's trace (the default): ``sampled`` need not ask it."""

    @staticmethod
    def from_environment() -> Tracing | None:
        """This process's tracing (one provider per process, flushed at exit), or ``None``."""
        global _SHARED
        if not enabled_by_environment():
            return None
        with _LOCK:
            if _SHARED is None:
                try:
                    _SHARED = Tracing.build(content=content_enabled())
                except ImportError as exc:
                    raise ConfigError(
                        f"tracing is configured (OTEL_EXPORTER_OTLP_ENDPOINT) but {exc.name} is "
                        "not installed",
                        hint="pip install 'autonomic[observability]', or unset the OTEL_* "
                        "variables",
                    ) from None
                atexit.register(_SHARED.shutdown)
            return _SHARED

    @staticmethod
    def build(exporter: Any = None, *, content: bool = False) -> Tracing:
        """A provider with a batch processor over ``exporter`` (default: OTLP/HTTP from the
        environment)."""
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if exporter is None:
            from autonomic.observability.otlp import FastOTLPSpanExporter

            exporter = FastOTLPSpanExporter()
        provider = TracerProvider(id_generator=_pinned_ids())
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return Tracing(provider, content=content)

    @property
    def sink(self) -> SpanSink | None:
        """Where recorded spans go (``None``: every span is the SDK's)."""
        return self._sink

    def current_setter(self) -> tuple[Callable[[Span], object], Callable[[Any], None]]:
        """``enter(span)`` makes ``span`` the current span and returns a token, ``leave(token)``
        restores the context before (``current`` without its object and its exception
        handling, for the engine's span a tool call): straight on the context variable when the
        runtime context is OpenTelemetry's default one, else through ``attach``/``detach``."""
        from opentelemetry import context
        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
        from opentelemetry.trace.propagation import _SPAN_KEY

        runtime = getattr(context, "_RUNTIME_CONTEXT", None)
        variable = getattr(runtime, "_current_context", None)
        if type(runtime) is ContextVarsRuntimeContext and isinstance(
            variable, contextvars.ContextVar
        ):
            made = context.Context
            get, put = variable.get, variable.set
            store = dict.__setitem__  # on a Context no one holds yet (its own refuses)

            def enter(span: Span) -> object:
                values = made(get())
                store(values, _SPAN_KEY, span)
                return put(values)

            return enter, variable.reset
        api = self._api

        def attach(span: Span) -> object:
            return context.attach(api.set_span_in_context(span))

        return attach, context.detach

    def shutdown(self) -> None:
        """Export what is queued and stop (called at exit)."""
        self.provider.shutdown()

    def flush(self, timeout_ms: int = 10_000) -> bool:
        return bool(self.provider.force_flush(timeout_ms))

    # -- spans ----------------------------------------------------------------------------------

    def root(
        self,
        trace: TraceContext,
        name: str,
        start_s: float,
        attributes: Attributes,
        *,
        parent: TraceContext | None = None,
    ) -> Span:
        """The run's root span, with the ids its journal names (ended by the caller); under
        ``parent`` when the run was started by an event (the span that consumed it).

        A recorded span when the configured sampler keeps the run's trace (asked about its trace
        id, as ``under`` asks for the spans below it), else a non-recording one."""
        if self._sink is not None:
            api = self._api
            if not self.sampled(trace.trace_id):
                return cast(
                    "Span",
                    api.NonRecordingSpan(api.SpanContext(trace.trace_id, trace.span_id, False)),
                )
            above = None
            if parent is not None:
                above = api.SpanContext(
                    parent.trace_id,
                    parent.span_id,
                    is_remote=True,
                    trace_flags=api.TraceFlags(api.TraceFlags.SAMPLED),
                )
            return cast(
                "Span",
                self._sink.start_root(
                    name, trace.trace_id, trace.span_id, above, dict(attributes), _ns(start_s)
                ),
            )

        from opentelemetry.context import Context

        token = _PINNED.set(trace)
        try:
            return self.tracer.start_span(
                name,
                context=self.under(parent) if parent is not None else Context(),
                attributes=attributes,
                start_time=_ns(start_s),
            )
        finally:
            _PINNED.reset(token)

    def under(self, trace: TraceContext) -> Context:
        """A context whose parent is the run's root span (``root_span``)."""
        return cast("Context", self._api.set_span_in_context(self.root_span(trace)))

    def root_span(self, trace: TraceContext) -> Span:
        """The run's root span (wherever and whenever it is emitted) as a non-recording span
        to start others under, sampled or not as the root is: every process asks the
        configured sampler about the same trace id, so a trace is kept or dropped whole."""
        api = self._api
        flags = self._flags[self.sampled(trace.trace_id)]
        return cast(
            "Span",
            api.NonRecordingSpan(
                api.SpanContext(trace.trace_id, trace.span_id, is_remote=True, trace_flags=flags)
            ),
        )

    def sampled(self, trace_id: int) -> bool:
        """The sampler's decision for a run's root in ``trace_id`` (``OTEL_TRACES_SAMPLER``:
        the default samples everything; ``traceidratio`` and ``parentbased_traceidratio``
        decide from the trace id alone, the same in every process)."""
        if self._keeps_all:  # asked twice a run: the default's answer is always yes
            return True
        from opentelemetry.context import Context
        from opentelemetry.sdk.trace.sampling import Decision

        result = self.provider.sampler.should_sample(Context(), trace_id, "invoke_agent")
        return result.decision is Decision.RECORD_AND_SAMPLE

    def start(
        self,
        name: str,
        parent: Span | Context | None,
        attributes: Attributes,
        start_s: float | None = None,
    ) -> Span:
        """A span under ``parent`` (a span, a context, or the current span when ``None``).

        Under a parent, the span follows the parent's sampling decision (parent-based, as the
        standard samplers are) and is a ``RecordedSpan``: no lock, no per-attribute cleaning,
        no sampler call - the engine makes two of these a step. Without a parent it
        is a root, and the SDK's tracer and sampler make it."""
        api = self._api
        sink = self._sink
        if sink is not None and isinstance(parent, self._recorded):
            # under one of ours (a tool call under its model call): sampled, as it was
            return cast(
                "Span",
                sink.start_under(
                    name,
                    parent,
                    attributes if type(attributes) is dict else dict(attributes),
                    _ns(start_s) if start_s is not None else None,
                ),
            )
        span_parent: Span | None = None
        if parent is None or isinstance(parent, dict):  # a Context is a dict
            context = api.get_current_span(parent).get_span_context()
        else:
            span_parent = parent
            context = span_parent.get_span_context()
        if context.is_valid and sink is not None:
            if not context.trace_flags.sampled:
                from autonomic.observability.recorded_span import new_span_id

                return cast(
                    "Span",
                    api.NonRecordingSpan(
                        api.SpanContext(context.trace_id, new_span_id(), False, context.trace_flags)
                    ),
                )
            return cast(
                "Span",
                sink.start(
                    name,
                    context,
                    attributes if type(attributes) is dict else dict(attributes),
                    _ns(start_s) if start_s is not None else None,
                ),
            )
        under = (
            api.set_span_in_context(span_parent)
            if span_parent is not None
            else cast("Context | None", parent)
        )
        return self.tracer.start_span(
            name,
            context=under,
            attributes=attributes,
            start_time=_ns(start_s) if start_s is not None else None,
        )

    @staticmethod
    def context_of(span: Span) -> Context:
        """A context whose parent is ``span`` (made once for a span many children hang from)."""
        from opentelemetry import trace as api

        return api.set_span_in_context(span)

    def current(self, span: Span) -> _Current:
        """Make ``span`` the current span (children started inside nest under it) and end it;
        an exception leaving the block is recorded on it with an ERROR status (as
        ``opentelemetry.trace.use_span`` does, without its two generator frames)."""
        return _Current(span, self._api)

    @contextlib.contextmanager
    def messaging_span(
        self,
        operation: str,
        destination: str,
        attributes: Attributes | None = None,
        *,
        parent: str | None = None,
        system: str = "autonomic",
    ) -> Iterator[Span]:
        """A span per publish or consume of an event (messaging conventions), current while
        the block runs.

        ``parent``: the ``traceparent`` the span hangs from - for a publish, the producing
        run's root (what the outbox staged); for a consume, the publish span the CloudEvent
        carries - else the current span. The relay writes the publish span's own
        ``traceparent_of(span)`` into the CloudEvent, so the consumer's span is its child."""
        from opentelemetry import trace as api

        span = self.messaging(operation, destination, attributes, parent=parent, system=system)
        with api.use_span(span, end_on_exit=True):
            yield span

    def messaging(
        self,
        operation: str,
        destination: str,
        attributes: Attributes | None = None,
        *,
        parent: str | None = None,
        system: str = "autonomic",
    ) -> Span:
        """``messaging_span``'s span, started but neither current nor ended (the relay ends a
        batch's spans together, when the bus has taken the batch)."""
        from opentelemetry.trace import SpanKind

        kind = SpanKind.PRODUCER if operation in ("publish", "send") else SpanKind.CONSUMER
        attrs = {
            "messaging.operation.name": operation,
            "messaging.operation.type": "send" if kind is SpanKind.PRODUCER else "process",
            "messaging.destination.name": destination,
            "messaging.system": system,
            **(attributes or {}),
        }
        carried = TraceContext.parse(parent) if parent else None
        context = self.under(carried) if carried is not None else None
        return self.tracer.start_span(
            f"{operation} {destination}", context=context, kind=kind, attributes=attrs
        )


class _Current:
    """``Tracing.current``'s context manager."""

    __slots__ = ("_api", "_span", "_token")

    def __init__(self, span: Span, api: Any) -> None:
        self._span = span
        self._api = api
        self._token: object = None

    def __enter__(self) -> Span:
        self._token = _attach(self._api.set_span_in_context(self._span))
        return self._span

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        span = self._span
        try:
            _detach(self._token)
            if isinstance(exc, Exception) and span.is_recording():
                span.record_exception(exc)
                span.set_status(
                    self._api.Status(self._api.StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
                )
        finally:
            span.end()


@contextlib.contextmanager
def starting_under(traceparent: str | None) -> Iterator[None]:
    """Runs created inside the block get their root in ``traceparent``'s trace (the inbox:
    a run an event starts joins the trace of the span that consumed the event)."""
    token = _JOINING.set(TraceContext.parse(traceparent))
    try:
        yield
    finally:
        _JOINING.reset(token)


def joining() -> TraceContext | None:
    """The trace a run created now joins (``starting_under``), if any."""
    return _JOINING.get()


def traceparent_of(span: Span) -> str:
    """The W3C ``traceparent`` of ``span`` (what a CloudEvent carries)."""
    ctx = span.get_span_context()
    return TraceContext(ctx.trace_id, ctx.span_id).traceparent


def current_tracing() -> Tracing | None:
    """This process's tracing if it was turned on (no SDK import otherwise)."""
    return _SHARED


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _pinned_ids() -> Any:
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class PinnedIds(RandomIdGenerator):
        """Random ids, except for a run's root span: the ids in ``_PINNED``."""

        def generate_trace_id(self) -> int:
            pinned = _PINNED.get()
            return pinned.trace_id if pinned is not None else super().generate_trace_id()

        def generate_span_id(self) -> int:
            pinned = _PINNED.get()
            return pinned.span_id if pinned is not None else super().generate_span_id()

    return PinnedIds()
