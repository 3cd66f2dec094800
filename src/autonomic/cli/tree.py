"""A run's tree as ``autonomic show`` prints it: the child runs it delegated to (and theirs), each
with its status and what its model calls cost."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

from autonomic.core.timeline import spend
from autonomic.ports.store import Store

MAX_NODES = 500
"""A tree is read up to this many runs (a runaway fan-out must not hang the command)."""


async def run_tree(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The descendants of ``run_id`` depth first: id, parent, depth, agent, capability, status,
    reason and cost (USD); ``[]`` for a run that delegated nothing (or a store without trees)."""
    found: list[dict[str, Any]] = []

    async def walk(parent: str, depth: int) -> None:
        try:
            children = await store.children(parent)
        except NotImplementedError:
            return
        for child in children:
            if len(found) >= MAX_NODES:
                return
            cost = spend(await store.load_journal(child.id))["cost_usd"]
            found.append(
                {
                    "id": child.id,
                    "parent": parent,
                    "depth": depth,
                    "agent": child.agent,
                    "capability": child.capability,
                    "status": child.status.value,
                    "reason": child.status_reason,
                    "cost_usd": cost,
                }
            )
            await walk(child.id, depth + 1)

    await walk(run_id, 1)
    return found


def print_tree(console: Console, tree: list[dict[str, Any]]) -> None:
    """The tree as indented lines (nothing when the run delegated nothing)."""
    if not tree:
        return
    total = sum(float(n["cost_usd"]) for n in tree)
    console.print(f"children: {len(tree)} runs, ${total:.4f}")
    for node in tree:
        cap = f" \\[{escape(node['capability'])}]" if node["capability"] else ""
        console.print(
            f"{'  ' * node['depth']}└ {node['id']} {escape(node['agent'])}{cap} "
            f"{node['status']} ${float(node['cost_usd']):.4f}"
        )
