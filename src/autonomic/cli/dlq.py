"""``autonomic dlq``: the dead letters - events a consumer group gave up on - listed, shown,
retried (delivered to their group again, attempts starting over) or dropped with a reason."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from autonomic.cli.common import (
    BusOption,
    JsonOption,
    open_event_bus,
    out,
    run_coroutine,
    settings_of,
)

dlq_app = typer.Typer(
    no_args_is_help=True, help="Dead letters: events a consumer group gave up on."
)


def _when(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _as_dict(letter: Any) -> dict[str, Any]:
    from autonomic.core.envelope import encode

    return {
        "id": letter.id,
        "group": letter.group,
        "topic": letter.topic,
        "error": letter.error,
        "attempts": letter.attempts,
        "first_failure": letter.first_failure,
        "last_failure": letter.last_failure,
        "event": json.loads(encode(letter.event)),
    }


@dlq_app.command("list")
def list_cmd(
    ctx: typer.Context,
    group: Annotated[str | None, typer.Option(help="Only this consumer group.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    as_json: JsonOption = False,
    bus: BusOption = None,
) -> None:
    """Dead letters, oldest first."""
    settings = settings_of(ctx)

    async def go() -> list[Any]:
        opened = await open_event_bus(settings.db, bus)
        return list(await opened.dead_letters(group=group, limit=limit))

    letters = run_coroutine(go)
    if as_json:
        out.print(json.dumps([_as_dict(x) for x in letters], indent=2), markup=False)
        return
    if not letters:
        out.print("no dead letters")
        return
    for x in letters:
        error = x.error if len(x.error) <= 120 else x.error[:117] + "..."
        out.print(
            f"{x.id}  {_when(x.last_failure)}  {x.group}  {x.event.type}  "
            f"attempts={x.attempts}  {error}",
            markup=False,
        )


@dlq_app.command("show")
def show(
    ctx: typer.Context,
    letter_id: Annotated[str, typer.Argument(metavar="ID")],
    bus: BusOption = None,
) -> None:
    """One dead letter: the event, the error, the attempts and the first and last failures."""
    settings = settings_of(ctx)

    async def go() -> Any:
        opened = await open_event_bus(settings.db, bus)
        return await opened.dead_letter(letter_id)

    out.print(json.dumps(_as_dict(run_coroutine(go)), indent=2, ensure_ascii=False), markup=False)


@dlq_app.command("retry")
def retry(
    ctx: typer.Context,
    letter_id: Annotated[str, typer.Argument(metavar="ID")],
    bus: BusOption = None,
) -> None:
    """Deliver the event to its group again (attempts start over); the letter goes."""
    settings = settings_of(ctx)

    async def go() -> None:
        opened = await open_event_bus(settings.db, bus)
        await opened.retry_dead_letter(letter_id)

    run_coroutine(go)
    out.print(f"{letter_id}: sent back to its group")


@dlq_app.command("drop")
def drop(
    ctx: typer.Context,
    letter_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Annotated[str, typer.Option("--reason", help="Why it is dropped (kept).")],
    bus: BusOption = None,
) -> None:
    """Give the event up for good, keeping the reason."""
    settings = settings_of(ctx)

    async def go() -> None:
        opened = await open_event_bus(settings.db, bus)
        await opened.drop_dead_letter(letter_id, reason=reason)

    run_coroutine(go)
    out.print(f"{letter_id}: dropped ({reason})", markup=False)
