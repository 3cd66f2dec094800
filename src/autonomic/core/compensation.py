"""What undoing a run's completed work means: which steps, in which order, with which calls.

A saga's rule: when work is abandoned, every step that completed and changed the world is
compensated - undone by its declared compensating action - newest first, so a step is undone
before the steps it built on. Reading a step's effect is not a change: read-only steps are left
alone, and a step whose tool declares no compensation is named as *not undone* rather than
skipped in silence.

Pure: the engine's compensation pattern (``engine/compensation.py``) feeds it a run's completed
tool calls; a coordinator of child runs can feed it completed subtasks the same way (``step`` is
then the subtask's id, ``action`` its capability), in the order they completed - which is a
topological order of its graph, so the reverse is a reverse dependency order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from autonomic.core.state import RunState

__all__ = ["Compensator", "Completed", "Undo", "completed_steps", "undo_plan"]


class Completed(NamedTuple):
    """A step that took effect: its id, the action (tool or capability), its input, its output."""

    step: str
    action: str
    arguments: Mapping[str, Any]
    output: Any


class Compensator(NamedTuple):
    """How an action is undone: by ``tool``, whose ``parameters`` are filled by name."""

    tool: str
    parameters: tuple[str, ...]


class Undo(NamedTuple):
    """One compensation to make: ``tool`` with ``arguments`` for ``step``; ``tool`` is ``None``
    when the action declares no compensation (it is recorded as not undone)."""

    step: str
    of: str
    tool: str | None
    arguments: Mapping[str, Any]


def completed_steps(state: RunState) -> list[Completed]:
    """A run's tool calls that completed with an effect, in the order they completed: a result
    that is ok and not a refusal, of a call not marked read-only; then a coordinator's
    completed subtasks (the node's id, its capability, its task, its output), in the order they
    completed."""
    done: list[Completed] = []
    for node in state.subtasks_done:
        last = state.subtasks[node][-1]
        dispatch = next((s for s in reversed(state.subtasks[node]) if s.phase == "dispatch"), None)
        task = dispatch.task if dispatch is not None else None
        done.append(
            Completed(
                node,
                str(last.capability or (dispatch.capability if dispatch else "") or ""),
                task if isinstance(task, Mapping) else {"task": task},
                last.output,
            )
        )
    for position, result in state.results.items():
        intent = state.intents.get(position)
        if not result.ok or result.refused or intent is None or intent.read_only:
            continue
        done.append(
            Completed(f"{position[0]}:{position[1]}", result.tool, intent.arguments, result.output)
        )
    return done


def undo_plan(
    completed: Sequence[Completed], compensators: Mapping[str, Compensator]
) -> list[Undo]:
    """The compensations for ``completed``, newest first. A compensating call's arguments are
    its parameters taken by name from the step's output (when a mapping), else its arguments."""
    plan: list[Undo] = []
    for step in reversed(completed):
        how = compensators.get(step.action)
        if how is None:
            plan.append(Undo(step.step, step.action, None, {}))
            continue
        plan.append(Undo(step.step, step.action, how.tool, _arguments(step, how.parameters)))
    return plan


def _arguments(step: Completed, parameters: Iterable[str]) -> dict[str, Any]:
    output = step.output if isinstance(step.output, Mapping) else {}
    out: dict[str, Any] = {}
    for name in parameters:
        if name in output:
            out[name] = output[name]
        elif name in step.arguments:
            out[name] = step.arguments[name]
    return out
