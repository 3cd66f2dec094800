"""The KPIs operators ask for, computed from the journal (the truth about what happened).

Per agent and task type (``metadata["task_type"]``, else ``default``), over the runs created in a
window:

* **completion rate** - COMPLETED over the runs that ended (COMPLETED, FAILED, CANCELLED);
* **mean steps to completion** - steps (model turns + tool results) of the COMPLETED runs;
* **recovery rate** - of the runs that met a transient failure (a worker takeover, a tool or
  model call that needed more than one attempt), the share that COMPLETED with no human repair
  (no settlement, no operator's forced transition);
* **human intervention rate** - runs in which a human acted (an approval, a settlement, an
  operator's transition) over all runs;
* **cost per task** - model dollars over all runs;
* **latency P50/P95/P99** - creation to end, of the runs that ended.

The SQL views ``run_kpi_facts`` and ``kpis`` (migration 0007, both stores) compute the same
figures but latency percentiles; ``tests/observability/test_kpis.py`` holds both to hand-computed
values. ``phase_latencies`` is the per-turn breakdown the journal can give (inference, tool, the
sandbox's setup); state reads and messaging are measured by the metrics only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from autonomic.core.entries import (
    ApprovalEvent,
    ModelTurn,
    Recovery,
    Settlement,
    Summary,
    ToolResult,
    Transition,
)
from autonomic.core.journal import Entry
from autonomic.core.run import Run, RunStatus

ENDED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)

SEED_LATENCY = {  # the seed's per-turn breakdown, P50 / P99 seconds
    "sandbox_provisioning": (0.04, 0.12),
    "state_read": (0.01, 0.05),
    "tool": (0.25, 1.10),
    "messaging": (0.02, 0.08),
}


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What the KPIs need from one run (the ``run_kpi_facts`` view's row)."""

    run_id: str
    agent: str
    task_type: str
    status: RunStatus
    created_at: float
    ended_at: float | None
    steps: int
    cost_usd: float
    transient: bool
    human: bool
    human_repair: bool
    phases: dict[str, list[float]] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.created_at


def run_facts(run: Run, entries: Sequence[Entry]) -> RunFacts:
    steps = 0
    cost = 0.0
    transient = human = repair = False
    phases: dict[str, list[float]] = {}
    for entry in entries:
        body = entry.body
        if isinstance(body, ModelTurn):
            steps += 1
            cost += body.call.cost
            transient |= int(body.call.attempts or 1) > 1
            if body.latency_ms is not None:
                phases.setdefault("inference", []).append(body.latency_ms / 1000)
        elif isinstance(body, Summary):
            cost += float(entry.payload.get("cost_usd") or 0.0)
        elif isinstance(body, ToolResult):
            steps += 1
            transient |= int(body.attempts or 1) > 1
            if body.latency_ms is not None:
                phases.setdefault("tool", []).append(body.latency_ms / 1000)
                ran = body.output.get("duration_s") if isinstance(body.output, dict) else None
                if body.tool == "python_exec" and isinstance(ran, int | float):
                    setup = max(0.0, body.latency_ms / 1000 - float(ran))
                    phases.setdefault("sandbox_provisioning", []).append(setup)
        elif isinstance(body, Recovery):
            transient = True
        elif isinstance(body, ApprovalEvent):
            human = True
        elif isinstance(body, Settlement) or (
            isinstance(body, Transition) and body.by == "operator"
        ):
            human = repair = True
    ended = run.updated_at if run.status in ENDED else None
    return RunFacts(
        run_id=run.id,
        agent=run.agent,
        task_type=str(run.metadata.get("task_type") or "default"),
        status=run.status,
        created_at=run.created_at,
        ended_at=ended,
        steps=steps,
        cost_usd=cost,
        transient=transient,
        human=human,
        human_repair=repair,
        phases=phases,
    )


@dataclass(frozen=True, slots=True)
class Kpis:
    """One row of ``autonomic kpis`` (and of the ``kpis`` view, less the percentiles)."""

    agent: str
    task_type: str
    runs: int
    ended: int
    completed: int
    completion_rate: float | None
    mean_steps_to_completion: float | None
    recovery_rate: float | None
    human_intervention_rate: float | None
    cost_per_task: float | None
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def kpis(facts: Iterable[RunFacts]) -> list[Kpis]:
    """The KPIs per (agent, task type), sorted."""
    groups: dict[tuple[str, str], list[RunFacts]] = {}
    for f in facts:
        groups.setdefault((f.agent, f.task_type), []).append(f)
    return [_row(agent, kind, rows) for (agent, kind), rows in sorted(groups.items())]


def _row(agent: str, task_type: str, rows: list[RunFacts]) -> Kpis:
    ended = [r for r in rows if r.ended_at is not None]
    done = [r for r in rows if r.status is RunStatus.COMPLETED]
    hit = [r for r in rows if r.transient]
    recovered = [r for r in hit if r.status is RunStatus.COMPLETED and not r.human_repair]
    durations = sorted(r.duration for r in ended if r.duration is not None)
    return Kpis(
        agent=agent,
        task_type=task_type,
        runs=len(rows),
        ended=len(ended),
        completed=len(done),
        completion_rate=_ratio(len(done), len(ended)),
        mean_steps_to_completion=_ratio(sum(r.steps for r in done), len(done)),
        recovery_rate=_ratio(len(recovered), len(hit)),
        human_intervention_rate=_ratio(sum(1 for r in rows if r.human), len(rows)),
        cost_per_task=_ratio(sum(r.cost_usd for r in rows), len(rows)),
        latency_p50=percentile(durations, 0.50),
        latency_p95=percentile(durations, 0.95),
        latency_p99=percentile(durations, 0.99),
    )


def phase_latencies(facts: Iterable[RunFacts]) -> dict[str, tuple[float | None, float | None]]:
    """P50 and P99 seconds per phase the journal records, over the runs given."""
    pooled: dict[str, list[float]] = {}
    for f in facts:
        for phase, values in f.phases.items():
            pooled.setdefault(phase, []).extend(values)
    return {
        phase: (percentile(sorted(v), 0.50), percentile(sorted(v), 0.99))
        for phase, v in sorted(pooled.items())
    }


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of sorted values, interpolated linearly between the nearest ranks (as
    PostgreSQL's ``percentile_cont`` does); ``None`` for no values."""
    if not ordered:
        return None
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ratio(top: float, bottom: int) -> float | None:
    return None if bottom == 0 else top / bottom
