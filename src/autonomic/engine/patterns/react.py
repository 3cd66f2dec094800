"""ReAct: ask the model, run the tools it proposes, feed back observations, until it answers.

A loop over the step protocol (``autonomic.engine.step``): the pattern decides *which* step comes
next - finish the calls of the latest turn, accept the final answer, or ask for another turn within
the turn budget - and the protocol takes it. Planning, compression, budgets, retries, breakers and
screening happen inside the protocol's steps and hooks, so they apply to every pattern alike.
"""

from __future__ import annotations

from typing import Any

from autonomic.core.run import RunStatus
from autonomic.core.state import RunState
from autonomic.engine.step import StepProtocol


class ReAct:
    """The observe-think-act loop with a turn budget."""

    async def __call__(self, step: StepProtocol) -> None:
        """Drive the run until it finishes, waits for a human, or the worker is asked to stop."""
        state = step.state
        while state.status is RunStatus.RUNNING:
            pending = state.pending_calls()
            if pending:
                if not await step.tool_calls(pending):
                    return
                await step.commit()
                continue
            if state.finished_turn:
                workflow = step.agent.workflow
                if workflow is not None and not workflow.may_finish(state.workflow):
                    await step.stop(
                        RunStatus.SUSPENDED,
                        f"workflow {workflow.name}: the model answered in state {state.workflow}, "
                        f"which is not a final state ({', '.join(workflow.final_states())})",
                    )
                    return
                await step.finish(_final(state), "the model gave a final answer")
                return
            if step.stopping():
                await step.commit()
                return
            if state.turns >= state.max_turns:
                await step.stop(
                    RunStatus.FAILED,
                    f"turn budget exhausted: {state.turns} of {state.max_turns} model turns used "
                    "without a final answer (raise max_turns or fix the agent's instructions)",
                )
                return
            if not await step.model_turn():
                return


def _final(state: RunState) -> Any:
    """The run's output: the final assistant message's text."""
    return state.messages[-1].content if state.messages else None
