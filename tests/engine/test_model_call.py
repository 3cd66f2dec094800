"""The engine with the model gateway: journaled provider and cost, call context, no double
retries, cost budgets checked before the call, context compression that replays exactly.

Real HTTP against ``OpenAITestServer``; both stores through ``store_url``."""

import asyncio
import time
from typing import Any

import pytest

from autonomic.bootstrap import build_store
from autonomic.cli.render import cost_line
from autonomic.core.journal import EntryKind
from autonomic.core.messages import Message, Role, ToolCall
from autonomic.core.run import RunStatus
from autonomic.core.state import fold
from autonomic.core.timeline import spend
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.errors import InvalidInput
from autonomic.gateway import Gateway
from autonomic.gateway.compression import SUMMARISER_PROMPT
from autonomic.gateway.tokens import TokenCounter
from autonomic.governance.runaway.budget import Budget
from autonomic.governance.runaway.gate import Runaway
from autonomic.testing.crash import RaiseAt, SimulatedCrash
from autonomic.testing.gateway import gateway_config, provider
from autonomic.testing.openai_server import OpenAITestServer, Reply, completion, server_error
from autonomic.tools.contract import tool

PRICE = {"input": 100.0, "output": 400.0}  # dollars per 1M tokens: big enough to see


@tool(idempotent=True)
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool(idempotent=True)
def fetch(page: int) -> str:
    """Fetch one page of the ledger."""
    return f"page {page}: " + " ".join(f"row{page}-{i}=amount {i * 7 % 97}" for i in range(40))


async def _drive(url, gateway, agent, *, metadata=None, runaway=None, **engine_kw):
    store = build_store(url)
    await store.migrate()
    engine = Engine(
        store,
        AgentRegistry([agent]),
        lambda spec: gateway,
        runaway=runaway or Runaway(enabled=False),
        **engine_kw,
    )
    try:
        run = await engine.start(agent.name, "do it", metadata=metadata)
        final = await engine.run_to_end(run.id)
        return final, await store.load_journal(run.id)
    finally:
        await engine.aclose()
        await store.close()


CALC = Agent(name="calc", instructions="add numbers", tools=(add,), max_turns=5)


def test_responses_journal_provider_cost_attempts_and_show_displays_them(store_url):
    replies = [
        server_error(502),
        completion(None, [("c1", "add", '{"a": 1, "b": 2}')], usage=(1000, 100)),
        completion("3", usage=(2000, 50)),
    ]
    with OpenAITestServer(replies) as server:
        gateway = Gateway(gateway_config(provider("main", server.base_url, price=PRICE)))
        run, entries = asyncio.run(_drive(store_url, gateway, CALC))
    assert run.status is RunStatus.COMPLETED
    responses = [e.payload for e in entries if e.kind is EntryKind.MODEL_RESPONSE]
    assert [r["provider"] for r in responses] == ["main", "main"]
    assert [r["attempts"] for r in responses] == [2, 1]  # the 502 was retried by the gateway
    assert [r["cost_usd"] for r in responses] == pytest.approx([0.14, 0.22])
    assert all(r["waited_s"] >= 0 for r in responses)
    state = fold(run.id, entries)
    assert state.model_cost == pytest.approx(0.36)
    assert (state.usage.input_tokens, state.usage.output_tokens) == (3000, 150)
    total = spend(entries)
    assert total["cost_usd"] == pytest.approx(0.36)
    assert total["providers"]["main"]["calls"] == 2
    assert "cost $0.360000 over 2 model call(s)" in cost_line(entries)
    assert "main 2 call(s)" in cost_line(entries)


def test_the_runs_priority_routes_its_calls_and_a_bad_priority_is_refused(store_url):
    with (
        OpenAITestServer(default=completion("main")) as main,
        OpenAITestServer(default=completion("spare")) as spare,
    ):
        gateway = Gateway(
            gateway_config(
                provider("main", main.base_url, serves=["critical", "normal"]),
                provider("spare", spare.base_url, serves=["background"]),
            )
        )
        run, entries = asyncio.run(
            _drive(store_url, gateway, CALC, metadata={"priority": "background"})
        )
        assert run.output == "spare"
        assert [e.payload["provider"] for e in entries if e.kind is EntryKind.MODEL_RESPONSE] == [
            "spare"
        ]
        assert main.requests == []
        with pytest.raises(InvalidInput, match="'urgent' is not a priority class"):
            asyncio.run(_drive(store_url, gateway, CALC, metadata={"priority": "urgent"}))


def test_a_gateway_that_gave_up_suspends_the_run_without_engine_retries(store_url):
    with OpenAITestServer(default=server_error(503)) as server:
        gateway = Gateway(
            gateway_config(
                provider("main", server.base_url),
                retry={"max_attempts": 2, "base_delay": 0.01, "max_delay": 0.02},
            )
        )
        run, entries = asyncio.run(_drive(store_url, gateway, CALC))
    assert run.status is RunStatus.SUSPENDED
    assert entries[-1].payload["attempts"] == 1
    assert len(server.requests) == 2  # the gateway's two attempts, not 2 x MODEL_RETRIES


def test_a_run_stops_at_its_cost_budget_before_the_call_that_would_pass_it(store_url):
    def loop(body: dict[str, Any]) -> Reply:
        n = len(body["messages"])
        return completion(None, [(f"c{n}", "add", f'{{"a": {n}, "b": 1}}')], usage=(500, 20))

    budget = 0.5
    agent = Agent(
        name="spender",
        instructions="add numbers forever",
        tools=(add,),
        max_turns=100,
        budget=Budget(cost=budget),
    )
    with OpenAITestServer(default=loop) as server:
        gateway = Gateway(
            gateway_config(provider("main", server.base_url, price=PRICE, max_output_tokens=200))
        )
        run, entries = asyncio.run(_drive(store_url, gateway, agent, runaway=Runaway()))
    assert run.status is RunStatus.SUSPENDED
    assert "budget" in run.status_reason
    assert "cost" in run.status_reason
    spent = fold(run.id, entries).model_cost
    assert spent <= budget  # checked before: never passed, not even by one call
    estimate = entries[-1].payload["estimate"]["cost"]
    assert spent + estimate > budget  # and it stopped only when the next call could pass it
    assert len(server.requests) == sum(1 for e in entries if e.kind is EntryKind.MODEL_RESPONSE)


# -- context compression ------------------------------------------------------------------------

WINDOW = 8192
TURNS = 200
LEDGER = Agent(
    name="ledger",
    instructions="Read every page of the ledger, one call per page, then say DONE.",
    tools=(fetch,),
    max_turns=TURNS + 5,
)


class _Conversation:
    """The scripted model: a summary for summarisation requests, else the next page's call."""

    def __init__(self) -> None:
        self.turn = 0

    def __call__(self, body: dict[str, Any]) -> Reply:
        if body["messages"][0]["content"] == SUMMARISER_PROMPT:
            return completion('{"facts": {"pages_read": "many"}, "done": [], "open": []}')
        self.turn += 1
        if self.turn > TURNS:
            return completion("DONE")
        return completion(None, [(f"c{self.turn}", "fetch", f'{{"page": {self.turn}}}')])


def _message(m: dict[str, Any]) -> Message:
    calls = tuple(
        ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"])
        for c in m.get("tool_calls") or ()
    )
    return Message(Role(m["role"]), m.get("content"), calls, m.get("tool_call_id"))


async def _crash_and_resume(url: str, gateway: Gateway, commits: int) -> tuple[Any, list[Any]]:
    store = build_store(url)
    await store.migrate()
    registry = AgentRegistry([LEDGER])
    first = Engine(
        store,
        registry,
        lambda spec: gateway,
        runaway=Runaway(enabled=False),
        faults=RaiseAt("after_commit", commits),
        owner="crashed-worker",
    )
    run = await first.start("ledger", "do it")
    with pytest.raises(SimulatedCrash):
        await first.run_to_end(run.id)
    later = Engine(
        store,
        registry,
        lambda spec: gateway,
        runaway=Runaway(enabled=False),
        clock=lambda: time.time() + 3600,  # the dead worker's lease has long expired
        owner="rescuer",
    )
    try:
        final = await later.run_to_end(run.id)
        return final, await store.load_journal(run.id)
    finally:
        await later.aclose()
        await store.close()


def test_a_200_turn_run_compresses_within_an_8k_window_and_replays_the_same_prompts(store_url):
    config = gateway_config(provider("main", "http://unused", context_window=WINDOW))

    def serve(drive: Any) -> tuple[Any, list[Any], list[dict[str, Any]]]:
        with OpenAITestServer(default=_Conversation(), keep_alive=True) as server:
            conf = gateway_config(
                provider("main", server.base_url, context_window=WINDOW, max_output_tokens=256)
            )
            run, entries = asyncio.run(drive(Gateway(conf)))
            return run, entries, server.requests

    run, entries, sent = serve(lambda g: _drive(store_url, g, LEDGER))
    assert run.status is RunStatus.COMPLETED, run.status_reason
    assert run.output == "DONE"
    summaries = [e for e in entries if e.kind is EntryKind.SUMMARY]
    assert len(summaries) >= 2
    counter = TokenCounter(config.providers[0].model)
    specs = [fetch.spec()]
    turns = [r for r in sent if r["messages"][0]["content"] != SUMMARISER_PROMPT]
    assert len(turns) == TURNS + 1
    for request in turns:
        messages = [_message(m) for m in request["messages"]]
        assert counter.messages(messages, specs) <= WINDOW
        assert request["messages"][0] == {"role": "system", "content": LEDGER.instructions}
    assert max(len(r["messages"]) for r in turns) < 2 * TURNS  # it really was compressed

    # a crash well after the first compression: the resumed run folds the journaled summaries
    # and sends exactly the prompts the uninterrupted run sent, summaries included
    crash_at = summaries[0].seq // 4 + 40
    resumed, resumed_entries, resent = serve(lambda g: _crash_and_resume(store_url, g, crash_at))
    assert resumed.status is RunStatus.COMPLETED, resumed.status_reason
    assert any(e.kind is EntryKind.RECOVERY for e in resumed_entries)
    assert [r["messages"] for r in resent] == [r["messages"] for r in sent]
