"""A small governed agent for the governance tests: a payment tool that dedups on its key, a
scripted model, a risk policy from YAML, and an engine/desk pair on any store."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autonomic.adapters.model.scripted import ScriptedModel
from autonomic.bootstrap import build_store
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.governance.approvals import ApprovalDesk
from autonomic.governance.policy.risk import parse_policy_text
from autonomic.ports.store import Store
from autonomic.tools.contract import ToolContext, tool

POLICY = """
approval:
  group: controllers
  expires_after: 1h
rules:
  - name: big-payment
    tool: pay
    when: args.amount > 100
    risk: medium
    reason: payments above 100 need a controller
  - name: destructive
    reversible: false
    risk: high
    reason: irreversible actions are blocked pending review
"""

LEDGER: dict[str, list[tuple[str, int]]] = {}
"""Effects of ``pay`` per idempotency key (the test's 'bank'): a key applied twice would show."""


@tool(idempotent=True)
def pay(to: str, amount: int, ctx: ToolContext) -> dict[str, Any]:
    """Pay ``amount`` to ``to``; dedups on the idempotency key."""
    applied = LEDGER.setdefault(ctx.idempotency_key, [])
    if not applied:
        applied.append((to, amount))
    return {"paid": amount, "to": to}


@tool(idempotent=True, reversible=False)
def wipe(table: str) -> str:
    """Delete a table (irreversible)."""
    LEDGER.setdefault("wipe", []).append((table, 0))
    return "wiped"


def agent(**kwargs: Any) -> Agent:
    return Agent(name="payer", instructions="pay people", tools=(pay, wipe), **kwargs)


def call(name: str, call_id: str | None = None, **arguments: Any) -> dict[str, Any]:
    found: dict[str, Any] = {"name": name, "arguments": arguments}
    if call_id:
        found["id"] = call_id
    return found


def engine(
    store: Store, turns: Sequence[dict[str, Any]], policy: str = POLICY, **kwargs: Any
) -> Engine:
    model = ScriptedModel(list(turns))
    return Engine(
        store,
        AgentRegistry([kwargs.pop("agent", None) or agent()]),
        lambda spec: model,
        gates=[parse_policy_text(policy).risk.gate()],
        **kwargs,
    )


async def open_store(url: str) -> Store:
    store = build_store(url)
    await store.migrate()
    return store


def desk(store: Store, **kwargs: Any) -> ApprovalDesk:
    return ApprovalDesk(store, **kwargs)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
