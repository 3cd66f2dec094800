"""``autonomic canary status|promote|rollback AGENT``: a canary's state, the sequential test so
far and the outcome metrics per arm; an operator promoting or rolling back (also reversing an
automatic decision). Every decision is an act in the audit log (docs/release-safety.md)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from autonomic.cli.common import AsOption, JsonOption, open_store, out, run_coroutine, settings_of

canary_app = typer.Typer(
    no_args_is_help=True,
    help="Canaries: a candidate version judged by its runs' outcomes; promote or roll back.",
)

AgentArg = Annotated[str, typer.Argument(metavar="AGENT", help="The agent's name.")]
ReasonOption = Annotated[
    str, typer.Option("--reason", help="Why (kept in the audit log).", show_default=False)
]


@canary_app.command("status")
def status(ctx: typer.Context, agent: AgentArg, as_json: JsonOption = False) -> None:
    """The canary's phase, its test so far, and completion, denials, cost and latency per arm.

    Evaluating may journal the decision the test has reached (``canary.rollback`` or
    ``canary.promote``, by ``canary``), as the canary's own evaluation would."""
    settings = settings_of(ctx)

    async def go() -> dict[str, Any]:
        from autonomic.release.canary import Canary

        store = await open_store(settings.db, "write")
        try:
            canary = await Canary.from_log(store, agent)
            return (await canary.evaluate()).to_dict()
        finally:
            await store.close()

    report = run_coroutine(go)
    if as_json:
        out.print(json.dumps(report, indent=2), markup=False)
        return
    out.print(
        f"canary of {report['agent']}: {report['live_version']} -> "
        f"{report['candidate_version']} ({report['share']:.0%} of new runs)  "
        f"phase: {report['phase']}",
        markup=False,
    )
    if report["reason"]:
        out.print(f"  last decision by {report['decided_by']}: {report['reason']}", markup=False)
    out.print(
        f"  test: {report['verdict']} after {report['pairs']} pairs; candidate worse in "
        f"{report['candidate_worse']} of {report['discordant']} discordant pairs "
        f"(log-likelihood ratio {report['llr']})",
        markup=False,
    )
    for arm, row in report["arms"].items():
        if not row.get("runs"):
            out.print(f"  {arm}: no ended runs yet", markup=False)
            continue
        out.print(
            f"  {arm}: {row['runs']} runs, completion {row['completion_rate']:.1%}, "
            f"denied {row['denied']}, overridden {row['overridden']}, "
            f"bad {row['bad_rate']:.1%}, mean cost ${row['mean_cost']}, "
            f"mean latency {row['mean_latency']} s",
            markup=False,
        )


def _decide(ctx: typer.Context, agent: str, act: str, by: str | None, reason: str) -> None:
    settings = settings_of(ctx)

    async def go() -> Any:
        from autonomic.cli.common import user
        from autonomic.release.canary import Canary

        store = await open_store(settings.db, "write")
        try:
            canary = await Canary.from_log(store, agent)
            if act == "promote":
                return await canary.promote(by=user(by), reason=reason)
            return await canary.rollback(by=user(by), reason=reason)
        finally:
            await store.close()

    state = run_coroutine(go)
    version = state.candidate_version if act == "promote" else state.live_version
    out.print(
        f"canary of {agent}: {state.phase.replace('_', ' ')} by {state.by}; new runs go to "
        f"version {version}",
        markup=False,
    )


@canary_app.command("promote")
def promote(
    ctx: typer.Context, agent: AgentArg, reason: ReasonOption = "", by: AsOption = None
) -> None:
    """Promote the candidate: every new run goes to it (reverses an automatic rollback)."""
    _decide(ctx, agent, "promote", by, reason)


@canary_app.command("rollback")
def rollback(
    ctx: typer.Context, agent: AgentArg, reason: ReasonOption = "", by: AsOption = None
) -> None:
    """Roll the candidate back: every new run goes to the live version (reverses a promotion)."""
    _decide(ctx, agent, "rollback", by, reason)
