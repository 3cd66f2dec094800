"""A run's timeline: the journal turned into rows a person reads (CLI, API, console)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, assert_never

from autonomic.core.canonical import canonical_json
from autonomic.core.journal import Entry, EntryKind


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


def timeline(entries: Sequence[Entry]) -> list[TimelineItem]:
    """Rows for every entry, in journal order."""
    if not entries:
        return []
    start = entries[0].created_at
    return [
        TimelineItem(
            seq=e.seq,
            at=e.created_at - start,
            kind=e.kind.value,
            summary=summarise(e),
            latency_ms=e.payload.get("latency_ms"),
            detail=e.payload,
        )
        for e in entries
    ]


def summarise(entry: Entry, width: int = 90) -> str:
    """A one-line description of ``entry``."""
    p = entry.payload
    kind = entry.kind
    if kind is EntryKind.RUN_STARTED:
        text = f"agent {p.get('agent')}@{p.get('agent_version')} on {p.get('model')}, task {_short(p.get('task'))}"
    elif kind is EntryKind.MODEL_RESPONSE:
        calls = ", ".join(c["name"] for c in p.get("tool_calls", ()))
        usage = p.get("usage", {})
        tokens = f"{usage.get('input_tokens', 0)}+{usage.get('output_tokens', 0)} tok"
        text = f"turn {p.get('turn')}: " + (
            f"calls {calls}" if calls else f"answers {_short(p.get('content'))}"
        )
        if p.get("provider") is not None:
            tokens += f", {p.get('provider')}"
            if p.get("cost_usd") is not None:
                tokens += f" ${float(p['cost_usd']):.6f}"
            if int(p.get("attempts") or 1) > 1:
                tokens += f", {p.get('attempts')} attempts"
        text += f" ({tokens})"
    elif kind is EntryKind.TOOL_INTENT:
        text = f"{p.get('tool')}@{p.get('version')} {_short(p.get('arguments'))} key={p.get('key')}"
    elif kind is EntryKind.TOOL_RESULT:
        if p.get("ok"):
            text = f"{p.get('tool')} -> {_short(p.get('output'))}"
        else:
            err = p.get("error") or {}
            text = f"{p.get('tool')} FAILED {err.get('code')}: {err.get('message')}"
        if p.get("replayed"):
            text += " (re-executed after a crash)"
        screened = p.get("screen") or {}
        if screened:
            codes = ",".join(sorted({f.get("code", "") for f in screened.get("flags", [])}))
            text = f"[{'TAINTED' if screened.get('tainted') else 'screened'}: {codes}] " + text
    elif kind is EntryKind.TRANSITION:
        text = f"{p.get('from')} -> {p.get('to')}: {p.get('reason')}"
    elif kind is EntryKind.RECOVERY:
        pending = p.get("pending_calls") or []
        text = (
            f"resumed by {p.get('worker')} (fence {p.get('fence')}), {len(pending)} call(s) pending"
        )
    elif kind is EntryKind.DECISION:
        text = f"{p.get('tool')}: {p.get('verdict')} by {p.get('gate')}"
        if p.get("risk"):
            text += f" (risk {p.get('risk')})"
        text += f" - {p.get('explanation')}"
        if p.get("approval_id"):
            text += f" [approval {p.get('approval_id')}]"
    elif kind is EntryKind.APPROVAL:
        text = _approval_summary(p)
    elif kind is EntryKind.WORKFLOW:
        text = f"workflow {p.get('from')} -> {p.get('to')}: {p.get('reason')}"
    elif kind is EntryKind.SUMMARY:
        text = (
            f"context compressed: {p.get('tokens_before')} -> {p.get('tokens_after')} tok "
            f"(window {p.get('window')}), {p.get('replaced')} older messages summarised"
        )
        if p.get("fallback"):
            text += " (extractive fallback)"
    elif kind is EntryKind.PLAN:
        text = _plan_summary(p)
    else:
        assert_never(kind)
    return text if len(text) <= width else text[: width - 3] + "..."


def spend(entries: Sequence[Entry]) -> dict[str, Any]:
    """What a run's model calls cost: totals and per provider (``cost_usd`` is 0 for calls
    whose prices are unknown, e.g. a model used without the gateway)."""
    providers: dict[str, dict[str, Any]] = {}
    total = {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}

    def add(call: dict[str, Any]) -> None:
        usage = call.get("usage") or {}
        row = providers.setdefault(
            str(call.get("provider") or "-"),
            {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0},
        )
        for target in (row, total):
            target["calls"] += 1
            target["input_tokens"] += int(usage.get("input_tokens", 0))
            target["output_tokens"] += int(usage.get("output_tokens", 0))
            target["cost_usd"] += float(call.get("cost_usd") or 0.0)

    for e in entries:
        if e.kind is EntryKind.MODEL_RESPONSE:
            add(e.payload)
        elif e.kind is EntryKind.SUMMARY:
            for call in e.payload.get("calls", ()):
                add(call)
        elif e.kind is EntryKind.PLAN and "usage" in e.payload:
            add(e.payload)
    for row in (*providers.values(), total):
        row["cost_usd"] = round(row["cost_usd"], 6)
    return total | {"providers": providers}


def _plan_summary(p: dict[str, Any]) -> str:
    steps = p.get("steps") or []
    if p.get("source") == "cache":
        return f"plan reused from the cache ({len(steps)} steps): {_short(steps)}"
    if p.get("source") == "none":
        return f"no plan: {p.get('error')}"
    served = str(p.get("provider") or p.get("model"))
    if p.get("cost_usd") is not None:
        served += f" ${float(p['cost_usd']):.6f}"
    if p.get("rejected"):
        return f"plan by {served} REJECTED, going on without one: {p['rejected']}"
    return f"planned by {served} ({len(steps)} steps): {_short(steps)}"


def _approval_summary(p: dict[str, Any]) -> str:
    event = p.get("event")
    ident = p.get("approval_id")
    if event == "timeout":
        return f"approval {ident} TIMED OUT (denied by default, not a rejection): {p.get('reason')}"
    if event == "rejected":
        return f"approval {ident} REJECTED by {', '.join(p.get('by') or [])}: {p.get('reason')}"
    if event == "approved":
        return f"approval {ident} APPROVED by {', '.join(p.get('by') or [])}: {p.get('reason')}"
    if event == "escalated":
        return f"approval {ident} escalated to group {p.get('group')}"
    return f"approval {ident} vote by {', '.join(p.get('by') or [])} ({p.get('votes')} of {p.get('quorum')})"


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else canonical_json(value)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
