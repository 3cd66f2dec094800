"""``autonomic replay`` and ``autonomic export``: a recorded run against the current code.

``export RUN`` prints the run as a case file (stable JSON, secrets masked; ``core/case.py``);
``replay RUN|CASE.json`` drives it again with the current agent, every model answer and tool
result served from the recording, on a throw-away database, and exits 1 at the first
divergence with both paths side by side (``autonomic.testing.replay``; docs/release-safety.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from autonomic.cli.common import open_store, out, run_coroutine, settings_of
from autonomic.cli.exit_codes import ExitCode
from autonomic.errors import ConfigError, InvalidInput

if TYPE_CHECKING:
    from autonomic.core.case import Case
    from autonomic.engine.agent import Agent


async def _case_of_run(db: str, run_id: str) -> Case:
    from autonomic.core.case import Case
    from autonomic.core.run import validate_run_id

    validate_run_id(run_id)
    store = await open_store(db, "read")
    try:
        run = await store.get_run(run_id)
        return Case.of(run, await store.load_journal(run_id))
    finally:
        await store.close()


def export(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run to export.")],
) -> None:
    """Print a run and its journal as a case file (JSON, secrets masked) for `autonomic replay`
    and `autonomic.testing.replay.assert_replays`: autonomic export RUN > case.json"""
    settings = settings_of(ctx)
    case = run_coroutine(lambda: _case_of_run(settings.db, run_id))
    out.file.write(case.to_json())


def _agent_for(case: Case, path: str | None) -> Agent:
    """The current definition of the case's agent: from ``--agent module:attr``, else the
    agent of that name the composition root loads (the demos, ``AUTONOMIC_AGENTS``)."""
    from autonomic.bootstrap import build_agents, load_object
    from autonomic.engine.agent import Agent

    name = str(case.run["agent"])
    if path is None:
        return build_agents().get(name)
    obj: Any = load_object(path)
    found = obj() if callable(obj) and not isinstance(obj, Agent) else obj
    agents = found if isinstance(found, list | tuple) else [found]
    for agent in agents:
        if not isinstance(agent, Agent):
            raise ConfigError(f"{path} is not an Agent (got {type(agent).__name__})")
        if agent.name == name:
            return agent
    raise InvalidInput(
        f"{path} has no agent named {name!r} (it has: "
        + ", ".join(sorted(a.name for a in agents))
        + ")",
        hint=f"give the module:attribute of the {name} agent",
    )


def replay(
    ctx: typer.Context,
    recorded: Annotated[
        str, typer.Argument(help="A run id (read from --db) or a case file from `export`.")
    ],
    agent: Annotated[
        str | None,
        typer.Option(
            "--agent",
            help="module:attribute of the agent's current definition (default: the agent of "
            "the run's name that this installation loads).",
        ),
    ] = None,
) -> None:
    """Replay a recorded run against the current code: model answers and tool results come
    from its journal (no model is called, no tool runs, the run is not written); exit 1 at
    the first divergence, printing both paths side by side."""
    from autonomic.core.case import Case
    from autonomic.testing.replay import replay as replay_case

    settings = settings_of(ctx)

    async def go() -> Any:
        if recorded.startswith("run_"):
            case = await _case_of_run(settings.db, recorded)
        else:
            case = Case.load(recorded) if Path(recorded).suffix else _not_a_case(recorded)
        gates = []
        if settings.policy:
            from autonomic.governance.policy.risk import load_policy

            gates.append(load_policy(settings.policy).risk.gate())
        return await replay_case(case, _agent_for(case, agent), gates=gates)

    report = run_coroutine(go)
    if report.ok:
        out.print(escape(report.render()))
        raise typer.Exit(ExitCode.OK)
    out.print(escape(report.render()))
    raise typer.Exit(ExitCode.ERROR)


def _not_a_case(text: str) -> Case:
    raise InvalidInput(
        f"{text!r} is neither a run id nor a case file",
        hint="give a run id (run_ and 32 hex digits) or the path of a file from "
        "`autonomic export RUN > case.json`",
    )
