"""The reconciliation-loop incident, replayed through the engine.

An agent convinced that stale reconciliation rows remain runs the same destructive cleanup again
and again, each time with a new timestamp, attempt counter, request id and wording - so an
exact-match convergence check never fires (in the original incident it ran 14,000 times). The
"brain" is a deterministic ``FunctionModel`` built from the incident's proposals
(``incident.reconciliation_loop``); the tools work on a small SQLite ledger whose ``purge_log``
table counts how often the destructive tool really ran. With the runaway guards on, the third proposal is suspended.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.core.canonical import canonical_json
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec
from autonomic.core.run import Run
from autonomic.engine.agent import Agent
from autonomic.errors import InvalidInput, RunInputError
from autonomic.examples.runaway.incident import reconciliation_loop
from autonomic.governance.action import ActionKind
from autonomic.ports.model import Model
from autonomic.tools.contract import ToolContext, tool

ATTEMPTS = 10
"""How many cleanups the scripted agent proposes before it gives up (the incident had no end)."""

INSTRUCTIONS = """You keep the reconciliation table clean. Check it with check_stale, and delete
stale records with delete_records until none remain."""


def create_ledger(path: Path) -> Path:
    """A ledger whose stale rows never go away (a replication lag re-inserts them)."""
    db = sqlite3.connect(path)
    try:
        with db:
            db.execute("CREATE TABLE IF NOT EXISTS purge_log (attempt INTEGER, older_than TEXT)")
    finally:
        db.close()
    return path


def _ledger(ctx: ToolContext) -> Path:
    path = ctx.metadata.get("ledger")
    if not isinstance(path, str):
        raise InvalidInput("this run has no ledger", hint='start it with metadata={"ledger": PATH}')
    return Path(path)


def check_run(run: Run) -> None:
    """The run's input, checked before every drive (``Agent.check``): ``metadata.ledger`` must
    name the ledger file (``create_ledger`` makes one); otherwise the run is suspended saying so."""
    ledger = run.metadata.get("ledger")
    give = (
        f'give it: autonomic resume {run.id} --force --metadata \'{{"ledger": "PATH"}}\' '
        "(`autonomic demo --scenario runaway` creates one)"
    )
    if not isinstance(ledger, str) or not ledger.strip():
        raise RunInputError(f"this run has no ledger: metadata.ledger is {ledger!r}", hint=give)
    if not Path(ledger).is_file():
        raise RunInputError(f"metadata.ledger {ledger}: no such file", hint=give)


def purges(path: Path) -> int:
    """How many times ``delete_records`` really ran against the ledger at ``path``."""
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT COUNT(*) FROM purge_log").fetchone()[0])
    finally:
        db.close()


@tool(idempotent=True)
def check_stale(table: str, ctx: ToolContext) -> dict[str, Any]:
    """Count the stale rows of a table (read-only)."""
    return {"table": table, "stale_rows": 1204, "purged_so_far": purges(_ledger(ctx))}


@tool(reversible=False)
def delete_records(
    table: str, older_than: str, attempt: int, request_id: str, ctx: ToolContext
) -> dict[str, Any]:
    """Delete the records of ``table`` older than ``older_than``. Cannot be undone."""
    db = sqlite3.connect(_ledger(ctx))
    try:
        with db:
            db.execute("INSERT INTO purge_log VALUES (?, ?)", (attempt, older_than))
    finally:
        db.close()
    return {"table": table, "deleted": 1204, "note": "stale rows remain (replication lag)"}


_SCRIPT = [a for a in reconciliation_loop(ATTEMPTS) if a.kind is ActionKind.TOOL_CALL]


def runaway_policy(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    """Check once, then propose the next cleanup of the incident script, each one worded anew."""
    turn = sum(1 for m in messages if m.role is Role.ASSISTANT) + 1
    if turn == 1:
        call = ToolCall(
            id="call_1_1", name="check_stale", arguments=canonical_json({"table": "reconciliation"})
        )
        return ModelResponse(content="First, how many stale rows are there?", tool_calls=(call,))
    proposed = sum(
        1
        for m in messages
        if m.role is Role.ASSISTANT
        for c in m.tool_calls
        if c.name == "delete_records"
    )
    if proposed >= len(_SCRIPT):
        return ModelResponse(content=f"Gave up after {proposed} cleanups: stale rows remain.")
    step = _SCRIPT[proposed]
    call = ToolCall(
        id=f"call_{turn}_1", name="delete_records", arguments=canonical_json(dict(step.arguments))
    )
    return ModelResponse(content=step.thought, tool_calls=(call,))


def runaway_agent() -> Agent:
    """The looping cleanup agent, on its deterministic model."""
    return Agent(
        name="runaway-cleanup",
        instructions=INSTRUCTIONS,
        tools=(check_stale, delete_records),
        model="function:runaway-cleanup",
        max_turns=30,
        read_only=frozenset({"check_stale"}),
        check=check_run,
    )


FUNCTION_MODELS: dict[str, Callable[[], Model]] = {
    "runaway-cleanup": lambda: FunctionModel(runaway_policy, name="function:runaway-cleanup"),
}
"""The deterministic model this example brings (``function:runaway-cleanup``); the composition
root registers it when it loads the example."""
