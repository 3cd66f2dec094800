"""``autonomic workflow``: state-machine workflows (``workflow check`` validates one offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from autonomic.cli.common import err, out
from autonomic.cli.exit_codes import ExitCode

workflow_app = typer.Typer(no_args_is_help=True, help="State-machine workflows.")


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
        raise typer.Exit(ExitCode.ERROR)
    out.print(
        f"{path}: workflow {workflow.name} is sound: {len(workflow.states)} states, all reachable "
        f"from {workflow.start}, final: {', '.join(workflow.final_states())}"
    )
