"""``autonomic migrate``: create or upgrade the database schema."""

from __future__ import annotations

import typer

from autonomic.cli.common import out, run_coroutine, settings_of


def migrate(ctx: typer.Context) -> None:
    """Create or upgrade the database schema."""
    from autonomic.bootstrap import build_store

    settings = settings_of(ctx)

    async def go() -> list[str]:
        store = build_store(settings.db)
        try:
            applied: list[str] = await store.migrate()
            return applied
        finally:
            await store.close()

    applied = run_coroutine(go)
    out.print("applied: " + ", ".join(applied) if applied else "schema is up to date")
