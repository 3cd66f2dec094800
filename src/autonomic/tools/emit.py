"""The ``emit_event`` tool: how an agent sends an event to other agents.

An agent declared with ``emits=[types]`` gets this tool. Calling it does nothing but check the
event (its type is one the agent emits, its data fits the type's schema: a bad one is an error
result the model reads and can fix) and return it; the outbox (``engine/outbox.py``) turns the
recorded result into the event, in the same commit as the result - so the event exists exactly
when the step that emitted it is durable. Idempotent: repeating it changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autonomic.core.envelope import new_event
from autonomic.core.event_types import EventTypes
from autonomic.errors import EventRejected
from autonomic.tools.contract import Tool

EMIT_TOOL = "emit_event"


def emit_tool(emits: Sequence[str], types: EventTypes | None = None) -> Tool:
    """The ``emit_event`` tool of an agent that emits ``emits``: it checks the event against its
    type's schema (a bad one is an error result the model reads and can fix) and returns it; the
    outbox turns the recorded result into the event, in the same commit."""
    allowed = sorted(set(emits))

    def emit_event(type: str, data: dict[str, Any]) -> dict[str, Any]:
        registry = types or EventTypes.default()
        if type not in allowed:
            raise EventRejected(
                f"this agent may not emit {type!r}", hint=f"it emits: {', '.join(allowed)}"
            )
        registry.check(new_event(type, data, source="autonomic://check"))
        return {"type": type, "data": data}

    return Tool(
        name=EMIT_TOOL,
        fn=emit_event,
        parameters={
            "type": "object",
            "properties": {"type": {"type": "string", "enum": allowed}, "data": {"type": "object"}},
            "required": ["type", "data"],
            "additionalProperties": False,
        },
        description="Send an event to the agents that handle its type (asynchronously).",
        idempotent=True,
    )
