"""What the engine does around a model call when the model is the gateway: the call's context,
the exact pre-call estimate, and context compression.

The ``Model`` port stays ``complete(messages, tools)``; a gateway additionally knows exact token
counts, prices and its providers' windows. ReAct asks ``as_gateway(model)`` once and, with a
gateway, (1) wraps each call in ``call_context`` (priority from the run's metadata, deadline from
its wall-clock budget, run and tenant for the cost ledger), (2) replaces the budget's character
rule by ``gateway.estimate`` so a cost budget is checked *before* the call that would pass it,
and (3) compresses the conversation when the next prompt would pass 75 % of the window,
journaling the result as a ``summary`` entry. The summary carries the compressed messages
themselves, so a replay folds exactly the prompt the original run sent - no tokenizer, no second
summarisation call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from autonomic.core.messages import Message, ModelResponse, ToolSpec
from autonomic.core.state import RunState
from autonomic.errors import InvalidInput
from autonomic.gateway.compression import Compressor
from autonomic.gateway.context import CallContext, call_context, current_call
from autonomic.gateway.gateway import Gateway
from autonomic.gateway.provider import Priority
from autonomic.governance.action import Estimate
from autonomic.ports.model import Model

PRIORITIES = ", ".join(p.value for p in Priority)


def as_gateway(model: Model) -> Gateway | None:
    """The model as a gateway, or ``None`` for a plain model (scripted, a direct client)."""
    return model if isinstance(model, Gateway) else None


def run_priority(metadata: Mapping[str, Any]) -> Priority:
    """The priority class of a run's model calls: ``metadata["priority"]``, default normal.

    Validated when the run starts (an entry point), so a bad value never reaches a worker."""
    raw = metadata.get("priority", Priority.NORMAL.value)
    try:
        return Priority(raw)
    except ValueError:
        raise InvalidInput(
            f"metadata priority: {raw!r} is not a priority class (expected one of {PRIORITIES})",
            hint='e.g. metadata={"priority": "background"} to let calls fall back at once',
        ) from None


def deadline(state: RunState, now: float) -> float | None:
    """The run's wall-clock budget end as a ``time.monotonic()`` value (``None``: no budget).

    ``now`` is the engine's clock (seconds since the epoch), the clock ``started_at`` uses."""
    wall = (state.budget or {}).get("wall_seconds")
    if wall is None:
        return None
    left = state.started_at + float(wall) - now
    return time.monotonic() + max(0.0, left)


def context_for(
    *, metadata: Mapping[str, Any], state: RunState, tenant: str, now: float
) -> AbstractContextManager[CallContext]:
    """``call_context`` for one of this run's model calls."""
    return call_context(
        priority=run_priority(metadata),
        deadline=deadline(state, now),
        run_id=state.run_id,
        tenant=tenant,
    )


def exact_estimate(
    gateway: Gateway,
) -> Callable[[Sequence[Message], Sequence[ToolSpec]], Estimate]:
    """``ModelBudget.estimate`` for a gateway: exact prompt tokens plus the largest output cap
    of the providers the call may use, and the most the call can cost on any of them."""

    def estimate(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> Estimate:
        found = gateway.estimate(messages, tools)
        providers = gateway.providers_for(_priority())
        output = max((p.output_estimate for p in providers), default=0)
        return Estimate(tokens=found.input_tokens + output, cost=found.max_cost_usd)

    return estimate


def _priority() -> Priority:
    return current_call().priority


def response_fields(response: ModelResponse) -> dict[str, Any]:
    """What the journal records of a gateway's answer: who served it, what it cost, how hard it
    was (empty for a plain model, so their journals are unchanged)."""
    if response.provider is None:
        return {}
    return {
        "provider": response.provider,
        "cost_usd": response.cost_usd,
        "attempts": response.attempts,
        "waited_s": round(response.waited_s, 6),
    }


class _Metered:
    """A model that remembers the calls made through it (the summariser's, to journal them)."""

    def __init__(self, model: Model) -> None:
        self._model = model
        self.calls: list[dict[str, Any]] = []

    @property
    def name(self) -> str:
        return self._model.name

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> ModelResponse:
        response = await self._model.complete(messages, tools)
        self.calls.append({"usage": response.usage.to_dict(), **response_fields(response)})
        return response


async def compress(
    gateway: Gateway,
    messages: Sequence[Message],
    tools: Sequence[ToolSpec],
    *,
    threshold: float = 0.75,
    keep_recent: int = 6,
) -> dict[str, Any] | None:
    """The ``summary`` entry payload if the next prompt passes ``threshold`` of the window.

    The window and counter are those of the smallest-window provider the call may land on, so
    the prompt fits wherever the gateway routes it."""
    providers = gateway.providers_for(_priority())
    if not providers:
        return None
    smallest = min(providers, key=lambda p: p.context_window)
    metered = _Metered(gateway)
    compressor = Compressor(
        metered,
        gateway.counter(smallest),
        window=smallest.context_window,
        threshold=threshold,
        keep_recent=keep_recent,
    )
    done = await compressor.maybe_compress(messages, tools)
    if done is None:
        return None
    return {
        **done.to_entry(),
        "window": smallest.context_window,
        "messages": [m.to_dict() for m in done.messages],
        "calls": metered.calls,
    }
