"""``autonomic kpis``: the operators' KPIs from the journal, per agent and task type."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer

from autonomic.cli.common import JsonOption, open_store, out, run_coroutine, settings_of
from autonomic.errors import InvalidInput

_SPAN = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def window_seconds(text: str) -> float:
    """``90s``, ``15m``, ``24h``, ``7d``, ``2w`` as seconds."""
    match = _SPAN.match(text.strip())
    if match is None:
        raise InvalidInput(
            f"--since {text!r} is not a duration", hint="e.g. --since 24h (s, m, h, d or w)"
        )
    return float(match.group(1)) * _UNIT[match.group(2)]


def kpis(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option(help="Only runs created in this window: 90m, 24h, 7d.")
    ] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent's runs.")] = None,
    latency: Annotated[
        bool,
        typer.Option(help="Also print the per-turn latency breakdown (P50/P99 per phase)."),
    ] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many recent runs.")] = 10_000,
    as_json: JsonOption = False,
) -> None:
    """Task completion rate, mean steps to completion, recovery rate, human intervention rate,
    cost per task and latency P50/P95/P99, per agent and task type (docs/observability.md)."""
    import time

    from autonomic.observability.kpis import SEED_LATENCY, phase_latencies, run_facts
    from autonomic.observability.kpis import kpis as compute

    settings = settings_of(ctx)
    after = time.time() - window_seconds(since) if since else None

    async def go() -> list[Any]:
        store = await open_store(settings.db, "read")
        try:
            found = []
            for run in await store.list_runs(status=None, limit=limit):
                if after is not None and run.created_at < after:
                    continue
                if agent is not None and run.agent != agent:
                    continue
                found.append(run_facts(run, await store.load_journal(run.id)))
            return found
        finally:
            await store.close()

    facts = run_coroutine(go)
    rows = compute(facts)
    phases = phase_latencies(facts) if latency else {}
    if as_json:
        doc: dict[str, Any] = {"kpis": [r.to_dict() for r in rows]}
        if latency:
            doc["latency"] = {
                p: {"p50": v[0], "p99": v[1], "seed": SEED_LATENCY.get(p)}
                for p, v in phases.items()
            }
        out.print_json(json.dumps(doc))
        return
    if not rows:
        out.print("no runs in the window")
    else:
        _table(
            ["agent", "task", "runs", "done", "steps", "recov", "human", "$/task", "P50 s",
             "P95 s", "P99 s"],
            [
                [r.agent, r.task_type, str(r.runs), _pct(r.completion_rate),
                 _num(r.mean_steps_to_completion), _pct(r.recovery_rate),
                 _pct(r.human_intervention_rate), _usd(r.cost_per_task),
                 _num(r.latency_p50), _num(r.latency_p95), _num(r.latency_p99)]
                for r in rows
            ],
        )  # fmt: skip
    if latency:
        names = sorted(set(phases) | set(SEED_LATENCY) | {"inference"})
        _table(
            ["phase", "P50 s", "P99 s", "seed P50 s", "seed P99 s"],
            [
                [
                    p,
                    _num(phases.get(p, (None, None))[0], 3),
                    _num(phases.get(p, (None, None))[1], 3),
                    _num(SEED_LATENCY[p][0], 2) if p in SEED_LATENCY else "",
                    _num(SEED_LATENCY[p][1], 2) if p in SEED_LATENCY else "",
                ]
                for p in names
            ],
        )
        out.print(
            "state_read and messaging are not journaled: their live breakdown is the metric "
            "autonomic_phase_seconds (docs/observability.md)"
        )


def _table(headers: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    from autonomic.cli.tables import print_table

    table = Table(*headers)
    for row in rows:
        table.add_row(*row)
    print_table(out, table)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"
