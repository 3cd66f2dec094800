"""``autonomic events``: publish an event, read the events on the bus, list the declared types.

The bus is ``--bus`` / ``AUTONOMIC_BUS`` (default ``sql``: the embedded bus in the ``--db``
database). Event types are the built-in ones plus those the ``--agent`` modules declare.
Every refusal is one line: bad JSON, an unknown type, data that breaks the type's schema (the
field named), an oversized payload, a bus that cannot be reached.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape

from autonomic.cli.common import (
    AgentOption,
    BusOption,
    JsonOption,
    open_event_bus,
    out,
    run_coroutine,
    settings_of,
)
from autonomic.errors import EventRejected

events_app = typer.Typer(
    no_args_is_help=True, help="Publish and read events on the bus (docs/events.md)."
)


def parse_data(text: str) -> Any:
    """The ``--data`` JSON (``@path``: read from that file), or a one-line refusal saying where
    it broke."""
    if text.startswith("@"):
        from pathlib import Path

        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise EventRejected(f"--data {text}: cannot read the file: {exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise EventRejected(
            f"--data is not valid JSON: {exc}",
            hint='quote it for the shell, e.g. --data \'{"path": "src/app.py"}\'',
        ) from None


@events_app.command("publish")
def publish(
    ctx: typer.Context,
    event_type: Annotated[str, typer.Argument(metavar="TYPE", help="The event type.")],
    data: Annotated[
        str, typer.Option("--data", help="The event's data, as JSON (@file: read from a file).")
    ],
    key: Annotated[
        str | None,
        typer.Option("--key", help="The correlation id (ordering key); default: the event's id."),
    ] = None,
    tenant: Annotated[str, typer.Option(help="Whose event it is.")] = "default",
    bus: BusOption = None,
    agents: AgentOption = None,
) -> None:
    """Publish one event (checked against its type's schema first); print its id."""
    from autonomic.core.envelope import new_event

    settings = settings_of(ctx)
    payload = parse_data(data)

    async def go() -> str:
        opened = await open_event_bus(settings.db, bus, agents)
        event = new_event(
            event_type, payload, source="autonomic://cli", correlation_id=key, tenant=tenant
        )
        await opened.publish([event])
        return event.id

    event_id = run_coroutine(go)
    out.print(f"published {escape(event_type)} {event_id}")


@events_app.command("tail")
def tail(
    ctx: typer.Context,
    event_type: Annotated[
        list[str] | None, typer.Option("--type", help="Only this type (repeatable).")
    ] = None,
    correlation: Annotated[
        str | None, typer.Option("--correlation", help="Only this conversation.")
    ] = None,
    follow: Annotated[bool, typer.Option(help="Keep waiting for new events.")] = False,
    as_json: JsonOption = False,
    bus: BusOption = None,
    agents: AgentOption = None,
) -> None:
    """Print the events on the bus from the first, oldest first (a reader of its own: it takes
    nothing from the workers' consumer group)."""
    import time
    import uuid

    from autonomic.core.event_types import EventTypes

    settings = settings_of(ctx)

    async def go() -> int:
        opened = await open_event_bus(settings.db, bus, agents)
        types = event_type or [t.name for t in EventTypes.default()]
        for name in types:
            EventTypes.default().get(name)  # an unknown --type is refused, with the known ones
        reader = opened.consumer(f"tail-{uuid.uuid4().hex[:12]}", types, name="tail")
        shown = 0
        quiet_until = time.monotonic() + 1.0
        try:
            while follow or time.monotonic() < quiet_until:
                batch = await reader.poll(max_events=100, wait=0.2)
                for delivery in batch:
                    await reader.ack(delivery)
                    event = delivery.event
                    if correlation is not None and event.correlation_id != correlation:
                        continue
                    shown += 1
                    out.print(_line(event, as_json), markup=False)
                if batch:
                    quiet_until = time.monotonic() + 1.0
        finally:
            await reader.close()
        return shown

    run_coroutine(go)


def _line(event: Any, as_json: bool) -> str:
    if as_json:
        from autonomic.core.envelope import encode

        return encode(event).decode()
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(event.time, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    data = json.dumps(event.data, ensure_ascii=False)
    if len(data) > 200:
        data = data[:197] + "..."
    return f"{when} {event.type} {event.id} key={event.correlation_id} {data}"


@events_app.command("types")
def types_cmd(agents: AgentOption = None) -> None:
    """The declared event types and their data schemas."""
    from autonomic.bootstrap import build_agents
    from autonomic.core.event_types import EventTypes

    build_agents(agents)
    for t in EventTypes.default():
        required = ", ".join(t.schema.get("required", [])) or "-"
        out.print(f"{t.name}  (requires: {required})  {t.description}", markup=False)
