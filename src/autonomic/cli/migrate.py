"""``autonomic migrate``: create or upgrade the database schema."""

from __future__ import annotations

import typer

from autonomic.cli.common import out, run_coroutine, settings_of


def migrate(ctx: typer.Context) -> None:
    """Create or upgrade the database schema.

    The one command that adds autonomic's tables to a database (or PostgreSQL schema) that
    holds other tables already: every other command refuses such a database. A damaged
    database, or one written by a newer autonomic, is refused here too."""
    from autonomic.bootstrap import build_store

    settings = settings_of(ctx)

    async def go() -> list[str]:
        store = build_store(settings.db)
        try:
            applied: list[str] = await store.migrate(beside_other_tables=True)
            return applied
        finally:
            await store.close()

    applied = run_coroutine(go)
    out.print("applied: " + ", ".join(applied) if applied else "schema is up to date")
