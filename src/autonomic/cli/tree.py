"""A run's tree as ``autonomic show`` prints it: the child runs it delegated to (and theirs), each
with its status and what its model calls cost; and a coordinator's graph, subtask by subtask."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape

from autonomic.core.coordination import TASK
from autonomic.core.graph import parse_graph
from autonomic.core.journal import Entry
from autonomic.core.state import fold
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


def graph_progress(entries: Sequence[Entry]) -> dict[str, Any] | None:
    """A coordinator's graph and where each subtask stands (``None`` for other runs): the
    graph's source, why a model's proposal was refused, and per node its capability, status
    (``waiting``, ``running``, ``done``, ``failed``, ``skipped``), attempts and latest agent."""
    if not entries:
        return None
    state = fold(entries[0].run_id, entries)
    if state.graph is None:
        return None
    nodes: list[dict[str, Any]] = []
    if state.graph.graph is None:  # no graph could be followed: the run failed saying why
        return {"source": state.graph.source, "rejected": state.graph.rejected, "nodes": nodes}
    graph = parse_graph(state.graph.graph, max_nodes=10_000, given=frozenset({TASK}))
    for node in graph.nodes:
        steps = state.subtasks.get(node.id, [])
        dispatches = [s for s in steps if s.phase == "dispatch"]
        last = steps[-1] if steps else None
        if last is None:
            status = "waiting"
        elif last.phase == "dispatch":
            status = "running"
        elif last.phase == "skipped":
            status = "skipped"
        else:
            status = "done" if last.ok else "failed"
        nodes.append(
            {
                "id": node.id,
                "capability": node.uses,
                "after": sorted(node.needs - graph.given),
                "status": status,
                "attempts": len(dispatches),
                "agent": dispatches[-1].agent if dispatches else None,
                "error": (last.error or {}).get("message") if last and not last.ok else None,
            }
        )
    return {"source": state.graph.source, "rejected": state.graph.rejected, "nodes": nodes}


def print_graph(console: Console, graph: dict[str, Any] | None) -> None:
    """The graph's progress as one line per subtask (nothing for a run that is no coordinator)."""
    if graph is None:
        return
    nodes = graph["nodes"]
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node["status"]] = counts.get(node["status"], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    console.print(f"graph ({graph['source']}, {len(nodes)} subtasks): {summary}")
    if graph.get("rejected"):
        console.print(f"  the model's graph was refused: {escape(str(graph['rejected']))}")
    style = {"done": "green", "running": "yellow", "failed": "red", "skipped": "dim"}
    for node in nodes:
        after = f" after {', '.join(node['after'])}" if node["after"] else ""
        on = "by" if node["status"] == "done" else "on"
        who = f" {on} {escape(str(node['agent']))}" if node["agent"] else ""
        tries = f" ({node['attempts']} attempts)" if node["attempts"] > 1 else ""
        colour = style.get(node["status"], "white")
        line = (
            f"  {escape(str(node['id']))} \\[{escape(str(node['capability']))}] "
            f"[{colour}]{node['status']}[/{colour}]{who}{tries}{after}"
        )
        if node["error"]:
            line += f": {escape(str(node['error'])[:120])}"
        console.print(line)
