"""The OTLP/HTTP span exporter, with the protobuf request written directly as bytes.

The OpenTelemetry exporter builds a tree of protobuf message objects for every span - a
``KeyValue`` and an ``AnyValue`` per attribute - and then serialises it: about 26 us of CPU a
span on the test machine, more than the span itself costs to make. The wire format of an
``ExportTraceServiceRequest`` is small and fixed (``opentelemetry/proto/trace/v1/trace.proto``),
and most of what a run's spans carry repeats from span to span (attribute names, the run id,
the operation and tool names), so this module writes the bytes itself and keeps the encoding
of each repeated attribute: a few microseconds a span. ``tests/observability/test_otlp.py``
parses what it writes with the official protobuf classes and compares it, field by field, with
what the SDK's encoder makes of the same spans.

Everything else is the SDK's ``OTLPSpanExporter``: endpoint, headers, compression, TLS and
timeouts from the ``OTEL_EXPORTER_OTLP_*`` variables, retries and the exporter's own metrics.
Imported only when tracing is on (it imports the SDK).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from autonomic.observability.recorded_span import UNSET_STATUS, RecordedSpan

_DOUBLE = struct.Struct("<d")
_FIXED64 = struct.Struct("<Q")
_FIXED32 = struct.Struct("<I")

# Span.flags: SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK (0x100), | IS_REMOTE (0x200) for a remote parent
_FLAGS_LOCAL = b"\x85\x01" + _FIXED32.pack(0x100)
_FLAGS_REMOTE = b"\x85\x01" + _FIXED32.pack(0x300)
FLAGS_LOCAL, FLAGS_REMOTE = _FLAGS_LOCAL, _FLAGS_REMOTE
"""A span's flags field, its parent local or remote."""

_CACHE_LIMIT = 8192
_kv_cache: dict[tuple[int, str, type, Any], bytes] = {}


def _varint(n: int) -> bytes:
    if 0 <= n < 0x80:
        return _SMALL[n]
    if n < 0:
        n += 1 << 64  # int64 as protobuf writes it: ten bytes of two's complement
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [bytes((n,)) for n in range(0x80)]


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (``tag`` already shifted, with wire type 2; below 128)."""
    size = len(payload)
    return _SMALL[tag] + (_SMALL[size] if size < 0x80 else _varint(size)) + payload


def _text(tag: int, text: str) -> bytes:
    return _field(tag, text.encode("utf-8"))


def _any_value(value: Any) -> bytes:
    """An ``AnyValue``'s body (its oneof set even to a default, as protobuf does for a oneof)."""
    kind = type(value)  # the engine's types first, without an ABC check
    if kind is str:
        return _text(0x0A, value)
    if kind is int:
        return b"\x18" + _varint(value)
    if kind is tuple or kind is list:
        return _field(0x2A, b"".join(_field(0x0A, _any_value(v)) for v in value))
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _text(0x0A, value)
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return _field(0x3A, value)
    if isinstance(value, Sequence):
        return _field(0x2A, b"".join(_field(0x0A, _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(0x32, b"".join(_field(0x0A, _key_value(str(k), v)) for k, v in value.items()))
    raise TypeError(f"an attribute value of type {type(value).__name__} has no OTLP encoding")


def _key_value(key: str, value: Any) -> bytes:
    return _text(0x0A, key) + _field(0x12, _any_value(value))


_SCALARS = frozenset((str, int, float, bool))


def _all_text(values: tuple[Any, ...]) -> bool:
    for value in values:  # noqa: SIM110 - a loop: no generator made per span
        if type(value) is not str:
            return False
    return True


def _attributes(tag: int, attributes: Mapping[str, Any] | None) -> bytes:
    """Repeated ``KeyValue`` under ``tag``; the encoding of a scalar attribute, or of a tuple of
    strings (finish reasons), is kept and reused (keyed by its type too: ``True == 1``, and
    they encode differently)."""
    if not attributes:
        return b""
    parts = []
    cache = _kv_cache
    for key, value in attributes.items():
        kind = type(value)
        if kind in _SCALARS or (kind is tuple and _all_text(value)):
            memo = (tag, key, kind, value)
            encoded = cache.get(memo)
            if encoded is None:
                encoded = _field(tag, _key_value(key, value))
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[memo] = encoded
            parts.append(encoded)
        else:
            parts.append(_field(tag, _key_value(key, value)))
    return b"".join(parts)


_KIND = {kind: b"\x30" + _varint(kind.value + 1) for kind in SpanKind}  # proto's is the SDK's + 1
_STATUS_UNSET = _field(0x7A, b"")
_names: dict[str, bytes] = {}

SPAN_TIMES = struct.Struct("<BQBQ")
"""A span's start and end fields: ``SPAN_TIMES.pack(0x39, start_ns, 0x41, end_ns)``."""


class SpanAttribute:
    """One span attribute's key, and the encodings of the values it took (for an attribute
    whose values repeat - a turn's number, a token count, a decision - and have one type:
    ``True == 1``), so that a span's varying attributes cost a dictionary lookup each."""

    __slots__ = ("_key", "known", "prefixes")

    def __init__(self, key: str) -> None:
        self._key = _text(0x0A, key)
        self.known: dict[Any, bytes] = {}
        """The encodings made so far, by value (``known.get(value) or attribute(value)``: a
        lookup without a call)."""
        self.prefixes: dict[int, bytes] = {}
        """``prefix``'s, by the value's size."""

    def __call__(self, value: str | int | float | bool | tuple[str, ...]) -> bytes:
        """The attribute with ``value``, encoded (kept for the next span)."""
        known = self.known
        found = known.get(value)
        if found is None:
            found = _field(0x4A, self._key + _field(0x12, _any_value(value)))
            if len(known) >= _CACHE_LIMIT:
                known.clear()
            known[value] = found
        return found

    def text(self, value: str) -> bytes:
        """The attribute with a text ``value`` that will not come back (an id), encoded."""
        data = value.encode()
        return (self.prefixes.get(len(data)) or self.prefix(len(data))) + data

    def prefix(self, size: int) -> bytes:
        """What comes before a text value of ``size`` bytes: the attribute's tag and length,
        its key, the value's tags and lengths (kept by size: ``prefixes.get(size) or
        prefix(size)``, then the value's bytes - two pieces of a span, no nested copy)."""
        found = self.prefixes.get(size)
        if found is None:
            key = self._key
            value = b"\x0a" + _varint(size)
            inner = key + b"\x12" + _varint(len(value) + size) + value
            found = b"\x4a" + _varint(len(inner) + size) + inner
            if len(self.prefixes) < _CACHE_LIMIT:
                self.prefixes[size] = found
        return found


def _span(span: ReadableSpan) -> bytes:
    context = span.get_span_context()
    assert context is not None
    parent = span.parent
    name = _names.get(span.name)
    if name is None:
        if len(_names) >= _CACHE_LIMIT:
            _names.clear()
        name = _names[span.name] = _text(0x2A, span.name)
    out = [
        b"\x0a\x10",
        context.trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        out.append(_text(0x1A, ",".join(f"{k}={v}" for k, v in context.trace_state.items())))
    if parent is not None:
        out.append(b"\x22\x08")
        out.append(parent.span_id.to_bytes(8, "big"))
    out.append(name)
    out.append(_KIND[span.kind])
    if span.start_time:
        out.append(b"\x39" + _FIXED64.pack(span.start_time))
    if span.end_time:
        out.append(b"\x41" + _FIXED64.pack(span.end_time))
    out.append(_attributes(0x4A, span.attributes))
    if span.dropped_attributes:
        out.append(b"\x50" + _varint(span.dropped_attributes))
    out.extend(map(_event, span.events))
    if span.dropped_events:
        out.append(b"\x60" + _varint(span.dropped_events))
    for link in span.links:
        body = b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big")
        body += b"\x12\x08" + link.context.span_id.to_bytes(8, "big")
        body += _attributes(0x22, link.attributes)
        if link.dropped_attributes:
            body += b"\x28" + _varint(link.dropped_attributes)
        body += b"\x35" + _FIXED32.pack(0x300 if link.context.is_remote else 0x100)
        out.append(_field(0x6A, body))
    if span.dropped_links:
        out.append(b"\x70" + _varint(span.dropped_links))
    out.append(_status(span.status))
    out.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
    return b"".join(out)


def _event(event: Any) -> bytes:
    """A span event's field (SDK and recorded spans alike)."""
    body = _text(0x12, event.name) if event.name else b""
    body = b"\x09" + _FIXED64.pack(event.timestamp) + body if event.timestamp else body
    body += _attributes(0x1A, event.attributes)
    if event.dropped_attributes:
        body += b"\x20" + _varint(event.dropped_attributes)
    return _field(0x5A, body)


def _status(status: Status) -> bytes:
    """A span status's field; the common unset one is a constant."""
    if status is UNSET_STATUS:  # the recorded spans' (one object: no enum read)
        return _STATUS_UNSET
    if status.status_code is StatusCode.UNSET and not status.description:
        return _STATUS_UNSET
    body = _text(0x12, status.description) if status.description else b""
    if status.status_code.value:
        body += b"\x18" + _varint(status.status_code.value)
    return _field(0x7A, body)


_LOCAL_PARENT = (b"\x22\x08", _FLAGS_LOCAL)
_REMOTE_PARENT = (b"\x22\x08", _FLAGS_REMOTE)
_INTERNAL = _KIND[SpanKind.INTERNAL]


_span_heads: dict[int, bytes] = {}


def span_body(span: Any, parts: list[bytes], flags: bytes) -> bytes:
    """A ``DerivedSpan``'s encoding (``_encoded``): ``parts`` are its fields from its trace id to
    its attributes; its events and status follow, then ``flags`` (``FLAGS_LOCAL`` or
    ``FLAGS_REMOTE``: its parent's)."""
    if span._events or span._status is not UNSET_STATUS:
        parts.extend(map(_event, span._events))
        parts.append(_status(span._status))
    else:
        parts.append(_STATUS_UNSET)
    parts.append(flags)
    return b"".join(parts)


def _span_head(size: int) -> bytes:
    """A span field's tag and length, for a body of ``size`` bytes (kept by size:
    ``_span_heads.get(size) or _span_head(size)``)."""
    head = b"\x12" + _varint(size)
    if len(_span_heads) < _CACHE_LIMIT:
        _span_heads[size] = head
    return head


def encode_name(name: str) -> bytes:
    """A span's name field (kept: a process's span names repeat)."""
    encoded = _names.get(name)
    if encoded is None:
        if len(_names) >= _CACHE_LIMIT:
            _names.clear()
        encoded = _names[name] = _text(0x2A, name)
    return encoded


def encode_attributes(attributes: Mapping[str, Any]) -> bytes:
    """A span's attribute fields, in the mapping's order (what a ``DerivedSpan`` puts its
    encoding together from)."""
    return _attributes(0x4A, attributes)


def _recorded(span: Any) -> bytes:
    """``_span`` for a ``RecordedSpan``: its integer ids and fields read directly (no
    ``SpanContext`` made), the shared kind, no links; events and a status when it has them.
    (A ``DerivedSpan`` whose attributes nobody read encodes itself: ``_encoded``.)"""
    name = encode_name(span._name)
    attributes = _attributes(0x4A, span._attributes)
    if span._parent_of is None:  # a run's root
        parent_tag, flags = b"", _FLAGS_LOCAL
    else:
        parent_tag, flags = _REMOTE_PARENT if span._parent_remote else _LOCAL_PARENT
    out = [
        b"\x0a\x10",
        span._trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        span._span_id.to_bytes(8, "big"),
    ]
    if span._state is not None:
        out.append(_text(0x1A, ",".join(f"{k}={v}" for k, v in span._state.items())))
    out += [
        parent_tag,
        span._parent_id.to_bytes(8, "big") if parent_tag else b"",
        name,
        _INTERNAL,
        b"\x39",
        _FIXED64.pack(span._start_time),
        b"\x41",
        _FIXED64.pack(span._end_time),
        attributes,
    ]
    out.extend(map(_event, span._events))
    out.append(_status(span._status))
    out.append(flags)
    return b"".join(out)


def _bucket(
    grouped: dict[int, tuple[Any, dict[Any, list[bytes]]]], resource: Any, scope: Any
) -> list[bytes]:
    """The list the spans of ``resource`` and ``scope`` go in (grouped by the resource's
    identity: a Resource hashes by dumping its attributes to JSON, and a process's spans share
    one Resource object)."""
    held = grouped.get(id(resource))
    if held is None:
        held = grouped[id(resource)] = (resource, {})
    found = held[1].get(scope)
    if found is None:
        found = held[1][scope] = []
    return found


_is_recorded: dict[type, bool] = {}


def _recorded_type(kind: type) -> bool:
    return issubclass(kind, RecordedSpan)


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """The serialised ``ExportTraceServiceRequest`` of ``spans`` (grouped by resource, then by
    instrumentation scope, in the order first seen - as the SDK's encoder groups them)."""
    grouped: dict[int, tuple[Any, dict[Any, list[bytes]]]] = {}
    sink: Any = None  # the last recorded span's: the next one's likely shares its bucket
    bucket: list[bytes] = []
    span: Any
    for span in spans:
        kind = type(span)
        recorded = _is_recorded.get(kind)
        if recorded is None:
            recorded = _is_recorded[kind] = _recorded_type(kind)
        if recorded:
            if span._sink is not sink:
                sink = span._sink
                bucket = _bucket(grouped, sink.tracer.resource, sink.scope or None)
            if span._derived:  # a ``DerivedSpan`` whose name and attributes nobody touched
                body = span._encoded()
                bucket += (_span_heads.get(len(body)) or _span_head(len(body)), body)
            else:
                bucket.append(_field(0x12, _recorded(span)))
        else:
            sink = None
            resource = span.resource
            _bucket(grouped, resource, span.instrumentation_scope or None).append(
                _field(0x12, _span(span))
            )
    # one list of the request's pieces, joined once: each nested message's length is summed
    # from its pieces, not measured on a copy of them (a batch is hundreds of kilobytes)
    request: list[bytes] = []
    for resource, scopes in grouped.values():
        body = [_field(0x0A, _attributes(0x0A, resource.attributes))]
        for scope, encoded in scopes.items():
            if scope is None:
                head = _field(0x0A, b"")
            else:
                scope_body = _text(0x0A, scope.name) if scope.name else b""
                if scope.version:
                    scope_body += _text(0x12, scope.version)
                scope_body += _attributes(0x1A, scope.attributes)
                head = _field(0x0A, scope_body)
            tail = _text(0x1A, scope.schema_url) if scope is not None and scope.schema_url else b""
            spans_bytes = b"".join(encoded)  # one copy, then its length: no sum over the spans
            size = len(head) + len(spans_bytes) + len(tail)
            body += (b"\x12" + _varint(size), head, spans_bytes, tail)
        if resource.schema_url:
            body.append(_text(0x1A, resource.schema_url))
        request += (b"\x0a" + _varint(sum(map(len, body))), *body)
    return b"".join(request)


class FastOTLPSpanExporter(OTLPSpanExporter):
    """``OTLPSpanExporter`` with ``encode_spans`` above in place of the message-object encoder,
    posting through ``urllib3`` instead of ``requests`` where that changes nothing but the cost.

    Falls back to the SDK's own path if a future SDK no longer has the HTTP client this relies
    on (``_client``): slower, never broken."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not args and kwargs.get("session") is None and "_transport" not in kwargs:
            _post_with_urllib3(self)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        client = getattr(self, "_client", None)
        metrics = getattr(self, "_metrics", None)
        if client is None or metrics is None or getattr(self, "_shutdown", True):
            return super().export(spans)
        try:
            data = encode_spans(spans)
        except (TypeError, ValueError):
            return super().export(spans)  # a value only the SDK's encoder knows how to skip
        limit = getattr(self, "_max_request_size", 0)
        if 0 < limit < len(data):
            return super().export(spans)  # the SDK drops it, says why and counts it
        with metrics.export_operation(len(spans)) as result:
            sent = client.export(data)
            if not sent.success:
                result.error = sent.error
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


_CREDENTIAL_PROVIDERS = (
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER",
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
)
"""A session from a credential provider (``requests``-only auth): kept."""


def _post_with_urllib3(exporter: OTLPSpanExporter) -> bool:
    """Post ``exporter``'s requests with the SDK's own ``urllib3`` transport, same TLS settings.

    ``requests`` re-reads the environment (proxies, CA bundles, ``.netrc``) on every request:
    3.4 M instructions a post of 512 spans against 1.0 M for the SDK's ``urllib3`` transport
    (the export thread's CPU a span, encoding included: 6.5 -> 5.4 us). It verifies a server
    against the CA bundle ``requests`` would (a configured certificate, else
    ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE``, else ``certifi``'s), and is used only where
    nothing else ``requests`` reads from the environment applies to the endpoint: no proxy it
    does not bypass, no ``.netrc`` entry for its host, no credential provider's session.
    Whether it was swapped is returned (an SDK without the transport API keeps ``requests``)."""
    import os

    client = getattr(exporter, "_client", None)
    transport = getattr(client, "_transport", None)
    endpoint = getattr(exporter, "_endpoint", None)
    session = getattr(transport, "_session", None)
    if client is None or session is None or not isinstance(endpoint, str):
        return False
    if any(os.environ.get(name) for name in _CREDENTIAL_PROVIDERS):
        return False
    try:
        from opentelemetry.exporter.http.transport._requests import RequestsHTTPTransport
        from opentelemetry.exporter.http.transport._urllib3 import Urllib3HTTPTransport
        from requests.utils import DEFAULT_CA_BUNDLE_PATH, get_environ_proxies, get_netrc_auth
    except ImportError:
        return False
    if type(transport) is not RequestsHTTPTransport:
        return False
    try:
        if get_environ_proxies(endpoint) or get_netrc_auth(endpoint):
            return False
    except Exception:  # an unreadable .netrc: leave it to requests, as before
        return False
    verify, cert = session.verify, session.cert
    if not isinstance(verify, bool | str) or not isinstance(cert, str | tuple | None):
        return False
    if verify is True:  # what requests verifies against: the environment's bundle, else certifi's
        verify = (
            os.environ.get("REQUESTS_CA_BUNDLE")
            or os.environ.get("CURL_CA_BUNDLE")
            or DEFAULT_CA_BUNDLE_PATH
        )
    client._transport = Urllib3HTTPTransport(verify=verify, cert=cert)
    transport.close()
    return True
