"""``autonomic sandbox``: run a file in a sandbox, run the escape probes, say which backends work.

Mounted on the main app as a sub-app; errors propagate to ``autonomic.cli.app.main``, which
prints them as one line with a hint.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from autonomic.cli.exit_codes import ExitCode
from autonomic.errors import InvalidInput

if TYPE_CHECKING:
    from autonomic.ports.sandbox import Result

sandbox_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Run code in a sandbox, probe a backend's isolation, check which backends work here.",
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

BackendOption = Annotated[
    str,
    typer.Option(
        "--backend", envvar="AUTONOMIC_SANDBOX", help="Sandbox backend (see `sandbox doctor`)."
    ),
]


@sandbox_app.command("exec")
def exec_cmd(
    file: Annotated[Path, typer.Argument(help="The Python file to run.")],
    backend: BackendOption = "namespace",
    timeout: Annotated[float, typer.Option(min=0.1, max=3600, help="Wall time, seconds.")] = 10.0,
    memory: Annotated[int, typer.Option(min=16, max=65536, help="Memory, MB.")] = 256,
    gate: Annotated[
        bool, typer.Option(help="Run the static-analysis gate first (refuses blocked code).")
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole result as JSON.")
    ] = False,
) -> None:
    """Run FILE.py in a fresh sandbox; print its output, then how it ended."""
    import asyncio

    from autonomic.adapters.sandbox import build_sandbox
    from autonomic.governance.code_gate import finding_record, refusal
    from autonomic.governance.decision import Decision, Verdict
    from autonomic.ports.sandbox import Ended, Execution, Limits
    from autonomic.toolbox.python_exec import gate_from_env, result_dict

    try:
        code = file.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{file} does not exist", hint="pass the path of a .py file") from None
    except IsADirectoryError:
        raise InvalidInput(f"{file} is a directory", hint="pass the path of a .py file") from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{file} is not UTF-8 text (byte {exc.start})", hint="save the file as UTF-8"
        ) from None
    decision = gate_from_env().inspect(code) if gate else Decision(Verdict.ALLOW, "the gate is off")
    findings = [finding_record(f) for f in decision.findings]
    if not decision.allowed:
        result = refusal(decision)
    else:
        limits = replace(Limits(), wall_seconds=timeout, cpu_seconds=timeout, memory_mb=memory)
        sandbox = build_sandbox(backend)

        async def go() -> Result:
            try:
                return await sandbox.execute(Execution(code=code, limits=limits))
            finally:
                await sandbox.close()

        result = asyncio.run(go())
    if as_json:
        out.print_json(json.dumps(result_dict(result, findings)))
    else:
        sys.stdout.write(result.stdout)
        sys.stdout.flush()
        sys.stderr.write(result.stderr)
        for f in findings:
            mark = "blocked" if f["blocked"] else "warning"
            err.print(f"[yellow]{mark}[/] {f['rule']} line {f['line']}: {escape(f['message'])}")
        flags = [
            n
            for n, t in (("stdout", result.stdout_truncated), ("stderr", result.stderr_truncated))
            if t
        ]
        err.print(
            f"[dim]-- ended {result.ended}"
            + (f" (exit code {result.exit_code})" if result.exit_code is not None else "")
            + (f": {escape(result.detail)}" if result.detail else "")
            + (f"; truncated {', '.join(flags)}" if flags else "")
            + f"; {result.duration_s:.3f} s on {result.backend}[/]"
        )
    if not result.ok:
        code_out = result.exit_code if result.ended is Ended.EXIT and result.exit_code else 1
        raise typer.Exit(code_out if 0 < code_out < 126 else 1)


@sandbox_app.command("probe")
def probe_cmd(
    backend: BackendOption = "namespace",
    kind: Annotated[str, typer.Option(help="escape, abuse or all.", case_sensitive=False)] = "all",
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run only this probe (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Run the escape and abuse probes against a backend; exit 1 if any got through."""
    import asyncio

    from rich.table import Table

    from autonomic.adapters.sandbox import build_sandbox
    from autonomic.testing.probe_host import run_probes
    from autonomic.testing.probes import PROBES, Kind, ProbeOutcome

    kinds: tuple[Kind, ...]
    if kind == "all":
        kinds = ("escape", "abuse")
    elif kind in ("escape", "abuse"):
        kinds = ("escape",) if kind == "escape" else ("abuse",)
    else:
        raise InvalidInput(f"unknown probe kind {kind!r}", hint="use escape, abuse or all")
    known = {p.name for p in PROBES}
    unknown = sorted(set(only or ()) - known)
    if unknown:
        raise InvalidInput(
            f"unknown probe {', '.join(unknown)}", hint=f"known probes: {', '.join(sorted(known))}"
        )
    sandbox = build_sandbox(backend)

    async def go() -> list[ProbeOutcome]:
        try:
            return await run_probes(sandbox, kinds=kinds, names=only)
        finally:
            await sandbox.close()

    outcomes = asyncio.run(go())
    if as_json:
        out.print_json(json.dumps([asdict(o) | {"ended": str(o.ended)} for o in outcomes]))
    else:
        table = Table(title=f"sandbox probes on {backend}")
        for column in ("probe", "kind", "held", "ended", "s", "evidence"):
            table.add_column(column, overflow="fold")
        for o in outcomes:
            held = "[green]held[/]" if o.held else "[bold red]ESCAPED[/]"
            table.add_row(
                o.probe, o.kind, held, str(o.ended), f"{o.duration_s:.2f}", escape(o.evidence)
            )
        out.print(table)
        failed = sum(not o.held for o in outcomes)
        out.print(f"{len(outcomes) - failed}/{len(outcomes)} held")
    if any(not o.held for o in outcomes):
        raise typer.Exit(ExitCode.ERROR)


@sandbox_app.command("doctor")
def doctor_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Say which sandbox backends work on this host, and why the others do not."""
    from rich.table import Table

    from autonomic.adapters.sandbox import BACKENDS

    rows = []
    for name, backend in BACKENDS.items():
        try:
            works, why = backend.doctor()
        except Exception as exc:  # a doctor must report, never crash the command
            works, why = False, f"{type(exc).__name__}: {exc}"
        rows.append({"backend": name, "works": works, "why": why, "summary": backend.summary})
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="sandbox backends on this host")
    for column in ("backend", "works", "why"):
        table.add_column(column, overflow="fold")
    for row in rows:
        mark = "[green]yes[/]" if row["works"] else "[red]no[/]"
        table.add_row(str(row["backend"]), mark, escape(str(row["why"])))
    out.print(table)
