"""What the ``autonomic`` commands share: the consoles, the settings and the options every command
takes, running a command's coroutine, opening the store, building the engine, and the message a
run ends with.

The command modules import this one; it imports none of them. Everything heavy (the engine, the
store adapters, the governance policy) is imported inside the functions that need it, so
``autonomic --help`` stays fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from autonomic.core.run import Run, RunStatus
from autonomic.errors import UserError

if TYPE_CHECKING:
    from autonomic.core.journal import Entry

T = TypeVar("T")

out = Console(highlight=False, soft_wrap=True)  # never break a line: ids and commands copy whole
err = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class Settings:
    db: str
    policy: str | None = None


DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="AUTONOMIC_DB",
        help="Database URL: sqlite:///file.db (default sqlite:///autonomic.db) or postgresql://...",
        show_envvar=True,
    ),
]
AgentOption = Annotated[
    list[str] | None,
    typer.Option(
        "--agent", help="Load agents from module:attribute (repeatable; also AUTONOMIC_AGENTS)."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
BusOption = Annotated[
    str | None,
    typer.Option(
        "--bus",
        envvar="AUTONOMIC_BUS",
        help="Event bus: sql (the embedded bus, in the --db database) or kafka://host:9092.",
        show_envvar=True,
    ),
]


PolicyOption = Annotated[
    str | None,
    typer.Option(
        "--policy",
        envvar="AUTONOMIC_POLICY",
        help="Governance policy YAML: risk rules and tool overrides (docs/governance.md).",
        show_envvar=True,
    ),
]
AsOption = Annotated[
    str | None,
    typer.Option(
        "--as",
        help="Who acts (default: the OS user); recorded as NAME@TENANT (docs/service.md).",
        show_default=False,
    ),
]


def settings_of(ctx: typer.Context) -> Settings:
    """The settings the global callback put on the context (``--db``, ``--policy``)."""
    obj = ctx.find_object(Settings)
    assert obj is not None
    return obj


def run_coroutine(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a command's coroutine to the end, then close what it opened."""
    import asyncio  # here, not at the top: `autonomic --help` never runs one

    return asyncio.run(_run_async(factory))


_OPENED: list[Any] = []
"""What this command built that holds connections (runaway counters in Redis, engines with
gateway clients): closed at the end."""


async def _run_async(factory: Callable[[], Awaitable[T]]) -> T:
    try:
        return await factory()
    finally:
        while _OPENED:
            item = _OPENED.pop()
            close = getattr(item, "aclose", None) or item.close
            await close()


Access = Literal["read", "write", "create"]


async def open_store(url: str, access: Access = "create") -> Any:
    """The store a command uses, once it has been found to be autonomic's (or nothing, to create).

    * ``read`` (``runs``, ``show``, ``approvals``, ``breakers``): an existing autonomic database
      at this code's schema version, opened read-only: never created, never changed.
    * ``write`` (``resume``, ``cancel``, ``approve``, ``deny``): an existing one; a SQLite file's
      schema is upgraded if it is older.
    * ``create`` (``run``, ``demo``, ``worker``): a SQLite file is created if missing.

    Writers to SQLite migrate, which refuses a damaged, newer or foreign file before writing;
    PostgreSQL is migrated only by ``autonomic migrate``, so it is verified instead.
    """
    from autonomic.bootstrap import build_store

    store = build_store(url, readonly=access == "read", create=access == "create")
    try:
        if access != "read" and url.startswith("sqlite"):
            await store.migrate()
        else:
            await store.verify()
    except BaseException:
        await store.close()
        raise
    return store


def build_engine(
    store: Any, agents: list[str] | None, policy: str | None = None, **kwargs: Any
) -> Any:
    """The engine a command drives runs with; closed when the command's coroutine ends."""
    from autonomic.bootstrap import (
        build_agents,
        build_model,
        build_plan_cache,
        build_runaway,
        build_state_cache,
        build_telemetry,
    )
    from autonomic.engine import faults
    from autonomic.engine.executor import Engine

    kwargs.setdefault("faults", faults.from_environment())
    kwargs.setdefault("plan_cache", build_plan_cache())
    if "state_cache" not in kwargs:
        kwargs["state_cache"] = build_state_cache()
    telemetry = build_telemetry(metrics=kwargs.pop("metrics", False))
    if telemetry:
        kwargs["hooks"] = [*telemetry, *kwargs.get("hooks", ())]
    if "runaway" not in kwargs:
        kwargs["runaway"] = build_runaway()
        _OPENED.append(kwargs["runaway"])
    registry = build_agents(agents)
    if policy:
        from autonomic.engine.agent import govern_agents
        from autonomic.governance.policy.risk import load_policy

        loaded = load_policy(policy)
        # python_exec builds its code gate from the environment on each call: the same file's
        # code_gate: section then applies to it (a no-op when --policy came from the variable).
        os.environ["AUTONOMIC_POLICY"] = policy
        registry = govern_agents(registry, loaded)
        kwargs.setdefault("gates", [loaded.risk.gate()])
    engine = Engine(store, registry, build_model, **kwargs)
    _OPENED.append(engine)
    return engine


async def open_event_bus(db: str, bus: str | None, agents: list[str] | None = None) -> Any:
    """The store and the bus a command uses: ``bus`` (``--bus`` / ``AUTONOMIC_BUS``, default
    ``sql``) beside the ``db`` store. ``agents`` modules are loaded first: they declare the
    event types they handle and emit. Both are closed when the command's coroutine ends."""
    from autonomic.bootstrap import build_agents, bus_url, open_bus

    build_agents(agents)
    store = await open_store(db, "create")
    _OPENED.append(store)
    opened = open_bus(bus_url(bus), store)
    _OPENED.append(opened)
    return opened


def cannot_listen(what: str, host: str, port: int, exc: OSError, option: str) -> UserError:
    """The usage error for a server that cannot listen on ``host:port``: a taken port points at
    ``--{option}-port``, anything else (an address not of this machine) at ``--{option}-host``.
    """
    import errno

    prefix = f"--{option}-" if option else "--"
    return UserError(
        f"cannot {what} on {host}:{port}: {exc.strerror or exc}",
        hint=(
            f"choose a free port with {prefix}port"
            if exc.errno == errno.EADDRINUSE
            else f"give {prefix}host an address of this machine (127.0.0.1, or 0.0.0.0 to "
            "expose it on purpose)"
        ),
    )


def user(name: str | None) -> str:
    """Who acts: the name given, or the OS user."""
    import getpass

    return name or getpass.getuser()


def acting(name: str | None, tenant: str) -> str:
    """Who acts, as recorded: ``user(name)`` qualified with the tenant acted in (``name@tenant``,
    the form the service records for a key; ``core/principal.py`` says why)."""
    from autonomic.core.principal import principal

    return principal(user(name), tenant)


def live(entry: Entry) -> None:
    """Print a journal entry as it is committed."""
    from autonomic.cli.render import entry_line

    out.print(entry_line(entry))


def finish_message(run: Run, db: str) -> None:
    """How a run ended, its result, and what a human can do next if it waits for one (as
    commands that run as printed, each on a line of its own)."""
    from rich.panel import Panel

    from autonomic.cli.invocation import command
    from autonomic.cli.render import status_text

    reason = f": {escape(run.status_reason)}" if run.status_reason else ""
    out.print(f"\nrun [bold]{run.id}[/] is {status_text(run)}{reason}")
    if run.status is RunStatus.COMPLETED and run.output is not None:
        body = run.output if isinstance(run.output, str) else json.dumps(run.output, indent=2)
        # wrapped inside its frame (``out`` wraps no text of its own: ids and commands copy whole)
        out.print(Panel(escape(body), title="result", expand=False), soft_wrap=False)
    elif run.status is RunStatus.WAITING_FOR_HUMAN and (run.status_reason or "").startswith(
        "approval "
    ):
        approval = (run.status_reason or "").split()[1]
        approve = command(db, "approve", approval, "--as", "APPROVER")
        deny = command(db, "deny", approval, "--reason", '"..."')
        out.print(
            "waiting for a human (someone other than the run's requester) to approve:\n"
            f"  {escape(approve)}\nor to deny:\n  {escape(deny)}\n"
            f"(`{escape(command(db, 'approvals'))}` lists what is waiting)"
        )
    elif run.status is RunStatus.WAITING_FOR_HUMAN and (run.status_reason or "").startswith(
        "in doubt"
    ):
        executed = command(
            db, "settle", run.id, "--executed", "--result", "JSON", "--reason", '"..."'
        )
        not_executed = command(db, "settle", run.id, "--not-executed", "--reason", '"..."')
        out.print(
            "in doubt: find out whether the call took effect:\n"
            f"  {escape(command(db, 'show', run.id))}\nthen, if it did:\n  {escape(executed)}\n"
            f"if it did not (it runs again, once):\n  {escape(not_executed)}\n"
            f"or give the run up:\n  {escape(command(db, 'cancel', run.id))}"
        )
    elif run.status is RunStatus.WAITING_FOR_HUMAN:
        out.print(
            f"a human must decide: inspect with\n  {escape(command(db, 'show', run.id))}\n"
            f"then either\n  {escape(command(db, 'resume', run.id, '--force'))}\n"
            f"  {escape(command(db, 'cancel', run.id))}"
        )
    elif run.status in (RunStatus.FAILED, RunStatus.SUSPENDED):
        out.print(f"inspect it:\n  {escape(command(db, 'show', run.id))}")
