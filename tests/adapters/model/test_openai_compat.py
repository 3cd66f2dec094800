import asyncio

import pytest

from autonomic.adapters.model.openai_compat import OpenAICompatModel
from autonomic.core.messages import Message, Role, ToolCall, ToolSpec
from autonomic.errors import ModelError
from autonomic.testing.openai_server import OpenAITestServer, Reply, completion, rate_limited

TOOLS = [
    ToolSpec("add", "Add numbers", {"type": "object", "properties": {"a": {"type": "integer"}}})
]


def _ask(server, messages):
    model = OpenAICompatModel("test-model", base_url=server.base_url, api_key="sk-test")
    return asyncio.run(model.complete(messages, TOOLS))


def test_tool_calls_and_usage_come_back_over_http():
    with OpenAITestServer([completion(None, [("c1", "add", '{"a": 1}')], usage=(42, 7))]) as server:
        response = _ask(server, [Message(Role.USER, "add one")])
    assert response.tool_calls == (ToolCall("c1", "add", '{"a": 1}'),)
    assert (response.usage.input_tokens, response.usage.output_tokens) == (42, 7)
    sent = server.requests[0]
    assert sent["model"] == "test-model"
    assert sent["tools"][0]["function"]["name"] == "add"


def test_a_tool_call_without_id_or_type_is_kept_with_an_empty_id():
    """The run gives it an id made from its position (``core/calls.py``); before, a call with
    no ``type`` was dropped and one with no ``id`` carried ``None``."""
    reply = completion(None, [("c1", "add", '{"a": 1}')])
    (call,) = reply.body["choices"][0]["message"]["tool_calls"]
    del call["id"], call["type"]
    with OpenAITestServer([reply]) as server:
        response = _ask(server, [Message(Role.USER, "add one")])
    assert response.tool_calls == (ToolCall("", "add", '{"a": 1}'),)


def test_the_conversation_is_sent_in_chat_completions_form():
    history = [
        Message(Role.SYSTEM, "be brief"),
        Message(Role.USER, "add"),
        Message(Role.ASSISTANT, None, (ToolCall("c1", "add", "{}"),)),
        Message(Role.TOOL, "3", tool_call_id="c1"),
    ]
    with OpenAITestServer([completion("3")]) as server:
        response = _ask(server, history)
    assert response.content == "3"
    sent = server.requests[0]["messages"]
    assert sent[2]["tool_calls"][0]["function"] == {"name": "add", "arguments": "{}"}
    assert sent[3] == {"role": "tool", "content": "3", "tool_call_id": "c1"}


@pytest.mark.parametrize(
    ("status", "retryable"), [(429, True), (500, True), (503, True), (400, False), (401, False)]
)
def test_errors_are_classified_retryable_or_not(status, retryable):
    reply = Reply(status, {"error": {"message": f"status {status}"}})
    with OpenAITestServer([reply]) as server, pytest.raises(ModelError) as info:
        _ask(server, [Message(Role.USER, "hi")])
    assert info.value.retryable is retryable
    assert str(status) in str(info.value)


def test_an_unreachable_server_is_a_retryable_error_with_a_hint():
    model = OpenAICompatModel("m", base_url="http://127.0.0.1:1/v1", api_key="k", timeout=5)
    with pytest.raises(ModelError) as info:
        asyncio.run(model.complete([Message(Role.USER, "hi")], []))
    assert info.value.retryable
    assert "base URL" in (info.value.hint or "")


def test_an_answer_without_choices_is_a_model_error():
    reply = completion("x")
    reply.body["choices"] = []
    with OpenAITestServer([reply]) as server, pytest.raises(ModelError, match="no choices"):
        _ask(server, [Message(Role.USER, "hi")])


@pytest.mark.parametrize(
    ("header", "named"),
    [
        ("Retry-After", "retry-after: 3"),
        ("retry-after-ms", "retry-after-ms: 3000"),
        ("llm_provider-retry-after", "llm_provider-retry-after: 3"),
        ("x-ratelimit-reset-requests", "x-ratelimit-reset-requests: 3s"),
        ("x-ratelimit-reset-tokens", "x-ratelimit-reset-tokens: 3s"),
    ],
)
def test_a_429s_wait_hint_survives_the_sdk_and_is_named_in_the_error(header, named):
    # the SDK's exception holds the response: the headers are read there, whatever their form
    reply = rate_limited(3, header=header)
    with OpenAITestServer([reply]) as server, pytest.raises(ModelError) as info:
        _ask(server, [Message(Role.USER, "hi")])
    assert info.value.retry_after == pytest.approx(3.0)
    assert info.value.status == 429
    assert f"asks to wait 3s ({named})" in info.value.message


def test_a_429_with_garbage_hints_is_still_a_retryable_error_without_a_wait():
    reply = rate_limited(1, headers={"Retry-After": "soon", "retry-after-ms": "nan"})
    with OpenAITestServer([reply]) as server, pytest.raises(ModelError) as info:
        _ask(server, [Message(Role.USER, "hi")])
    assert info.value.retryable
    assert info.value.retry_after is None
