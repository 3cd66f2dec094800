"""Context compression: a 200-turn conversation against an 8k window never sends a prompt over
the window, keeps the system prompt verbatim and every tool call with its result, and a replay
rebuilds exactly the same prompts from the journaled summaries."""

import asyncio
import json
import re

import pytest

from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec
from autonomic.errors import ModelError
from autonomic.gateway.compression import (
    SUMMARISER_PROMPT,
    Compressor,
    is_state_message,
    needs_compression,
    parse_state,
    plan_compression,
    rebuild,
)
from autonomic.gateway.tokens import TokenCounter

WINDOW = 8192
TURNS = 200
SYSTEM = Message(Role.SYSTEM, "You are the ledger agent. Look up every record, then report.")
TOOLS = [
    ToolSpec(
        "lookup", "Look up a record", {"type": "object", "properties": {"i": {"type": "integer"}}}
    )
]


def record(i: int) -> str:
    return f"record {i}: " + " ".join(f"field{j}=value{i * j}" for j in range(60))


def agent_policy(messages, tools, *, garbage_summary=False):
    if messages[0].content == SUMMARISER_PROMPT:
        if garbage_summary:
            return ModelResponse("Sure! Here is a summary: the agent looked things up.")
        seen = re.findall(r"result lookup#c(\d+)", messages[1].content)
        state = {
            "facts": {f"record_{n}": f"looked up, {len(record(int(n)))} chars" for n in seen[-10:]},
            "done": [f"lookup {n}" for n in seen[-10:]],
            "open": ["look up the remaining records"],
        }
        return ModelResponse(json.dumps(state))
    last = [m for m in messages if m.role is Role.TOOL]
    turn = int(last[-1].content.split()[1].rstrip(":")) + 1 if last else 0
    if turn >= TURNS:
        return ModelResponse("all records looked up")
    return ModelResponse(None, (ToolCall(f"c{turn}", "lookup", json.dumps({"i": turn})),))


class Recording:
    """A model that records (and bounds) every prompt it is sent."""

    def __init__(self, counter, **policy_options):
        self.counter = counter
        self.prompts = []
        self.options = policy_options

    @property
    def name(self):
        return "recording"

    async def complete(self, messages, tools):
        self.prompts.append((list(messages), self.counter.messages(messages, tools)))
        return agent_policy(messages, tools, **self.options)


def _pairs_intact(messages):
    called = set()
    for m in messages:
        called.update(c.id for c in m.tool_calls)
        if m.role is Role.TOOL and m.tool_call_id not in called:
            return False
    return True


def drive(**policy_options):
    counter = TokenCounter("gpt-4o-mini")
    model = Recording(counter, **policy_options)
    compressor = Compressor(model, counter, window=WINDOW, keep_recent=6)
    messages = [SYSTEM, Message(Role.USER, "Reconcile the ledger.")]
    entries = []

    async def main():
        nonlocal messages
        for _ in range(TURNS + 1):
            compression = await compressor.maybe_compress(messages, TOOLS)
            if compression is not None:
                assert (
                    rebuild(messages, compression.to_entry(), counter, TOOLS)
                    == compression.messages
                )
                entries.append(compression.to_entry())
                messages = compression.messages
            response = await model.complete(messages, TOOLS)
            if not response.tool_calls:
                return response
            call = response.tool_calls[0]
            messages = [
                *messages,
                Message(Role.ASSISTANT, None, response.tool_calls),
                Message(Role.TOOL, record(json.loads(call.arguments)["i"]), tool_call_id=call.id),
            ]
        raise AssertionError("the conversation did not finish")

    final = asyncio.run(main())
    return model, entries, final


def test_two_hundred_turns_fit_an_8k_window_with_the_system_prompt_verbatim():
    model, entries, final = drive()
    assert final.content == "all records looked up"
    agent_prompts = [(p, n) for p, n in model.prompts if p[0].content != SUMMARISER_PROMPT]
    assert len(agent_prompts) == TURNS + 1
    assert max(n for _, n in model.prompts) <= WINDOW  # summarisation calls included
    assert max(n for _, n in agent_prompts) <= 0.75 * WINDOW
    for prompt, _ in agent_prompts:
        assert prompt[0] == SYSTEM  # verbatim, every single call
        assert _pairs_intact(prompt)
    assert len(entries) >= 5
    assert all(not e["fallback"] for e in entries)
    # without compression the same conversation would not have fitted
    counter = TokenCounter("gpt-4o-mini")
    assert counter.text(record(0)) * TURNS > WINDOW * 5


def test_a_replay_reproduces_every_prompt_exactly():
    first, first_entries, _ = drive()
    second, second_entries, _ = drive()
    assert [p for p, _ in first.prompts] == [p for p, _ in second.prompts]
    assert first_entries == second_entries


def test_unusable_summaries_fall_back_to_an_extractive_state_and_still_fit():
    model, entries, final = drive(garbage_summary=True)
    assert final.content == "all records looked up"
    assert entries
    assert all(e["fallback"] for e in entries)
    assert max(n for _, n in model.prompts) <= WINDOW
    last_prompt = model.prompts[-1][0]
    assert any(is_state_message(m) for m in last_prompt)


def test_plans_never_split_a_tool_call_from_its_result():
    msgs = [
        SYSTEM,
        Message(Role.USER, "go"),
        Message(
            Role.ASSISTANT, None, (ToolCall("a", "lookup", "{}"), ToolCall("b", "lookup", "{}"))
        ),
        Message(Role.TOOL, "1", tool_call_id="a"),
        Message(Role.TOOL, "2", tool_call_id="b"),
        Message(Role.ASSISTANT, "done"),
    ]
    plan = plan_compression(msgs, keep_recent=2)  # would start at the tool result "b"
    assert plan is not None
    assert plan.recent[0].role is Role.ASSISTANT
    assert plan.recent[0].tool_calls
    assert plan.head == (SYSTEM,)
    assert plan_compression(msgs[:2], keep_recent=2) is None


def test_thresholds_and_untrusted_summaries():
    assert not needs_compression(6144, 8192)
    assert needs_compression(6145, 8192)
    assert parse_state('```json\n{"facts": {}}\n```') == {"facts": {}}


@pytest.mark.parametrize("bad", ["not json", "[1, 2]", None])
def test_a_summary_that_is_not_a_json_object_is_a_retryable_error(bad):
    with pytest.raises(ModelError) as info:
        parse_state(bad)
    assert info.value.retryable
