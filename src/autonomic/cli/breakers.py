"""``autonomic breakers``: circuits that refused calls or runs, as the recent journals say."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from autonomic.cli.common import JsonOption, open_store, out, run_coroutine, settings_of


def breakers(
    ctx: typer.Context,
    as_json: JsonOption = False,
    limit: Annotated[int, typer.Option(help="How many recent runs to scan.", min=1)] = 200,
) -> None:
    """List circuits that refused calls or runs in recent runs, newest state per circuit.

    Live breaker state is per worker process; this reads what the journals recorded when a
    circuit refused something, so it works from any process."""
    from autonomic.cli.circuit_view import circuit_events
    from autonomic.cli.render import when

    settings = settings_of(ctx)

    async def go() -> dict[str, dict[str, Any]]:
        store = await open_store(settings.db, "read")
        try:
            latest: dict[str, dict[str, Any]] = {}
            for run in await store.list_runs(status=None, limit=limit):
                for ev in circuit_events(await store.load_journal(run.id)):
                    key = str(ev["circuit"].get("key"))
                    if key not in latest or ev["at"] >= latest[key]["at"]:
                        latest[key] = ev | {"run": run.id}
            return latest
        finally:
            await store.close()

    latest = run_coroutine(go)
    if as_json:
        out.print_json(data=[latest[k] for k in sorted(latest)])
        return
    if not latest:
        out.print(f"no circuit refused anything in the last {limit} runs")
        return
    for key in sorted(latest):
        ev = latest[key]
        c = ev["circuit"]
        out.print(
            f"{escape(key)}: {c.get('state')} ({c.get('failures')} consecutive failures) - last "
            f"refused {escape(ev['refused'])} in {ev['run']} at {when(ev['at'])} UTC"
        )
