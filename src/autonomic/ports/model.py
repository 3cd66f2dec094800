"""The model port: chat with tool calls, the context a call is made in, and optional abilities.

``Model`` has one method, so adapters stay small: the scripted model for tests and the demo, the
OpenAI-compatible adapter for every real server. Rate limits, fallback and cost routing wrap a
``Model`` (the gateway) rather than changing it.

What a call may wait for, how much it matters and whom it is billed to travel beside the call, in
a context variable the engine sets around a run's model calls (``call_context``), so every model
keeps the same one-method port and any model may read it (``current_call``).

A model that manages its own calls - the gateway - has abilities the engine uses when they are
there: it counts a call's tokens and cost exactly before making it, knows its context window,
compresses a conversation that would not fit, and retries on its own. The engine asks the port
"can you?" (``isinstance(model, ManagedModel)``), never which product it is talking to.
"""

from __future__ import annotations

import contextvars
import enum
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from autonomic.core.entries import Summary
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


class Priority(enum.StrEnum):
    """How much a call matters, which decides whether it may wait or must move to a fallback.

    ``critical`` calls wait for the primary (up to their deadline) rather than be answered by a
    weaker model; ``normal`` calls wait briefly, then fall back; ``background`` calls fall back at
    once when the primary has no capacity.
    """

    CRITICAL = "critical"
    NORMAL = "normal"
    BACKGROUND = "background"


@dataclass(frozen=True, slots=True)
class CallContext:
    """How the current call may be served."""

    priority: Priority = Priority.NORMAL
    deadline: float | None = None
    """``time.monotonic()`` value after which the call must have failed; None: the model's default."""
    run_id: str | None = None
    tenant: str | None = None

    def remaining(self, default: float) -> float:
        """Seconds left before the deadline (``default`` from now when there is none)."""
        if self.deadline is None:
            return default
        return max(0.0, self.deadline - time.monotonic())


_current: contextvars.ContextVar[CallContext] = contextvars.ContextVar(
    "autonomic_model_call",
    default=CallContext(),  # noqa: B039 - frozen, so sharing the default is safe
)


def current_call() -> CallContext:
    """The context of the call being made (defaults: normal priority, no deadline)."""
    return _current.get()


@contextmanager
def call_context(
    *,
    priority: Priority | str = Priority.NORMAL,
    timeout: float | None = None,
    deadline: float | None = None,
    run_id: str | None = None,
    tenant: str | None = None,
) -> Iterator[CallContext]:
    """Model calls inside the block use this priority, deadline (absolute monotonic, or
    ``timeout`` seconds from now; the earlier wins), run and tenant."""
    if timeout is not None:
        t = time.monotonic() + timeout
        deadline = t if deadline is None else min(deadline, t)
    ctx = CallContext(Priority(priority), deadline, run_id, tenant)
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


@dataclass(frozen=True, slots=True)
class CallEstimate:
    """The most a call can consume: prompt tokens plus the largest answer, and the most it can
    cost on any server that may answer it (in the current call context)."""

    tokens: int
    cost: float


@runtime_checkable
class ManagedModel(Model, Protocol):
    """A model that manages its own calls (the gateway). Each ability is optional for a model;
    a model that has them all is used with them."""

    retries_itself: bool
    """It retries transient failures (with backoff, Retry-After and fallback) itself: a failure
    it raises is final for this attempt, and the engine must not retry again."""

    def estimate_call(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> CallEstimate:
        """The exact estimate of the next call (budgets are checked with it *before* the call)."""
        ...

    def context_window(self) -> int:
        """The smallest context window among the servers the current call may land on."""
        ...

    async def compress(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> Summary | None:
        """The conversation compressed to fit the window (with the calls that made it), or
        ``None`` when the next prompt fits as it is. Raises ``ModelError`` when the summarisation
        call fails."""
        ...


@runtime_checkable
class RoutedModel(Model, Protocol):
    """A model that routes calls among named servers (the gateway) can give a view that routes to
    some of them only - the model split: a small planner and a large actor over the same limits."""

    def restricted(self, provider_names: Sequence[str], *, name: str | None = None) -> Model:
        """A view that only routes to ``provider_names``, sharing this model's limits."""
        ...
