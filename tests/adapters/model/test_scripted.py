import asyncio
import json

import pytest

from autonomic.adapters.model.scripted import ScriptedModel
from autonomic.core.messages import Message, Role, ToolCall
from autonomic.errors import InvalidInput, ModelError


def test_turns_are_chosen_from_the_conversation_not_from_hidden_state(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(
        json.dumps(
            {"turns": [{"tool_calls": [{"name": "t", "arguments": {"x": 1}}]}, {"content": "done"}]}
        )
    )
    model = ScriptedModel.from_file(path)
    first = asyncio.run(model.complete([Message(Role.USER, "go")], []))
    again = asyncio.run(model.complete([Message(Role.USER, "go")], []))
    assert first == again
    assert first.tool_calls == (ToolCall("call_1_1", "t", '{"x":1}'),)
    later = [
        Message(Role.USER, "go"),
        Message(Role.ASSISTANT, None, first.tool_calls),
        Message(Role.TOOL, "1", tool_call_id="call_1_1"),
    ]
    assert asyncio.run(model.complete(later, [])).content == "done"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[]", 'list under "turns"'),
        ('{"turns": [42]}', "turn 1 must be an object"),
        ('{"turns": [{"tool_calls": [{"arguments": {}}]}]}', "needs a string name"),
        ('{"turns": [{}]}', "neither content nor tool_calls"),
        ('{"turns": [{"content": "x", "tools": []}]}', "unknown keys"),
    ],
)
def test_a_corrupt_script_is_refused_with_what_is_wrong(tmp_path, text, expected):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(InvalidInput, match=expected) as info:
        ScriptedModel.from_file(path)
    assert str(path) in str(info.value)


def test_running_past_the_end_of_a_script_is_a_model_error():
    model = ScriptedModel([{"content": "only"}])
    history = [Message(Role.USER, "go"), Message(Role.ASSISTANT, "only")]
    with pytest.raises(ModelError, match="1 turns"):
        asyncio.run(model.complete(history, []))
