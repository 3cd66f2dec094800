"""Event types: declared with a data schema; unknown, invalid and oversized events refused."""

from __future__ import annotations

import pytest

from autonomic.core.envelope import new_event
from autonomic.core.event_types import (
    AGENT_MESSAGE,
    BUILTIN,
    RUN_COMPLETED,
    EventType,
    EventTypes,
)
from autonomic.errors import EventRejected, InvalidInput


def test_the_builtin_types_are_declared():
    names = {t.name for t in BUILTIN}
    assert {
        "autonomic.run.started",
        "autonomic.run.waiting",
        "autonomic.run.completed",
        "autonomic.run.failed",
        "autonomic.run.suspended",
        "autonomic.approval.requested",
        "autonomic.agent.message",
        "autonomic.delegation.requested",
        "autonomic.delegation.completed",
    } == names
    types = EventTypes()
    types.check(new_event(RUN_COMPLETED, {"run_id": "r", "agent": "a"}, source="s"))


def test_a_schema_violation_names_the_field():
    types = EventTypes()
    types.declare(
        "com.acme.audit.requested",
        {
            "type": "object",
            "properties": {"files": {"type": "array", "items": {"type": "string"}}},
            "required": ["files"],
        },
    )
    bad = new_event("com.acme.audit.requested", {"files": ["a", 3]}, source="s")
    with pytest.raises(EventRejected, match=r"com.acme.audit.requested: data.files\[1\]: 3 is not"):
        types.check(bad)
    missing = new_event(AGENT_MESSAGE, {"from_agent": "a", "body": 1}, source="s")
    with pytest.raises(EventRejected, match="'to_agent' is a required property"):
        types.check(missing)


def test_an_unknown_type_is_refused_naming_the_known_ones():
    with pytest.raises(EventRejected, match=r"unknown event type 'com\.x\.y'") as caught:
        EventTypes().check(new_event("com.x.y", {}, source="s"))
    assert "autonomic.run.started" in str(caught.value)


def test_an_oversized_payload_is_refused_at_the_configured_limit():
    types = EventTypes(max_data_bytes=100)
    types.declare("com.acme.blob")
    types.check(new_event("com.acme.blob", {"x": "a" * 50}, source="s"))
    with pytest.raises(EventRejected, match="over the limit of 100"):
        types.check(new_event("com.acme.blob", {"x": "a" * 200}, source="s"))


def test_bad_declarations_are_refused():
    with pytest.raises(InvalidInput, match="invalid event type"):
        EventType("NoDots", {})
    with pytest.raises(InvalidInput, match="not a valid JSON schema"):
        EventType("com.acme.x", {"type": "nonsense"})
    types = EventTypes()
    types.declare("com.acme.x", {"type": "object"})
    types.declare("com.acme.x", {"type": "object"})  # the same again is fine
    with pytest.raises(InvalidInput, match="declared already"):
        types.declare("com.acme.x", {"type": "array"})
    with pytest.raises(InvalidInput, match="max_data_bytes"):
        EventTypes(max_data_bytes=0)
