"""Metrics as a hook of the step protocol (``autonomic.observability.metrics``).

Counts what the journal commits (runs entering a status, steps, tokens and cost by provider and
model, tool calls) and times the phases a worker sees: ``state_read`` (loading and folding the
journal when a drive begins), ``inference`` (the model call), ``tool`` (a tool's effect under its
contract). The sandbox tool times ``sandbox_provisioning`` itself; the bus will time
``messaging``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

from autonomic.core.entries import ModelTurn, ToolResult, Transition
from autonomic.core.journal import Entry
from autonomic.core.messages import ToolCall
from autonomic.engine.session import RunSession
from autonomic.engine.step import Effect, Hook, StepProtocol
from autonomic.observability.metrics import Metrics
from autonomic.tools.contract import Tool


class MetricsHook(Hook):
    """Prometheus counters and phase latencies for every run this process drives."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def around_run(self, step: StepProtocol, drive: Callable[[], Awaitable[None]]) -> None:
        read = step.session.read_seconds
        if read is not None:
            self.metrics.phase_seconds.labels("state_read").observe(read)
        await drive()

    async def after_model_call(self, step: StepProtocol, turn: ModelTurn) -> None:
        m = self.metrics
        spec = step.session.run.model
        provider = turn.call.provider or spec.partition(":")[0]
        model = turn.model or spec
        if turn.latency_ms is not None:
            m.phase_seconds.labels("inference").observe(turn.latency_ms / 1000)
        usage = turn.call.usage
        m.tokens.labels(provider, model, "input").inc(usage.input_tokens)
        m.tokens.labels(provider, model, "output").inc(usage.output_tokens)
        m.cost.labels(provider, model).inc(float(turn.call.cost))  # 0 too: the series exists

    async def around_tool_effect(
        self, step: StepProtocol, tool: Tool, call: ToolCall, effect: Effect
    ) -> tuple[ToolResult, bool]:
        started = time.perf_counter()
        result, unhealthy = await effect()
        self.metrics.phase_seconds.labels("tool").observe(time.perf_counter() - started)
        self.metrics.tool_calls.labels(tool.name, "true" if result.ok else "false").inc()
        return result, unhealthy

    def after_step(self, step: StepProtocol, entry: Entry) -> None:
        self.metrics.steps.labels(step.agent.name, entry.kind.value).inc()

    def on_commit(self, session: RunSession, entries: Sequence[Entry]) -> None:
        for entry in entries:
            body = entry.body
            if isinstance(body, Transition):
                self.metrics.runs.labels(session.run.agent, body.target).inc()
