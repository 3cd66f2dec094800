"""``autonomic keys create|list|rotate|revoke``: API keys for the service, stored as hashes.

The secret is printed once, by ``create`` and ``rotate``; nothing can show it again. Who did each
act (the OS user, or ``--as``, as NAME@TENANT of the key) is kept on the key's row.
"""

from __future__ import annotations

from typing import Annotated, Any

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

keys_app = typer.Typer(no_args_is_help=True, help="API keys for `autonomic serve`.")


async def _desk(db: str, access: Any) -> tuple[Any, Any]:
    from autonomic.adapters.store.keys import SqlKeyStore
    from autonomic.service.keys import KeyDesk

    store = await open_store(db, access)
    return store, KeyDesk(SqlKeyStore(store))


def _show_secret(key: Any, secret: str) -> None:
    out.print(f"key [bold]{key.id}[/] ({escape(key.name)}, {key.role.value} of tenant "
              f"{escape(key.tenant)})")  # fmt: skip
    out.print("secret (shown this once; keep it in a secret store):")
    out.print(secret)


@keys_app.command("create")
def create(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="The one tenant the key sees.")],
    role: Annotated[str, typer.Option(help="member, approver or admin.")],
    name: Annotated[str, typer.Option(help="Who holds it (a person or a program).")],
    expires: Annotated[
        str | None, typer.Option(help="Lifetime: 45s, 90m, 12h, 30d, 2w (default: never).")
    ] = None,
    as_user: AsOption = None,
) -> None:
    """Create a key; print its secret once."""
    from autonomic.service.keys import parse_duration

    settings = settings_of(ctx)
    expires_in = parse_duration(expires) if expires else None

    async def go() -> tuple[Any, str]:
        store, desk = await _desk(settings.db, "create")
        try:
            created: tuple[Any, str] = await desk.create(
                tenant=tenant,
                role=role,
                name=name,
                by=acting(as_user, tenant),
                expires_in=expires_in,
            )
            return created
        finally:
            await store.close()

    _show_secret(*run_coroutine(go))


@keys_app.command("list")
def list_keys(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List keys (never their secrets): id, name, tenant, role, state, expiry, who made them."""
    import time

    from rich.table import Table

    settings = settings_of(ctx)

    async def go() -> list[Any]:
        store, desk = await _desk(settings.db, "read")
        try:
            found: list[Any] = await desk.list(tenant=tenant)
            return found
        finally:
            await store.close()

    found, now = run_coroutine(go), time.time()
    rows = [
        {
            "id": k.id, "name": k.name, "tenant": k.tenant, "role": k.role.value,
            "state": k.state(now), "expires_at": k.expires_at, "created_by": k.created_by,
            "rotated_by": k.rotated_by, "revoked_by": k.revoked_by,
        }
        for k in found
    ]  # fmt: skip
    if as_json:
        out.print_json(data=rows)
        return
    if not rows:
        out.print("no keys")
        return
    table = Table("id", "name", "tenant", "role", "state", "expires", "created by")
    for r in rows:
        expiry = "never" if r["expires_at"] is None else _when(r["expires_at"])
        table.add_row(r["id"], escape(r["name"]), escape(r["tenant"]), r["role"], r["state"],
                      expiry, escape(r["created_by"]))  # fmt: skip
    out.print(table)


def _when(at: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


@keys_app.command("rotate")
def rotate(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The key (see `autonomic keys list`).")],
    as_user: AsOption = None,
) -> None:
    """Give a key a new secret (printed once); the old one stops working at once."""
    settings = settings_of(ctx)

    async def go() -> tuple[Any, str]:
        store, desk = await _desk(settings.db, "write")
        try:
            rotated: tuple[Any, str] = await desk.rotate(
                key_id, by=acting(as_user, (await desk.get(key_id)).tenant)
            )
            return rotated
        finally:
            await store.close()

    _show_secret(*run_coroutine(go))


@keys_app.command("revoke")
def revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The key (see `autonomic keys list`).")],
    as_user: AsOption = None,
) -> None:
    """Revoke a key for good; requests and sessions made with it are refused from now on."""
    settings = settings_of(ctx)

    async def go() -> Any:
        store, desk = await _desk(settings.db, "write")
        try:
            by = acting(as_user, (await desk.get(key_id)).tenant)
            return await desk.revoke(key_id, by=by)
        finally:
            await store.close()

    key = run_coroutine(go)
    out.print(f"key {key.id} revoked by {escape(key.revoked_by or '?')}")
