"""``autonomic audit``: verify the audit log, sign a checkpoint of it, export it, make a key.

``verify`` exits 0 when nothing was found and 1 (``ExitCode.FAILURE``) on a break, naming the
first one: where (run and entry, or log record) and what kind (edited, inserted, deleted,
truncated, reordered, run deleted, log edited...). See docs/audit.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from autonomic.cli.common import JsonOption, open_store, out, run_coroutine, settings_of
from autonomic.cli.exit_codes import ExitCode

if TYPE_CHECKING:
    from autonomic.audit.verify import Report

audit_app = typer.Typer(
    help="The audit log: verify it, sign checkpoints, export it (docs/audit.md).",
    no_args_is_help=True,
)

KeyOption = Annotated[
    str | None,
    typer.Option(
        "--key",
        help="The Ed25519 private key (PEM) that signs checkpoints; default $AUTONOMIC_AUDIT_KEY.",
        show_default=False,
    ),
]


@audit_app.command("verify")
def verify(
    ctx: typer.Context,
    run: Annotated[
        str | None, typer.Option("--run", help="Check this run's journal only (and the log).")
    ] = None,
    export_dir: Annotated[
        Path | None,
        typer.Option("--export", help="Verify an export directory instead of the database."),
    ] = None,
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            help="Check checkpoint signatures with this public key (PEM); needed with --export.",
        ),
    ] = None,
    kept: Annotated[
        Path | None,
        typer.Option(
            "--checkpoints",
            help="With --export: your own copy of checkpoints.jsonl the log must still reach.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check the audit log's chain and every journal against its anchors; name the first break."""
    from autonomic.audit import checkpoint
    from autonomic.audit.verify import Report, verify_store
    from autonomic.cli.journal_check import chains_elsewhere
    from autonomic.errors import UserError

    if export_dir is not None:
        if public_key is None:
            raise UserError(
                "--export needs --public-key", hint="the export's public_key.pem, or your own copy"
            )
        log = checkpoint.verify_export(export_dir, checkpoint.load_public_key(public_key), kept)
        report = Report(
            breaks=[log.first_break] if log.first_break else [],
            records=log.records,
            checkpoints=len(log.checkpoints),
            head=log.head,
        )
        _show(report, as_json)
        return
    settings = settings_of(ctx)
    check = checkpoint.verifier(checkpoint.load_public_key(public_key)) if public_key else None

    async def go() -> Report:
        store = await open_store(settings.db, "read")
        try:
            chains = await chains_elsewhere(store, settings.db) if run is None else None
            return await verify_store(store, run_id=run, verify_signature=check, chains=chains)
        finally:
            await store.close()

    _show(run_coroutine(go), as_json)


def _show(report: Report, as_json: bool) -> None:
    if as_json:
        out.print_json(data=report.to_dict())
    elif report.ok:
        out.print(
            f"audit log intact: {report.records} records, {report.runs} runs, "
            f"{report.entries} journal entries, {report.checkpoints} checkpoints"
            + (
                f" ({report.legacy_runs} runs older than the log, checked by their own chain)"
                if report.legacy_runs
                else ""
            )
        )
    else:
        first = report.breaks[0]
        out.print(f"[red]BROKEN[/]: {escape(str(first))}")
        if len(report.breaks) > 1:
            out.print(f"and {len(report.breaks) - 1} more breaks (--json lists them)")
    if not report.ok:
        raise typer.Exit(ExitCode.ERROR)


@audit_app.command("checkpoint")
def checkpoint_cmd(ctx: typer.Context, key: KeyOption = None) -> None:
    """Append a checkpoint, signed with the key, of the log's head, length and time."""
    from autonomic.audit import checkpoint

    settings = settings_of(ctx)
    private = checkpoint.load_private_key(checkpoint.key_path(key))

    async def go() -> int:
        store = await open_store(settings.db, "write")
        try:
            return int(await store.append_checkpoint(checkpoint.signer(private)))
        finally:
            await store.close()

    pos = run_coroutine(go)
    out.print(
        f"checkpoint at record {pos}, signed by {checkpoint.fingerprint(private.public_key())}"
    )


@audit_app.command("export")
def export_cmd(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Option("--out", help="The directory to write into.")],
    key: KeyOption = None,
    public_key: Annotated[
        Path | None,
        typer.Option("--public-key", help="Export this public key instead of --key's."),
    ] = None,
) -> None:
    """Export the log, its checkpoints and the public key, for `audit verify --export`."""
    from autonomic.audit import checkpoint

    settings = settings_of(ctx)
    public = (
        checkpoint.load_public_key(public_key)
        if public_key is not None
        else checkpoint.load_private_key(checkpoint.key_path(key)).public_key()
    )

    async def go() -> tuple[int, int]:
        store = await open_store(settings.db, "read")
        try:
            return await checkpoint.export(store, out_dir, public)
        finally:
            await store.close()

    records, checkpoints = run_coroutine(go)
    out.print(f"exported {records} records and {checkpoints} checkpoints to {escape(str(out_dir))}")


@audit_app.command("keygen")
def keygen(
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the private key.")],
) -> None:
    """Make an Ed25519 signing key (mode 0600) and its public key (PATH.pub)."""
    from autonomic.audit import checkpoint

    public = checkpoint.generate_key(out_path)
    out.print(
        f"private key: {escape(str(out_path))} (keep it secret)\npublic key: {escape(str(public))}"
    )


@audit_app.command("act")
def act_cmd(
    ctx: typer.Context,
    act: Annotated[str, typer.Argument(help="What was done, e.g. policy.change.")],
    who: Annotated[
        str | None,
        typer.Option("--as", help="Who did it (default: the OS user).", show_default=False),
    ] = None,
    detail: Annotated[
        str | None, typer.Option(help="A JSON object: what an auditor needs to know.")
    ] = None,
    run: Annotated[str | None, typer.Option("--run", help="The run it concerns, if any.")] = None,
) -> None:
    """Record an act that changes no run (a policy change, a key rotation) in the audit log."""
    import json

    from autonomic.cli.common import acting
    from autonomic.core.audit import AuditAct
    from autonomic.core.principal import DEFAULT_TENANT
    from autonomic.errors import InvalidInput

    settings = settings_of(ctx)
    try:
        fields = json.loads(detail) if detail else {}
    except ValueError as exc:
        raise InvalidInput(
            f"--detail is not JSON: {exc}", hint='e.g. --detail \'{"file": "policy.yaml"}\''
        ) from None
    if not isinstance(fields, dict):
        raise InvalidInput(
            "--detail must be a JSON object", hint='e.g. --detail \'{"file": "policy.yaml"}\''
        )
    if not act.strip() or len(act) > 100:
        raise InvalidInput("the act needs a short name", hint="e.g. policy.change")

    async def go() -> tuple[int, str]:
        store = await open_store(settings.db, "write")
        try:
            tenant = (await store.get_run(run)).tenant if run else DEFAULT_TENANT
            by = acting(who, tenant)
            return int(await store.append_audit(AuditAct(act, by, fields), run_id=run)), by
        finally:
            await store.close()

    pos, by = run_coroutine(go)
    out.print(f"recorded {escape(act)} by {escape(by)} at record {pos}")
