"""What the console's pages show, computed from runs, journals and approvals - no HTTP, no HTML.

The timeline page draws a run as a vertical line of steps. The order and the one-line summaries
are ``autonomic.core.timeline``'s (the same rows ``autonomic show`` prints), so the console and
the CLI never tell two stories; this module only adds what a picture needs: which kind of step a
row is (a turn, a tool call, a gate's decision, an approval, a recovery point), whether it is good
or bad news, whether it hangs under the model turn that proposed it, and what it cost.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from autonomic.core.approval import Approval
from autonomic.core.entries import (
    ApprovalEvent,
    DecisionRecord,
    ModelTurn,
    PlanOutcome,
    Recovery,
    RunStarted,
    Settlement,
    Summary,
    ToolIntent,
    ToolResult,
    Transition,
    WorkflowMove,
)
from autonomic.core.journal import Entry
from autonomic.core.run import Run, RunStatus
from autonomic.core.timeline import spend, summarise, timeline

_GOOD_VERDICTS = frozenset({"allow"})
_BAD_TARGETS = frozenset({"FAILED", "CANCELLED", "SUSPENDED"})
_DETAIL_LIMIT = 20_000
"""Characters of a step's payload shown in its details; a huge tool output is cut, not streamed."""


@dataclass(frozen=True, slots=True)
class Step:
    """One row of a run's timeline, ready for the template.

    Args:
        seq: the journal entry's sequence number (the row's id on the page).
        at: seconds after the run started.
        kind: the journal kind (``model.response``, ``decision``...).
        category: what the picture draws: start, turn, call, decision, approval, result,
            recovery, transition, note.
        label: a few words for the row's heading ("turn 3", "post_adjustment").
        summary: the CLI's one-line summary.
        tone: ok, warn, bad or info - the marker's colour and the text beside it.
        verdict: the gate's verdict, the approval's outcome or the run's new status, when any.
        nested: the row belongs to the model turn above it (a proposed call and what became of it).
        cost_usd: what the step cost (a model turn's price; a tool's contract estimate).
        tokens: a model turn's tokens as ``in+out``.
        latency_ms: how long the step took, when journaled.
    """

    seq: int
    at: float
    kind: str
    category: str
    label: str
    summary: str
    tone: str
    verdict: str | None
    nested: bool
    cost_usd: float | None
    tokens: str | None
    latency_ms: float | None

    @property
    def at_text(self) -> str:
        return f"{self.at:.2f}"

    @property
    def latency_text(self) -> str | None:
        return None if self.latency_ms is None else f"{self.latency_ms:.0f}"

    @property
    def cost_text(self) -> str | None:
        return None if self.cost_usd is None else f"{self.cost_usd:.6f}"


def steps(entries: Sequence[Entry], *, started_at: float | None = None) -> list[Step]:
    """Every journal entry as a timeline step, in the order things happened; ``started_at``:
    the run's start, when ``entries`` are only its latest ones."""
    if not entries:
        return []
    entries = decoded(entries)
    by_seq = {e.seq: e for e in entries}
    shift = 0.0 if started_at is None else entries[0].created_at - started_at
    return [
        _step(by_seq[item.seq], item.at + shift, item.summary, item.latency_ms)
        for item in timeline(entries)
    ]


def step_of(entry: Entry, started_at: float) -> Step:
    """One new entry as a step, for the live stream (``started_at``: the run's first entry)."""
    return _step(entry, entry.created_at - started_at, summarise(entry), None)


def _step(entry: Entry, at: float, summary: str, latency_ms: float | None) -> Step:
    body = entry.body
    category, label, tone, verdict, nested = "note", entry.kind.value, "info", None, False
    cost: float | None = None
    tokens: str | None = None
    latency = latency_ms if latency_ms is not None else entry.payload.get("latency_ms")
    match body:
        case RunStarted():
            category, label = "start", f"started: {body.agent}"
        case ModelTurn():
            category, label = "turn", f"turn {body.turn}"
            usage = body.call.usage
            tokens = f"{usage.input_tokens}+{usage.output_tokens}"
            cost = float(body.call.cost_usd) if body.call.cost_usd is not None else None
            latency = body.latency_ms if body.latency_ms is not None else latency
        case ToolIntent():
            category, label, nested = "call", f"call {body.tool}", True
            cost = float(body.cost) if body.cost else None
        case DecisionRecord():
            category, label, nested = "decision", f"gate {body.gate}", True
            verdict = body.verdict
            tone = "ok" if body.verdict in _GOOD_VERDICTS else "warn"
            if body.verdict in ("blocked", "suspend"):
                tone = "bad"
        case ApprovalEvent():
            category, label, nested = "approval", "approval", True
            verdict = body.event
            tone = {"approved": "ok", "rejected": "bad", "timeout": "bad"}.get(body.event, "warn")
        case ToolResult():
            category, label, nested = "result", f"result {body.tool}", True
            tone = "ok" if body.ok else "bad"
            if body.screen and body.screen.get("tainted"):
                tone = "warn"
        case Recovery():
            category, label, tone = "recovery", "recovery point", "warn"
        case Transition():
            category, label, verdict = "transition", "status", body.target
            tone = (
                "ok"
                if body.target == "COMPLETED"
                else "bad"
                if body.target in _BAD_TARGETS
                else "warn"
                if body.target == "WAITING_FOR_HUMAN"
                else "info"
            )
        case Settlement():
            category, label, tone, nested = "recovery", f"settled {body.tool}", "warn", True
        case WorkflowMove():
            category, label, nested = "note", f"workflow → {body.target}", True
        case Summary():
            category, label = "note", "context compressed"
        case PlanOutcome():
            category, label = "note", "plan"
            if body.call is not None and body.call.cost_usd is not None:
                cost = float(body.call.cost_usd)
    return Step(
        seq=entry.seq,
        at=at,
        kind=entry.kind.value,
        category=category,
        label=label,
        summary=summary,
        tone=tone,
        verdict=verdict,
        nested=nested,
        cost_usd=cost,
        tokens=tokens,
        latency_ms=float(latency) if isinstance(latency, int | float) else None,
    )


def decoded(entries: Sequence[Entry]) -> list[Entry]:
    """``entries`` with each typed body decoded once: the timeline, its summaries, the spend and
    the step kinds all read ``entry.body``, which would otherwise decode the payload each time."""
    return [e if e._body is not None else dataclasses.replace(e, _body=e.body) for e in entries]


def detail(payload: dict[str, Any]) -> str:
    """A step's payload as indented JSON for its details (fetched when a person opens them: a
    long run's page would spend most of its time writing JSON nobody reads), cut at 20,000
    characters."""
    text = json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    if len(text) > _DETAIL_LIMIT:
        return text[:_DETAIL_LIMIT] + f"\n... ({len(text) - _DETAIL_LIMIT} more characters)"
    return text


@dataclass(frozen=True, slots=True)
class RunPage:
    """The header of a run's page and its timeline."""

    run: Run
    steps: list[Step]
    earlier: int
    """Rows not drawn yet (before the first one shown)."""
    spend: dict[str, Any]
    children: list[Run]
    last_seq: int
    started_at: float
    live: bool
    """The run can still move: the page opens the live stream."""


WINDOW = 300
"""Rows a run's page draws at first: the latest ones; the earlier ones load when asked for, so a
run of thousands of steps opens as fast as a short one."""


def run_page(
    run: Run,
    entries: Sequence[Entry],
    children: Sequence[Run],
    *,
    spending: dict[str, Any] | None = None,
    window: int | None = WINDOW,
) -> RunPage:
    """Everything the run page shows, from the run row, its latest journal entries and its
    child runs: the latest ``window`` rows of the timeline (``None``: every row of
    ``entries``).

    ``entries`` is the whole journal or its tail - at least the last ``window`` entries, what
    ``Store.page_journal(newest=True)`` reads - so a long run's page never reads the rest.
    ``spending``: the whole run's cost (``TenantScope.cost``), by default ``spend(entries)``
    (right when ``entries`` is the whole journal). Rows are timed from the run's creation,
    which is its first entry's time; a journal's seqs count from 1 without a gap (the engine's
    ``next_seq``), so the rows before the first one drawn are its seq - 1."""
    shown = entries if window is None or len(entries) <= window else entries[-window:]
    return RunPage(
        run=run,
        steps=steps(shown, started_at=run.created_at),
        earlier=shown[0].seq - 1 if shown else 0,
        spend=spend(entries) if spending is None else spending,
        children=list(children),
        last_seq=shown[-1].seq if shown else 0,
        started_at=run.created_at,
        live=not run.status.terminal,
    )


@dataclass(frozen=True, slots=True)
class ApprovalCard:
    """One entry of the approvals inbox: the action as bound, why it needs a human, until when.

    Args:
        approval: the approval row.
        arguments: the bound arguments as (name, indented JSON value) pairs, in name order.
        risk: the risk level the gate gave (LOW/MEDIUM/HIGH), from the run's decision entry.
        evidence: the findings behind it (matched rules, data class, reversibility...).
        expires_in: seconds until the safe default (deny as *timeout*) applies; negative if due.
        may_decide: whether the signed-in identity may approve or deny it at all (its role, and
            not being the run's requester); the API refuses the POST either way.
        why_not: why ``may_decide`` is false, said to the user.
    """

    approval: Approval
    arguments: list[tuple[str, str]]
    risk: str | None
    evidence: list[tuple[str, str]]
    expires_in: float
    may_decide: bool
    why_not: str | None


def approval_card(
    approval: Approval,
    decision: DecisionRecord | None,
    *,
    may_decide: bool,
    why_not: str | None,
    now: float | None = None,
) -> ApprovalCard:
    """The inbox entry for ``approval``; ``decision``: the run's journaled decision that asked."""
    now = time.time() if now is None else now
    evidence = dict(decision.evidence) if decision is not None else {}
    return ApprovalCard(
        approval=approval,
        arguments=[(k, _value(v)) for k, v in sorted(approval.arguments.items())],
        risk=decision.risk if decision is not None else None,
        evidence=[(k, _fact(v)) for k, v in sorted(evidence.items()) if k != "policy"],
        expires_in=approval.expires_at - now,
        may_decide=may_decide,
        why_not=why_not,
    )


def decision_for(approval: Approval, entries: Sequence[Entry]) -> DecisionRecord | None:
    """The ``decision`` entry that asked for ``approval`` (at its step, or found by its id)."""
    for e in entries:
        body = e.body
        if isinstance(body, DecisionRecord) and body.approval_id == approval.id:
            return body
    return None


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _fact(value: Any) -> str:
    """A finding's value on one line: a list as its items, anything else as compact JSON."""
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    return value if isinstance(value, str) else json.dumps(value, default=str)


def duration(seconds: float) -> str:
    """``3 h 12 min``, ``45 s``: a span a person reads at a glance."""
    s = abs(int(seconds))
    if s < 60:
        text = f"{s} s"
    elif s < 3600:
        text = f"{s // 60} min {s % 60} s" if s < 600 else f"{s // 60} min"
    elif s < 86400:
        text = f"{s // 3600} h {(s % 3600) // 60} min"
    else:
        text = f"{s // 86400} d {(s % 86400) // 3600} h"
    return text


def status_tone(status: RunStatus) -> str:
    """The colour a status badge takes."""
    if status is RunStatus.COMPLETED:
        return "ok"
    if status in (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.SUSPENDED):
        return "bad"
    if status is RunStatus.WAITING_FOR_HUMAN:
        return "warn"
    return "info"
