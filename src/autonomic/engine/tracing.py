"""Tracing as a hook of the step protocol: one trace per run, however many processes drive it.

The span tree of a run (names as operators search them):

* ``invoke_agent AGENT`` - the run, the root; its ids are the ``traceparent`` in ``run.started``
  (or derived from the run id for runs created without tracing). It is emitted once, by the
  process that commits the run's end, spanning creation to end.
* ``autonomic.drive`` - one worker driving the run (a resumed or taken-over half is another).
* ``approval wait`` - from the approval's request to its decision, when a run resumes after one.
* ``chat MODEL`` - a model turn: the model call (GenAI conventions: provider, request/response
  model, tokens, finish reason, cost; the turn's number and the worker that took it), and the
  parent of the tool calls the model proposed in it: ``execute_tool TOOL`` (version,
  idempotency key, risk, the gates' decision), under which the sandbox tool adds
  ``sandbox.execute BACKEND``. A turn resumed in another process (its model call made and
  journaled by one that died) gets a ``turn N`` span for its tool calls instead.

The turn is its model call's span, not a span of its own around the call and the tools: the
GenAI conventions have no turn (an agent's inference span, ``chat``, is the unit they trace),
and a span a step less is a third of tracing's cost on a durable step
(``docs/observability.md``). The model span keeps the call's own start and end (its latency is
the inference's); the tool calls under it start when it has ended.

Turns, drives and approval waits hang from the root, not from each other: a process killed
mid-run never ends (so never exports) its drive span, while the turns it finished were exported
already - under the root, the tree stays whole whatever crashed. Every span carries the run id and
correlation id. Prompts, answers, arguments and results stay out unless
``AUTONOMIC_TRACE_CONTENT=1``; even then they are masked by ``scrub``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from autonomic.core.canonical import canonical_json
from autonomic.core.entries import (
    DecisionRecord,
    EntryKind,
    ModelTurn,
    RunStarted,
    ToolIntent,
    ToolResult,
    Transition,
)
from autonomic.core.messages import ToolCall
from autonomic.core.run import Run, RunStatus
from autonomic.engine.failure import scrub
from autonomic.engine.session import RunSession
from autonomic.engine.step import Hook, StepProtocol
from autonomic.observability import genai
from autonomic.observability.trace_context import TraceContext
from autonomic.observability.tracing import Tracing, joining
from autonomic.tools.contract import Tool

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from autonomic.engine.step_spans import StepSpans

_TERMINAL = {s.value for s in RunStatus if s.terminal}
_TRANSITION = EntryKind.TRANSITION.value
_time_ns = time.time_ns


def run_trace(run_id: str, recorded: str | None) -> TraceContext:
    """The trace a run's spans go in: the recorded one, else the one derived from its id."""
    return TraceContext.parse(recorded) or TraceContext.of_run(run_id)


def run_attributes(run: Run) -> dict[str, Any]:
    return {
        genai.RUN_ID: run.id,
        genai.CORRELATION_ID: run.correlation_id or run.id,
        genai.AGENT_NAME: run.agent,
        genai.TENANT: run.tenant,
    }


class _Drive:
    """The open spans of one run this process is driving."""

    __slots__ = (
        "common",
        "drive",
        "open",
        "root",
        "run",
        "steps",
        "trace",
        "turn",
        "turn_no",
        "worker",
    )

    def __init__(
        self,
        trace: TraceContext,
        drive: Span,
        root: Span,
        common: dict[str, Any],
        run: Run,
    ) -> None:
        self.trace = trace
        self.drive = drive
        self.root = root
        """The root as a (non-recording) span: what turns, model calls among them, hang from."""
        self.common = common
        self.turn: Span | None = None
        """The turn's span: its model call's (ended), or a resumed turn's ``turn N``."""
        self.open = False
        """Whether ``turn`` is a resumed turn's span, open until the turn is over."""
        self.run = run
        self.worker = _worker(run)
        self.turn_no = 0
        self.steps: StepSpans | None = None
        """Makes the model and tool calls' spans (``None``: the SDK's spans, only as the
        benchmark's *before* asks for them)."""


class TracingHook(Hook):
    """Spans for runs, drives, model turns, tool calls and approval waits."""

    def __init__(self, tracing: Tracing) -> None:
        from autonomic.engine import step_spans  # imports the SDK: only when tracing is on

        self.tracing = tracing
        self._drives: dict[str, _Drive] = {}
        self._step_spans = step_spans.StepSpans
        self._tool_span = step_spans.ToolSpan
        self._chat_span = step_spans.ChatSpan
        self._current = tracing.current_setter()

    def before_run_started(self, started: RunStarted) -> RunStarted:
        """A new root for the run - in the trace of the event that starts it, when the inbox
        creates it under its ``process`` span (``starting_under``): a conversation between
        agents stays one trace."""
        joined = joining()
        trace_id = joined.trace_id if joined is not None else None
        return started._replace(trace=TraceContext.new(trace_id).traceparent)

    async def around_run(self, step: StepProtocol, drive: Callable[[], Awaitable[None]]) -> None:
        session = step.session
        run = session.run
        trace = run_trace(run.id, session.state.trace)
        common = run_attributes(run)
        root = self.tracing.root_span(trace)
        if session.state.reopened:
            await self._approval_wait(step, root, common)
        span = self.tracing.start(
            "autonomic.drive",
            root,
            {**common, genai.WORKER: _worker(run), genai.RESUMED: session.state.last_seq > 2},
        )
        if not span.is_recording():
            # the sampler dropped this run's trace: no turn, model or tool span is made (a
            # sandbox under a tool still finds a current span, so it makes no stray root)
            with self.tracing.current(span):
                await drive()
            return
        # spans below carry the ids only (the run's other attributes are on the root and the
        # drive): every attribute costs on every span
        ids = {genai.RUN_ID: run.id, genai.CORRELATION_ID: common[genai.CORRELATION_ID]}
        self._drives[run.id] = held = _Drive(trace, span, root, ids, run)
        sink = self.tracing.sink
        if sink is not None:
            held.steps = self._step_spans(
                sink,
                held.root.get_span_context(),
                run_id=run.id,
                correlation_id=common[genai.CORRELATION_ID],
                worker=held.worker,
                model=run.model,
                content=self.tracing.content,
            )
        try:
            with self.tracing.current(span):
                try:
                    await drive()
                finally:
                    self._end_turn(held)
                    span.set_attribute(genai.RUN_STATUS, session.state.status.value)
        finally:
            self._drives.pop(run.id, None)

    def after_model_turn(self, step: StepProtocol, turn: ModelTurn) -> None:
        """The model call's span, which is the turn's: its tool calls hang from it."""
        held = self._drives.get(step.session.run.id)
        if held is None:
            return
        if held.steps is not None:
            if held.open:
                self._end_turn(held)
            held.turn = chat = self._chat_span(held.steps, turn, _time_ns())
            held.steps.sink.emit(chat)
            held.turn_no = turn.turn
            held.open = False
            return
        self._sdk_chat(step, held, turn)

    def before_tool_effect(
        self, step: StepProtocol, tool: Tool, call: ToolCall, intent: ToolIntent
    ) -> Any:
        """The tool call's span, current while the effect runs (a sandbox's span nests under
        it): under the turn's span, or a resumed turn's (its model call was elsewhere)."""
        held = self._drives.get(step.session.run.id)
        if held is None:
            return None
        state = step.session.state
        turns = state.turns
        if held.turn is None or held.turn_no != turns:
            self._open_turn(held, turns)  # a resumed turn: its model call was elsewhere
        decisions = state.decisions
        if not decisions:
            decision = None
        elif intent.position is not None:  # the key it is journaled under (since 0.2)
            decision = decisions.get(intent.position)
        else:
            decision = _this_turn(decisions, turns, call.id)
        steps = held.steps
        if steps is None:
            return _SdkToolSpan(self.tracing, held, tool, call, turns, intent, decision)
        # under a recorded span: a ChatSpan, or a resumed turn's (the trace is sampled)
        recorded = self._tool_span(steps, held.turn, tool, call, turns, intent, decision)
        return recorded, self._current[0](recorded)

    def after_tool_effect(
        self, began: Any, result: ToolResult | None, error: BaseException | None
    ) -> None:
        """The tool call's span ends with the call's outcome, or with the exception that left
        it; the span that was current before it is current again."""
        if type(began) is not tuple:
            if began is not None:
                began.end(result, error)
            return
        recorded, token = began
        try:  # noqa: SIM105 - the token was made by ``before_tool_effect``
            self._current[1](token)
        except ValueError:  # not this context's token: nothing of ours to restore
            pass
        if error is not None:
            recorded.raised(error)
        elif result is not None:
            recorded.finished(result)

    def on_transition(self, session: RunSession, transition: Transition, at: float) -> None:
        """The root span when a commit ends the run (called only for commits that change the
        run's status: a step's commit pays nothing for it)."""
        if transition.target in _TERMINAL:
            self._emit_root(session, transition.target, at)

    # -- the SDK's spans (the benchmark's *before*: ``_Drive.steps`` is ``None``) ---------------

    def _sdk_chat(self, step: StepProtocol, held: _Drive, turn: ModelTurn) -> None:
        call = turn.call
        spec = step.session.run.model
        usage = call.usage
        attrs: dict[str, Any] = {
            **held.common,
            genai.OPERATION: genai.OP_CHAT,
            genai.REQUEST_MODEL: spec,
            genai.RESPONSE_MODEL: turn.model or spec,
            genai.INPUT_TOKENS: usage.input_tokens,
            genai.OUTPUT_TOKENS: usage.output_tokens,
            genai.TURN: turn.turn,
            genai.COST_USD: float(call.cost),
            genai.WORKER: held.worker,
        }
        provider = call.provider or spec.partition(":")[0]
        attrs[genai.PROVIDER] = attrs[genai.SYSTEM] = provider
        if turn.finish_reason:
            attrs[genai.FINISH_REASONS] = (turn.finish_reason,)
        if self.tracing.content:
            attrs[genai.OUTPUT_MESSAGES] = scrub(
                canonical_json(
                    {"content": turn.content, "tool_calls": [c.to_dict() for c in turn.tool_calls]}
                )
            )
        self._end_turn(held)
        span = self.tracing.start(
            f"chat {turn.model or spec}",
            held.root,
            attrs,
            start_s=time.time() - (turn.latency_ms or 0.0) / 1000,
        )
        span.end()
        held.turn = span
        held.turn_no = turn.turn

    # -- helpers --------------------------------------------------------------------------------

    def _emit_root(self, session: RunSession, status: str, ended: float) -> None:
        """The run's root span, from its creation to its end (the ids its journal names)."""
        run = session.run
        held = self._drives.get(run.id)  # the drive that ends the run knows its trace
        trace = held.trace if held is not None else run_trace(run.id, session.state.trace)
        attrs = {
            **run_attributes(run),
            genai.OPERATION: genai.OP_INVOKE_AGENT,
            genai.AGENT_ID: f"{run.agent}@{run.agent_version}",
            genai.CONVERSATION_ID: run.correlation_id or run.id,
            genai.RUN_STATUS: status,
        }
        span = self.tracing.root(
            trace, f"invoke_agent {run.agent}", run.created_at, attrs, parent=_parent_of(run, trace)
        )
        if status != RunStatus.COMPLETED.value:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, status))
        span.end(end_time=int(max(ended, run.created_at) * 1_000_000_000))

    def _open_turn(self, held: _Drive, number: int) -> None:
        """A resumed turn's span (its model call's span was another process's)."""
        self._end_turn(held)
        held.open = True
        held.turn = self.tracing.start(
            f"turn {number}",
            held.root,
            {**held.common, genai.TURN: number, genai.WORKER: held.worker, genai.RESUMED: True},
        )
        held.turn_no = number

    @staticmethod
    def _end_turn(held: _Drive) -> None:
        if held.open and held.turn is not None:  # a model call's span ended already
            held.turn.end()
        held.turn = None
        held.open = False

    async def _approval_wait(self, step: StepProtocol, parent: Any, common: dict[str, Any]) -> None:
        """The wait for the approval that reopened the run, as a span (request to decision)."""
        decided = [d for d in step.state.decisions.values() if d.approval_id]
        if not decided:
            return
        approval_id = decided[-1].approval_id
        if approval_id is None or approval_id not in step.state.approvals:
            return
        try:
            approval = await step.session.store.get_approval(approval_id)
        except Exception:  # the trace is not worth failing a run for
            return
        if approval.decided_at is None:
            return
        span = self.tracing.start(
            "approval wait",
            parent,
            {
                **common,
                genai.APPROVAL_ID: approval_id,
                genai.APPROVAL_OUTCOME: approval.status.value,
                genai.TOOL_NAME: approval.tool,
            },
            start_s=approval.created_at,
        )
        span.end(end_time=int(approval.decided_at * 1_000_000_000))


class _SdkToolSpan:
    """A tool call's span as the SDK makes it (the benchmark's *before*), current while the
    effect runs."""

    def __init__(
        self,
        tracing: Tracing,
        held: _Drive,
        tool: Tool,
        call: ToolCall,
        turns: int,
        intent: ToolIntent | None,
        decision: DecisionRecord | None,
    ) -> None:
        attrs: dict[str, Any] = {
            **held.common,
            genai.OPERATION: genai.OP_EXECUTE_TOOL,
            genai.TOOL_NAME: tool.name,
            genai.TOOL_CALL_ID: call.id,
            genai.TOOL_VERSION: tool.version,
            genai.TURN: turns,
        }
        if intent is not None:
            attrs[genai.IDEMPOTENCY_KEY] = intent.key
        # no journaled decision: no gate had an opinion (the gatekeeper journals none then)
        if decision is None:
            attrs[genai.DECISION] = "allow"
        else:
            attrs[genai.DECISION] = decision.verdict
            if decision.risk:
                attrs[genai.RISK] = decision.risk
        if tracing.content:
            attrs[genai.TOOL_CALL_ARGUMENTS] = scrub(canonical_json(call.arguments))
        self.content = tracing.content
        self.span = tracing.start(f"execute_tool {tool.name}", held.turn, attrs)
        self.current = tracing.current(self.span)
        self.current.__enter__()

    def end(self, result: ToolResult | None, error: BaseException | None) -> None:
        span = self.span
        if result is not None:
            span.set_attribute(genai.OK, result.ok)
            if not result.ok:
                from opentelemetry.trace import Status, StatusCode

                span.set_status(Status(StatusCode.ERROR, str((result.error or {}).get("code"))))
            elif self.content:
                span.set_attribute(genai.TOOL_CALL_RESULT, scrub(canonical_json(result.output)))
        if error is not None:
            self.current.__exit__(type(error), error, error.__traceback__)
        else:
            self.current.__exit__(None, None, None)


_Keyed = TypeVar("_Keyed", ToolIntent, DecisionRecord)


def _this_turn(
    by_position: dict[tuple[int, int], _Keyed], turn: int, call_id: str
) -> _Keyed | None:
    """The entry of ``call_id`` in ``turn``: searched from the newest (this turn's are last), so
    a step costs the calls of its own turn, not the run's whole history."""
    for (at_turn, _), value in reversed(by_position.items()):
        if at_turn != turn:
            return None
        if value.call_id == call_id:
            return value
    return None


def _parent_of(run: Run, trace: TraceContext) -> TraceContext | None:
    """The span a run's root hangs from: the one that consumed the event that started it
    (``traceparent`` in its metadata), when the run's trace is that span's."""
    carried = run.metadata.get("traceparent")
    parent = TraceContext.parse(carried) if isinstance(carried, str) else None
    if parent is None or parent.trace_id != trace.trace_id or parent == trace:
        return None
    return parent


def _worker(run: Run | None) -> str:
    return (run.lease.owner or "") if run is not None else ""
