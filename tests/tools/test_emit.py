"""The emit_event tool: an agent that emits types gets it; a bad event is an error the model reads."""

from __future__ import annotations

import asyncio

import pytest

from autonomic.core.event_types import AGENT_MESSAGE
from autonomic.engine.agent import Agent
from autonomic.errors import EventRejected
from autonomic.tools.contract import ToolContext
from autonomic.tools.emit import EMIT_TOOL, emit_tool


def test_an_agent_that_emits_gets_the_tool_once():
    agent = Agent(name="a", instructions="-", emits=[AGENT_MESSAGE], handles=["com.acme.x"])
    assert [t.name for t in agent.tools] == [EMIT_TOOL]
    assert agent.handles == ("com.acme.x",)
    again = agent.with_tools(agent.tools)
    assert [t.name for t in again.tools] == [EMIT_TOOL]
    assert Agent(name="b", instructions="-").tools == ()


def test_the_tool_checks_the_type_and_the_schema():
    tool = emit_tool([AGENT_MESSAGE])
    ctx = ToolContext(run_id="r", call_id="c", idempotency_key="r:1")
    good = {"from_agent": "a", "to_agent": "b", "body": "hi"}
    out = asyncio.run(tool.invoke({"type": AGENT_MESSAGE, "data": good}, ctx))
    assert out == {"type": AGENT_MESSAGE, "data": good}
    with pytest.raises(EventRejected, match="'to_agent' is a required property"):
        asyncio.run(
            tool.invoke({"type": AGENT_MESSAGE, "data": {"from_agent": "a", "body": 1}}, ctx)
        )
    with pytest.raises(EventRejected, match="may not emit"):
        emit_tool([AGENT_MESSAGE]).fn(type="autonomic.run.failed", data={})
