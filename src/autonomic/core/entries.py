"""Typed journal entries: one immutable type per entry kind, each with one encode and one decode.

The journal stores JSON payloads; this module is the only place that knows their shape. A writer
builds a value (``ToolIntent(...)``) and ``to_payload()`` gives the JSON object the journal
stores; a reader gets the value back with ``decode(kind, payload)``. Keys appear in the JSON only
when they carry something (an optional field left at its default is omitted), exactly as 0.1 wrote
them, so journals written by 0.1 decode unchanged (a test folds a database made by 0.1) and new
entries hash as they did.

The values are ``NamedTuple``s: immutable like a journal entry, and cheap to build - a frozen
dataclass costs six times as much to construct, which a step's four entries would feel.

Decoding is lenient: keys this release does not know are ignored and missing optional keys take
their defaults, so an old worker can fold a newer journal's known parts and a newer one any old
journal. The values are plain data: the fold (``core/state.py``) gives them meaning.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple, TypeAlias

from autonomic.core.canonical import canonical_json
from autonomic.core.messages import Message, ModelResponse, ToolCall, Usage


class EntryKind(enum.StrEnum):
    """What an entry records. The fold in ``state.py`` gives each kind its meaning."""

    RUN_STARTED = "run.started"
    MODEL_RESPONSE = "model.response"
    TOOL_INTENT = "tool.intent"
    TOOL_RESULT = "tool.result"
    TRANSITION = "transition"
    RECOVERY = "recovery"
    DECISION = "decision"
    """The action gates' verdict on one proposed tool call, journaled before any effect."""
    APPROVAL = "approval"
    """A human (or the clock) acted on an approval: a vote, an escalation, the outcome."""
    WORKFLOW = "workflow.transition"
    """The run's state-machine workflow moved from one state to another."""
    SUMMARY = "summary"
    """Context compression replaced the conversation by a shorter one (journaled whole, so a
    replay folds the same prompt without a tokenizer or a second summarisation call)."""
    PLAN = "plan"
    """The planning phase's outcome: a plan from the cache or the planner (with the call's usage
    and cost), or why the run goes on without one."""
    SETTLEMENT = "settlement"
    """A human's finding about a call the run was in doubt about: it ran (with its result) or
    it did not (``autonomic settle``)."""
    PLAN_CANDIDATE = "plan.candidate"
    """Tree-of-Thoughts: one candidate plan (or why it is unusable), before any is chosen."""
    PLAN_SCORE = "plan.score"
    """Tree-of-Thoughts: one candidate plan's score, so a resumed run never scores it again."""
    COMPENSATION = "compensation"
    """An abort with compensation: requested, then per completed step the compensating call's
    intent and result (each exactly once, in reverse order; ``engine/compensation.py``)."""
    SUBTASK = "subtask"
    """A coordinator's graph of child runs: the graph it follows, then per subtask each hand-off
    (``dispatch``) and how it ended (``result``; ``engine/coordinator.py``)."""


EMPTY: Mapping[str, Any] = MappingProxyType({})
"""The empty mapping an entry's optional mapping defaults to (shared, so it must not change)."""


def _put(out: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """``out`` plus every optional value that is not ``None``."""
    for key, value in optional.items():
        if value is not None:
            out[key] = value
    return out


def _dict(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


def _position(value: Any) -> tuple[int, int] | None:
    """A call's ``position`` as written (``[turn, index]``); ``None`` when absent (0.1 wrote
    none: the fold then finds the call by its id in the latest answer) or not a pair."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None


class ModelCall(NamedTuple):
    """What one model call used, and - through the gateway - who served it and what it cost."""

    usage: Usage = Usage()
    provider: str | None = None
    cost_usd: float | None = None
    attempts: int | None = None
    waited_s: float | None = None

    def fields(self) -> dict[str, Any]:
        """The call's keys as entries carry them flat: ``usage``, and the gateway's four
        (``provider``, ``cost_usd``, ``attempts``, ``waited_s``) only when a provider served it."""
        out: dict[str, Any] = {"usage": self.usage.to_dict()}
        if self.provider is not None:
            out.update(
                provider=self.provider,
                cost_usd=self.cost_usd,
                attempts=self.attempts,
                waited_s=self.waited_s,
            )
        return out

    @property
    def cost(self) -> float:
        return float(self.cost_usd or 0.0)

    @staticmethod
    def of_response(response: ModelResponse) -> ModelCall:
        """What the journal records of an answer: its usage, and - from the gateway - who served
        it, what it cost, how hard it was (nothing more for a plain model, so its journal stays
        as lean as ever)."""
        if response.provider is None:
            return ModelCall(response.usage)
        return ModelCall(
            response.usage,
            provider=response.provider,
            cost_usd=response.cost_usd,
            attempts=response.attempts,
            waited_s=round(response.waited_s, 6),
        )

    @staticmethod
    def of(p: Mapping[str, Any]) -> ModelCall:
        return ModelCall(
            usage=Usage(**(p.get("usage") or {})),
            provider=p.get("provider"),
            cost_usd=p.get("cost_usd"),
            attempts=p.get("attempts"),
            waited_s=p.get("waited_s"),
        )


class RunStarted(NamedTuple):
    """``run.started``: what the run pinned when it started, so any worker rebuilds the same run."""

    agent: str
    agent_version: str
    model: str
    instructions: str
    task: Any
    tools: tuple[str, ...]
    max_turns: int
    tenant: str = "default"
    requester: str | None = None
    planning: dict[str, Any] | None = None
    workflow: dict[str, Any] | None = None
    budget: dict[str, Any] | None = None
    trace: str | None = None
    """The W3C ``traceparent`` of the run's root span (new in 0.3, written only with tracing
    on): every process that drives the run puts its spans in that trace."""
    source: str | None = None
    """Where the task came from when not from an operator: ``event:TYPE`` for a run an event
    started (new in 0.3, written only then). Such a task is untrusted content: another agent,
    or whoever can publish on the bus, wrote it."""

    def to_payload(self) -> dict[str, Any]:
        return _put(
            {
                "agent": self.agent,
                "agent_version": self.agent_version,
                "model": self.model,
                "instructions": self.instructions,
                "task": self.task,
                "tools": list(self.tools),
                "max_turns": self.max_turns,
                "tenant": self.tenant,
            },
            requester=self.requester,
            planning=self.planning,
            workflow=self.workflow,
            budget=self.budget,
            trace=self.trace,
            source=self.source,
        )

    @staticmethod
    def from_payload(p: Mapping[str, Any]) -> RunStarted:
        return RunStarted(
            agent=str(p.get("agent", "")),
            agent_version=str(p.get("agent_version", "")),
            model=str(p.get("model", "")),
            instructions=p.get("instructions") or "",
            task=p.get("task"),
            tools=tuple(p.get("tools", ())),
            max_turns=int(p.get("max_turns", 0)),
            tenant=str(p.get("tenant", "default")),
            requester=p.get("requester"),
            planning=_dict(p.get("planning")),
            workflow=_dict(p.get("workflow")),
            budget=_dict(p.get("budget")),
            trace=p.get("trace") if isinstance(p.get("trace"), str) else None,
            source=p.get("source") if isinstance(p.get("source"), str) else None,
        )


class ModelTurn(NamedTuple):
    """``model.response``: the one new assistant message of a turn (a delta, never the prompt)."""

    turn: int
    content: str | None
    tool_calls: tuple[ToolCall, ...]
    model: str | None
    call: ModelCall
    finish_reason: str | None = None
    latency_ms: float | None = None
    reasoning: dict[str, Any] | None = None
    """The reasoning the model gave, as fields (``core/reasoning.Reasoning.to_dict``); new in
    0.3, written only when there is some."""

    def to_payload(self) -> dict[str, Any]:
        out = {
            "turn": self.turn,
            "content": self.content,
            "tool_calls": [c.to_dict() for c in self.tool_calls],
            "model": self.model,
            "finish_reason": self.finish_reason,
            "latency_ms": self.latency_ms,
            **self.call.fields(),
        }
        if self.reasoning:
            out["reasoning"] = self.reasoning
        return out

    @staticmethod
    def from_payload(p: Mapping[str, Any]) -> ModelTurn:
        return ModelTurn(
            turn=int(p.get("turn", 0)),
            content=p.get("content"),
            tool_calls=tuple(ToolCall.from_dict(c) for c in p.get("tool_calls", ())),
            model=p.get("model"),
            call=ModelCall.of(p),
            finish_reason=p.get("finish_reason"),
            latency_ms=p.get("latency_ms"),
            reasoning=p.get("reasoning") if isinstance(p.get("reasoning"), dict) else None,
        )


class ToolIntent(NamedTuple):
    """``tool.intent``: a call is about to run - tool version, validated arguments, idempotency
    key. Committed *before* the effect of a non-idempotent tool (write-ahead)."""

    call_id: str
    tool: str
    version: str
    arguments: dict[str, Any]
    key: str
    idempotent: bool
    read_only: bool = False
    cost: float = 0.0
    """The contract's cost estimate (per-run cost budgets count it)."""
    position: tuple[int, int] | None = None
    """(turn, index) of the call in the run (``core/calls.py``): what the fold keys it by.
    ``call_id`` is only the id sent back to the model server. ``None`` in 0.1's entries."""

    @property
    def ref(self) -> str:
        return f"{self.tool}@{self.version}"

    def to_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "call_id": self.call_id,
            "tool": self.tool,
            "version": self.version,
            "arguments": self.arguments,
            "key": self.key,
            "idempotent": self.idempotent,
        }
        if self.read_only:
            out["read_only"] = True
        if self.cost:
            out["cost"] = self.cost
        if self.position is not None:
            out["position"] = list(self.position)
        return out

    @staticmethod
    def from_payload(p: Mapping[str, Any]) -> ToolIntent:
        return ToolIntent(
            call_id=str(p["call_id"]),
            tool=str(p.get("tool", "")),
            version=str(p.get("version", "")),
            arguments=dict(p.get("arguments") or {}),
            key=str(p.get("key", "")),
            idempotent=bool(p.get("idempotent", False)),
            read_only=bool(p.get("read_only", False)),
            cost=float(p.get("cost", 0.0)),
            position=_position(p.get("position")),
        )


class ToolResult(NamedTuple):
    """``tool.result``: what a call returned (``ok`` and ``output``) or why it failed or was refused
    (``error``: code and message), with how it went (attempts, latency) and what the injection
    screen found in it (``screen``)."""

    call_id: str
    tool: str
    ok: bool
    output: Any = None
    error: dict[str, Any] | None = None
    refused: bool = False
    """Governance or a breaker refused the call: nothing was executed."""
    replayed: bool | None = None
    """``True`` on the result of an idempotent call re-run on recovery. Releases before issue 17
    wrote ``False`` on every other execution's result; now the key is left out (17 bytes a
    step), and both decode to a falsy value."""
    attempts: int | None = None
    latency_ms: float | None = None
    circuit: dict[str, Any] | None = None
    screen: dict[str, Any] | None = None
    position: tuple[int, int] | None = None
    """(turn, index) of the call it answers (see ``ToolIntent.position``)."""
    settled: dict[str, Any] | None = None
    """Set on the result a human gave when settling an in-doubt call (``by``, ``reason``): the
    tool did not report it, a person did."""

    @staticmethod
    def failed(
        call_id: str,
        tool: str,
        code: str,
        message: str,
        *,
        refused: bool = False,
        position: tuple[int, int] | None = None,
    ) -> ToolResult:
        return ToolResult(
            call_id,
            tool,
            ok=False,
            error={"code": code, "message": message},
            refused=refused,
            position=position,
        )

    def completed(
        self,
        *,
        replayed: bool | None,
        attempts: int | None,
        latency_ms: float | None,
        position: tuple[int, int] | None = None,
    ) -> ToolResult:
        """The result of an execution with how it went (built directly: ``dataclasses.replace``
        costs more than the rest of a step's bookkeeping)."""
        return ToolResult(
            self.call_id,
            self.tool,
            self.ok,
            self.output,
            self.error,
            self.refused,
            replayed,
            attempts if attempts is not None else self.attempts,
            latency_ms,
            self.circuit,
            self.screen,
            position if position is not None else self.position,
            self.settled,
        )

    @property
    def error_code(self) -> str:
        return str((self.error or {}).get("code", "tool_error"))

    def observation(self) -> str:
        """What the model reads back: the output as JSON, or the error."""
        if self.ok:
            return as_text(self.output)
        error = self.error or {}
        return f"ERROR {error.get('code', 'tool_error')}: {error.get('message', 'failed')}"

    def to_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"call_id": self.call_id, "tool": self.tool, "ok": self.ok}
        if self.ok:
            out["output"] = self.output
        if self.refused:
            out["refused"] = True
        return _put(
            out,
            error=self.error,
            replayed=self.replayed,
            attempts=self.attempts,
            latency_ms=self.latency_ms,
            circuit=self.circuit,
            screen=self.screen,
            position=list(self.position) if self.position is not None else None,
            settled=self.settled,
        )

    @staticmethod
    def from_payload(p: Mapping[str, Any]) -> ToolResult:
        return ToolResult(
            call_id=str(p["call_id"]),
            tool=str(p.get("tool", "")),
            ok=bool(p.get("ok", False)),
            output=p.get("output"),
            error=_dict(p.get("error")),
            refused=bool(p.get("refused", False)),
            replayed=p.get("replayed"),
            attempts=p.get("attempts"),
            latency_ms=p.get("latency_ms"),
            circuit=_dict(p.get("circuit")),
            screen=_dict(p.get("screen")),
            position=_position(p.get("position")),
            settled=_dict(p.get("settled")),
        )


class DecisionRecord(NamedTuple):
    """``decision``: the action gates' verdict on one proposed call, journaled before any effect
    and replayed - never re-asked - on resume. Bound to (tool, arguments, run, step)."""

    call_id: str
    tool: str
    version: str
    step: int
    binding: str
    verdict: str
    """``allow``, ``needs_approval``, ``blocked`` or ``suspend`` (governance's ``Verdict``)."""
    gate: str
    explanation: str
    risk: str | None = None
    evidence: Mapping[str, Any] = EMPTY
    workflow_to: str | None = None
    approval_id: str | None = None
    approval: dict[str, Any] | None = None
    """How to ask (an ``ApprovalRule``), for ``needs_approval``."""
    position: tuple[int, int] | None = None
    """(turn, index) of the call decided on (see ``ToolIntent.position``)."""

    @property
    def ref(self) -> str:
        return f"{self.tool}@{self.version}"

    def to_payload(self) -> dict[str, Any]:
        return _put(
            {
                "call_id": self.call_id,
                "tool": self.tool,
                "version": self.version,
                "step": self.step,
                "binding": self.binding,
                "verdict": self.verdict,
                "gate": self.gate,
                "risk": self.risk,
                "explanation": self.explanation,
                "evidence": dict(self.evidence),
            },
            workflow_to=self.workflow_to,
            approval_id=self.approval_id,
            approval=self.approval,
            position=list(self.position) if self.position is not None else None,
        )

    @staticmethod
    def from_payload(p: Mapping[str, Any]) -> DecisionRecord:
        return DecisionRecord(
            call_id=str(p["call_id"]),
            tool=str(p.get("tool", "")),
            version=str(p.get("version", "")),
            step=int(p.get("step", 0)),
            binding=str(p.get("binding", "")),
            verdict=str(p.get("verdict", "")),
            gate=str(p.get("gate", "")),
            explanation=str(p.get("explanation", "")),
            risk=p.get("risk"),
            evidence=dict(p.get("evidence") or {}),
            workflow_to=p.get("workflow_to"),
            approval_id=p.get("approval_id"),
            approval=_dict(p.get("approval")),
            position=_position(p.get("position")),
        )


class ApprovalEvent(NamedTuple):
    """``approval``: a human (or the clock) acted on an approval - a vote, an escalation, or the
    outcome (``approved``, ``rejected``, ``timeout``)."""

    approval_id: str
    call_id: str
    event: str
    status: str
    binding: str
    tool: str
    by: tuple[str, ...] = ()
    reason: str | None = None
    votes: int = 0
    quorum: int = 1
    group: str | None = None

    @property
    def final(self) -> bool:
        return self.status in ("approved", "rejected", "timeout")

    def to_payload(self) -> dict[str, Any]:
        return {
            "approval_id": self.approval_id,
            "call_id": self.call_id,
            "event": self.event,
            "status": self.status,
            "binding": self.binding,
            "tool": self.tool,
            "by": list(self.by),
            "reason": self.reason,
            "votes": self.votes,
            "quorum": self.quorum,
            "group": self.group,
        }

    @staticmethod
    def from_payload(p: Mapping[str, Any]) -> ApprovalEvent:
        return ApprovalEvent(
            approval_id=str(p.get("approval_id", "")),
            call_id=str(p["call_id"]),
            event=str(p.get("event", "")),
            status=str(p.get("status", "")),
            binding=str(p.get("binding", "")),
            tool=str(p.get("tool", "")),
            by=tuple(p.get("by") or ()),
            reason=p.get("reason"),
            votes=int(p.get("votes", 0)),
            quorum=int(p.get("quorum", 1)),
            group=p.get("group"),
        )


class Transition(NamedTuple):
    """``transition``: the run's status changed (``from`` -> ``to``), why, and the evidence."""

    source: str
    target: str
    reason: str
    output: Any = None
    """The run's output (written for a move to COMPLETED only)."""
    worker: str | None = None
    by: str | None = None
    """Who moved it from outside a worker (``operator``, ``approvals``)."""
    error: dict[str, Any] | None = None
    attempts: int | None = None
    in_doubt: ToolIntent | None = None
    """The started call whose result was never recorded (a non-idempotent tool)."""
    approval_id: str | None = None
    decision: DecisionRecord | None = None
    """The decision that suspended the run."""
    guard: dict[str, Any] | None = None
    """The budget findings that suspended it."""
    estimate: dict[str, Any] | None = None
    circuit: dict[str, Any] | None = None
    call_id: str | None = None
    budget: dict[str, Any] | None = None
    """Budget limits raised by an operator's reopening."""
    metadata: dict[str, Any] | None = None
    """Run metadata keys an operator set when reopening (``resume --force --metadata``)."""
    agent_version: dict[str, Any] | None = None
    """``{"from": V1, "to": V2}``: an operator moved the run onto another version of its agent
    when reopening it (``resume --force --agent-version``); or, on a suspension because no
    worker has the run's version, ``{"missing": V}`` (new in 0.4)."""

    def to_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"from": self.source, "to": self.target, "reason": self.reason}
        if self.target == "COMPLETED":
            out["output"] = self.output
        return _put(
            out,
            worker=self.worker,
            by=self.by,
            error=self.error,
            attempts=self.attempts,
            in_doubt=self.in_doubt.to_payload() if self.in_doubt is not None else None,
            approval_id=self.approval_id,
            decision=self.decision.to_payload() if self.decision is not None else None,
            guard=self.guard,
            estimate=self.estimate,
            circuit=self.circuit,
            call_id=self.call_id,
            budget=self.budget,
            metadata=self.metadata,
            agent_version=self.agent_version,
        )

    @staticmethod
    def from_payload(p: Mapping[str, Any]) -> Transition:
        in_doubt = p.get("in_doubt")
        decision = p.get("decision")
        return Transition(
            source=str(p.get("from", "")),
            target=str(p["to"]),
            reason=str(p.get("reason", "")),
            output=p.get("output"),
            worker=p.get("worker"),
            by=p.get("by"),
            error=_dict(p.get("error")),
            attempts=p.get("attempts"),
            in_doubt=ToolIntent.from_payload(in_doubt) if isinstance(in_doubt, Mapping) else None,
            approval_id=p.get("approval_id"),
            decision=(
                DecisionRecord.from_payload(decision) if isinstance(decision, Mapping) else None
            ),
            guard=_dict(p.get("guard")),
            estimate=_dict(p.get("estimate")),
            circuit=_dict(p.get("circuit")),
            call_id=p.get("call_id"),
            budget=_dict(p.get("budget")),
            metadata=_dict(p.get("metadata")),
            agent_version=_dict(p.get("agent_version")),
        )


class Recovery(NamedTuple):
    """``recovery``: a worker took over a run that was RUNNING (its previous worker died or lost
    the lease); which calls were pending, and whether they had started."""

    worker: str
    fence: int
    journal_seq: int
    pending_calls: tuple[dict[str, Any], ...] = ()

    def to_payload(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "fence": self.fence,
            "journal_seq": self.journal_seq,
            "pending_calls": list(self.pending_calls),
        }

    @staticmethod
    def from_payload(p: Mapping[str, Any]) -> Recovery:
        return Recovery(
            worker=str(p.get("worker", "")),
            fence=int(p.get("fence", 0)),
            journal_seq=int(p.get("journal_seq", 0)),
            pending_calls=tuple(dict(c) for c in p.get("pending_calls") or ()),
        )


class WorkflowMove(NamedTuple):
    """``workflow.transition``: the run's workflow entered another state."""

    source: str | None
    target: str
    reason: str
    call_id: str | None = None

    def to_payload(self) -> dict[str, Any]:
        return _put(
            {"from": self.source, "to": self.target, "reason": self.reason}, call_id=self.call_id
        )

    @staticmethod
    def from_payload(p: Mapping[str, Any]) -> WorkflowMove:
        return WorkflowMove(p.get("from"), str(p["to"]), str(p.get("reason", "")), p.get("call_id"))


class Summary(NamedTuple):
    """``summary``: context compression replaced the conversation by ``messages`` (journaled whole,
    with the summarisation calls it made, so a replay needs neither the model nor a tokenizer)."""

    messages: tuple[Message, ...]
    calls: tuple[ModelCall, ...] = ()
    window: int | None = None
    replaced: int = 0
    tokens_before: int = 0
    tokens_after: int = 0
    fallback: bool = False
    detail: Mapping[str, Any] = EMPTY
    """The compressor's own record (its structured state, targets): ``Compression.to_entry()``."""

    def to_payload(self) -> dict[str, Any]:
        return {
            **dict(self.detail),
            "replaced": self.replaced,
            "tokens_before": self.tokens_before,
            "tokens_after": self.tokens_after,
            "fallback": self.fallback,
            "window": self.window,
            "messages": [m.to_dict() for m in self.messages],
            "calls": [c.fields() for c in self.calls],
        }

    @staticmethod
    def from_payload(p: Mapping[str, Any]) -> Summary:
        known = {"replaced", "tokens_before", "tokens_after", "fallback", "window"}
        return Summary(
            messages=tuple(Message.from_dict(m) for m in p.get("messages", ())),
            calls=tuple(ModelCall.of(c) for c in p.get("calls", ())),
            window=p.get("window"),
            replaced=int(p.get("replaced", 0)),
            tokens_before=int(p.get("tokens_before", 0)),
            tokens_after=int(p.get("tokens_after", 0)),
            fallback=bool(p.get("fallback", False)),
            detail={k: v for k, v in p.items() if k not in known | {"messages", "calls"}},
        )


class PlanCandidate(NamedTuple):
    """``plan.candidate``: candidate number ``candidate`` of a Tree-of-Thoughts planning phase - its plan
    (``steps`` in order, ``graph`` when the planner answered a graph) or why it is ``rejected``,
    with the call that produced it."""

    candidate: int
    steps: tuple[str, ...] | None = None
    graph: Mapping[str, Any] | None = None
    rejected: str | None = None
    call: ModelCall | None = None

    def to_payload(self) -> dict[str, Any]:
        out = _put(
            {"candidate": self.candidate},
            steps=list(self.steps) if self.steps is not None else None,
            graph=_dict(self.graph),
            rejected=self.rejected,
        )
        if self.call is not None:
            out.update(self.call.fields())
        return out

    @staticmethod
    def from_payload(p: Mapping[str, Any]) -> PlanCandidate:
        steps = p.get("steps")
        return PlanCandidate(
            candidate=int(p.get("candidate", 0)),
            steps=tuple(steps) if isinstance(steps, list) else None,
            graph=_dict(p.get("graph")),
            rejected=p.get("rejected"),
            call=ModelCall.of(p) if "usage" in p else None,
        )


class PlanScore(NamedTuple):
    """``plan.score``: candidate number ``candidate``'s ``score`` (higher is better), by whom (``by``: the
    scoring function's or model's name), why, and the scoring call when a model scored."""

    candidate: int
    score: float
    by: str
    reason: str = ""
    call: ModelCall | None = None

    def to_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"candidate": self.candidate, "score": self.score, "by": self.by}
        if self.reason:
            out["reason"] = self.reason
        if self.call is not None:
            out.update(self.call.fields())
        return out

    @staticmethod
    def from_payload(p: Mapping[str, Any]) -> PlanScore:
        return PlanScore(
            candidate=int(p.get("candidate", 0)),
            score=float(p.get("score", 0.0)),
            by=str(p.get("by", "")),
            reason=str(p.get("reason", "")),
            call=ModelCall.of(p) if "usage" in p else None,
        )


class CompensationStep(NamedTuple):
    """``compensation``: one phase of undoing a run's completed steps.

    ``requested``: someone (``by``) aborted the run with compensation, with the ``reason``.
    ``intent``: the compensating ``tool`` is about to run for the step at ``step`` (the
    original call's ``[turn, index]`` as a string ``"turn:index"``, or a subtask's id) with
    ``arguments`` under ``key``. ``result``: it ran - ``ok`` with ``output``, or the ``error``.
    ``skipped``: the step declares no compensation (named, so the record is complete)."""

    phase: str
    step: str | None = None
    tool: str | None = None
    of: str | None = None
    """The tool whose effect is being undone."""
    arguments: Mapping[str, Any] | None = None
    key: str | None = None
    ok: bool | None = None
    output: Any = None
    error: str | None = None
    by: str | None = None
    reason: str | None = None
    agent: str | None = None
    """A coordinator's compensation: the agent whose child run undoes the subtask (``tool``
    is then the compensating capability)."""

    def to_payload(self) -> dict[str, Any]:
        out = _put(
            {"phase": self.phase},
            step=self.step,
            agent=self.agent,
            tool=self.tool,
            of=self.of,
            arguments=_dict(self.arguments),
            key=self.key,
            ok=self.ok,
            error=self.error,
            by=self.by,
            reason=self.reason,
        )
        if self.phase == "result" and self.ok:
            out["output"] = self.output
        return out

    @staticmethod
    def from_payload(p: Mapping[str, Any]) -> CompensationStep:
        return CompensationStep(
            phase=str(p.get("phase", "")),
            step=p.get("step"),
            tool=p.get("tool"),
            of=p.get("of"),
            arguments=_dict(p.get("arguments")),
            key=p.get("key"),
            ok=p.get("ok"),
            output=p.get("output"),
            error=p.get("error"),
            by=p.get("by"),
            reason=p.get("reason"),
            agent=p.get("agent"),
        )


class SubtaskStep(NamedTuple):
    """``subtask``: one phase of a coordinator's graph of subtasks (``engine/coordinator.py``).

    ``graph``: the dependency graph the run follows (``graph``, as JSON), where it came from
    (``source``: ``model`` or ``template``), why the model's proposal was refused when it was
    (``rejected``), and the planning call (``call``). ``dispatch``: subtask ``node``, attempt
    ``attempt``, handed to ``agent`` for ``capability`` with ``task`` under ``key`` (the child
    run's id derives from it) - committed before the child exists. ``result``: how the attempt
    ended: ``ok`` with ``output``, or the ``error`` (``code``, ``message``); ``agent`` and
    ``key`` name the attempt."""

    phase: str
    node: str | None = None
    attempt: int | None = None
    agent: str | None = None
    capability: str | None = None
    task: Any = None
    key: str | None = None
    ok: bool | None = None
    output: Any = None
    error: Mapping[str, Any] | None = None
    graph: Mapping[str, Any] | None = None
    source: str | None = None
    rejected: str | None = None
    call: ModelCall | None = None

    def to_payload(self) -> dict[str, Any]:
        out = _put(
            {"phase": self.phase},
            node=self.node,
            attempt=self.attempt,
            agent=self.agent,
            capability=self.capability,
            key=self.key,
            ok=self.ok,
            error=_dict(self.error),
            graph=_dict(self.graph),
            source=self.source,
            rejected=self.rejected,
        )
        if self.phase == "dispatch":
            out["task"] = self.task
        if self.phase == "result" and self.ok:
            out["output"] = self.output
        if self.call is not None:
            out.update(self.call.fields())
        return out

    @staticmethod
    def from_payload(p: Mapping[str, Any]) -> SubtaskStep:
        attempt = p.get("attempt")
        return SubtaskStep(
            phase=str(p.get("phase", "")),
            node=p.get("node"),
            attempt=int(attempt) if isinstance(attempt, int) else None,
            agent=p.get("agent"),
            capability=p.get("capability"),
            task=p.get("task"),
            key=p.get("key"),
            ok=p.get("ok"),
            output=p.get("output"),
            error=_dict(p.get("error")),
            graph=_dict(p.get("graph")),
            source=p.get("source"),
            rejected=p.get("rejected"),
            call=ModelCall.of(p) if "usage" in p else None,
        )


class PlanOutcome(NamedTuple):
    """``plan``: the planning phase's outcome - ``source`` ``cache`` or ``model`` with the steps,
    or ``none`` (the planner failed) - or a plan ``rejected`` as nonsense; with the planning call's
    usage and cost when there was one."""

    key: str
    pattern: str
    source: str | None = None
    steps: tuple[str, ...] | None = None
    model: str | None = None
    call: ModelCall | None = None
    latency_ms: float | None = None
    rejected: str | None = None
    error: str | None = None
    cache_error: str | None = None
    graph: Mapping[str, Any] | None = None
    """The plan as a dependency graph (``core/graph.py``: ``{"nodes": [...]}``) when the
    planner answered one; ``steps`` are then its nodes' words in a topological order."""
    chosen: int | None = None
    """Tree-of-Thoughts: the index of the candidate committed (see ``plan.candidate``)."""

    def to_payload(self) -> dict[str, Any]:
        out = _put(
            {"key": self.key, "pattern": self.pattern},
            source=self.source,
            steps=list(self.steps) if self.steps is not None else None,
            model=self.model,
            latency_ms=self.latency_ms,
            rejected=self.rejected,
            error=self.error,
            cache_error=self.cache_error,
            graph=_dict(self.graph),
            chosen=self.chosen,
        )
        if self.call is not None:
            out.update(self.call.fields())
        return out

    @staticmethod
    def from_payload(p: Mapping[str, Any]) -> PlanOutcome:
        steps = p.get("steps")
        return PlanOutcome(
            key=str(p.get("key", "")),
            pattern=str(p.get("pattern", "")),
            source=p.get("source"),
            steps=tuple(steps) if isinstance(steps, list) else None,
            model=p.get("model"),
            call=ModelCall.of(p) if "usage" in p else None,
            latency_ms=p.get("latency_ms"),
            rejected=p.get("rejected"),
            error=p.get("error"),
            cache_error=p.get("cache_error"),
            graph=_dict(p.get("graph")),
            chosen=p.get("chosen"),
        )


class Settlement(NamedTuple):
    """``settlement``: a human's finding about the call a run was *in doubt* about - a
    non-idempotent call whose intent is journaled and whose result is not - with who and why.

    ``executed``: it took effect, and ``output`` is the result the person found (the run records
    it as the call's ``tool.result``, screened like any tool output, marked ``settled``). Not
    executed: the intent is void, and the call runs again as a new attempt (a new intent, a new
    key) - once, under the write-ahead rule like any other."""

    call_id: str
    tool: str
    key: str
    """The idempotency key of the intent settled (which attempt the finding is about)."""
    executed: bool
    by: str
    reason: str
    output: Any = None
    position: tuple[int, int] | None = None
    """(turn, index) of the call settled (see ``ToolIntent.position``)."""

    def result(self) -> ToolResult:
        """The call's result, for a call settled as executed."""
        return ToolResult(
            self.call_id,
            self.tool,
            ok=True,
            output=self.output,
            position=self.position,
            settled={"by": self.by, "reason": self.reason},
        )

    def to_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "call_id": self.call_id,
            "tool": self.tool,
            "key": self.key,
            "executed": self.executed,
            "by": self.by,
            "reason": self.reason,
        }
        if self.executed:
            out["output"] = self.output
        if self.position is not None:
            out["position"] = list(self.position)
        return out

    @staticmethod
    def from_payload(p: Mapping[str, Any]) -> Settlement:
        return Settlement(
            call_id=str(p["call_id"]),
            tool=str(p.get("tool", "")),
            key=str(p.get("key", "")),
            executed=bool(p.get("executed", False)),
            by=str(p.get("by", "")),
            reason=str(p.get("reason", "")),
            output=p.get("output"),
            position=_position(p.get("position")),
        )


Body: TypeAlias = (
    RunStarted
    | ModelTurn
    | ToolIntent
    | ToolResult
    | DecisionRecord
    | ApprovalEvent
    | Transition
    | Recovery
    | WorkflowMove
    | Summary
    | PlanOutcome
    | Settlement
    | PlanCandidate
    | PlanScore
    | CompensationStep
    | SubtaskStep
)
"""A typed journal entry."""

KINDS: dict[type[Any], EntryKind] = {
    RunStarted: EntryKind.RUN_STARTED,
    ModelTurn: EntryKind.MODEL_RESPONSE,
    ToolIntent: EntryKind.TOOL_INTENT,
    ToolResult: EntryKind.TOOL_RESULT,
    DecisionRecord: EntryKind.DECISION,
    ApprovalEvent: EntryKind.APPROVAL,
    Transition: EntryKind.TRANSITION,
    Recovery: EntryKind.RECOVERY,
    WorkflowMove: EntryKind.WORKFLOW,
    Summary: EntryKind.SUMMARY,
    PlanOutcome: EntryKind.PLAN,
    Settlement: EntryKind.SETTLEMENT,
    PlanCandidate: EntryKind.PLAN_CANDIDATE,
    PlanScore: EntryKind.PLAN_SCORE,
    CompensationStep: EntryKind.COMPENSATION,
    SubtaskStep: EntryKind.SUBTASK,
}
"""The kind each type journals as."""

_TYPES: dict[EntryKind, Any] = {kind: t for t, kind in KINDS.items()}


def kind_of(body: Body) -> EntryKind:
    """The entry kind of a typed entry."""
    return KINDS[type(body)]


def decode(kind: EntryKind, payload: Mapping[str, Any]) -> Body:
    """The typed value of a stored payload."""
    body: Body = _TYPES[kind].from_payload(payload)
    return body


def as_text(value: Any) -> str:
    """How a value reads to a model: text as it is, anything else as canonical JSON."""
    return value if isinstance(value, str) else canonical_json(value)
