"""The ``delegate`` tool: how an agent hands a subtask to another agent as a child run.

An agent declared with ``delegates_to=[agents or capabilities]`` gets this tool. Its effect is not a
function call: the step protocol (``engine/step.py``) hands the call to the engine's delegation
(``engine/delegation.py``), which journals the hand-off, creates the child run (once, under a run
id derived from the parent and the step) and lets the parent wait as a row; the child's outcome
comes back as this call's result. Outside an engine it refuses, saying so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autonomic.errors import ConfigError
from autonomic.tools.contract import Tool

DELEGATE_TOOL = "delegate"


def delegate_tool(targets: Sequence[str]) -> Tool:
    """The ``delegate`` tool of an agent that may hand work to ``targets`` (agent or capability
    names): the model names one of them and gives the task."""
    allowed = sorted(set(targets))

    def delegate(to: str, task: Any) -> Any:
        raise ConfigError(
            "delegate runs only inside the engine's step protocol",
            hint="run the agent with autonomic.engine.executor.Engine",
        )

    return Tool(
        name=DELEGATE_TOOL,
        fn=delegate,
        parameters={
            "type": "object",
            "properties": {
                "to": {
                    "type": "string",
                    "enum": allowed,
                    "description": "the agent, or the capability, to hand the subtask to",
                },
                "task": {
                    "type": ["string", "object"],
                    "description": "the subtask: text, or JSON fitting the capability's input",
                },
            },
            "required": ["to", "task"],
            "additionalProperties": False,
        },
        description=(
            "Hand a subtask to another agent and wait for its result (the other agent runs it "
            "as a child run; its answer, failure or suspension comes back as this call's result)."
        ),
        idempotent=True,
    )
