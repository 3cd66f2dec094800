"""``autonomic agents``: the agents this process knows, what they can do, and how they are doing."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from autonomic.cli.common import (
    AgentOption,
    JsonOption,
    open_store,
    out,
    run_coroutine,
    settings_of,
)


def agents(
    ctx: typer.Context,
    agent_paths: AgentOption = None,
    as_json: JsonOption = False,
    limit: Annotated[int, typer.Option(help="How many recent runs health reads.", min=1)] = 500,
) -> None:
    """List agents with their capabilities and health: success rate, latency percentiles and
    breaker state per agent and capability, over the recent runs.

    Breaker state is what the journals recorded when an agent's circuit refused a run (live state
    is per worker process)."""
    from autonomic.bootstrap import build_agents
    from autonomic.cli.circuit_view import circuit_events
    from autonomic.engine.health import health

    settings = settings_of(ctx)
    registry = build_agents(agent_paths)

    async def go() -> list[dict[str, Any]]:
        store = await open_store(settings.db, "read")
        try:
            runs = await store.list_runs(status=None, limit=limit)
            breakers: dict[str, tuple[float, str]] = {}
            for run in runs:
                for ev in circuit_events(await store.load_journal(run.id)):
                    key = str(ev["circuit"].get("key", ""))
                    if key.startswith("agent:") and ev["at"] >= breakers.get(key, (0.0, ""))[0]:
                        breakers[key] = (ev["at"], str(ev["circuit"].get("state", "open")))
            states = {k.partition(":")[2]: v[1] for k, v in breakers.items()}
            rows = [h.to_dict() for h in health(runs, agents=registry.names(), breakers=states)]
        finally:
            await store.close()
        for row in rows:
            known = row["agent"] in registry.names()
            caps = registry.get(row["agent"]).capabilities if known else ()
            row["capabilities"] = [c.describe() for c in caps]
        return rows

    rows = run_coroutine(go)
    if as_json:
        out.print_json(data=rows)
        return
    if not rows:
        out.print("no agents loaded and no runs yet (load agents with --agent module:attribute)")
        return
    for row in rows:
        rate = row["success_rate"]
        latency = (
            f"p50 {row['p50_seconds']:.2f}s p95 {row['p95_seconds']:.2f}s"
            if row["p50_seconds"] is not None
            else "no ended runs"
        )
        cap = "" if row["capability"] == "-" else f" \\[{escape(row['capability'])}]"
        out.print(
            f"{escape(row['agent'])}{cap}: "
            f"{'-' if rate is None else f'{rate:.0%}'} of {row['ended']} ended succeeded, "
            f"{row['in_flight']} in flight, {latency}, breaker {row['breaker']}"
        )
