"""Chat messages, tool calls and model responses: the vocabulary shared by the journal and models.

The shapes follow OpenAI's chat-completions format because every model server we target speaks it;
``arguments`` stays the raw string the model produced, because model output is untrusted and must be
parsed and validated, not assumed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Role(enum.StrEnum):
    """Who said a message."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call proposed by a model. ``arguments`` is the model's raw JSON text."""

    id: str
    name: str
    arguments: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> ToolCall:
        return ToolCall(id=data["id"], name=data["name"], arguments=data["arguments"])


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a conversation."""

    role: Role
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with empty fields left out (a ``summary`` entry journals whole messages)."""
        data: dict[str, Any] = {"role": self.role.value, "content": self.content}
        if self.tool_calls:
            data["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            data["name"] = self.name
        return data

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Message:
        return Message(
            Role(data["role"]),
            data.get("content"),
            tuple(ToolCall.from_dict(c) for c in data.get("tool_calls", ())),
            data.get("tool_call_id"),
            data.get("name"),
        )


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a model call consumed."""

    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )

    def to_dict(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """What a model is told about a tool: OpenAI function-calling name, description, schema."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ModelResponse:
    """A model's answer: text, tool calls, or both."""

    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    provider: str | None = None
    """Which configured provider served the call (set by the model gateway; journal it)."""
    cost_usd: float | None = None
    """What the call cost at the provider's configured prices, when they are known."""
    attempts: int = 1
    """How many HTTP attempts the gateway made (retries and fallbacks included)."""
    waited_s: float = 0.0
    """Seconds spent waiting for rate-limit capacity or backoff before the answer."""
    reasoning: str | None = None
    """The answer's reasoning, when the server sends it apart from the content
    (``reasoning_content``); journaled as fields (``core/reasoning.py``)."""
