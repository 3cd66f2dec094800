"""Any OpenAI-compatible chat-completions server (OpenAI, vLLM, Ollama, ...) through the official SDK.

The SDK's own retries are off: retry policy belongs to the engine (and later the model gateway),
which needs to know whether an error is retryable. Errors are classified here: connection errors,
timeouts, 429 and 5xx are retryable; other 4xx are not. The wait a server asks for
(``Retry-After`` and its cousins, ``rate_hints``) rides on the error as ``retry_after``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx2  # the HTTP client the openai SDK is built on
import openai

from autonomic.adapters.model.rate_hints import rate_hint
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
        max_tokens: int | None = None,
        max_connections: int | None = None,
    ) -> None:
        """``max_connections`` bounds the keep-alive connection pool this model's one client
        shares between all its concurrent calls (the SDK's default when None)."""
        self.model = model
        http_client = None
        if max_connections is not None:
            http_client = openai.DefaultAsyncHttpxClient(
                limits=httpx2.Limits(
                    max_connections=max_connections, max_keepalive_connections=max_connections
                ),
                timeout=timeout,
            )
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "not-needed",
            timeout=timeout,
            max_retries=0,
            http_client=http_client,
        )
        self._temperature = temperature
        self._max_tokens = max_tokens

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.close()

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
        if self._max_tokens is not None:
            request["max_tokens"] = self._max_tokens
        try:
            completion = await self._client.chat.completions.create(**request)
        except openai.APIStatusError as exc:
            status = exc.status_code
            retryable = status in (408, 409, 429) or status >= 500
            # the wait the server asked for travels in the headers (any of five forms, maybe under
            # a proxy's prefix): read it here, where the response still is, and name it in the
            # message so a give-up says which header asked for how long
            hint = rate_hint(exc.response.headers, status=status)
            said = f" ({hint.describe()})" if hint is not None else ""
            raise ModelError(
                f"model server answered {status}: {_short(exc.message)}{said}",
                hint=None
                if retryable
                else "the request was refused as sent; retrying it unchanged will not help",
                retryable=retryable,
                retry_after=hint.seconds if hint is not None else None,
                status=status,
            ) from None
        except ValueError as exc:  # a body that is not JSON (truncated, HTML from a proxy)
            raise ModelError(
                f"the model server answered with a body that is not a chat completion: {_short(str(exc))}",
                hint="check that base_url points at an OpenAI-compatible /v1 endpoint",
                retryable=True,
            ) from None
        except openai.APIResponseValidationError as exc:
            raise ModelError(
                f"the model server answered with a body that is not a chat completion: {_short(str(exc))}",
                retryable=True,
            ) from None
        except openai.APITimeoutError:
            raise ModelError("model server timed out", retryable=True) from None
        except openai.APIConnectionError as exc:
            raise ModelError(
                f"cannot reach the model server: {exc.__cause__ or exc}",
                hint="check the base URL and that the server is running",
                retryable=True,
            ) from None
        if not isinstance(completion, openai.types.chat.ChatCompletion):
            raise ModelError(
                "the model server answered with a body that is not a chat completion",
                hint="check that base_url points at an OpenAI-compatible /v1 endpoint",
                retryable=True,
            )
        if not completion.choices:
            raise ModelError("the model answered with no choices", retryable=True)
        choice = completion.choices[0]
        message = choice.message
        calls = _function_calls(message.tool_calls or ())
        usage = completion.usage
        return ModelResponse(
            content=message.content,
            tool_calls=calls,
            model=completion.model or self.model,
            usage=Usage(usage.prompt_tokens, usage.completion_tokens) if usage else Usage(),
            finish_reason=choice.finish_reason,
            reasoning=_reasoning_field(message),
        )


def _reasoning_field(message: Any) -> str | None:
    """The reasoning a server sends beside the content (``reasoning_content``: DeepSeek, vLLM;
    ``reasoning``: Ollama, OpenRouter), an extra field the SDK keeps as it came."""
    extra = getattr(message, "model_extra", None) or {}
    for name in ("reasoning_content", "reasoning"):
        value = extra.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _function_calls(calls: Sequence[Any]) -> tuple[ToolCall, ...]:
    """The function calls of an answer. Some servers send a call without an id (or without a
    type, which then means a function; the SDK does not validate either): the id stays empty and
    the run gives the call one made from its position (``core/calls.py``)."""
    out: list[ToolCall] = []
    for call in calls:
        function = getattr(call, "function", None)
        if function is None or getattr(call, "type", None) not in (None, "function"):
            continue
        call_id = getattr(call, "id", None)
        out.append(
            ToolCall(id=str(call_id or ""), name=function.name, arguments=function.arguments or "")
        )
    return tuple(out)


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


def retry_after_seconds(headers: Mapping[str, str], status: int | None = None) -> float | None:
    """The longest wait the server asked for in ``headers`` (see ``rate_hints``), or None."""
    hint = rate_hint(headers, status=status)
    return hint.seconds if hint is not None else None


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
