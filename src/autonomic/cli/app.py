"""``autonomic``: run, resume, inspect and operate durable agent runs.

Every command reads the database from ``--db`` or ``AUTONOMIC_DB`` (default: ``autonomic.db`` in the
working directory). Errors print as one line with a hint, never as a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from autonomic.cli import approvals, demo, runs
from autonomic.cli.common import (
    DbOption,
    JsonOption,
    PolicyOption,
    Settings,
    err,
    open_store,
    out,
    run_coroutine,
    settings_of,
)
from autonomic.errors import AutonomicError, UserError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    help="autonomic: durable, governed, observable AI agents.",
)


@app.callback()
def _options(ctx: typer.Context, db: DbOption = None, policy: PolicyOption = None) -> None:
    from autonomic.bootstrap import database_url

    ctx.obj = Settings(db=database_url(db), policy=policy)


app.command("demo")(demo.demo)


app.command("run")(runs.run_cmd)


app.command("resume")(runs.resume)


app.command("worker")(runs.worker)


app.command("runs")(runs.runs)


@app.command()
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
        store = await open_store(settings.db)
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


app.command("show")(runs.show)


app.command("cancel")(runs.cancel)


app.command("approvals")(approvals.approvals)


app.command("approve")(approvals.approve)


app.command("deny")(approvals.deny)


workflow_app = typer.Typer(no_args_is_help=True, help="State-machine workflows.")
app.add_typer(workflow_app, name="workflow")


@workflow_app.command("check")
def workflow_check(
    path: Annotated[Path, typer.Argument(help="The workflow YAML file.")],
    tools: Annotated[
        str | None,
        typer.Option(help="Comma-separated tool names the agent has (checks unknown tools)."),
    ] = None,
    agent: Annotated[
        str | None, typer.Option(help="Check tools against this agent's (name or module:attr).")
    ] = None,
) -> None:
    """Check a workflow offline: unknown states/tools, unreachable states, states with no exit."""
    from autonomic.governance.policy.workflow import Workflow

    workflow = Workflow.from_file(path)
    known: set[str] | None = None
    if tools:
        known = {t.strip() for t in tools.split(",") if t.strip()}
    if agent:
        from autonomic.bootstrap import build_agents

        registry = build_agents([agent] if ":" in agent else None)
        name = agent if ":" not in agent else registry.names()[-1]
        known = (known or set()) | {t.name for t in registry.get(name).tools}
    problems = workflow.problems(known)
    for p in problems:
        where = f"{path}:{p.line}" if p.line else str(path)
        err.print(f"{escape(where)}: {escape(p.message)}")
    if problems:
        raise typer.Exit(1)
    out.print(
        f"{path}: workflow {workflow.name} is sound: {len(workflow.states)} states, all reachable "
        f"from {workflow.start}, final: {', '.join(workflow.final_states())}"
    )


@app.command()
def migrate(ctx: typer.Context) -> None:
    """Create or upgrade the database schema."""
    from autonomic.bootstrap import build_store

    settings = settings_of(ctx)

    async def go() -> list[str]:
        store = build_store(settings.db)
        try:
            applied: list[str] = await store.migrate()
            return applied
        finally:
            await store.close()

    applied = run_coroutine(go)
    out.print("applied: " + ", ".join(applied) if applied else "schema is up to date")


@app.command("gateway-check")
def gateway_check(
    path: Annotated[
        str | None,
        typer.Argument(help="The gateway file (.yaml/.toml); default: $AUTONOMIC_GATEWAY."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Validate a model gateway configuration and show its providers (keys are never shown)."""
    import os

    from autonomic.gateway import load_config

    config = load_config(path)
    rows = [
        {
            "name": p.name,
            "kind": p.kind.value,
            "model": p.model,
            "base_url": p.base_url,
            "api_key_env": p.api_key_env,
            "api_key_set": bool(p.api_key_env and os.environ.get(p.api_key_env)),
            "context_window": p.context_window,
            "price_per_million": [p.pricing.input_per_million, p.pricing.output_per_million],
            "requests_per_minute": p.limits.requests_per_minute,
            "tokens_per_minute": p.limits.tokens_per_minute,
            "serves": sorted(c.value for c in p.serves),
        }
        for p in config.providers
    ]
    if as_json:
        out.print_json(
            json.dumps(
                {"source": config.source, "redis_url": bool(config.redis_url), "providers": rows}
            )
        )
        return
    shared = "shared through Redis" if config.redis_url else "in-process"
    out.print(f"{config.source}: {len(rows)} provider(s), rate limits and circuits {shared}")
    for p in config.providers:
        key = "none"
        if p.api_key_env:
            key = f"{p.api_key_env} ({'set' if os.environ.get(p.api_key_env) else 'NOT SET'})"
        out.print(
            f"  {p.name}: {p.kind.value} {p.model} at {p.base_url or 'default'}; "
            f"window {p.context_window}; ${p.pricing.input_per_million:g}/"
            f"${p.pricing.output_per_million:g} per 1M in/out; "
            f"rpm {p.limits.requests_per_minute or 'unlimited'}, "
            f"tpm {p.limits.tokens_per_minute or 'unlimited'}; "
            f"serves {', '.join(sorted(c.value for c in p.serves))}; key {key}",
            markup=False,
        )


from autonomic.cli.screen import screen_cmd  # noqa: E402 - kept apart to merge cleanly

app.command("screen")(screen_cmd)

from autonomic.cli.sandbox import sandbox_app  # noqa: E402 -- sub-apps mount after the commands

app.add_typer(sandbox_app, name="sandbox")


def main() -> None:
    """Entry point: run the app, turning autonomic errors into one clear line."""
    try:
        app()
    except AutonomicError as exc:
        err.print(f"[bold red]error:[/] {escape(exc.message)}")
        if exc.hint:
            err.print(f"[dim]hint:[/] {escape(exc.hint)}")
        sys.exit(2 if isinstance(exc, UserError) else 1)
    except KeyboardInterrupt:
        sys.exit(130)
