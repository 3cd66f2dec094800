"""A run's timeline: the journal turned into rows a person reads (CLI, API, console)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, assert_never

from autonomic.core.canonical import canonical_json
from autonomic.core.entries import (
    ApprovalEvent,
    Body,
    CompensationStep,
    DecisionRecord,
    ModelCall,
    ModelTurn,
    PlanCandidate,
    PlanOutcome,
    PlanScore,
    Recovery,
    RunStarted,
    Settlement,
    SubtaskStep,
    Summary,
    ToolIntent,
    ToolResult,
    Transition,
    WorkflowMove,
)
from autonomic.core.journal import Entry, EntryKind

SPENDING = frozenset(
    {
        EntryKind.MODEL_RESPONSE,
        EntryKind.SUMMARY,
        EntryKind.PLAN,
        EntryKind.PLAN_CANDIDATE,
        EntryKind.PLAN_SCORE,
        EntryKind.SUBTASK,
    }
)
"""The kinds whose entries carry model calls, and so cost: ``spend`` of a run's entries of these
kinds alone is the spend of its whole journal (``Store.model_calls`` reads no other)."""


@dataclass(frozen=True, slots=True)
class TimelineItem:
    """One row: when (seconds after the run started), what kind, a one-line summary, the details."""

    seq: int
    at: float
    kind: str
    summary: str
    latency_ms: float | None
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": round(self.at, 6),
            "kind": self.kind,
            "summary": self.summary,
            "latency_ms": self.latency_ms,
            "detail": self.detail,
        }


def timeline(entries: Sequence[Entry], *, start: float | None = None) -> list[TimelineItem]:
    """Rows for every entry, in the order things happened; ``at`` counts from ``start`` (default:
    the first entry's time - give the run's ``created_at`` when ``entries`` is a later page).

    That is journal order, but for one kind: a ``recovery`` note rides at the end of the first
    commit after a takeover (so the step it precedes keeps its seq, and its idempotency key), which
    puts it after that step in the journal. Its row goes where the takeover happened - right after
    the entry it names as the last one before it (``journal_seq``) - and says so; it keeps its own
    seq and time."""
    if not entries:
        return []
    if start is None:
        start = entries[0].created_at
    seqs = {e.seq for e in entries}
    rows: list[TimelineItem] = []
    after: dict[int, list[TimelineItem]] = {}
    for e in entries:
        body = e.body  # decoded once: the summary and the recovery check both read it
        item = TimelineItem(
            seq=e.seq,
            at=e.created_at - start,
            kind=e.kind.value,
            summary=_summarise(body),
            latency_ms=e.payload.get("latency_ms"),
            detail=e.payload,
        )
        if isinstance(body, Recovery) and body.journal_seq < e.seq - 1 and body.journal_seq in seqs:
            note = f"; took over after seq {body.journal_seq}, journaled with the next commit"
            after.setdefault(body.journal_seq, []).append(
                dataclasses.replace(item, summary=item.summary + note)
            )
        else:
            rows.append(item)
    if not after:
        return rows
    placed: list[TimelineItem] = []
    for item in rows:
        placed.append(item)
        placed.extend(after.get(item.seq, ()))
    return placed


def summarise(entry: Entry, width: int = 90) -> str:
    """A one-line description of ``entry``."""
    return _summarise(entry.body, width)


def _summarise(body: Body, width: int = 90) -> str:
    match body:
        case RunStarted():
            text = (
                f"agent {body.agent}@{body.agent_version} on {body.model}, task {_short(body.task)}"
            )
        case ModelTurn():
            calls = ", ".join(c.name for c in body.tool_calls)
            usage = body.call.usage
            tokens = f"{usage.input_tokens}+{usage.output_tokens} tok"
            text = f"turn {body.turn}: " + (
                f"calls {calls}" if calls else f"answers {_short(body.content)}"
            )
            if body.call.provider is not None:
                tokens += f", {body.call.provider}"
                if body.call.cost_usd is not None:
                    tokens += f" ${float(body.call.cost_usd):.6f}"
                if int(body.call.attempts or 1) > 1:
                    tokens += f", {body.call.attempts} attempts"
            text += f" ({tokens})"
        case ToolIntent():
            text = f"{body.ref} {_short(body.arguments)} key={body.key}"
        case ToolResult():
            if body.ok:
                text = f"{body.tool} -> {_short(body.output)}"
            else:
                err = body.error or {}
                text = f"{body.tool} FAILED {err.get('code')}: {err.get('message')}"
            if body.replayed:
                text += " (re-executed after a crash)"
            if body.settled:
                text += f" (settled by {body.settled.get('by')})"
            if body.screen:
                flags = body.screen.get("flags", [])
                codes = ",".join(sorted({f.get("code", "") for f in flags}))
                tainted = "TAINTED" if body.screen.get("tainted") else "screened"
                text = f"[{tainted}: {codes}] " + text
        case Transition():
            text = f"{body.source} -> {body.target}: {body.reason}"
        case Recovery():
            text = (
                f"resumed by {body.worker} (fence {body.fence}), "
                f"{len(body.pending_calls)} call(s) pending"
            )
        case DecisionRecord():
            text = f"{body.tool}: {body.verdict} by {body.gate}"
            if body.risk:
                text += f" (risk {body.risk})"
            text += f" - {body.explanation}"
            if body.approval_id:
                text += f" [approval {body.approval_id}]"
        case ApprovalEvent():
            text = _approval_summary(body)
        case WorkflowMove():
            text = f"workflow {body.source} -> {body.target}: {body.reason}"
        case Summary():
            text = (
                f"context compressed: {body.tokens_before} -> {body.tokens_after} tok "
                f"(window {body.window}), {body.replaced} older messages summarised"
            )
            if body.fallback:
                text += " (extractive fallback)"
        case PlanOutcome():
            text = _plan_summary(body)
        case Settlement():
            found = (
                f"executed, result {_short(body.output)}"
                if body.executed
                else "not executed (runs again)"
            )
            text = f"{body.tool} call {body.call_id} {found}, by {body.by}: {body.reason}"
        case PlanCandidate():
            text = (
                f"candidate plan {body.candidate}: rejected: {body.rejected}"
                if body.rejected
                else f"candidate plan {body.candidate} ({len(body.steps or ())} steps)"
            )
        case PlanScore():
            text = f"candidate plan {body.candidate} scored {body.score:g} by {body.by}"
            if body.reason:
                text += f": {body.reason}"
        case CompensationStep():
            text = _compensation_summary(body)
        case SubtaskStep():
            text = _subtask_summary(body)
        case _:
            assert_never(body)
    return text if len(text) <= width else text[: width - 3] + "..."


def _subtask_summary(body: SubtaskStep) -> str:
    if body.phase == "graph":
        nodes = len((body.graph or {}).get("nodes") or ())
        text = f"graph of {nodes} subtask(s) from the {body.source}"
        return text + (
            f" (the model's proposal was refused: {body.rejected})" if body.rejected else ""
        )
    if body.phase == "dispatch":
        return (
            f"subtask {body.node} ({body.capability}) attempt {body.attempt} -> {body.agent}: "
            f"{_short(body.task)}"
        )
    if body.phase == "skipped":
        return f"subtask {body.node} left out: {(body.error or {}).get('message', '')}"
    if body.ok:
        return f"subtask {body.node} done by {body.agent}: {_short(body.output)}"
    return f"subtask {body.node} failed: {(body.error or {}).get('message', 'failed')}"


def _compensation_summary(body: CompensationStep) -> str:
    if body.phase == "requested":
        return f"abort with compensation requested by {body.by}: {body.reason}"
    if body.phase == "intent":
        return f"compensating {body.of} (step {body.step}) with {body.tool}"
    if body.phase == "skipped":
        return f"step {body.step} ({body.of}) not undone: {body.reason}"
    outcome = f"ok, {_short(body.output)}" if body.ok else f"failed: {body.error}"
    return f"compensated {body.of} (step {body.step}) with {body.tool}: {outcome}"


def model_calls(entries: Iterable[Entry]) -> list[ModelCall]:
    """The model calls ``entries`` record, in journal order: a model turn's, a summary's, a
    plan's (what ``Store.model_calls`` reads without the rest of the journal)."""
    calls: list[ModelCall] = []
    for e in entries:
        if e.kind not in SPENDING:
            continue  # decoding every entry of a long run only to skip it costs more than the sum
        body = e.body
        if isinstance(body, ModelTurn):
            calls.append(body.call)
        elif isinstance(body, Summary):
            calls.extend(body.calls)
        elif (
            isinstance(body, PlanOutcome | PlanCandidate | PlanScore | SubtaskStep)
            and body.call is not None
        ):
            calls.append(body.call)  # a plan's, a candidate's, a score's, a coordinator's graph
    return calls


def calls_in(kind: EntryKind, payload: Mapping[str, Any]) -> tuple[ModelCall, ...]:
    """The model calls one stored entry records, read from its payload: those ``model_calls``
    finds in it decoded. A model turn's call is read alone (``ModelCall.of``, as ``ModelTurn``
    reads it), without decoding its message and tool calls."""
    if kind is EntryKind.MODEL_RESPONSE:
        return (ModelCall.of(payload),)
    if kind is EntryKind.SUMMARY:
        return Summary.from_payload(payload).calls
    if kind in (EntryKind.PLAN, EntryKind.PLAN_CANDIDATE, EntryKind.PLAN_SCORE, EntryKind.SUBTASK):
        call = ModelCall.of(payload) if "usage" in payload else None
        return () if call is None else (call,)
    return ()


def spend(entries: Sequence[Entry]) -> dict[str, Any]:
    """What a run's model calls cost: totals and per provider (``cost_usd`` is 0 for calls
    whose prices are unknown, e.g. a model used without the gateway)."""
    return spend_of(model_calls(entries))


def spend_of(calls: Iterable[ModelCall]) -> dict[str, Any]:
    """``spend`` of the calls themselves (``model_calls`` of the journal, in its order: the
    sums are the same to the last bit however they were read)."""
    providers: dict[str, dict[str, Any]] = {}
    total = {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
    for call in calls:
        row = providers.setdefault(
            str(call.provider or "-"),
            {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0},
        )
        for target in (row, total):
            target["calls"] += 1
            target["input_tokens"] += call.usage.input_tokens
            target["output_tokens"] += call.usage.output_tokens
            target["cost_usd"] += call.cost
    for row in (*providers.values(), total):
        row["cost_usd"] = round(row["cost_usd"], 6)
    return total | {"providers": providers}


def _plan_summary(p: PlanOutcome) -> str:
    steps = list(p.steps or ())
    if p.source == "cache":
        return f"plan reused from the cache ({len(steps)} steps): {_short(steps)}"
    if p.source == "none":
        return f"no plan: {p.error}"
    served = str((p.call.provider if p.call is not None else None) or p.model)
    if p.call is not None and p.call.cost_usd is not None:
        served += f" ${float(p.call.cost_usd):.6f}"
    if p.rejected:
        return f"plan by {served} REJECTED, going on without one: {p.rejected}"
    return f"planned by {served} ({len(steps)} steps): {_short(steps)}"


def _approval_summary(p: ApprovalEvent) -> str:
    ident = p.approval_id
    by = ", ".join(p.by)
    if p.event == "timeout":
        return f"approval {ident} TIMED OUT (denied by default, not a rejection): {p.reason}"
    if p.event == "rejected":
        return f"approval {ident} REJECTED by {by}: {p.reason}"
    if p.event == "approved":
        return f"approval {ident} APPROVED by {by}: {p.reason}"
    if p.event == "escalated":
        return f"approval {ident} escalated to group {p.group}"
    return f"approval {ident} vote by {by} ({p.votes} of {p.quorum})"


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else canonical_json(value)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
