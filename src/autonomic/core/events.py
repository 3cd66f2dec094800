"""An event: what one part of the platform tells others, as a CloudEvents 1.0 envelope.

The envelope's attributes are CloudEvents' own (``specversion`` 1.0, ``id``, ``source``, ``type``,
``subject``, ``time``, ``datacontenttype``) plus three extensions every event of ours carries:
``correlationid`` (the conversation it belongs to: copied from the event that started a run into
every event that run causes, and the partition key, so one conversation stays in order),
``traceparent`` (W3C trace context, so a consumer's spans join the producer's trace) and
``tenant`` (whose event it is; consumers never act on another tenant's data). This module is the
pure value; the codec to and from the ``cloudevents`` SDK's wire forms and the schema registry
that checks ``data`` live beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SPECVERSION = "1.0"
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Event:
    """One CloudEvent. ``data`` is a JSON value checked against its type's schema."""

    type: str
    """Reverse-DNS event type, e.g. ``com.acme.audit.requested``; declares ``data``'s schema."""
    source: str
    """URI-reference of the producer, e.g. ``autonomic://run/<run id>``."""
    id: str
    """Unique per source; a redelivered event keeps its id (consumers deduplicate on it)."""
    data: Any
    correlation_id: str
    """The ``correlationid`` extension; also the partition / ordering key."""
    time: float
    """Seconds since the epoch (written as RFC 3339 on the wire)."""
    subject: str | None = None
    tenant: str = "default"
    traceparent: str | None = None
    datacontenttype: str = JSON
    extensions: dict[str, str] = field(default_factory=dict)
    """Other CloudEvents extension attributes, kept as received."""

    @property
    def key(self) -> str:
        """The ordering key: events with one key are delivered in the order they were published."""
        return self.correlation_id
