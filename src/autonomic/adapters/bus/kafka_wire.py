"""An event as a Kafka record, and a dead letter as one: CloudEvents' Kafka protocol binding.

Events travel in *binary* content mode (the CloudEvents Kafka binding, section 3.2): the record's
key is the correlation id (so Kafka's partitioner keeps one conversation on one partition, in
order), its value is ``data`` as JSON, and every other attribute is a ``ce_``-prefixed header
(``ce_id``, ``ce_type``, ``ce_correlationid``, ...). Binary mode lets a consumer route on headers
without parsing the value, and any Kafka tool shows ``data`` as it is.

Dead letters travel in *structured* mode instead (the whole event as one JSON object inside the
letter), because the letter adds fields of its own (error, attempts, failure times) around it.

What comes off a topic is untrusted: a record that is not a CloudEvent of ours raises
``MalformedRecord`` naming what is wrong, and the consumer dead-letters it with that reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from autonomic.core.events import JSON, SPECVERSION, Event

_PREFIX = "ce_"
_CORE = ("id", "source", "type", "specversion", "time", "subject", "datacontenttype")
_OURS = ("correlationid", "tenant", "traceparent")
Headers = list[tuple[str, bytes]]


class MalformedRecord(ValueError):
    """A record that is not a CloudEvent of ours; the message says what is missing or wrong."""


def rfc3339(seconds: float) -> str:
    """Seconds since the epoch as an RFC 3339 UTC timestamp (CloudEvents' ``time``)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _seconds(text: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise MalformedRecord(f"ce_time {text[:40]!r} is not an RFC 3339 timestamp") from None


def attributes(event: Event) -> dict[str, str]:
    """Every context attribute of ``event`` as CloudEvents names it (``data`` excluded)."""
    out = {
        "specversion": SPECVERSION,
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "time": rfc3339(event.time),
        "datacontenttype": event.datacontenttype,
        "correlationid": event.correlation_id,
        "tenant": event.tenant,
    }
    if event.subject is not None:
        out["subject"] = event.subject
    if event.traceparent is not None:
        out["traceparent"] = event.traceparent
    for name, value in event.extensions.items():
        out.setdefault(name, value)
    return out


def from_attributes(attrs: dict[str, str], data: Any) -> Event:
    """The inverse of ``attributes``; raises ``MalformedRecord`` naming a missing attribute."""
    for name in ("id", "source", "type", "correlationid"):
        if not attrs.get(name):
            raise MalformedRecord(f"the CloudEvent has no {name!r} attribute")
    if attrs.get("specversion", SPECVERSION) != SPECVERSION:
        raise MalformedRecord(f"specversion {attrs['specversion']!r} is not {SPECVERSION}")
    known = set(_CORE) | set(_OURS)
    return Event(
        type=attrs["type"],
        source=attrs["source"],
        id=attrs["id"],
        data=data,
        correlation_id=attrs["correlationid"],
        time=_seconds(attrs["time"]) if attrs.get("time") else 0.0,
        subject=attrs.get("subject"),
        tenant=attrs.get("tenant") or "default",
        traceparent=attrs.get("traceparent"),
        datacontenttype=attrs.get("datacontenttype") or JSON,
        extensions={k: v for k, v in attrs.items() if k not in known},
    )


def to_record(event: Event) -> tuple[bytes, bytes, Headers]:
    """(key, value, headers) of ``event`` in binary content mode."""
    headers = [(_PREFIX + name, value.encode()) for name, value in attributes(event).items()]
    headers.append(("content-type", event.datacontenttype.encode()))
    value = json.dumps(event.data, separators=(",", ":"), ensure_ascii=False).encode()
    return event.correlation_id.encode(), value, headers


def from_record(value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> Event:
    """The event a binary-mode record carries; ``MalformedRecord`` when it is not one."""
    attrs: dict[str, str] = {}
    for name, raw in headers:
        if name.startswith(_PREFIX):
            try:
                attrs[name[len(_PREFIX) :]] = raw.decode()
            except UnicodeDecodeError:
                raise MalformedRecord(f"header {name!r} is not UTF-8") from None
    if not attrs:
        raise MalformedRecord("the record has no ce_ headers (not a CloudEvent in binary mode)")
    try:
        data = None if value is None else json.loads(value)
    except (ValueError, UnicodeDecodeError):
        raise MalformedRecord("the record's value is not JSON") from None
    return from_attributes(attrs, data)


def structured(event: Event) -> dict[str, Any]:
    """``event`` as one CloudEvents JSON object (structured content mode)."""
    return {**attributes(event), "data": event.data}


def from_structured(obj: Any) -> Event:
    """The inverse of ``structured``."""
    if not isinstance(obj, dict):
        raise MalformedRecord("a structured CloudEvent must be a JSON object")
    attrs = {k: str(v) for k, v in obj.items() if k != "data" and v is not None}
    return from_attributes(attrs, obj.get("data"))
