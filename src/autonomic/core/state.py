"""Run state is a fold of the journal: replaying a run is applying its entries in order.

``RunState.apply`` is the only reducer. It does no I/O, so the engine can rebuild a run in any
process from its journal alone, and a test can check that a replay reaches the same state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from autonomic.core.bulk import bulk_allocation
from autonomic.core.calls import Position, answer_ids
from autonomic.core.entries import (
    ApprovalEvent,
    CompensationStep,
    DecisionRecord,
    ModelTurn,
    PlanCandidate,
    PlanOutcome,
    PlanScore,
    RunStarted,
    Settlement,
    SubtaskStep,
    Summary,
    ToolIntent,
    ToolResult,
    Transition,
    WorkflowMove,
    as_text,
)
from autonomic.core.graph import parse_graph
from autonomic.core.journal import GENESIS_HASH, Entry
from autonomic.core.messages import Message, Role, ToolCall, Usage
from autonomic.core.run import RunStatus
from autonomic.errors import GraphInvalid

GUARD_STEPS = 64
"""How many executed tool calls ``RunState.guard_steps`` keeps (the loop window is smaller)."""


class Content(NamedTuple):
    """One piece of content that entered the run, as the fold saw it: what the provenance gate
    traces argument values to (``autonomic.governance.provenance``).

    Args:
        seq: the journal entry it came in.
        origin: ``operator`` (the task, the agent's instructions, a human's approval or reopening
            comment, the arguments of a call a human approved: trusted), ``event`` (the task of a run an event started: untrusted) or
            ``tool_output`` (trusted only as far as the tool's contract says).
        name: which one: ``task``, ``instructions``, ``approval``, ``approved:TOOL`` (the
            approved call's arguments), or the tool's name.
        value: the content itself (text, or a tool's structured output).
    """

    seq: int
    origin: str
    name: str
    value: Any


@dataclass(slots=True)
class PendingCall:
    """A tool call of the latest model response that has no recorded result yet."""

    call: ToolCall
    """The call as the model proposed it, with the id sent back for it (``core/calls.py``)."""
    intent: ToolIntent | None
    """The journaled intent, if the call was started; ``None`` if it never began."""
    position: Position = (0, 0)
    """(turn, index): what the call's intent, decision and result are keyed by."""
    settled: Settlement | None = None
    """A human's finding that the started call took effect, with its result (``settle``)."""


@dataclass(slots=True)
class RunState:
    """Everything the engine needs to take the next step, derived from the journal."""

    run_id: str
    status: RunStatus = RunStatus.PENDING
    messages: list[Message] = field(default_factory=list)
    turns: int = 0
    usage: Usage = field(default_factory=Usage)
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    output: Any = None
    tools: tuple[str, ...] = ()
    max_turns: int = 0
    last_calls: tuple[ToolCall, ...] = ()
    """The latest answer's calls, with the ids sent back for them (distinct within the answer)."""
    intents: dict[Position, ToolIntent] = field(default_factory=dict)
    """Started calls by position (turn, index): never by the server's id, which servers reuse."""
    results: dict[Position, ToolResult] = field(default_factory=dict)
    finished_turn: bool = False
    """True when the latest model response had no tool calls (it was the final answer)."""
    requester: str | None = None
    """Who asked for the run; they may not approve its actions."""
    decisions: dict[Position, DecisionRecord] = field(default_factory=dict)
    """The gates' decision per call position (replayed on resume, never re-asked)."""
    approvals: dict[str, ApprovalEvent] = field(default_factory=dict)
    """The final approval outcome per approval id (approved, rejected or timeout)."""
    workflow: str | None = None
    """The workflow state the run is in, if its agent has a workflow."""
    calls: dict[str, int] = field(default_factory=dict)
    """Successful results per tool name: what invariants and exit conditions count."""
    outputs: dict[str, Any] = field(default_factory=dict)
    """The latest successful output per tool name."""
    started_at: float = 0.0
    """When the run started (its first entry): the origin of the wall-clock budget."""
    budget: dict[str, Any] | None = None
    """The run's budget limits (``run.started``, raised by an operator's reopening transition)."""
    guard_steps: list[dict[str, Any]] = field(default_factory=list)
    """The latest executed tool calls as the runaway guards compare them (bounded, oldest first):
    seq, tool, arguments, thought, read_only, cost."""
    intent_counts: dict[str, int] = field(default_factory=dict)
    """Started tool calls per tool name (per-tool budgets count attempts, not successes)."""
    tool_cost: float = 0.0
    """The summed ``cost_estimate`` of every started tool call."""
    loop_ack_seq: int = 0
    """The seq at which a human reopened a run the loop guard had suspended: earlier repeats are
    acknowledged and no longer count."""
    taint: list[dict[str, Any]] = field(default_factory=list)
    """Provenance labels of the tainted tool results the model read before its latest response."""
    _unread_taint: list[dict[str, Any]] = field(default_factory=list)
    _loop_suspended: bool = False
    model_cost: float = 0.0
    """Dollars the run's model calls cost (``cost_usd`` of responses and summaries; gateway only)."""
    model_calls: int = 0
    """Model calls the run made, summarisation calls included."""
    compressions: int = 0
    """How many times context compression replaced the conversation."""
    planning: dict[str, Any] | None = None
    """The agent's planning settings pinned at start (``None``: the agent does not plan)."""
    plan: PlanOutcome | None = None
    """The ``plan`` entry, once the planning phase is over (whatever its outcome)."""
    candidates: dict[int, PlanCandidate] = field(default_factory=dict)
    """Tree-of-Thoughts: the candidate plans generated so far, by number (never generated again)."""
    scores: dict[int, PlanScore] = field(default_factory=dict)
    """Tree-of-Thoughts: the candidates' scores, by number (never scored again)."""
    abort: CompensationStep | None = None
    """The ``requested`` compensation entry of a run being aborted with compensation."""
    compensations: dict[str, CompensationStep] = field(default_factory=dict)
    """Per step being undone, its latest compensation entry (intent, result or skipped)."""
    graph: SubtaskStep | None = None
    """A coordinator's ``graph`` entry: the graph of subtasks the run follows."""
    subtasks: dict[str, list[SubtaskStep]] = field(default_factory=dict)
    """A coordinator's subtasks: per node, its dispatches and results in journal order."""
    subtasks_done: list[str] = field(default_factory=list)
    """The subtasks that completed, in the order they did (a topological order of the graph,
    so its reverse is a reverse dependency order: how they are compensated)."""
    settlements: dict[Position, Settlement] = field(default_factory=dict)
    """Calls a human settled as executed, by position, until their result is recorded."""
    contents: list[Content] = field(default_factory=list)
    """Every piece of content that entered the run, in order, with where it came from: the task
    and instructions, tool outputs, humans' comments. Kept apart from ``messages`` (which
    compression rewrites), so provenance survives compression and is folded on every resume."""
    trace: str | None = None
    """The ``traceparent`` of the run's root span, if ``run.started`` recorded one."""
    reopened: bool = False
    """The latest entry reopened the run (a human decided, or an operator resumed it): whoever
    claims it next continues it, nothing crashed."""

    def apply(self, entry: Entry) -> None:
        """Fold one entry into the state. Entries must arrive in ``seq`` order."""
        if entry.seq != self.last_seq + 1:
            raise ValueError(
                f"journal of {self.run_id} skips from seq {self.last_seq} to {entry.seq}"
            )
        body = entry.body
        reopened = False
        match body:
            case RunStarted():
                self._started(entry.created_at, body)
                if body.instructions:
                    self.contents.append(
                        Content(entry.seq, "operator", "instructions", body.instructions)
                    )
                # A task an event brought is another agent's words, not the operator's.
                origin = "event" if body.source else "operator"
                self.contents.append(Content(entry.seq, origin, "task", body.task))
            case ModelTurn():
                self.turns += 1
                calls = answer_ids(self.turns, body.tool_calls) if body.tool_calls else ()
                self.messages.append(Message(Role.ASSISTANT, body.content, calls))
                self._charge(body.call.usage, body.call.cost)
                self.last_calls = calls
                self.finished_turn = not body.tool_calls
                self.taint, self._unread_taint = self._unread_taint, []
            case ToolIntent():
                self.intents[self.position_of(body.call_id, body.position)] = body
                self._guard_step(entry.seq, body)
            case ToolResult():
                self._result(body)
                if body.ok and not body.refused:
                    self.contents.append(Content(entry.seq, "tool_output", body.tool, body.output))
            case DecisionRecord():
                self.decisions[self.position_of(body.call_id, body.position)] = body
            case ApprovalEvent():
                if body.final:
                    self.approvals[body.approval_id] = body
                if body.reason:
                    self.contents.append(Content(entry.seq, "operator", "approval", body.reason))
                if body.status == "approved":  # the values a human saw and approved are theirs
                    arguments = self._arguments_of(body.call_id)
                    if arguments is not None:
                        self.contents.append(
                            Content(entry.seq, "operator", f"approved:{body.tool}", arguments)
                        )
            case WorkflowMove():
                self.workflow = body.target
            case Summary():
                self.messages = list(body.messages)
                self.compressions += 1
                for call in body.calls:
                    self._charge(call.usage, call.cost)
            case PlanOutcome():
                self._apply_plan(body)
            case PlanCandidate():
                self.candidates[body.candidate] = body
                if body.call is not None:
                    self._charge(body.call.usage, body.call.cost)
            case PlanScore():
                self.scores[body.candidate] = body
                if body.call is not None:
                    self._charge(body.call.usage, body.call.cost)
            case CompensationStep():
                if body.phase == "requested":
                    self.abort = body
                elif body.step is not None:
                    self.compensations[body.step] = body
            case SubtaskStep():
                self._subtask(body)
            case Settlement():
                position = self.position_of(body.call_id, body.position)
                if body.executed:  # its result is recorded by the next step, screened
                    self.settlements[position] = body
                else:  # the intent is void: the call runs again as a new attempt
                    self.intents.pop(position, None)
            case Transition():
                self._guard_transition(entry.seq, body)
                self.status = RunStatus(body.target)
                if body.target == RunStatus.COMPLETED.value:
                    self.output = body.output
                reopened = (
                    body.target == RunStatus.RUNNING.value
                    and body.source != RunStatus.PENDING.value
                )
        self.reopened = reopened
        self.last_seq = entry.seq
        self.last_hash = entry.hash

    def _arguments_of(self, call_id: str) -> Any:
        """The arguments of the latest turn's call ``call_id`` (``None``: not found, or not JSON)."""
        for call in self.last_calls:
            if call.id == call_id:
                try:
                    return json.loads(call.arguments or "{}")
                except ValueError:
                    return None
        return None

    def _subtask(self, body: SubtaskStep) -> None:
        if body.phase == "graph":
            self.graph = body
            if body.call is not None:
                self._charge(body.call.usage, body.call.cost)
        elif body.node is not None:
            self.subtasks.setdefault(body.node, []).append(body)
            if body.phase == "result" and body.ok and body.node not in self.subtasks_done:
                self.subtasks_done.append(body.node)

    def _started(self, at: float, body: RunStarted) -> None:
        self.started_at = at
        self.budget = dict(body.budget) if body.budget is not None else None
        self.tools = body.tools
        self.max_turns = body.max_turns
        self.requester = body.requester
        self.trace = body.trace
        if body.workflow is not None:
            self.workflow = body.workflow.get("start")
        self.planning = dict(body.planning) if body.planning is not None else None
        if body.instructions:
            self.messages.append(Message(Role.SYSTEM, body.instructions))
        self.messages.append(Message(Role.USER, as_text(body.task)))

    def _charge(self, usage: Usage, cost: float) -> None:
        """One model call's usage and cost (a turn, a summarisation, the planning call)."""
        self.usage = self.usage + usage
        self.model_cost += cost
        self.model_calls += 1

    def position_of(self, call_id: str, position: Position | None = None) -> Position:
        """The position an entry about a call is keyed by: its own ``position`` (written since
        0.2), else - 0.1's entries - the call of the latest answer with that id (the calls of an
        answer are taken before the next answer is asked for, and their ids are distinct)."""
        if position is not None:
            return position
        for index, call in enumerate(self.last_calls):
            if call.id == call_id:
                return self.turns, index
        return self.turns, -1

    def _result(self, body: ToolResult) -> None:
        self.results[self.position_of(body.call_id, body.position)] = body
        if body.ok:
            self.calls[body.tool] = self.calls.get(body.tool, 0) + 1
            self.outputs[body.tool] = body.output
        screened = body.screen or {}
        if screened.get("tainted"):
            self._unread_taint.append(dict(screened.get("provenance") or {}))
        text = screened.get("text")
        self.messages.append(
            Message(
                Role.TOOL,
                text if isinstance(text, str) else body.observation(),
                tool_call_id=body.call_id,
            )
        )

    def _apply_plan(self, plan: PlanOutcome) -> None:
        """A plan joins the system prompt (the most portable place across chat templates, and
        compression keeps it verbatim); the planning call counts like any model call."""
        self.plan = plan
        if plan.call is not None:
            self._charge(plan.call.usage, plan.call.cost)
        if not plan.steps:
            return
        source = "reused from the plan cache" if plan.source == "cache" else "planned"
        text = plan_text(plan.steps, source, plan.graph)
        if self.messages and self.messages[0].role is Role.SYSTEM:
            self.messages[0] = Message(Role.SYSTEM, f"{self.messages[0].content}\n\n{text}")
        else:
            self.messages.insert(0, Message(Role.SYSTEM, text))

    def _guard_step(self, seq: int, intent: ToolIntent) -> None:
        name = intent.tool
        self.intent_counts[name] = self.intent_counts.get(name, 0) + 1
        self.tool_cost += intent.cost
        last = self.messages[-1] if self.messages else None
        thought = last.content if last is not None and last.role is Role.ASSISTANT else None
        self.guard_steps.append(
            {
                "seq": seq,
                "tool": name,
                "arguments": intent.arguments,
                "thought": thought or "",
                "read_only": intent.read_only,
            }
        )
        if len(self.guard_steps) > GUARD_STEPS:
            del self.guard_steps[0]

    def _guard_transition(self, seq: int, body: Transition) -> None:
        if body.target == RunStatus.SUSPENDED.value:
            decision = body.decision
            code = str(decision.evidence.get("code", "")) if decision is not None else ""
            self._loop_suspended = code.startswith("loop.")
        elif body.target == RunStatus.RUNNING.value and body.source == RunStatus.SUSPENDED.value:
            if self._loop_suspended:
                self.loop_ack_seq = seq
            self._loop_suspended = False
        if body.target == RunStatus.RUNNING.value and body.budget is not None:
            self.budget = {**(self.budget or {}), **body.budget}

    def pending_calls(self) -> list[PendingCall]:
        """Calls of the latest model response still without a result, in the model's order."""
        turn = self.turns
        return [
            PendingCall(
                call,
                self.intents.get((turn, index)),
                (turn, index),
                self.settlements.get((turn, index)),
            )
            for index, call in enumerate(self.last_calls)
            if (turn, index) not in self.results
        ]

    def in_doubt(self) -> PendingCall | None:
        """The call the run is in doubt about: started, not idempotent, with no result and no
        human's finding yet (``None`` if there is none)."""
        for pending in self.pending_calls():
            intent = pending.intent
            if intent is not None and not intent.idempotent and pending.settled is None:
                return pending
        return None


def fold(run_id: str, entries: Iterable[Entry]) -> RunState:
    """Rebuild a run's state from its journal (a long one with the collector held: see
    ``core/bulk.py``)."""
    state = RunState(run_id=run_id)
    with bulk_allocation(len(entries) if isinstance(entries, Sized) else 0):
        for entry in entries:
            state.apply(entry)
    return state


def plan_text(steps: Sequence[str], source: str, graph: Mapping[str, Any] | None = None) -> str:
    """How a plan reads at the end of the system prompt. A graph plan reads as numbered steps
    with what each waits for, and which steps are independent: the model may call their tools
    together in one turn."""
    lines = "\n".join(f"{i}. {step}" for i, step in enumerate(steps, start=1))
    if graph is not None:
        lines = graph_lines(graph) or lines
    return (
        f"Plan ({source}; placeholders stand for this task's values - follow the plan, adapt "
        f"where a step does not apply):\n{lines}"
    )


def observation_text(result: ToolResult) -> str:
    """What the model reads back for a tool result: the output as JSON, or the error."""
    return result.observation()


def graph_lines(raw: Mapping[str, Any]) -> str:
    """A validated graph plan as the model reads it: one line per node in topological order,
    numbered by layer (``2a``, ``2b``: independent steps that may run in the same turn)."""
    try:
        graph = parse_graph(raw)
        layers = graph.layers()
    except GraphInvalid:
        return ""
    out: list[str] = []
    label: dict[str, str] = {}
    for number, layer in enumerate(layers, start=1):
        for k, node_id in enumerate(layer):
            label[node_id] = f"{number}{chr(ord('a') + k % 26)}" if len(layer) > 1 else str(number)
    for layer in layers:
        for node_id in layer:
            node = graph.node(node_id)
            text = node.text or (f"use {node.uses}" if node.uses else node.id)
            waits = ", ".join(label[d] for d in sorted(node.needs, key=lambda d: label[d]))
            tail = f" (after {waits})" if waits else ""
            out.append(f"{label[node_id]}. {text}{tail}")
    if any(len(layer) > 1 for layer in layers):
        out.append("Steps with the same number are independent: call their tools together.")
    return "\n".join(out)
