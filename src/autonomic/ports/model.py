"""The model port: chat with tool calls.

One method, so adapters stay small: the scripted model for tests and the demo, the
OpenAI-compatible adapter for every real server. Rate limits, fallback and cost routing wrap a
``Model`` rather than changing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from autonomic.core.messages import Message, ModelResponse, ToolSpec


@runtime_checkable
class Model(Protocol):
    """Something that answers a conversation, possibly with tool calls."""

    @property
    def name(self) -> str:
        """A stable name for the timeline and cost accounting (e.g. ``openai:gpt-4o-mini``)."""
        ...

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> ModelResponse:
        """Answer the conversation. Raises ``ModelError`` (retryable or not) on failure."""
        ...
