"""Compensation: undoing an aborted run's completed steps, each exactly once, newest first.

An abort with compensation (``Engine.abort(..., compensate=True)``, ``autonomic abort RUN
--compensate``) journals a ``compensation`` entry ``requested`` with who and why, and puts the
run where a worker takes it; the worker then drives this pattern instead of the ReAct loop. For
each step ``core/compensation.py`` says must be undone, newest first:

1. an ``intent`` entry (the compensating tool, its arguments, the idempotency key
   ``RUN:undo:STEP``) is **committed** before the call (write-ahead);
2. the lease is checked, and the compensating tool runs under its contract (timeout, retries,
   breaker hooks, scoped credentials) - through the step protocol's ``act``;
3. its ``result`` entry is committed.

A crash anywhere in between is recovered by the next worker from the journal: a step with a
committed result is never compensated again; a step with only an intent is compensated again with
the *same key* - which is why a compensating tool must be idempotent (the agent refuses one that
is not): the system it calls dedups on the key, so the compensation takes effect exactly once.

A step whose tool declares no compensation is journaled as ``skipped`` (not undone, named). A
compensation that fails suspends the run with the step named: ``autonomic resume RUN --force``
tries it again, ``autonomic cancel`` gives up. When every step is done the run ends CANCELLED
with the count. The abort is the decision (an operator's act, in the audit log); the gates are
not asked again for the undo the developer declared.
"""

from __future__ import annotations

from autonomic.core.calls import Position
from autonomic.core.canonical import canonical_json
from autonomic.core.compensation import Compensator, completed_steps, undo_plan
from autonomic.core.entries import CompensationStep, ToolIntent
from autonomic.core.messages import ToolCall
from autonomic.core.run import RunStatus
from autonomic.engine.step import StepProtocol

__all__ = ["Compensate", "compensators"]

UNDO_POSITION: Position = (-1, -1)
"""Compensating calls belong to no model turn: their results carry this position."""


def compensators(step: StepProtocol) -> dict[str, Compensator]:
    """The agent's compensations: tool name -> the tool that undoes it and its parameters."""
    tools = {t.name: t for t in step.agent.tools}
    out: dict[str, Compensator] = {}
    for tool in step.agent.tools:
        if tool.compensate is not None and tool.compensate in tools:
            undo = tools[tool.compensate]
            params = tuple(undo.parameters.get("properties", {}))
            out[tool.name] = Compensator(undo.name, params)
    return out


class Compensate:
    """The pattern an aborted run is driven by: a loop over its compensations."""

    async def __call__(self, step: StepProtocol) -> None:
        session = step.session
        request = session.state.abort
        assert request is not None
        plan = undo_plan(completed_steps(session.state), compensators(step))
        undone = skipped = 0
        for undo in plan:
            seen = session.state.compensations.get(undo.step)
            if seen is not None and (
                seen.phase == "skipped" or (seen.phase == "result" and seen.ok)
            ):
                undone += seen.phase == "result"
                skipped += seen.phase == "skipped"
                continue
            if undo.tool is None:
                session.stage(
                    CompensationStep(
                        "skipped", step=undo.step, of=undo.of,
                        reason=f"{undo.of} declares no compensating action",
                    )
                )  # fmt: skip
                await session.flush()
                skipped += 1
                continue
            key = f"{session.run.id}:undo:{undo.step}"
            tool = step.agent.registry.get(undo.tool)
            arguments = dict(undo.arguments)
            if seen is None or seen.phase != "intent":
                session.stage(
                    CompensationStep(
                        "intent", step=undo.step, tool=tool.name, of=undo.of,
                        arguments=arguments, key=key,
                    )
                )  # fmt: skip
                await session.flush()  # write-ahead: the intent is durable before the effect
            elif seen.arguments is not None:
                arguments = dict(seen.arguments)
            call = ToolCall(f"undo-{undo.step}", tool.name, canonical_json(arguments))
            intent = ToolIntent(
                call_id=call.id, tool=tool.name, version=tool.version, arguments=arguments,
                key=key, idempotent=True, position=UNDO_POSITION,
            )  # fmt: skip
            result = await step.act(tool, call, UNDO_POSITION, intent, replayed=seen is not None)
            session.fault("compensated")
            session.stage(
                CompensationStep(
                    "result", step=undo.step, tool=tool.name, of=undo.of, key=key,
                    ok=result.ok, output=result.output if result.ok else None,
                    error=None if result.ok else (result.error or {}).get("message", "failed"),
                )
            )  # fmt: skip
            await session.flush()
            if not result.ok:
                error = dict(result.error or {})
                await step.stop(
                    RunStatus.SUSPENDED,
                    f"compensating {undo.of} (step {undo.step}) with {tool.name} failed; "
                    f"`autonomic resume {session.run.id} --force` tries it again",
                    error={**error, "step": undo.step, "compensating": tool.name},
                )
                return
            undone += 1
        left = f", {skipped} without a compensating action" if skipped else ""
        await step.stop(
            RunStatus.CANCELLED,
            f"aborted by {request.by}: {request.reason}; compensated {undone} step(s){left}",
        )
