"""Metrics as a hook of the step protocol (``autonomic.observability.metrics``).

Counts what the journal commits (runs entering a status, steps, tokens and cost by provider and
model, tool calls) and times the phases a worker sees: ``state_read`` (loading and folding the
journal when a drive begins), ``inference`` (the model call), ``tool`` (a tool's effect under its
contract). The sandbox tool times ``sandbox_provisioning`` itself; the bus times ``messaging``.

Cost: every step passes through here, so each label set's child is looked up once and kept
(``prometheus_client``'s ``labels()`` takes a lock and builds a key on every call); what a step
does is then a handful of ``inc``/``observe`` on objects already at hand.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from autonomic.core.entries import ModelTurn, ToolResult, Transition
from autonomic.core.journal import Entry
from autonomic.core.messages import ToolCall
from autonomic.engine.session import RunSession
from autonomic.engine.step import Effect, Hook, StepProtocol
from autonomic.observability.metrics import Metrics
from autonomic.tools.contract import Tool


class _Children:
    """Label children by label values, made on first use (label sets are bounded: agents,
    tools, providers, models, statuses)."""

    __slots__ = ("_made", "_make")

    def __init__(self, metric: Any) -> None:
        self._make = metric.labels
        self._made: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._made.get(values)
        if child is None:
            child = self._made[values] = self._make(*values)
        return child


class MetricsHook(Hook):
    """Prometheus counters and phase latencies for every run this process drives."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        phase = metrics.phase_seconds
        self._state_read = phase.labels("state_read")
        self._inference = phase.labels("inference")
        self._tool = phase.labels("tool")
        self._tokens = _Children(metrics.tokens)
        self._cost = _Children(metrics.cost)
        self._tool_calls = _Children(metrics.tool_calls)
        self._steps = _Children(metrics.steps)
        self._runs = _Children(metrics.runs)

    async def around_run(self, step: StepProtocol, drive: Callable[[], Awaitable[None]]) -> None:
        read = step.session.read_seconds
        if read is not None:
            self._state_read.observe(read)
        await drive()

    async def after_model_call(self, step: StepProtocol, turn: ModelTurn) -> None:
        spec = step.session.run.model
        call = turn.call
        provider = call.provider or spec.partition(":")[0]
        model = turn.model or spec
        if turn.latency_ms is not None:
            self._inference.observe(turn.latency_ms / 1000)
        usage = call.usage
        self._tokens(provider, model, "input").inc(usage.input_tokens)
        self._tokens(provider, model, "output").inc(usage.output_tokens)
        self._cost(provider, model).inc(float(call.cost))  # 0 too: the series exists

    async def around_tool_effect(
        self, step: StepProtocol, tool: Tool, call: ToolCall, effect: Effect
    ) -> tuple[ToolResult, bool]:
        started = time.perf_counter()
        result, unhealthy = await effect()
        self._tool.observe(time.perf_counter() - started)
        self._tool_calls(tool.name, "true" if result.ok else "false").inc()
        return result, unhealthy

    def after_step(self, step: StepProtocol, entry: Entry) -> None:
        self._steps(step.agent.name, entry.kind.value).inc()

    def on_commit(self, session: RunSession, entries: Sequence[Entry]) -> None:
        for entry in entries:
            body = entry.body
            if isinstance(body, Transition):
                self._runs(session.run.agent, body.target).inc()
