"""``autonomic settle``: record a human's finding about the call a run is in doubt about.

A run is *in doubt* when a non-idempotent call started (its intent is journaled) and its result
was never recorded - the worker died or lost its lease in between - so nobody knows whether the
effect happened, and the run waits for a person. They find out (look at the report system, the
payment provider, the inbox...) and say so here; the run then goes on (``Engine.settle``):

* ``--executed [--result JSON | --result-file F]``: it took effect; the result they found is
  recorded as the call's result (untrusted tool output: screened like any, marked as settled by
  them), and the call is not run again;
* ``--not-executed``: it did not; the call runs again, once, as a new attempt.

``--reason`` is required: the journal keeps who settled it and why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from autonomic.cli.common import (
    AgentOption,
    AsOption,
    acting,
    build_engine,
    open_store,
    out,
    run_coroutine,
    settings_of,
)
from autonomic.core.run import Run, validate_run_id
from autonomic.errors import InvalidInput


def settle(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run that waits in doubt.")],
    executed: Annotated[
        bool | None,
        typer.Option(
            "--executed/--not-executed",
            help="What you found: the call took effect (--executed), or it did not "
            "(--not-executed: it runs again, once).",
            show_default=False,
        ),
    ] = None,
    reason: Annotated[
        str | None,
        typer.Option(
            help="How you found out; recorded in the journal (required).", show_default=False
        ),
    ] = None,
    result: Annotated[
        str | None,
        typer.Option(help="With --executed: the call's result as JSON.", show_default=False),
    ] = None,
    result_file: Annotated[
        Path | None,
        typer.Option(
            help="With --executed: a file holding the call's result as JSON.", show_default=False
        ),
    ] = None,
    who: AsOption = None,
    agents: AgentOption = None,
) -> None:
    """Settle a run that is in doubt: record whether its started call took effect; it goes on."""
    settings = settings_of(ctx)
    validate_run_id(run_id)
    if executed is None:
        raise InvalidInput(
            "say what you found: --executed or --not-executed",
            hint=f"autonomic settle {run_id} --executed --result JSON --reason TEXT",
        )
    if reason is None or not reason.strip():
        raise InvalidInput(
            "settling needs a reason", hint='say how you found out: --reason "checked the ..."'
        )
    output = _result(result, result_file) if executed else None
    if not executed and (result is not None or result_file is not None):
        raise InvalidInput(
            "--result and --result-file go with --executed",
            hint="a call that did not take effect has no result",
        )

    async def go() -> Run:
        store = await open_store(settings.db, "write")
        try:
            engine = build_engine(store, agents, settings.policy)
            return await engine.settle(  # type: ignore[no-any-return]
                run_id,
                executed=executed,
                by=acting(who, (await store.get_run(run_id)).tenant),
                reason=reason,
                output=output,
            )
        finally:
            await store.close()

    run = run_coroutine(go)
    out.print(f"run [bold]{run.id}[/] {escape(run.status_reason or '')}")
    from autonomic.cli.invocation import command

    out.print(
        f"it goes on: a worker takes it, or drive it here with\n"
        f"  {escape(command(settings.db, 'resume', run.id))}\n"
        f"the settlement is in its timeline:\n  {escape(command(settings.db, 'show', run.id))}"
    )


def _result(text: str | None, path: Path | None) -> Any:
    """The result given with ``--executed`` (``None`` if none was: the call returned nothing
    the person could see)."""
    if text is not None and path is not None:
        raise InvalidInput("give --result or --result-file, not both")
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"--result-file {path}: {exc.strerror or exc}") from None
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"--result-file {path}" if path is not None else "--result"
        raise InvalidInput(
            f"{where} is not valid JSON: {exc}",
            hint='e.g. --result \'{"report_id": 7}\' (a string is "\\"text\\"")',
        ) from None
