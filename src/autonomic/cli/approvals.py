"""``autonomic approvals``, ``approve`` and ``deny``: list what waits for a human, decide it."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from autonomic.cli.common import (
    AsOption,
    JsonOption,
    acting,
    open_store,
    out,
    run_coroutine,
    settings_of,
)
from autonomic.errors import InvalidInput


def approvals(
    ctx: typer.Context,
    as_json: JsonOption = False,
    every: Annotated[
        bool, typer.Option("--all", help="Also decided ones (approved, rejected, timeout).")
    ] = False,
    run_id: Annotated[str | None, typer.Option("--run", help="Only this run's.")] = None,
) -> None:
    """List approvals waiting for a decision (expired ones are denied as timeout first)."""
    from autonomic.cli.render import approvals_table
    from autonomic.cli.tables import print_table
    from autonomic.core.approval import Approval, ApprovalStatus
    from autonomic.governance.approvals import ApprovalDesk

    settings = settings_of(ctx)

    async def go() -> list[Approval]:
        store = await open_store(settings.db, "read")
        try:
            await ApprovalDesk(store).sweep()
            found: list[Approval] = await store.list_approvals(
                status=None if every else ApprovalStatus.PENDING, run_id=run_id, limit=1000
            )
            return found
        finally:
            await store.close()

    found = run_coroutine(go)
    if as_json:
        out.print_json(data=[a.to_dict() for a in found])
    elif not found:
        out.print("no approvals waiting" if not every else "no approvals")
    else:
        print_table(out, approvals_table(found))


def approve(
    ctx: typer.Context,
    approval_id: Annotated[str, typer.Argument(help="The approval (see `autonomic approvals`).")],
    reason: Annotated[str, typer.Option(help="Why; recorded in the journal.")] = "approved",
    who: AsOption = None,
) -> None:
    """Approve an action; the run continues on any worker (at once with --db and a worker)."""
    _decide(ctx, approval_id, approve=True, reason=reason, who=who)


def deny(
    ctx: typer.Context,
    approval_id: Annotated[str, typer.Argument(help="The approval (see `autonomic approvals`).")],
    reason: Annotated[str, typer.Option(help="Why; recorded in the journal (required).")],
    who: AsOption = None,
) -> None:
    """Reject an action: it is never executed; the run continues without it."""
    if not reason.strip():
        raise InvalidInput("a rejection needs a reason", hint='pass --reason "why"')
    _decide(ctx, approval_id, approve=False, reason=reason, who=who)


def _decide(
    ctx: typer.Context, approval_id: str, *, approve: bool, reason: str, who: str | None
) -> None:
    from autonomic.core.approval import Approval
    from autonomic.governance.approvals import ApprovalDesk

    settings = settings_of(ctx)
    if not approval_id.startswith("apr_"):
        raise InvalidInput(
            f"invalid approval id {approval_id!r}",
            hint="approval ids look like apr_ followed by 24 hex digits; `autonomic approvals`",
        )

    async def go() -> Approval:
        store = await open_store(settings.db, "write")
        try:
            desk = ApprovalDesk(store)
            await desk.sweep()
            # who decides, in the service's form: NAME@TENANT of the approval's run
            by = acting(who, (await desk.get(approval_id)).tenant)
            if approve:
                return await desk.approve(approval_id, by=by, reason=reason)
            return await desk.deny(approval_id, by=by, reason=reason)
        finally:
            await store.close()

    decided = run_coroutine(go)
    if decided.status.final:
        from autonomic.cli.invocation import command

        out.print(
            f"approval {decided.id} is {decided.status.value.upper()} (by "
            f"{escape(', '.join(decided.decided_by))}); run {decided.run_id} is RUNNING again: "
            f"a worker continues it, or continue it here with\n"
            f"  {escape(command(settings.db, 'resume', decided.run_id))}"
        )
    else:
        yes = sum(1 for v in decided.votes if v.approve)
        out.print(
            f"vote recorded: approval {decided.id} has {yes} of {decided.quorum} approvals; "
            "another approver must decide too"
        )
