"""The envelope codec: ``Event`` to and from the ``cloudevents`` SDK's CloudEvent, and the
structured JSON form (``application/cloudevents+json``) every bus carries.

One codec for every adapter, so an event written by the embedded bus reads the same off Kafka and
an event from another CloudEvents producer reads as ours. ``decode`` treats its input as untrusted:
anything that is not a CloudEvents 1.0 envelope with a JSON ``data`` is an ``EventRejected``
naming what is wrong (a consumer dead-letters it with that reason); it never raises the SDK's or
``json``'s own errors.

An envelope without a ``correlationid`` starts a conversation of its own: its id becomes its
correlation id. Without a ``tenant`` it belongs to the default tenant.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from autonomic.core.events import JSON, SPECVERSION, Event
from autonomic.errors import EventRejected

CONTENT_TYPE = JSONFormat.CONTENT_TYPE
"""``application/cloudevents+json``: the structured mode's media type."""

OUR_EXTENSIONS = ("correlationid", "tenant", "traceparent")
_FORMAT = JSONFormat()


def new_event(
    type: str,
    data: Any,
    *,
    source: str,
    correlation_id: str | None = None,
    id: str | None = None,
    subject: str | None = None,
    tenant: str = "default",
    traceparent: str | None = None,
    time_: float | None = None,
) -> Event:
    """A fresh event: a random id unless given, now (to the microsecond, the wire's precision),
    and its own id as correlation id unless it continues a conversation."""
    event_id = id or uuid.uuid4().hex
    return Event(
        type=type,
        source=source,
        id=event_id,
        data=data,
        correlation_id=correlation_id or event_id,
        time=round(time.time() if time_ is None else time_, 6),
        subject=subject,
        tenant=tenant,
        traceparent=traceparent,
    )


def to_cloudevent(event: Event) -> CloudEvent:
    """The SDK's CloudEvent for ``event`` (our extensions as its extension attributes)."""
    attributes: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "time": datetime.fromtimestamp(event.time, tz=UTC),
        "datacontenttype": event.datacontenttype,
        "correlationid": event.correlation_id,
        "tenant": event.tenant,
        **event.extensions,
    }
    if event.subject is not None:
        attributes["subject"] = event.subject
    if event.traceparent is not None:
        attributes["traceparent"] = event.traceparent
    try:
        return CloudEvent(attributes, event.data)
    except BaseCloudEventException as exc:
        raise EventRejected(f"event {event.type}: not a valid CloudEvent: {exc}") from None


def from_cloudevent(cloud: CloudEvent) -> Event:
    """Our ``Event`` for an SDK CloudEvent; ``EventRejected`` when it cannot be one."""
    attributes = dict(cloud.get_attributes())
    kind = attributes.get("type", "?")
    content = attributes.pop("datacontenttype", None) or JSON
    if content != JSON and not content.endswith("+json"):
        raise EventRejected(
            f"event {kind}: datacontenttype {content!r} is not JSON",
            hint="autonomic events carry JSON data (application/json)",
        )
    data = cloud.get_data()
    if isinstance(data, bytes | bytearray):
        raise EventRejected(f"event {kind}: binary data (data_base64) is not JSON")
    stamp = attributes.pop("time", None)
    moment = stamp.timestamp() if isinstance(stamp, datetime) else time.time()
    extensions = {
        k: str(v)
        for k, v in attributes.items()
        if k not in OUR_EXTENSIONS
        and k not in ("specversion", "id", "source", "type", "subject", "dataschema")
    }
    for name in OUR_EXTENSIONS:
        value = attributes.get(name)
        if value is not None and not isinstance(value, str):
            raise EventRejected(f"event {kind}: extension {name} must be a string")
    event_id = str(attributes["id"])
    return Event(
        type=str(attributes["type"]),
        source=str(attributes["source"]),
        id=event_id,
        data=data,
        correlation_id=attributes.get("correlationid") or event_id,
        time=round(moment, 6),
        subject=attributes.get("subject"),
        tenant=attributes.get("tenant") or "default",
        traceparent=attributes.get("traceparent"),
        datacontenttype=content,
        extensions=extensions,
    )


def encode(event: Event) -> bytes:
    """The structured-mode JSON envelope (UTF-8 bytes)."""
    return _FORMAT.write(to_cloudevent(event))


def structured(event: Event) -> str:
    """The same structured-mode JSON as ``encode`` (the same attributes and values; ``decode``
    reads either), written straight from the value: what the outbox stores inside a step's
    commit, where the SDK's object model would cost more than the insert. It is always read
    back through the SDK (``decode``), so nothing unchecked leaves the outbox."""
    moment = datetime.fromtimestamp(event.time, tz=UTC).isoformat()
    attributes: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "time": moment.removesuffix("+00:00") + "Z",
        "datacontenttype": event.datacontenttype,
        "correlationid": event.correlation_id,
        "tenant": event.tenant,
        **event.extensions,
    }
    if event.subject is not None:
        attributes["subject"] = event.subject
    if event.traceparent is not None:
        attributes["traceparent"] = event.traceparent
    attributes["data"] = event.data
    return json.dumps(attributes, ensure_ascii=False, separators=(",", ":"))


def decode(raw: bytes | str) -> Event:
    """An envelope read back; ``EventRejected`` for anything malformed, with what is wrong."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
        parsed = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise EventRejected(
            f"malformed CloudEvent: not JSON ({exc})",
            hint="send a structured-mode CloudEvents 1.0 JSON envelope",
        ) from None
    if not isinstance(parsed, dict):
        raise EventRejected(
            f"malformed CloudEvent: the envelope is a JSON {type(parsed).__name__}, not an object"
        )
    missing = [a for a in ("specversion", "id", "source", "type") if not parsed.get(a)]
    if missing:
        raise EventRejected(
            f"malformed CloudEvent: missing attribute {', '.join(missing)}",
            hint="a CloudEvents 1.0 envelope needs specversion, id, source and type",
        )
    if parsed["specversion"] != SPECVERSION:
        raise EventRejected(
            f"malformed CloudEvent: specversion {parsed['specversion']!r} is not {SPECVERSION}"
        )
    if "data_base64" in parsed:
        raise EventRejected(f"event {parsed['type']}: binary data (data_base64) is not JSON")
    if isinstance(parsed.get("data"), float) and not math.isfinite(parsed["data"]):
        raise EventRejected(f"event {parsed['type']}: data is not finite JSON")
    try:
        cloud = _FORMAT.read(None, text)
    except BaseCloudEventException as exc:
        raise EventRejected(f"malformed CloudEvent: {exc}") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. an unparseable time
        raise EventRejected(f"malformed CloudEvent: {exc}") from None
    if not isinstance(cloud, CloudEvent):
        raise EventRejected("malformed CloudEvent: not a CloudEvents 1.0 envelope")
    return from_cloudevent(cloud)
