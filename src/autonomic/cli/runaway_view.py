"""What ``autonomic show`` says about the runaway guards: suspensions with their evidence (the
similar steps quoted with their seq), budgets used against their limits, and tainted tool results.

Everything comes from the journal (folded), so it shows the same after a replay."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.markup import escape

from autonomic.core.entries import ToolResult, Transition
from autonomic.core.journal import Entry
from autonomic.core.state import fold


def runaway_lines(entries: Sequence[Entry]) -> list[str]:
    """Lines for the run header; empty when the guards have nothing to say."""
    if not entries:
        return []
    lines: list[str] = []
    for e in entries:
        body = e.body
        if isinstance(body, Transition) and body.target == "SUSPENDED":
            lines.extend(_suspension(e.seq, body))
        elif isinstance(body, ToolResult) and body.screen and body.screen.get("tainted"):
            flags = ", ".join(sorted({f["code"] for f in body.screen.get("flags", [])}))
            lines.append(
                f"[bold red]tainted[/] result at seq {e.seq} from {escape(body.tool)}: "
                f"{escape(flags)} (score {body.screen.get('score')}); the next action needs "
                "approval at least"
            )
    state = fold(entries[0].run_id, entries)
    if state.budget:
        lines.append("budget: " + escape(_usage(state.budget, state)))
    return lines


def _suspension(seq: int, t: Transition) -> list[str]:
    decision = t.decision
    if decision is not None and decision.gate == "runaway":
        evidence = decision.evidence
        out = [
            f"[bold yellow]suspended[/] at seq {seq} by the runaway guard "
            f"({escape(str(evidence.get('code')))}): {escape(decision.explanation)}"
        ]
        finding = evidence.get("finding") or {}
        if finding.get("proposed"):
            out.append(f"  proposed : {escape(str(finding['proposed']))}")
        for similar in finding.get("similar") or []:
            out.append(
                f"  seq {similar.get('seq'):>4} (similarity {similar.get('similarity')}): "
                f"{escape(str(similar.get('trace')))}"
            )
        out.append(
            "  resume acknowledging the repeat: `autonomic resume RUN --force`; or `autonomic "
            "cancel RUN`"
        )
        return out
    if t.guard is not None:
        verdict = t.guard
        return [
            f"[bold yellow]suspended[/] at seq {seq} by a budget ({escape(str(verdict.get('code')))})"
            f": {escape(str(verdict.get('reason')))}",
            "  raise it and resume: `autonomic resume RUN --force --budget NAME=LIMIT`",
        ]
    return []


def _usage(budget: dict[str, Any], state: Any) -> str:
    used = {
        "turns": state.turns,
        "tokens": state.usage.input_tokens + state.usage.output_tokens,
        "cost": round(state.tool_cost, 6),
    }
    parts = [f"{name} {used[name]:g} of {budget[name]:g}" for name in used if name in budget]
    for tool, limit in (budget.get("tool_calls") or {}).items():
        count = (
            sum(state.intent_counts.values()) if tool == "*" else state.intent_counts.get(tool, 0)
        )
        parts.append(f"{tool} calls {count} of {limit}")
    if "wall_seconds" in budget:
        parts.append(f"wall clock limit {budget['wall_seconds']:g}s")
    return ", ".join(parts)
