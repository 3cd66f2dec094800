"""``autonomic chaos module:AGENT --fault tool_error=0.2 --fault latency=p99:2s
--fault model_garbage=0.1 --fault crash=0.05 --runs 100``: run a user's agent under injected
faults in a throwaway database, with worker processes that are really SIGKILLed and replaced,
and report task completion and recovery against the product's targets (docs/release-safety.md,
"Chaos"). Exit 0 when both targets are met, 3 when not, 2 on a bad request."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from autonomic.cli.common import JsonOption, out, run_coroutine
from autonomic.cli.exit_codes import ExitCode


def chaos(
    agent: Annotated[str, typer.Argument(metavar="module:AGENT", help="Your agent (an Agent).")],
    fault: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            help="NAME=VALUE, repeatable: tool_error=P, latency=pQ:DURATION (p99:2s), "
            "model_garbage=P, crash=P.",
        ),
    ] = None,
    task: Annotated[
        list[str] | None,
        typer.Option("--task", help="A task to run (repeatable; runs take them in turn)."),
    ] = None,
    runs: Annotated[int, typer.Option("--runs", min=1, max=10_000)] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same faults.")] = 0,
    workers: Annotated[int, typer.Option("--workers", min=1, max=16)] = 2,
    limit: Annotated[
        float, typer.Option("--timeout", min=1.0, help="Seconds before the trial stops itself.")
    ] = 600.0,
    as_json: JsonOption = False,
) -> None:
    """Run your agent under injected faults; completion and recovery against the targets."""
    from autonomic.testing.chaos import (
        COMPLETION_TARGET,
        RECOVERY_TARGET,
        FaultPlan,
        run_chaos,
    )

    plan = FaultPlan.parse(fault or [])
    report = run_coroutine(
        lambda: run_chaos(
            agent,
            plan,
            tasks=task or ["chaos"],
            runs=runs,
            seed=seed,
            workers=workers,
            limit_s=limit,
        )
    )
    if as_json:
        out.print(json.dumps(report.to_dict(), indent=2), markup=False)
    else:
        recovery = "n/a" if report.recovery_rate is None else f"{report.recovery_rate:.1%}"
        out.print(
            f"{report.runs} runs, seed {report.seed}: completion {report.completion_rate:.1%} "
            f"(target {COMPLETION_TARGET:.0%}), recovery {recovery} of {report.faulted} runs "
            f"that met a fault (target {RECOVERY_TARGET:.0%})",
            markup=False,
        )
        injected = ", ".join(f"{k} {v}" for k, v in sorted(report.injected.items())) or "none"
        out.print(f"  injected: {injected}; workers SIGKILLed: {report.worker_kills}", markup=False)
        out.print(
            "  ended: " + ", ".join(f"{k} {v}" for k, v in sorted(report.statuses.items())),
            markup=False,
        )
        if report.timed_out:
            out.print("  the trial hit its --timeout: the runs left were cancelled", markup=False)
        out.print("  targets met" if report.ok else "  targets NOT met", markup=False)
    raise typer.Exit(ExitCode.OK if report.ok else ExitCode.FAILED)
