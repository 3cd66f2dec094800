"""``autonomic screen``: run the injection screen on a file or stdin, for security teams and CI.

Prints what a model would be given and why; exits 0 when the content is clean, 4 when it is
tainted (so a pipeline can gate on it), 2 on a bad request.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from autonomic.cli.exit_codes import ExitCode
from autonomic.errors import InvalidInput

TAINTED_EXIT = ExitCode.TAINTED


def screen_cmd(
    path: Annotated[
        str, typer.Argument(help="File to screen, or - for standard input.", show_default=False)
    ] = "-",
    source: Annotated[
        str, typer.Option(help="Where the content came from: tool_output, document, agent_event.")
    ] = "tool_output",
    name: Annotated[str, typer.Option(help="Which tool, URL or agent it came from.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Screen untrusted content for injections: invisible characters and instruction-like text."""
    from autonomic.governance.injection import screen
    from autonomic.governance.provenance import Provenance, Source

    try:
        kind = Source(source)
    except ValueError:
        raise InvalidInput(
            f"unknown source {source!r}",
            hint="one of " + ", ".join(s.value for s in Source if s is not Source.OPERATOR),
        ) from None
    if kind is Source.OPERATOR:
        raise InvalidInput(
            "operator content is trusted and never screened",
            hint="use tool_output, document or agent_event",
        )
    if path == "-":
        text = sys.stdin.read()
    else:
        file = Path(path)
        if not file.is_file():
            raise InvalidInput(f"no such file: {path}", hint="give a readable file, or - for stdin")
        text = file.read_bytes().decode("utf-8", errors="replace")
    result = screen(text, Provenance(kind, name))
    out = Console(highlight=False, soft_wrap=True)
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "tainted": result.tainted,
                    "score": result.score,
                    "provenance": result.provenance.to_dict(),
                    "flags": [{"code": f.code, "detail": f.detail} for f in result.flags],
                    "text_for_model": result.text_for_model,
                }
            )
        )
    else:
        verdict = "[bold red]tainted[/]" if result.tainted else "[green]clean[/]"
        out.print(f"{verdict} (score {result.score:g})")
        for flag in result.flags:
            out.print(f"  {flag.code}: {escape(flag.detail)}")
    if result.tainted:
        raise typer.Exit(TAINTED_EXIT)
