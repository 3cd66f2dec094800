"""The OpenAI-compatible client keeps the reasoning a server sends beside the content."""

from openai.types.chat import ChatCompletionMessage

from autonomic.adapters.model.openai_compat import _reasoning_field


def test_reasoning_content_and_reasoning_are_read_and_blank_is_none():
    deepseek = ChatCompletionMessage.model_validate(
        {"role": "assistant", "content": "4", "reasoning_content": "2 + 2"}
    )
    ollama = ChatCompletionMessage.model_validate(
        {"role": "assistant", "content": "4", "reasoning": "two and two"}
    )
    plain = ChatCompletionMessage.model_validate({"role": "assistant", "content": "4"})
    odd = ChatCompletionMessage.model_validate(
        {"role": "assistant", "content": "4", "reasoning_content": {"not": "text"}}
    )
    assert _reasoning_field(deepseek) == "2 + 2"
    assert _reasoning_field(ollama) == "two and two"
    assert _reasoning_field(plain) is None
    assert _reasoning_field(odd) is None
