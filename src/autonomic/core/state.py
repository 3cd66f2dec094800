"""Run state is a fold of the journal: replaying a run is applying its entries in order.

``RunState.apply`` is the only reducer. It does no I/O, so the engine can rebuild a run in any
process from its journal alone, and a test can check that a replay reaches the same state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from autonomic.core.canonical import canonical_json
from autonomic.core.journal import GENESIS_HASH, Entry, EntryKind
from autonomic.core.messages import Message, Role, ToolCall, Usage
from autonomic.core.run import RunStatus

GUARD_STEPS = 64
"""How many executed tool calls ``RunState.guard_steps`` keeps (the loop window is smaller)."""


@dataclass(slots=True)
class PendingCall:
    """A tool call of the latest model response that has no recorded result yet."""

    call: ToolCall
    intent: dict[str, Any] | None
    """The journaled intent, if the call was started; ``None`` if it never began."""


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
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    finished_turn: bool = False
    """True when the latest model response had no tool calls (it was the final answer)."""
    requester: str | None = None
    """Who asked for the run; they may not approve its actions."""
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The gates' decision per call id (replayed on resume, never re-asked)."""
    approvals: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The final approval outcome per call id (approved, rejected or timeout)."""
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
    plan: dict[str, Any] | None = None
    """The ``plan`` entry, once the planning phase is over (whatever its outcome)."""
    reopened: bool = False
    """The latest entry reopened the run (a human decided, or an operator resumed it): whoever
    claims it next continues it, nothing crashed."""

    def apply(self, entry: Entry) -> None:
        """Fold one entry into the state. Entries must arrive in ``seq`` order."""
        if entry.seq != self.last_seq + 1:
            raise ValueError(
                f"journal of {self.run_id} skips from seq {self.last_seq} to {entry.seq}"
            )
        payload = entry.payload
        kind = entry.kind
        if kind is EntryKind.RUN_STARTED:
            self.started_at = entry.created_at
            budget = payload.get("budget")
            self.budget = dict(budget) if isinstance(budget, dict) else None
            self.tools = tuple(payload.get("tools", ()))
            self.max_turns = int(payload.get("max_turns", 0))
            self.requester = payload.get("requester")
            workflow = payload.get("workflow")
            if isinstance(workflow, dict):
                self.workflow = workflow.get("start")
            planning = payload.get("planning")
            self.planning = dict(planning) if isinstance(planning, dict) else None
            if payload.get("instructions"):
                self.messages.append(Message(Role.SYSTEM, payload["instructions"]))
            self.messages.append(Message(Role.USER, _as_text(payload.get("task"))))
        elif kind is EntryKind.MODEL_RESPONSE:
            calls = tuple(ToolCall.from_dict(c) for c in payload.get("tool_calls", ()))
            self.messages.append(Message(Role.ASSISTANT, payload.get("content"), calls))
            self.turns += 1
            self.usage = self.usage + Usage(**payload.get("usage", {}))
            self.model_cost += float(payload.get("cost_usd") or 0.0)
            self.model_calls += 1
            self.last_calls = calls
            self.finished_turn = not calls
            self.taint, self._unread_taint = self._unread_taint, []
        elif kind is EntryKind.TOOL_INTENT:
            self.intents[payload["call_id"]] = payload
            self._guard_step(entry.seq, payload)
        elif kind is EntryKind.TOOL_RESULT:
            call_id = payload["call_id"]
            self.results[call_id] = payload
            if payload.get("ok"):
                name = str(payload.get("tool"))
                self.calls[name] = self.calls.get(name, 0) + 1
                self.outputs[name] = payload.get("output")
            screened = payload.get("screen") or {}
            if screened.get("tainted"):
                self._unread_taint.append(dict(screened.get("provenance") or {}))
            text = screened.get("text")
            self.messages.append(
                Message(
                    Role.TOOL,
                    text if isinstance(text, str) else observation_text(payload),
                    tool_call_id=call_id,
                )
            )
        elif kind is EntryKind.DECISION:
            self.decisions[payload["call_id"]] = payload
        elif kind is EntryKind.APPROVAL:
            if payload.get("status") in ("approved", "rejected", "timeout"):
                self.approvals[payload["call_id"]] = payload
        elif kind is EntryKind.WORKFLOW:
            self.workflow = payload["to"]
        elif kind is EntryKind.SUMMARY:
            self.messages = [Message.from_dict(m) for m in payload["messages"]]
            self.compressions += 1
            for call in payload.get("calls", ()):
                self.usage = self.usage + Usage(**call.get("usage", {}))
                self.model_cost += float(call.get("cost_usd") or 0.0)
                self.model_calls += 1
        elif kind is EntryKind.PLAN:
            self._apply_plan(payload)
        elif kind is EntryKind.TRANSITION:
            self._guard_transition(entry.seq, payload)
            self.status = RunStatus(payload["to"])
            if "output" in payload:
                self.output = payload["output"]
        self.reopened = (
            kind is EntryKind.TRANSITION
            and payload.get("to") == RunStatus.RUNNING.value
            and payload.get("from") != RunStatus.PENDING.value
        )
        self.last_seq = entry.seq
        self.last_hash = entry.hash

    def _apply_plan(self, payload: dict[str, Any]) -> None:
        """A plan joins the system prompt (the most portable place across chat templates, and
        compression keeps it verbatim); the planning call counts like any model call."""
        self.plan = payload
        if "usage" in payload:
            self.usage = self.usage + Usage(**payload["usage"])
            self.model_cost += float(payload.get("cost_usd") or 0.0)
            self.model_calls += 1
        steps = payload.get("steps")
        if not steps:
            return
        source = "reused from the plan cache" if payload.get("source") == "cache" else "planned"
        text = plan_text(steps, source)
        if self.messages and self.messages[0].role is Role.SYSTEM:
            self.messages[0] = Message(Role.SYSTEM, f"{self.messages[0].content}\n\n{text}")
        else:
            self.messages.insert(0, Message(Role.SYSTEM, text))

    def _guard_step(self, seq: int, intent: dict[str, Any]) -> None:
        name = str(intent.get("tool"))
        self.intent_counts[name] = self.intent_counts.get(name, 0) + 1
        self.tool_cost += float(intent.get("cost", 0.0))
        last = self.messages[-1] if self.messages else None
        thought = last.content if last is not None and last.role is Role.ASSISTANT else None
        self.guard_steps.append(
            {
                "seq": seq,
                "tool": name,
                "arguments": intent.get("arguments") or {},
                "thought": thought or "",
                "read_only": bool(intent.get("read_only", False)),
            }
        )
        if len(self.guard_steps) > GUARD_STEPS:
            del self.guard_steps[0]

    def _guard_transition(self, seq: int, payload: dict[str, Any]) -> None:
        target = payload.get("to")
        if target == RunStatus.SUSPENDED.value:
            decision = payload.get("decision") or {}
            self._loop_suspended = str((decision.get("evidence") or {}).get("code", "")).startswith(
                "loop."
            )
        elif target == RunStatus.RUNNING.value and payload.get("from") == RunStatus.SUSPENDED.value:
            if self._loop_suspended:
                self.loop_ack_seq = seq
            self._loop_suspended = False
        if target == RunStatus.RUNNING.value and isinstance(payload.get("budget"), dict):
            self.budget = {**(self.budget or {}), **payload["budget"]}

    def pending_calls(self) -> list[PendingCall]:
        """Calls of the latest model response still without a result, in the model's order."""
        return [
            PendingCall(call, self.intents.get(call.id))
            for call in self.last_calls
            if call.id not in self.results
        ]


def fold(run_id: str, entries: Iterable[Entry]) -> RunState:
    """Rebuild a run's state from its journal."""
    state = RunState(run_id=run_id)
    for entry in entries:
        state.apply(entry)
    return state


def plan_text(steps: Sequence[str], source: str) -> str:
    """How a plan reads at the end of the system prompt."""
    lines = "\n".join(f"{i}. {step}" for i, step in enumerate(steps, start=1))
    return (
        f"Plan ({source}; placeholders stand for this task's values - follow the plan, adapt "
        f"where a step does not apply):\n{lines}"
    )


def observation_text(result: dict[str, Any]) -> str:
    """What the model reads back for a tool result: the output as JSON, or the error."""
    if result.get("ok"):
        return _as_text(result.get("output"))
    error = result.get("error") or {}
    return f"ERROR {error.get('code', 'tool_error')}: {error.get('message', 'failed')}"


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else canonical_json(value)
