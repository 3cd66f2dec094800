"""Metrics as a hook of the step protocol (``autonomic.observability.metrics``).

Counts what the journal commits (runs entering a status, steps, tokens and cost by provider and
model, tool calls) and times the phases a worker sees: ``state_read`` (loading and folding the
journal when a drive begins), ``inference`` (the model call), ``tool`` (a tool's effect under its
contract). The sandbox tool times ``sandbox_provisioning`` itself; the bus times ``messaging``.

Cost: every step passes through here, so each label set's child is looked up once and kept
(``prometheus_client``'s ``labels()`` takes a lock and builds a key on every call), as the
function that adds to its value (``adder``, ``observer``: ``Counter.inc`` and
``Histogram.observe`` check the child on every call and walk the buckets; this adds to the
same values, found once). What a step does is then a handful of calls on objects at hand.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from typing import Any, cast

from autonomic.core.entries import ModelTurn, ToolIntent, ToolResult, Transition
from autonomic.core.journal import Entry
from autonomic.core.messages import ToolCall
from autonomic.engine.session import RunSession
from autonomic.engine.step import Hook, StepProtocol
from autonomic.observability.metrics import Metrics
from autonomic.tools.contract import Tool


def adder(child: Any) -> Callable[[float], None]:
    """How to add to a counter's child, once its label values are bound: its value's ``inc``,
    without ``Counter.inc``'s checks on every call (the child is observable: it was made with
    its labels; an amount is checked by the caller). ``Counter.inc`` where the client is not
    the one this knows (the same value either way: the in-process value or the multi-process
    file's, as the client chose when the child was made)."""
    value = getattr(child, "_value", None)
    inc = getattr(value, "inc", None)
    if not callable(inc) or not child._is_observable():
        return cast("Callable[[float], None]", child.inc)
    return cast("Callable[[float], None]", inc)


def observer(child: Any) -> Callable[[float], None]:
    """How to observe into a histogram's child: its sum's ``inc`` and the bucket found by
    bisection (``Histogram.observe`` walks the bounds and checks the child on every call).
    ``Histogram.observe`` where the client is not the one this knows."""
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(getattr(child, "_sum", None), "inc", None)
    if (
        not isinstance(bounds, list)
        or not isinstance(buckets, list)
        or len(bounds) != len(buckets)
        or not bounds
        or bounds[-1] != math.inf
        or not callable(total)
        or not child._is_observable()
    ):
        return cast("Callable[[float], None]", child.observe)
    incs = [bucket.inc for bucket in buckets]

    def observe(amount: float) -> None:
        total(amount)
        if amount == amount:  # NaN falls in no bucket, as with ``Histogram.observe``
            incs[bisect_left(bounds, amount)](1)

    return observe


class _Children:
    """Label children by label values, made on first use (label sets are bounded: agents,
    tools, providers, models, statuses), kept as the function that adds to each (``adder``)."""

    __slots__ = ("_made", "_make")

    def __init__(self, metric: Any) -> None:
        self._make = metric.labels
        self._made: dict[tuple[str, ...], Callable[[float], None]] = {}

    def __call__(self, *values: str) -> Callable[[float], None]:
        add = self._made.get(values)
        if add is None:
            add = self._made[values] = adder(self._make(*values))
        return add


class MetricsHook(Hook):
    """Prometheus counters and phase latencies for every run this process drives."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        phase = metrics.phase_seconds
        self._state_read = observer(phase.labels("state_read"))
        self._inference = observer(phase.labels("inference"))
        self._tool = observer(phase.labels("tool"))
        self._tokens = _Children(metrics.tokens)
        self._cost = _Children(metrics.cost)
        self._tool_calls = _Children(metrics.tool_calls)
        self._steps = _Children(metrics.steps)
        self._runs = _Children(metrics.runs)

    async def around_run(self, step: StepProtocol, drive: Callable[[], Awaitable[None]]) -> None:
        read = step.session.read_seconds
        if read is not None:
            self._state_read(read)
        await drive()

    def after_step(self, step: StepProtocol, entry: Entry) -> None:
        self._steps(step.agent.name, entry.kind.value)(1)

    def after_model_turn(self, step: StepProtocol, turn: ModelTurn) -> None:
        spec = step.session.run.model
        call = turn.call
        provider = call.provider or spec.partition(":")[0]
        model = turn.model or spec
        if turn.latency_ms is not None:
            self._inference(turn.latency_ms / 1000)
        usage = call.usage
        # made on first use, so each series exists from its first model call; an amount that
        # is not positive (a server's odd usage) adds nothing, and never fails the step
        add = self._tokens(provider, model, "input")
        if usage.input_tokens > 0:
            add(usage.input_tokens)
        add = self._tokens(provider, model, "output")
        if usage.output_tokens > 0:
            add(usage.output_tokens)
        add = self._cost(provider, model)
        cost = float(call.cost)
        if cost > 0:
            add(cost)

    def before_tool_effect(
        self, step: StepProtocol, tool: Tool, call: ToolCall, intent: ToolIntent
    ) -> Any:
        return tool.name, time.perf_counter()

    def after_tool_effect(
        self, began: Any, result: ToolResult | None, error: BaseException | None
    ) -> None:
        if result is None:  # the effect raised (a cancellation): nothing to count
            return
        name, started = began
        self._tool(time.perf_counter() - started)
        self._tool_calls(name, "true" if result.ok else "false")(1)

    def on_transition(self, session: RunSession, transition: Transition, at: float) -> None:
        self._runs(session.run.agent, transition.target)(1)
