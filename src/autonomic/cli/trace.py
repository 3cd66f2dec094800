"""``autonomic trace search``: model turns by agent, tool, decision and text, with the reasoning
the model gave (``core/reasoning.py``). The same questions in SQL: docs/audit.md."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from autonomic.cli.common import JsonOption, open_store, out, run_coroutine, settings_of

trace_app = typer.Typer(
    help="Reasoning traces: what models said about why (docs/audit.md).", no_args_is_help=True
)


@trace_app.command("search")
def search(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option(help="Only this agent's runs.")] = None,
    tool: Annotated[str | None, typer.Option(help="Turns that chose this tool.")] = None,
    decision: Annotated[
        str | None,
        typer.Option(
            help="Turns whose calls got this verdict (allow, needs_approval, blocked, suspend), "
            "or whose stated decision says it."
        ),
    ] = None,
    text: Annotated[
        str | None, typer.Option(help="Text in the reasoning, alternatives or answer.")
    ] = None,
    runs: Annotated[int, typer.Option(help="How many recent runs to search.", min=1)] = 200,
    as_json: JsonOption = False,
) -> None:
    """Search the model turns of recent runs; newest runs first."""
    from autonomic.core.reasoning import TraceRow, trace_rows

    settings = settings_of(ctx)

    async def go() -> list[TraceRow]:
        store = await open_store(settings.db, "read")
        try:
            found: list[TraceRow] = []
            for run in await store.list_runs(limit=runs):
                if agent is not None and run.agent != agent:
                    continue
                rows = trace_rows(run.id, run.agent, await store.load_journal(run.id))
                found += [
                    r
                    for r in rows
                    if r.matches(agent=agent, tool=tool, decision=decision, text=text)
                ]
            return found
        finally:
            await store.close()

    found = run_coroutine(go)
    if as_json:
        out.print_json(data=[r.to_dict() for r in found])
        return
    if not found:
        out.print(f"no model turn matches in the last {runs} runs")
        return
    for r in found:
        head = f"{r.run_id} turn {r.turn} ({escape(r.agent)})"
        if r.tools:
            head += f" chose {escape(', '.join(r.tools))}"
        if r.verdicts:
            head += f" -> {', '.join(r.verdicts)}"
        out.print(f"[bold]{head}[/]")
        if r.reasoning is not None:
            if r.reasoning.thoughts:
                out.print(f"  thought: {escape(r.reasoning.thoughts[:300])}")
            for alt in r.reasoning.alternatives:
                out.print(f"  considered: {escape(alt)}")
            if r.reasoning.confidence is not None:
                out.print(f"  confidence: {r.reasoning.confidence:.2f}")
            if r.reasoning.decision:
                out.print(f"  decided: {escape(r.reasoning.decision)}")
