"""Any OpenAI-compatible chat-completions server (OpenAI, vLLM, Ollama, ...) through the official SDK.

The SDK's own retries are off: retry policy belongs to the engine (and later the model gateway),
which needs to know whether an error is retryable. Errors are classified here: connection errors,
timeouts, 429 and 5xx are retryable; other 4xx are not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import openai

from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec, Usage
from autonomic.errors import ModelError


class OpenAICompatModel:
    """Chat completions with tool calls against ``base_url``."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        temperature: float | None = None,
    ) -> None:
        self.model = model
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key or "not-needed", timeout=timeout, max_retries=0
        )
        self._temperature = temperature

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> ModelResponse:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [to_openai_message(m) for m in messages],
        }
        if tools:
            request["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in tools
            ]
        if self._temperature is not None:
            request["temperature"] = self._temperature
        try:
            completion = await self._client.chat.completions.create(**request)
        except openai.APIStatusError as exc:
            retryable = exc.status_code == 429 or exc.status_code >= 500
            raise ModelError(
                f"model server answered {exc.status_code}: {_short(exc.message)}",
                retryable=retryable,
            ) from None
        except openai.APITimeoutError:
            raise ModelError("model server timed out", retryable=True) from None
        except openai.APIConnectionError as exc:
            raise ModelError(
                f"cannot reach the model server: {exc.__cause__ or exc}",
                hint="check the base URL and that the server is running",
                retryable=True,
            ) from None
        if not completion.choices:
            raise ModelError("the model answered with no choices", retryable=True)
        choice = completion.choices[0]
        message = choice.message
        calls = tuple(
            ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments or "")
            for c in (message.tool_calls or [])
            if c.type == "function"
        )
        usage = completion.usage
        return ModelResponse(
            content=message.content,
            tool_calls=calls,
            model=completion.model or self.model,
            usage=Usage(usage.prompt_tokens, usage.completion_tokens) if usage else Usage(),
            finish_reason=choice.finish_reason,
        )


def to_openai_message(message: Message) -> dict[str, Any]:
    """Our message as a chat-completions message."""
    out: dict[str, Any] = {"role": message.role.value, "content": message.content}
    if message.role is Role.ASSISTANT and message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.role is Role.TOOL:
        out["tool_call_id"] = message.tool_call_id
    return out


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
