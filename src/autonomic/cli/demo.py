"""``autonomic demo``: the demo scenarios, end to end on a local database.

``reconciliation`` (the default) is the governed overnight reconciliation of a bank ledger;
``runaway`` replays the reconciliation-loop incident, stopped by loop detection; ``planning``
shows the plan cache and the planning/acting model split; ``swarm`` is the code-audit swarm
(``cli/swarm_demo.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from autonomic.cli.common import (
    BusOption,
    Settings,
    acting,
    build_engine,
    finish_message,
    live,
    open_store,
    out,
    run_coroutine,
    settings_of,
)
from autonomic.cli.exit_codes import ExitCode
from autonomic.cli.invocation import command
from autonomic.core.principal import DEFAULT_TENANT, principal
from autonomic.core.run import Run, RunStatus
from autonomic.errors import UserError

if TYPE_CHECKING:
    from autonomic.core.journal import Entry

DEMO_APPROVER = "demo-controller"


def demo(
    ctx: typer.Context,
    crash_after_step: Annotated[
        int | None,
        typer.Option(help="Kill this process with SIGKILL after step N, to show recovery.", min=1),
    ] = None,
    workdir: Annotated[
        Path, typer.Option(help="Where the demo bank databases are created.")
    ] = Path("autonomic-demo"),
    interactive: Annotated[
        bool,
        typer.Option(
            help="Stop at the approval and print the command that approves it, instead of "
            "playing the approver."
        ),
    ] = False,
    scenario: Annotated[
        str,
        typer.Option(
            help="reconciliation (the governed overnight reconciliation), runaway (the "
            "reconciliation-loop incident, stopped by loop detection), planning (the plan "
            "cache and the planning/acting model split) or bus (two agents talking over the "
            "embedded event bus; --bus kafka://host:9092 for Kafka) or swarm (a coordinator, a "
            "code analyzer and two security auditor workers, one killed mid-task; the "
            "delegation guards stopping a ping-pong and a 47-level chain)."
        ),
    ] = "reconciliation",
    bus: BusOption = None,
) -> None:
    """Reconcile a bank ledger against its statement with the demo agent, end to end.

    The demo's policy makes a large adjusting entry MEDIUM risk: the run waits for a controller.
    Without --interactive the demo plays that controller itself, and says so.
    ``--scenario runaway`` replays the incident of an agent repeating a destructive cleanup;
    ``--scenario planning`` answers four customer e-mails, planning each kind once.

    Exits with the run's outcome, as ``autonomic run`` does (docs/cli.md): 0 COMPLETED, 5 waiting
    for a human (``--interactive``), 6 SUSPENDED (``--scenario runaway``)."""
    import asyncio

    from autonomic.engine.faults import CrashAt
    from autonomic.examples.reconciliation.agent import sandbox_ready
    from autonomic.examples.reconciliation.bank import ACCOUNT, DATE, create_bank
    from autonomic.governance.approvals import ApprovalDesk

    settings = settings_of(ctx)
    if scenario not in ("reconciliation", "runaway", "planning", "bus", "swarm"):
        raise UserError(
            f"unknown demo scenario {scenario!r}",
            hint="use --scenario reconciliation, runaway, planning, bus or swarm",
        )
    if scenario != "reconciliation":
        if crash_after_step is not None or interactive:
            raise UserError(
                "--crash-after-step and --interactive belong to the reconciliation scenario",
                hint=f"run `autonomic demo --scenario {scenario}` without them",
            )
        if scenario == "runaway":
            raise typer.Exit(_demo_runaway(settings, workdir))
        if scenario == "bus":
            raise typer.Exit(_demo_bus(settings, bus))
        if scenario == "swarm":
            from autonomic.cli.swarm_demo import demo_swarm

            raise typer.Exit(demo_swarm(settings, workdir))
        raise typer.Exit(_demo_planning(settings))

    class AnnouncedCrash(CrashAt):
        def fire(self) -> None:
            out.print(
                f"\n[bold red]simulated crash:[/] SIGKILL after step {self.count}. The run is "
                "still RUNNING in the database, with no process driving it. Continue it from its "
                f"journal with:\n  {escape(command(settings.db, 'resume', run_id))}\n(it stops "
                "at the controller's approval if the crash came before it: the demo no longer "
                "plays the approver)"
            )
            out.file.flush()
            super().fire()

    run_id = ""

    async def go() -> Run:
        nonlocal run_id
        store = await open_store(settings.db)
        crash = AnnouncedCrash("step_done", crash_after_step) if crash_after_step else None
        engine = build_engine(store, None, settings.policy, on_commit=live)
        if crash is not None:
            engine.faults = crash
        workdir.mkdir(parents=True, exist_ok=True)
        from autonomic.engine.executor import new_run_id

        run_id = new_run_id()
        bank = create_bank((workdir / f"bank-{run_id}.db").resolve())
        out.print(
            f"[bold]autonomic demo[/]: overnight reconciliation of account {ACCOUNT} for {DATE}\n"
            f"database {_shown(settings.db)}, bank {bank}\nrun {run_id}"
        )
        ready, why = await asyncio.to_thread(sandbox_ready)
        if ready:
            out.print("differences: computed as code in the sandbox (python_exec)")
        else:
            out.print(
                f"[yellow]sandbox unavailable here[/] ({escape(why)}): the differences are "
                "computed by the in-process compute_differences tool instead"
            )
        compute = "sandbox" if ready else "tool"
        try:
            run: Run = await engine.run(
                "reconciliation",
                json.dumps({"account": ACCOUNT, "date": DATE, "compute": compute}),
                metadata={"bank": str(bank)},
                run_id=run_id,
                requester=acting(None, DEFAULT_TENANT),
            )
            desk = ApprovalDesk(store)
            while run.status is RunStatus.WAITING_FOR_HUMAN and not interactive:
                waiting = await store.list_approvals(run_id=run_id, status=None, limit=1000)
                pending = [a for a in waiting if not a.status.final]
                if not pending:
                    break
                for approval in pending:
                    out.print(
                        f"\n[bold yellow]approval needed[/] {approval.id}: {approval.tool} "
                        f"{escape(json.dumps(approval.arguments))}\n  why: "
                        f"{escape(approval.explanation)}\n"
                        f"[bold]the demo now plays the approver[/] ({DEMO_APPROVER}) - in "
                        "production a controller runs:\n  "
                        + escape(command(settings.db, "approve", approval.id, "--as", "CONTROLLER"))
                    )
                    await desk.approve(
                        approval.id,
                        by=principal(DEMO_APPROVER, approval.tenant),
                        reason="approved by the demo playing the controller",
                    )
                run = await engine.run_to_end(run_id)
            return run
        finally:
            await store.close()

    run = run_coroutine(go)
    finish_message(run, settings.db)
    if run.status is RunStatus.WAITING_FOR_HUMAN and interactive:
        approval = (run.status_reason or "").split()[1] if run.status_reason else "ID"
        out.print(
            "\n[bold]--interactive:[/] the run waits for you (no worker is held). Approve the "
            f"adjustment as a controller, then let the run continue:\n"
            f"  {escape(command(settings.db, 'approve', approval, '--as', 'controller'))}\n"
            f"  {escape(command(settings.db, 'resume', run.id))}"
        )
    out.print(f"timeline: {escape(command(settings.db, 'show', run.id))}")
    raise typer.Exit(ExitCode.of(run.status))


def _demo_runaway(settings: Settings, workdir: Path) -> ExitCode:
    """The reconciliation-loop incident: suspended by loop detection at the third cleanup."""
    from autonomic.cli.runaway_view import runaway_lines
    from autonomic.engine.executor import new_run_id
    from autonomic.examples.runaway.agent import create_ledger, purges

    workdir.mkdir(parents=True, exist_ok=True)
    run_id = new_run_id()
    ledger = create_ledger((workdir / f"ledger-{run_id}.db").resolve())

    async def go() -> tuple[Run, list[Entry]]:
        store = await open_store(settings.db)
        try:
            engine = build_engine(store, None, settings.policy, on_commit=live)
            out.print(
                "[bold]autonomic demo --scenario runaway[/]: an agent that keeps running the same "
                "destructive cleanup, worded a little differently each time (the incident ran it "
                f"14,000 times)\ndatabase {_shown(settings.db)}, ledger {ledger}\nrun {run_id}"
            )
            run: Run = await engine.run(
                "runaway-cleanup",
                "Clean the stale rows out of the reconciliation table.",
                metadata={"ledger": str(ledger)},
                run_id=run_id,
                requester=acting(None, DEFAULT_TENANT),
            )
            out.print(f"\nthe destructive tool ran {purges(ledger)} time(s)")
            return run, await store.load_journal(run_id)
        finally:
            await store.close()

    run, entries = run_coroutine(go)
    finish_message(run, settings.db)
    for line in runaway_lines(entries):
        out.print(line.replace("RUN", run.id))
    if run.status is RunStatus.SUSPENDED:
        out.print(
            f"\nnext: inspect `{escape(command(settings.db, 'show', run.id))}`, then either\n"
            f"  {escape(command(settings.db, 'resume', run.id, '--force'))}   (acknowledge the "
            "repeat and let it go on)\n"
            f"  {escape(command(settings.db, 'cancel', run.id))}"
        )
    return ExitCode.of(run.status)


def _demo_planning(settings: Settings) -> ExitCode:
    """Four e-mails of two kinds: each kind is planned once by the small model, then reused."""
    from autonomic.cli.render import status_text
    from autonomic.core.entries import PlanOutcome
    from autonomic.examples.triage.agent import DEMO_EMAILS, triage_agent

    agent = triage_agent()
    planner = agent.planning.model if agent.planning is not None else agent.model

    async def go() -> list[tuple[Run, PlanOutcome]]:
        store = await open_store(settings.db)
        try:
            engine = build_engine(store, None, settings.policy)
            out.print(
                "[bold]autonomic demo --scenario planning[/]: four customer e-mails, two kinds. "
                f"The planner ({planner}, the small model) sees only each e-mail's "
                f"pattern; the actor ({agent.model}, the large model) follows the plan.\n"
                f"database {_shown(settings.db)}, plan cache: "
                f"{type(engine.plan_cache).__name__ if engine.plan_cache else 'off'}\n"
            )
            done: list[tuple[Run, PlanOutcome]] = []
            for email in DEMO_EMAILS:
                run: Run = await engine.run("triage", email, requester=acting(None, DEFAULT_TENANT))
                plan = next(
                    (
                        e.body
                        for e in await store.load_journal(run.id)
                        if isinstance(e.body, PlanOutcome)
                    ),
                    PlanOutcome(key="", pattern="", source="none", error="no plan entry"),
                )
                done.append((run, plan))
                how = (
                    "[green]plan reused from the cache[/] (no planning call)"
                    if plan.source == "cache"
                    else f"[yellow]planned by {escape(str(plan.model))}[/] (new pattern)"
                    if plan.source == "model" and plan.steps
                    else f"[red]no plan[/]: {escape(str(plan.error or plan.rejected))}"
                )
                out.print(f"[bold]{run.id}[/] {status_text(run)}  {escape(email)}\n  {how}")
                out.print(f"  pattern: {escape(plan.pattern)}")
                out.print(f"  answer: {escape(str(run.output))}\n")
            if engine.plan_cache is not None:
                out.print(
                    f"plan cache: {engine.plan_cache.hits} hits, {engine.plan_cache.misses} misses "
                    "(planning calls saved: one per hit)"
                )
            return done
        finally:
            await store.close()

    done = run_coroutine(go)
    out.print(
        f"\nsee a run's plan and calls: {escape(command(settings.db, 'show', done[1][0].id))}\n"
        "share plans between workers: AUTONOMIC_PLAN_CACHE=redis://127.0.0.1:6379/0"
    )
    unfinished = [run for run, _ in done if run.status is not RunStatus.COMPLETED]
    return ExitCode.of(unfinished[0].status) if unfinished else ExitCode.OK


def _demo_bus(settings: Settings, bus_option: str | None) -> ExitCode:
    """Two agents talking over a bus (the embedded one unless ``--bus`` names Kafka): the code
    analyzer emits an audit request, a worker on the bus starts the security auditor from it
    (``examples/bus``)."""
    from autonomic.adapters.store.rows import redact_url
    from autonomic.bootstrap import bus_url, open_bus
    from autonomic.cli.render import status_text
    from autonomic.engine.worker import Worker
    from autonomic.examples.bus.agent import DEMO_FILES, agents

    async def go() -> list[Run]:
        store = await open_store(settings.db)
        try:
            engine = build_engine(store, None, settings.policy)
            for agent in agents():
                engine.agents.add(agent)
            url = bus_url(bus_option)
            bus = open_bus(url, store)
            worker = Worker(engine, bus=bus)
            on_bus = () if url.partition("?")[0] == "sql" else ("--bus", redact_url(url))
            where = (
                f"the embedded bus (in {_shown(settings.db)})"
                if url.partition("?")[0] == "sql"
                else f"the bus at {redact_url(url)}"
            )
            out.print(
                "[bold]autonomic demo --scenario bus[/]: the code analyzer scans files and emits "
                f"com.acme.audit.requested; a worker on {escape(where)} starts the security "
                "auditor for each request, in the analyzer's conversation.\n"
            )
            started = [await engine.start("code-analyzer", path) for path in DEMO_FILES]
            try:
                await worker.run(until_idle=True)
            finally:
                await bus.aclose()
            runs: list[Run] = []
            for first in started:
                conversation = [
                    r for r in await store.list_runs(limit=1000) if r.correlation_id == first.id
                ]
                conversation.sort(key=lambda r: r.created_at)
                out.print(f"conversation [bold]{first.id}[/]")
                for run in conversation:
                    out.print(
                        f"  {escape(run.agent)}: {status_text(run)}  {escape(str(run.output))}"
                    )
                    runs.append(run)
            out.print(
                f"\nthe events: {escape(command(settings.db, 'events', 'tail', *on_bus))}\n"
                "several workers share the events (one consumer group): autonomic worker --bus "
                f"{escape(redact_url(url))} --agent autonomic.examples.bus.agent:agents"
            )
            return runs
        finally:
            await store.close()

    runs = run_coroutine(go)
    unfinished = [run for run in runs if run.status is not RunStatus.COMPLETED]
    if len(runs) < 2 * 2:
        return ExitCode.ERROR
    return ExitCode.of(unfinished[0].status) if unfinished else ExitCode.OK


def _shown(db: str) -> str:
    """The database URL as the demo prints it: a password is ``***`` (output ends up in logs)."""
    from autonomic.adapters.store.rows import redact_url

    return redact_url(db)
