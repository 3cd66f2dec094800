"""``autonomic run``, ``resume``, ``worker``, ``runs``, ``show`` and ``cancel``: start, drive, list,
inspect and stop runs (``settle`` is in ``settle.py``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from autonomic.cli.common import (
    AgentOption,
    AsOption,
    BusOption,
    JsonOption,
    acting,
    build_engine,
    cannot_listen,
    err,
    finish_message,
    live,
    open_store,
    out,
    run_coroutine,
    settings_of,
)
from autonomic.cli.exit_codes import ExitCode
from autonomic.core.principal import DEFAULT_TENANT
from autonomic.core.run import Run, RunStatus, validate_run_id
from autonomic.errors import InvalidInput, UserError

if TYPE_CHECKING:
    from autonomic.core.journal import Entry


def run_cmd(
    ctx: typer.Context,
    agent: Annotated[
        str, typer.Argument(help="Agent name (`reconciliation`, or one loaded with --agent).")
    ],
    task: Annotated[str, typer.Argument(help="The task: text, or JSON.")],
    model: Annotated[
        str | None, typer.Option(help="Model spec: scripted:PATH, function:NAME, openai:MODEL.")
    ] = None,
    max_turns: Annotated[
        int | None, typer.Option(min=1, help="Turn budget (default: the agent's).")
    ] = None,
    metadata: Annotated[str | None, typer.Option(help="Run metadata as a JSON object.")] = None,
    detach: Annotated[
        bool, typer.Option(help="Only enqueue the run; a worker will drive it.")
    ] = False,
    agents: AgentOption = None,
    requester: AsOption = None,
) -> None:
    """Start a run of AGENT on TASK and drive it here (or enqueue it with --detach).

    Exits with the run's outcome: 0 COMPLETED, 3 FAILED, 5 waiting for a human, 6 SUSPENDED,
    7 CANCELLED (docs/cli.md; 0 once enqueued with --detach)."""
    settings = settings_of(ctx)
    meta = _json_object(metadata, "--metadata") if metadata else {}

    async def go() -> Run:
        store = await open_store(settings.db)
        try:
            engine = build_engine(
                store, agents, settings.policy, on_commit=None if detach else live
            )
            if detach:
                run: Run = await engine.start(
                    agent,
                    task,
                    model=model,
                    max_turns=max_turns,
                    metadata=meta,
                    requester=acting(requester, DEFAULT_TENANT),
                )
                out.print(f"run [bold]{run.id}[/] created")
                return run
            return await engine.run(  # type: ignore[no-any-return]
                agent,
                task,
                model=model,
                max_turns=max_turns,
                metadata=meta,
                on_created=lambda r: out.print(f"run [bold]{r.id}[/] created"),
                requester=acting(requester, DEFAULT_TENANT),
            )
        finally:
            await store.close()

    run = run_coroutine(go)
    if not detach:
        finish_message(run, settings.db)
        raise typer.Exit(ExitCode.of(run.status))


def resume(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run to resume.")],
    force: Annotated[
        bool, typer.Option(help="Reopen a SUSPENDED or WAITING_FOR_HUMAN run first.")
    ] = False,
    agents: AgentOption = None,
    budget: Annotated[
        list[str] | None,
        typer.Option(
            help="With --force: raise a run budget limit, NAME=LIMIT (turns, tokens, cost, "
            "wall_seconds, or tool_calls.TOOL); repeatable.",
            show_default=False,
        ),
    ] = None,
    metadata: Annotated[
        str | None,
        typer.Option(
            help="With --force: set run metadata keys (a JSON object), e.g. the input a run "
            "was suspended for.",
            show_default=False,
        ),
    ] = None,
    agent_version: Annotated[
        str | None,
        typer.Option(
            help="With --force: move the run onto this version of its agent (one this process "
            "loads), e.g. when its own version is deployed nowhere any more; journaled.",
            show_default=False,
        ),
    ] = None,
    who: AsOption = None,
) -> None:
    """Resume a run from its journal: completed steps are replayed, never redone.

    Exits with the run's outcome: 0 COMPLETED, 3 FAILED, 5 waiting for a human, 6 SUSPENDED,
    7 CANCELLED (docs/cli.md)."""
    settings = settings_of(ctx)
    validate_run_id(run_id)
    raised = _budget_options(budget or [])
    if raised and not force:
        raise UserError("--budget raises a limit when reopening", hint="add --force")
    meta = _json_object(metadata, "--metadata") if metadata else None
    if meta and not force:
        raise UserError("--metadata sets run metadata when reopening", hint="add --force")
    if agent_version is not None and not force:
        raise UserError("--agent-version moves a run when reopening it", hint="add --force")

    async def go() -> Run:
        store = await open_store(settings.db, "write")
        try:
            engine = build_engine(store, agents, settings.policy, on_commit=live)
            current: Run = await store.get_run(run_id)
            if current.status in (RunStatus.SUSPENDED, RunStatus.WAITING_FOR_HUMAN):
                if not force:
                    raise UserError(
                        f"run {run_id} is {current.status.value}: {current.status_reason}",
                        hint="a human decides: `--force` reopens it, `autonomic cancel` ends it",
                    )
                await engine.reopen(
                    run_id,
                    "reopened by operator (resume --force)",
                    budget=raised or None,
                    metadata=meta,
                    by=acting(who, current.tenant),
                    agent_version=agent_version,
                )
            out.print(f"resuming run [bold]{run_id}[/] from its journal")
            return await engine.run_to_end(run_id)  # type: ignore[no-any-return]
        finally:
            await store.close()

    run = run_coroutine(go)
    finish_message(run, settings.db)
    raise typer.Exit(ExitCode.of(run.status))


def worker(
    ctx: typer.Context,
    concurrency: Annotated[int, typer.Option(min=1, help="Runs driven at once.")] = 4,
    lease_ttl: Annotated[
        float, typer.Option(min=1.0, help="Seconds a lease lasts unless renewed.")
    ] = 30.0,
    until_idle: Annotated[bool, typer.Option(help="Exit once no run is runnable.")] = False,
    agents: AgentOption = None,
    bus: BusOption = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics (docs/observability.md).",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="The address --metrics-port listens on.")
    ] = "127.0.0.1",
    version_grace: Annotated[
        float,
        typer.Option(
            min=1.0,
            help="Seconds a run may wait for a worker with its agent version before it is "
            "suspended (docs/release-safety.md).",
        ),
    ] = 600.0,
) -> None:
    """Claim and drive runnable runs until SIGTERM/SIGINT (each run finishes its current step).

    With ``--bus`` (or ``AUTONOMIC_BUS``): also relay the events runs commit (the outbox) and
    start a run for each event the loaded agents handle; workers share events as one consumer
    group (docs/events.md)."""
    import asyncio
    import signal

    from autonomic.engine.worker import Worker

    settings = settings_of(ctx)

    def report(run: Run) -> None:
        out.print(
            f"{run.id} {run.status.value}" + (f": {run.status_reason}" if run.status_reason else "")
        )

    async def go() -> list[Run]:
        store = await open_store(settings.db)
        try:
            engine = build_engine(
                store,
                agents,
                settings.policy,
                lease_ttl=lease_ttl,
                metrics=metrics_port is not None,
            )
            opened = None
            if bus:
                from autonomic.bootstrap import open_bus

                opened = open_bus(bus, store)
            w = Worker(
                engine,
                concurrency=concurrency,
                bus=opened,
                metrics=metrics_port is not None,
                notifier=alert_notifier(),
                version_grace=version_grace,
            )
            if metrics_port is not None:
                from autonomic.observability.metrics import serve

                try:
                    server = serve(metrics_port, metrics_host)
                except OSError as exc:
                    raise cannot_listen(
                        "serve metrics", metrics_host, metrics_port, exc, "metrics"
                    ) from None
                err.print(f"metrics on http://{metrics_host}:{server.server_port}/metrics")
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, w.stop)
            from autonomic.adapters.store.rows import redact_url

            on_bus = ""
            if w.starter is not None:
                handled = ", ".join(w.starter.types) or "no event types"
                on_bus = f"; bus {redact_url(bus or '')}: relaying the outbox, handling {handled}"
            err.print(  # never the password: this line is in every worker's log
                f"worker {engine.owner} on {redact_url(settings.db)}: {concurrency} slots"
                f"{on_bus}; SIGTERM stops it",
                markup=False,
            )
            try:
                finished = await w.run(until_idle=until_idle)
            finally:
                if opened is not None:
                    await opened.aclose()
            for run in finished:
                report(run)
            return finished
        finally:
            await store.close()

    run_coroutine(go)


def alert_notifier() -> Any:
    """The webhook notifier ``AUTONOMIC_ALERT_WEBHOOK`` asks for (``None`` when unset)."""
    import os

    url = os.environ.get("AUTONOMIC_ALERT_WEBHOOK", "").strip()
    if not url:
        return None
    from autonomic.observability.notifier import AlertNotifier

    return AlertNotifier(url)


def runs(
    ctx: typer.Context,
    as_json: JsonOption = False,
    status: Annotated[str | None, typer.Option(help="Only runs in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
) -> None:
    """List runs, newest first."""
    from autonomic.cli.render import runs_table
    from autonomic.cli.tables import print_table

    settings = settings_of(ctx)
    wanted = _status(status) if status else None

    async def go() -> list[tuple[Run, dict[str, Any]]]:
        from autonomic.core.timeline import spend

        store = await open_store(settings.db, "read")
        try:
            found: list[Run] = await store.list_runs(status=wanted, limit=limit)
            # each run's spend is folded from its journal: the journal is the one truth
            return [(r, spend(await store.load_journal(r.id))) for r in found]
        finally:
            await store.close()

    found = run_coroutine(go)
    if as_json:
        out.print_json(data=[_run_dict(r) | {"cost": c} for r, c in found])
    else:
        print_table(out, runs_table(found))


def show(
    ctx: typer.Context, run_id: Annotated[str, typer.Argument()], as_json: JsonOption = False
) -> None:
    """Show a run and its timeline: model turns, tool calls, timings, transitions."""
    from autonomic.cli.render import print_run
    from autonomic.cli.tree import graph_progress, print_graph, print_tree, run_tree
    from autonomic.core.timeline import spend, timeline

    settings = settings_of(ctx)
    validate_run_id(run_id)

    async def go() -> tuple[Run, list[Entry], list[Any], list[dict[str, Any]]]:
        store = await open_store(settings.db, "read")
        try:
            return (
                await store.get_run(run_id),
                await store.load_journal(run_id),
                await store.list_approvals(run_id=run_id, limit=10_000),
                await run_tree(store, run_id),
            )
        finally:
            await store.close()

    run, entries, found, tree = run_coroutine(go)
    if as_json:
        data = _run_dict(run) | {
            "cost": spend(entries),
            "timeline": [i.to_dict() for i in timeline(entries)],
            "approvals": [a.to_dict() for a in found],
            "parent_run_id": run.parent_run_id,
            "children": tree,
            "graph": graph_progress(entries),
        }
        out.print_json(data=data)
    else:
        print_run(out, run, entries, found)
        if run.parent_run_id:
            out.print(f"delegated by {run.parent_run_id}")
        print_graph(out, graph_progress(entries))
        print_tree(out, tree)


def cancel(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument()],
    reason: Annotated[
        str, typer.Option(help="Why; recorded in the journal.")
    ] = "cancelled by operator",
    who: AsOption = None,
) -> None:
    """Cancel a run. A worker holding it stops at its next commit."""
    settings = settings_of(ctx)
    validate_run_id(run_id)

    async def go() -> Run:
        store = await open_store(settings.db, "write")
        try:
            by = acting(who, (await store.get_run(run_id)).tenant)
            return await build_engine(store, None).cancel(run_id, reason, by=by)  # type: ignore[no-any-return]
        finally:
            await store.close()

    run = run_coroutine(go)
    out.print(f"run {run.id} is {run.status.value}")


def abort(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why; recorded in the journal.")] = (
        "aborted by operator"
    ),
    compensate: Annotated[
        bool,
        typer.Option(
            "--compensate/--no-compensate",
            help="Undo the run's completed steps with their tools' compensating actions, newest "
            "first, each exactly once (without: the run is cancelled as it is).",
        ),
    ] = False,
    who: AsOption = None,
) -> None:
    """Abort a run; with --compensate a worker then undoes its completed steps and cancels it."""
    settings = settings_of(ctx)
    validate_run_id(run_id)

    async def go() -> Run:
        store = await open_store(settings.db, "write")
        try:
            engine = build_engine(store, None)
            by = acting(who, (await store.get_run(run_id)).tenant)
            return await engine.abort(run_id, reason, compensate=compensate, by=by)  # type: ignore[no-any-return]
        finally:
            await store.close()

    run = run_coroutine(go)
    if run.status is RunStatus.RUNNING:
        out.print(
            f"run {run.id} is aborting: a worker compensates its completed steps, then cancels "
            f"it (`autonomic resume {run.id}` drives it here; `autonomic show {run.id}` follows it)"
        )
    else:
        out.print(f"run {run.id} is {run.status.value}")


def _budget_options(items: list[str]) -> dict[str, Any]:
    """``--budget NAME=LIMIT`` options as a budget mapping (validated again by the engine)."""
    hint = "write --budget tokens=50000, --budget cost=2.5 or --budget tool_calls.cleanup=3"
    raised: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            raise UserError(f"--budget {item!r}: the limit must be a number", hint=hint) from None
        if not sep or not name.strip():
            raise UserError(f"--budget {item!r} is not NAME=LIMIT", hint=hint)
        name = name.strip()
        if name.startswith("tool_calls."):
            raised.setdefault("tool_calls", {})[name.split(".", 1)[1]] = int(number)
        elif name in ("turns", "tokens"):
            raised[name] = int(number)
        elif name in ("cost", "wall_seconds"):
            raised[name] = number
        else:
            raise UserError(f"--budget: unknown limit {name!r}", hint=hint)
    return raised


def _status(value: str) -> RunStatus:
    try:
        return RunStatus(value.upper())
    except ValueError:
        raise InvalidInput(
            f"unknown status {value!r}", hint="one of " + ", ".join(s.value for s in RunStatus)
        ) from None


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return value


def _run_dict(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "tenant": run.tenant,
        "agent": run.agent,
        "agent_version": run.agent_version,
        "model": run.model,
        "status": run.status.value,
        "status_reason": run.status_reason,
        "version": run.version,
        "lease": {
            "owner": run.lease.owner,
            "expires_at": run.lease.expires_at,
            "fence": run.lease.fence,
        },
        "input": run.input,
        "output": run.output,
        "max_turns": run.max_turns,
        "metadata": run.metadata,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
    }
