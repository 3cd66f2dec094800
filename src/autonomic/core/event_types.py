"""Event types: each declares the JSON schema its ``data`` must satisfy.

An event is untrusted input for whoever consumes it, and a producer's bug should stop at the
producer: so the bus checks an event against its type's schema when it is published *and* when it
is consumed, refuses a type nobody declared, and refuses a payload over a size limit (a bus is not
a blob store; a large artefact travels as a reference). Every refusal is an ``EventRejected`` whose
message names the type and the field, e.g. ``event com.acme.audit.requested: data.path: 'path' is a
required property``.

``EventTypes`` is the registry; ``BUILTIN`` holds the types the runtime itself emits (a run
started, waiting, completed, failed or suspended; an approval requested; a message from one agent
to another). An application declares its own with ``EventTypes.declare``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import jsonschema.exceptions

from autonomic.core.canonical import canonical_json
from autonomic.core.events import Event
from autonomic.errors import EventRejected, InvalidInput

MAX_DATA_BYTES = 256 * 1024
"""The default limit on an event's ``data`` (canonical JSON bytes)."""

_TYPE_NAME = re.compile(r"^[a-z0-9]([a-z0-9_-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9_-]*[a-z0-9])?)+$")
"""Reverse-DNS-ish: at least two dot-separated lowercase labels (``com.acme.audit.requested``)."""


@dataclass(frozen=True, slots=True)
class EventType:
    """One declared event type: its name, the schema of its ``data``, and what it means."""

    name: str
    schema: Mapping[str, Any]
    description: str = ""
    _validator: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _TYPE_NAME.match(self.name):
            raise InvalidInput(
                f"invalid event type {self.name!r}",
                hint="use reverse-DNS lowercase labels separated by dots, "
                "e.g. com.acme.audit.requested",
            )
        try:
            jsonschema.Draft202012Validator.check_schema(self.schema)
        except jsonschema.exceptions.SchemaError as exc:
            raise InvalidInput(
                f"event type {self.name}: its data schema is not a valid JSON schema: {exc.message}"
            ) from exc
        object.__setattr__(self, "_validator", jsonschema.Draft202012Validator(self.schema))

    def check(self, data: Any) -> None:
        """Refuse ``data`` that breaks the schema, naming the first offending field."""
        if self._validator.is_valid(data):  # the common case, without collecting errors
            return
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(data))
        if error is not None:
            where = "".join(
                f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path
            )
            raise EventRejected(
                f"event {self.name}: data{where}: {error.message}",
                hint="fix the event's data to match its type's schema (`autonomic events types`)",
            )


def _object(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": sorted(required),
    }


_TEXT = {"type": "string", "minLength": 1}
_RUN = {"run_id": _TEXT, "agent": _TEXT}
_RUN_MORE = {"reason": {"type": "string"}, "tenant": {"type": "string"}}

RUN_STARTED = "autonomic.run.started"
RUN_WAITING = "autonomic.run.waiting"
RUN_COMPLETED = "autonomic.run.completed"
RUN_FAILED = "autonomic.run.failed"
RUN_SUSPENDED = "autonomic.run.suspended"
APPROVAL_REQUESTED = "autonomic.approval.requested"
AGENT_MESSAGE = "autonomic.agent.message"
DELEGATION_REQUESTED = "autonomic.delegation.requested"
DELEGATION_COMPLETED = "autonomic.delegation.completed"

BUILTIN: tuple[EventType, ...] = (
    EventType(RUN_STARTED, _object(_RUN, {"task": {}, **_RUN_MORE}), "a run was created"),
    EventType(
        RUN_WAITING, _object({**_RUN, "reason": {"type": "string"}}), "a run waits for a human"
    ),
    EventType(RUN_COMPLETED, _object(_RUN, {"output": {}, **_RUN_MORE}), "a run completed"),
    EventType(RUN_FAILED, _object({**_RUN, "reason": {"type": "string"}}), "a run failed"),
    EventType(
        RUN_SUSPENDED,
        _object({**_RUN, "reason": {"type": "string"}}),
        "a run was suspended until an operator reopens it",
    ),
    EventType(
        APPROVAL_REQUESTED,
        _object({**_RUN, "approval_id": _TEXT, "tool": _TEXT}, {"risk": {"type": "string"}}),
        "a run asks a human to approve a tool call",
    ),
    EventType(
        AGENT_MESSAGE,
        _object({"from_agent": _TEXT, "to_agent": _TEXT, "body": {}}, {"run_id": _TEXT}),
        "one agent tells another something",
    ),
    EventType(
        DELEGATION_REQUESTED,
        _object(
            {"parent_run_id": _TEXT, "child_run_id": _TEXT, "key": _TEXT, "agent": _TEXT},
            {"capability": {"type": ["string", "null"]}, "task": {}},
        ),
        "a run hands a subtask to another agent: the child run is created from this",
    ),
    EventType(
        DELEGATION_COMPLETED,
        _object(
            {"parent_run_id": _TEXT, "child_run_id": _TEXT, "status": _TEXT},
            {"reason": {"type": ["string", "null"]}},
        ),
        "a child run ended (or was suspended): its waiting parent resumes",
    ),
)


class EventTypes:
    """The declared event types, and the size limit on ``data``.

    ``check`` is what a bus runs on every event it publishes and every event it hands out.
    ``EventTypes.default()`` is the process's registry (the built-in types, plus what the
    application declares), used wherever no other is given."""

    _default: EventTypes | None = None

    @classmethod
    def default(cls) -> EventTypes:
        if cls._default is None:
            cls._default = cls()
        return cls._default

    def __init__(
        self, types: tuple[EventType, ...] = BUILTIN, *, max_data_bytes: int = MAX_DATA_BYTES
    ) -> None:
        if max_data_bytes < 1:
            raise InvalidInput(f"max_data_bytes must be positive, got {max_data_bytes}")
        self.max_data_bytes = max_data_bytes
        self._types: dict[str, EventType] = {}
        for t in types:
            self.add(t)

    def add(self, event_type: EventType) -> EventType:
        """Declare a type; declaring the same name again with another schema is refused."""
        known = self._types.get(event_type.name)
        if known is not None and dict(known.schema) != dict(event_type.schema):
            raise InvalidInput(
                f"event type {event_type.name} is declared already with another data schema",
                hint="give the new shape a new type name (e.g. a .v2 suffix)",
            )
        self._types[event_type.name] = event_type
        return event_type

    def declare(
        self, name: str, schema: Mapping[str, Any] | None = None, description: str = ""
    ) -> EventType:
        """Declare ``name`` with ``schema`` (any JSON object when none is given)."""
        return self.add(EventType(name, schema or {"type": "object"}, description))

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[EventType]:
        return iter(sorted(self._types.values(), key=lambda t: t.name))

    def get(self, name: str) -> EventType:
        """The declared type, or ``EventRejected`` naming the known ones."""
        try:
            return self._types[name]
        except KeyError:
            known = ", ".join(sorted(self._types)) or "none"
            raise EventRejected(
                f"unknown event type {name!r}",
                hint=f"declare it first (EventTypes.declare); known types: {known}",
            ) from None

    def check(self, event: Event) -> None:
        """Refuse an event of an unknown type, an oversized ``data`` or one breaking its schema."""
        event_type = self.get(event.type)
        self.check_size(event.type, event.data)
        event_type.check(event.data)

    def check_size(self, name: str, data: Any) -> None:
        size = len(canonical_json(data).encode())
        if size > self.max_data_bytes:
            raise EventRejected(
                f"event {name}: data is {size} bytes, over the limit of {self.max_data_bytes}",
                hint="send a reference (a URL, a blob address) instead of the content, "
                "or raise the bus's max_data_bytes",
            )
