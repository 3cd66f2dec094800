"""``autonomic shadow``: mirror ended live runs of an agent to a candidate version with side
effects off (``mirror``), and compare the pairs per task type (``report``): outputs, paths,
steps, cost and latency. Shadow runs live in a database of their own (``--shadow-db``, by default
the live SQLite file's name with ``.shadow`` before its suffix), so they never count as real
work (docs/release-safety.md, "Shadow")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from autonomic.cli.common import JsonOption, open_store, out, run_coroutine, settings_of
from autonomic.errors import ConfigError, InvalidInput

shadow_app = typer.Typer(
    no_args_is_help=True,
    help="Shadow runs: a candidate version on live runs' inputs, side effects off; the comparison.",
)

ShadowDbOption = Annotated[
    str | None,
    typer.Option(
        "--shadow-db",
        envvar="AUTONOMIC_SHADOW_DB",
        help="Where shadow runs live (never the live database); default: the live SQLite "
        "file with .shadow before its suffix.",
        show_envvar=True,
    ),
]


def shadow_url(live: str, explicit: str | None) -> str:
    """The shadow database's URL: ``explicit``, else beside a live SQLite file."""
    if explicit:
        return explicit
    if live.startswith("sqlite:///"):
        path = live.removeprefix("sqlite:///")
        stem, dot, suffix = path.rpartition(".")
        return (
            f"sqlite:///{stem}.shadow.{suffix}"
            if dot and "/" not in suffix
            else f"sqlite:///{path}.shadow"
        )
    raise ConfigError(
        "shadow runs need a database of their own",
        hint="pass --shadow-db postgresql://.../shadow (or set AUTONOMIC_SHADOW_DB)",
    )


@shadow_app.command("mirror")
def mirror(
    ctx: typer.Context,
    candidate: Annotated[
        str, typer.Argument(metavar="module:AGENT", help="The candidate version (an Agent).")
    ],
    run_ids: Annotated[
        list[str] | None, typer.Argument(metavar="[RUN]...", help="Live runs to mirror.")
    ] = None,
    last: Annotated[
        int, typer.Option("--last", min=0, max=10_000, help="Also the agent's latest N ended runs.")
    ] = 0,
    reads: Annotated[
        str,
        typer.Option(
            help="journal: serve reads from the live run's journal; run: run a read-only, "
            "idempotent tool the live run never called so."
        ),
    ] = "journal",
    shadow_db: ShadowDbOption = None,
) -> None:
    """Mirror ended live runs to the candidate: writes never execute (docs/release-safety.md)."""
    from autonomic.bootstrap import load_object
    from autonomic.engine.agent import Agent

    settings = settings_of(ctx)
    found = load_object(candidate)
    if not isinstance(found, Agent):
        raise InvalidInput(f"{candidate} is not an Agent", hint="point at an autonomic Agent")
    if reads not in ("journal", "run"):
        raise InvalidInput(f"--reads must be journal or run, not {reads!r}")
    target = shadow_url(settings.db, shadow_db)

    async def go() -> list[tuple[str, str]]:
        from autonomic.bootstrap import build_model
        from autonomic.core.run import RunStatus
        from autonomic.release.shadow import Shadow

        live = await open_store(settings.db, "read")
        shadow_store = await open_store(target, "create")
        shadow = Shadow(live, shadow_store, found, build_model, reads=reads)  # type: ignore[arg-type]
        try:
            ids = list(run_ids or [])
            if last:
                ended = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)
                page = await live.page_runs(tenant=None, agent=found.name, limit=10_000)
                ids += [r.id for r in page if r.status in ended][:last]
            if not ids:
                raise InvalidInput("no runs to mirror", hint="name runs, or pass --last N")
            done = []
            for run_id in dict.fromkeys(ids):
                run = await shadow.mirror(run_id)
                done.append((run_id, "not ended yet" if run is None else run.status.value))
            return done
        finally:
            await shadow.aclose()
            await shadow_store.close()
            await live.close()

    for run_id, status in run_coroutine(go):
        out.print(f"{run_id} -> shadow {status}", markup=False)


@shadow_app.command("report")
def report_cmd(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option(help="Only this agent's runs.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's runs.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="Latest shadow runs.")] = 1_000,
    shadow_db: ShadowDbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Live runs and their shadows compared per task type: outputs, paths, steps, cost, latency."""
    settings = settings_of(ctx)
    target = shadow_url(settings.db, shadow_db)
    if target.startswith("sqlite:///") and not Path(target.removeprefix("sqlite:///")).exists():
        out.print(f"no shadow runs yet: {target} does not exist", markup=False)
        out.print(
            "  mirror some: autonomic shadow mirror module:CANDIDATE --last 100", markup=False
        )
        return

    async def go() -> list[dict[str, Any]]:
        from autonomic.release.shadow import pairs, report

        live = await open_store(settings.db, "read")
        try:
            shadow_store = await open_store(target, "read")
        except BaseException:
            await live.close()
            raise
        try:
            return report(await pairs(live, shadow_store, agent=agent, tenant=tenant, limit=limit))
        finally:
            await shadow_store.close()
            await live.close()

    rows = run_coroutine(go)
    if as_json:
        out.print(json.dumps(rows, indent=2), markup=False)
        return
    if not rows:
        out.print("no shadow runs yet (autonomic shadow mirror module:CANDIDATE --last 100)")
        return
    from rich.table import Table

    table = Table(title="Live vs shadow, per task type")
    columns = (
        "task type", "pairs", "same output", "same path", "same args", "completed",
        "steps", "cost $", "latency s", "writes suppressed",
    )  # fmt: skip
    for column in columns:
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["task_type"],
            str(r["pairs"]),
            f"{r['output_match']:.0%}",
            f"{r['path_match']:.0%}",
            f"{r['arguments_match']:.0%}",
            f"{r['live_completed']} / {r['shadow_completed']}",
            f"{r['live_steps']} / {r['shadow_steps']}",
            f"{r['live_cost']} / {r['shadow_cost']}",
            f"{r['live_latency']} / {r['shadow_latency']}",
            str(r["writes_suppressed"]),
        )
    out.print(table)
    out.print("(live / shadow)")
