"""``autonomic``: run, resume, inspect and operate durable agent runs.

Every command reads the database from ``--db`` or ``AUTONOMIC_DB`` (default: ``autonomic.db`` in the
working directory). Errors print as one line with a hint, never as a traceback.

The commands live in modules named after what they operate (``runs``, ``approvals``, ``demo``,
``breakers``, ``settle``, ``workflow``, ``gateway``, ``migrate``, ``screen``, ``sandbox``,
``serve``, ``keys``, ``events``, ``dlq``, ``agents``), sharing
``common``; this module holds the app, its global options and ``main()``, and wires them in.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.markup import escape

from autonomic.cli import (
    adversarial,
    agents,
    approvals,
    breakers,
    demo,
    gateway,
    kpis,
    migrate,
    replay,
    runs,
    serve,
    settle,
    workflow,
)
from autonomic.cli.audit import audit_app
from autonomic.cli.canary import canary_app
from autonomic.cli.chaos import chaos
from autonomic.cli.common import DbOption, PolicyOption, Settings, err
from autonomic.cli.dlq import dlq_app
from autonomic.cli.events import events_app
from autonomic.cli.exit_codes import ExitCode
from autonomic.cli.keys import keys_app
from autonomic.cli.sandbox import sandbox_app
from autonomic.cli.screen import screen_cmd
from autonomic.cli.shadow import shadow_app
from autonomic.cli.trace import trace_app
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


# The listing in `autonomic --help` follows this order (commands first, then the sub-apps).
app.command("demo")(demo.demo)
app.command("run")(runs.run_cmd)
app.command("resume")(runs.resume)
app.command("worker")(runs.worker)
app.command("runs")(runs.runs)
app.command("agents")(agents.agents)
app.command("breakers")(breakers.breakers)
app.command("kpis")(kpis.kpis)
app.command("show")(runs.show)
app.command("export")(replay.export)
app.command("replay")(replay.replay)
app.command("cancel")(runs.cancel)
app.command("abort")(runs.abort)
app.command("settle")(settle.settle)
app.command("approvals")(approvals.approvals)
app.command("approve")(approvals.approve)
app.command("deny")(approvals.deny)
app.command("migrate")(migrate.migrate)
app.command("serve")(serve.serve)
app.command("gateway-check")(gateway.gateway_check)
app.command("screen")(screen_cmd)
app.command("adversarial")(adversarial.adversarial)
app.command("chaos")(chaos)
app.add_typer(workflow.workflow_app, name="workflow")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(keys_app, name="keys")
app.add_typer(events_app, name="events")
app.add_typer(dlq_app, name="dlq")
app.add_typer(audit_app, name="audit")
app.add_typer(trace_app, name="trace")
app.add_typer(canary_app, name="canary")
app.add_typer(shadow_app, name="shadow")


def main() -> None:
    """Entry point: run the app, turning autonomic errors into one clear line."""
    try:
        app()
    except AutonomicError as exc:
        err.print(f"[bold red]error:[/] {escape(exc.message)}")
        if exc.hint:
            err.print(f"[dim]hint:[/] {escape(exc.hint)}")
        sys.exit(ExitCode.USAGE if isinstance(exc, UserError) else ExitCode.ERROR)
    except KeyboardInterrupt:
        sys.exit(ExitCode.INTERRUPTED)
    except Exception as exc:
        # the last resort: a bug of ours reaches the user as one line, secrets masked, not as a
        # traceback; AUTONOMIC_TRACEBACK=1 shows where, for the report
        if os.environ.get("AUTONOMIC_TRACEBACK") == "1":
            raise
        from autonomic.engine.failure import scrub

        err.print(f"[bold red]error:[/] unexpected {type(exc).__name__}: {escape(scrub(str(exc)))}")
        err.print(
            "[dim]hint:[/] this is a bug in autonomic, not in your input: run again with "
            "AUTONOMIC_TRACEBACK=1 and report what it prints"
        )
        sys.exit(ExitCode.ERROR)
