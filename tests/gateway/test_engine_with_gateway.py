"""The engine drives runs through the gateway as through any model: transient faults are absorbed,
malformed output ends in a journaled, suspended step with a clear reason (never a crashed
worker), and a bad request fails the run with the server's message."""

import asyncio

from autonomic.bootstrap import build_store
from autonomic.core.journal import EntryKind
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.gateway import Gateway
from autonomic.testing.gateway import gateway_config, provider
from autonomic.testing.openai_server import (
    OpenAITestServer,
    Reply,
    completion,
    malformed_tool_call,
    rate_limited,
    server_error,
)
from autonomic.tools.contract import tool


@tool(idempotent=True)
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def _drive(url, server):
    store = build_store(url)
    await store.migrate()
    gateway = Gateway(
        gateway_config(
            provider("main", server.base_url),
            retry={"max_attempts": 2, "base_delay": 0.01, "max_delay": 0.02},
        )
    )
    agent = Agent(name="calc", instructions="add numbers", tools=(add,), max_turns=5)
    engine = Engine(store, AgentRegistry([agent]), lambda spec: gateway)
    try:
        run = await engine.start("calc", "add 1 and 2")
        final = await engine.run_to_end(run.id)
        return final, await store.load_journal(run.id)
    finally:
        await gateway.aclose()
        await store.close()


def test_a_run_completes_through_429s_and_500s(sqlite_url):
    replies = [
        rate_limited(0.05),
        completion(None, [("c1", "add", '{"a": 1, "b": 2}')]),
        server_error(502),
        completion("3"),
    ]
    with OpenAITestServer(replies) as server:
        run, entries = asyncio.run(_drive(sqlite_url, server))
    assert run.status is RunStatus.COMPLETED
    assert run.output == "3"
    assert [e.payload["output"] for e in entries if e.kind is EntryKind.TOOL_RESULT] == [3]
    assert len(server.requests) == 4


def test_malformed_output_suspends_the_run_with_the_reason(sqlite_url):
    with OpenAITestServer(default=malformed_tool_call("add", '{"a": 1,')) as server:
        run, entries = asyncio.run(_drive(sqlite_url, server))
    assert run.status is RunStatus.SUSPENDED  # retryable: a person (or a resume) may try again
    assert "not valid JSON" in run.status_reason
    last = entries[-1]
    assert last.kind is EntryKind.TRANSITION
    assert last.payload["error"]["retryable"] is True


def test_a_bad_request_fails_the_run_with_the_servers_message(sqlite_url):
    bad = Reply(400, {"error": {"message": "tools[0].parameters is not a valid schema"}})
    with OpenAITestServer([bad]) as server:
        run, _ = asyncio.run(_drive(sqlite_url, server))
    assert run.status is RunStatus.FAILED
    assert "tools[0].parameters is not a valid schema" in run.status_reason
    assert len(server.requests) == 1
