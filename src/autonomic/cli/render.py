"""Rich rendering of runs and timelines for the terminal."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Literal

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from autonomic.core.approval import Approval, ApprovalStatus
from autonomic.core.canonical import canonical_json
from autonomic.core.entries import (
    DecisionRecord,
    ModelCall,
    ModelTurn,
    PlanOutcome,
    RunStarted,
    Summary,
)
from autonomic.core.journal import Entry
from autonomic.core.run import Run, RunStatus
from autonomic.core.timeline import summarise, timeline

STATUS_STYLE = {
    RunStatus.PENDING: "white",
    RunStatus.RUNNING: "cyan",
    RunStatus.WAITING_FOR_HUMAN: "yellow",
    RunStatus.WAITING_FOR_CHILD: "blue",
    RunStatus.SUSPENDED: "yellow",
    RunStatus.COMPLETED: "green",
    RunStatus.FAILED: "red",
    RunStatus.CANCELLED: "magenta",
}

KIND_STYLE = {
    "run.started": "bold",
    "model.response": "blue",
    "tool.intent": "dim",
    "tool.result": "green",
    "transition": "yellow",
    "recovery": "magenta",
    "decision": "cyan",
    "approval": "bold yellow",
    "workflow.transition": "blue",
    "summary": "magenta",
    "plan": "magenta",
    "settlement": "bold yellow",
    "plan.candidate": "magenta",
    "plan.score": "magenta",
    "compensation": "bold red",
    "subtask": "cyan",
}


def when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def status_text(run: Run) -> str:
    return f"[{STATUS_STYLE[run.status]}]{run.status.value}[/]"


def runs_table(runs: Sequence[tuple[Run, dict[str, Any]]]) -> Table:
    """Runs with what their model calls cost (``spend`` of each journal)."""
    table = Table(title="runs", show_lines=False)
    for col in ("run", "agent", "status", "reason", "model calls", "cost", "created (UTC)"):
        justify: Literal["right", "left"] = "right" if col in ("model calls", "cost") else "left"
        table.add_column(col, overflow="fold", justify=justify)
    for r, cost in runs:
        table.add_row(
            r.id,
            f"{r.agent}@{r.agent_version}",
            status_text(r),
            escape(r.status_reason or ""),
            str(cost["calls"]),
            cost_cell(cost),
            when(r.created_at),
        )
    return table


def cost_cell(cost: dict[str, Any]) -> str:
    """A run's cost for the runs table, from its ``spend``: calls no price covers (those without
    a provider: a model used without the gateway) make it unknown, not $0."""
    unpriced = cost["providers"].get("-", {}).get("calls", 0)
    if not cost["calls"]:
        return "-"
    if unpriced == cost["calls"]:
        return "unknown"
    return f"${cost['cost_usd']:.6f}" + (f" + {unpriced} unpriced" if unpriced else "")


def timeline_table(entries: Sequence[Entry]) -> Table:
    table = Table(title="timeline", show_lines=False)
    table.add_column("seq", justify="right")
    table.add_column("+s", justify="right")
    table.add_column("kind")
    table.add_column("ms", justify="right")
    table.add_column("what", overflow="fold")
    for item in timeline(entries):
        style = KIND_STYLE.get(item.kind, "")
        table.add_row(
            str(item.seq),
            f"{item.at:.3f}",
            f"[{style}]{item.kind}[/]" if style else item.kind,
            f"{item.latency_ms:.1f}" if item.latency_ms is not None else "",
            escape(item.summary),
        )
    return table


def approvals_table(approvals: Sequence[Approval]) -> Table:
    table = Table(title="approvals", show_lines=False)
    for col in (
        "approval",
        "run",
        "tool",
        "arguments",
        "why",
        "group",
        "votes",
        "status",
        "expires (UTC)",
    ):
        table.add_column(col, overflow="fold")
    for a in approvals:
        yes = sum(1 for v in a.votes if v.approve)
        table.add_row(
            a.id,
            a.run_id,
            a.tool,
            escape(canonical_json(a.arguments)),
            escape(a.explanation),
            a.current_group() + (" (escalated)" if a.escalated else ""),
            f"{yes}/{a.quorum}",
            f"[{APPROVAL_STYLE[a.status]}]{a.status.value}[/]",
            when(a.expires_at),
        )
    return table


APPROVAL_STYLE = {
    ApprovalStatus.PENDING: "yellow",
    ApprovalStatus.APPROVED: "green",
    ApprovalStatus.REJECTED: "red",
    ApprovalStatus.TIMEOUT: "magenta",
}


def governance_lines(entries: Sequence[Entry], approvals: Sequence[Approval]) -> list[str]:
    """Decisions by verdict, and each approval's outcome: timeouts apart from rejections."""
    verdicts: dict[str, int] = {}
    for e in entries:
        body = e.body
        if isinstance(body, DecisionRecord):
            verdicts[body.verdict] = verdicts.get(body.verdict, 0) + 1
    if not verdicts and not approvals:
        return []
    lines = ["decisions: " + ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))]
    for a in approvals:
        if a.status is ApprovalStatus.TIMEOUT:
            outcome = "TIMED OUT - denied by default, nobody decided"
        elif a.status is ApprovalStatus.REJECTED:
            outcome = f"REJECTED by {', '.join(a.decided_by)}: {a.reason}"
        elif a.status is ApprovalStatus.APPROVED:
            outcome = f"APPROVED by {', '.join(a.decided_by)}: {a.reason}"
        else:
            outcome = f"pending ({sum(1 for v in a.votes if v.approve)}/{a.quorum} approvals)"
        lines.append(
            f"approval {a.id}: {a.tool} {canonical_json(a.arguments)} - "
            f"[{APPROVAL_STYLE[a.status]}]{escape(outcome)}[/]"
        )
    return lines


def print_run(
    console: Console, run: Run, entries: Sequence[Entry], approvals: Sequence[Approval] = ()
) -> None:
    console.print(f"[bold]{run.id}[/]  {run.agent}@{run.agent_version}  model {run.model}")
    console.print(
        f"status {status_text(run)}"
        + (f" - {escape(run.status_reason)}" if run.status_reason else "")
    )
    steps = sum(1 for e in entries if e.kind.value == "tool.result")
    turns = sum(1 for e in entries if e.kind.value == "model.response")
    console.print(
        f"created {when(run.created_at)} UTC, updated {when(run.updated_at)} UTC; "
        f"{turns} model turns, {steps} tool steps, {len(entries)} journal entries"
    )
    for line in governance_lines(entries, approvals):
        console.print(line)
    console.print(cost_line(entries))
    for line in plan_lines(entries):
        console.print(line)
    from autonomic.cli.runaway_view import runaway_lines

    for line in runaway_lines(entries):
        console.print(line)
    from autonomic.cli.circuit_view import circuit_lines

    for line in circuit_lines(entries):
        console.print(line)
    from autonomic.cli.tables import print_table

    print_table(console, timeline_table(entries))


def plan_lines(entries: Sequence[Entry]) -> list[str]:
    """The run's plan, whole (the timeline row is cut short): where it came from, its steps."""
    from autonomic.core.timeline import summarise

    plan = next((e for e in entries if isinstance(e.body, PlanOutcome)), None)
    if plan is None:
        return []
    outcome = plan.body
    assert isinstance(outcome, PlanOutcome)
    steps = outcome.steps or ()
    head = "plan reused from the cache" if outcome.source == "cache" else "plan"
    if not steps:
        return [escape(summarise(plan, width=200))]
    return [f"{head} (pattern {escape(repr(outcome.pattern))}):"] + [
        f"  {i}. {escape(str(step))}" for i, step in enumerate(steps, start=1)
    ]


def cost_line(entries: Sequence[Entry]) -> str:
    """The run's model spend in one line: total, then per provider that served calls.

    Calls of a model that has no price (one used without the gateway, such as the demo's
    ``function:`` models) are not counted as $0: the line says which model has no price."""
    from autonomic.core.timeline import spend

    total = spend(entries)
    tokens = f"{total['input_tokens']}+{total['output_tokens']} tokens"
    if not total["calls"]:
        return "cost $0: no model calls"
    unpriced = _unpriced_models(entries)
    calls = sum(unpriced.values())
    verb = "has" if len(unpriced) == 1 else "have"
    no_price = f"model {', '.join(sorted(unpriced))} {verb} no price"
    if calls == total["calls"]:
        return escape(f"cost unknown: {no_price} ({total['calls']} model call(s), {tokens})")
    parts = [
        f"{name} {row['calls']} call(s) ${row['cost_usd']:.6f}"
        for name, row in sorted(total["providers"].items())
        if name != "-"
    ]
    priced = total["calls"] - calls
    line = (
        f"cost ${total['cost_usd']:.6f} over {priced} model call(s)"
        + (f" ({'; '.join(parts)})" if parts else "")
        + (f", not counting {calls} call(s): {no_price}" if calls else "")
        + f"; {tokens}"
    )
    return escape(line)


def _unpriced_models(entries: Sequence[Entry]) -> dict[str, int]:
    """Calls that carry no cost (served without the gateway), counted by the model that made
    them: the run's model for turns and summaries, the planning model for a plan."""
    model = "?"
    found: dict[str, int] = {}

    def count(call: ModelCall, name: str) -> None:
        if call.cost_usd is None:
            found[name] = found.get(name, 0) + 1

    for e in entries:
        body = e.body
        if isinstance(body, RunStarted):
            model = body.model
        elif isinstance(body, ModelTurn):
            count(body.call, model)
        elif isinstance(body, Summary):
            for call in body.calls:
                count(call, model)
        elif isinstance(body, PlanOutcome) and body.call is not None:
            count(body.call, str(body.model or model))
    return found


def entry_line(entry: Entry) -> str:
    style = KIND_STYLE.get(entry.kind.value, "default")  # "[]" would not be markup
    return f"  [dim]{entry.seq:>3}[/] [{style}]{entry.kind.value:<14}[/] {escape(summarise(entry))}"
