"""A capability: what an agent can be asked to do by another agent, as a contract.

An agent declares its capabilities (``Agent(capabilities=[...])``); another agent that may delegate
to it (``delegates_to``) hands it subtasks through the built-in ``delegate`` tool
(``tools/delegate.py``). The contract says what a subtask must look like going in (``input_schema``,
checked before the child run exists: a bad one is an error result the delegating model reads), what
its result must look like coming out (``output_schema``: a child whose answer breaks it has failed
that subtask), what one costs and how long it usually takes (what routing by capability weighs),
and how many may be in flight at once across the whole fleet of workers (``concurrency``: held by
the store, not by a process; work over the limit waits queued, it never fails).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import jsonschema.exceptions

from autonomic.core.coordination import OnFailure
from autonomic.errors import InvalidInput

_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Capability:
    """One thing an agent can be asked to do.

    Args:
        name: how delegating agents ask for it (lower case, ``a-z0-9_.-``).
        input_schema: JSON schema of the subtask (``None``: any task, text or JSON).
        output_schema: JSON schema of the result (``None``: any); a child's final answer is read
            as JSON when this is declared.
        cost: what one invocation is expected to cost (USD), for routing.
        latency: typical seconds one invocation takes, for routing.
        concurrency: children of this capability in flight at once across the fleet
            (``None``: no limit).
        description: what the delegating model is told about it.
        compensation: the capability that undoes a completed subtask of this one when a
            coordinator's graph is aborted with compensation (its input filled by name from
            this subtask's output, else its task).
        on_failure: what a coordinator does when a subtask of this capability fails
            (``None``: the workflow's policy; ``core/coordination.py``).
    """

    name: str
    input_schema: Mapping[str, Any] | None = None
    output_schema: Mapping[str, Any] | None = None
    cost: float = 0.0
    latency: float = 0.0
    concurrency: int | None = None
    description: str = ""
    compensation: str | None = None
    on_failure: OnFailure | None = None
    _input: Any = field(default=None, init=False, repr=False, compare=False)
    _output: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InvalidInput(
                f"capability name {self.name!r} is not a valid name",
                hint="use lower case letters, digits, '_', '.', '-' (e.g. code.review)",
            )
        if self.concurrency is not None and self.concurrency < 1:
            raise InvalidInput(
                f"capability {self.name}: concurrency must be at least 1, got {self.concurrency}",
                hint="use concurrency=None for no limit",
            )
        if self.cost < 0 or self.latency < 0:
            raise InvalidInput(f"capability {self.name}: cost and latency cannot be negative")
        for which, schema in (("_input", self.input_schema), ("_output", self.output_schema)):
            if schema is None:
                continue
            try:
                cls = jsonschema.validators.validator_for(schema)
                cls.check_schema(dict(schema))
            except jsonschema.exceptions.SchemaError as exc:
                raise InvalidInput(
                    f"capability {self.name}: {which[1:]} schema is not a JSON schema: "
                    f"{exc.message}"
                ) from None
            object.__setattr__(self, which, cls(schema))

    def check_input(self, task: Any) -> None:
        """Raise ``InvalidInput`` naming the first violation of the input schema."""
        _check(self._input, task, f"the task for capability {self.name}", "input_schema")

    def output(self, answer: Any) -> Any:
        """The child's answer as this capability's result: read as JSON when an output schema is
        declared and checked against it; ``InvalidInput`` names what is wrong."""
        if self._output is None:
            return answer
        value = answer
        if isinstance(answer, str):
            try:
                value = json.loads(answer)
            except json.JSONDecodeError:
                raise InvalidInput(
                    f"the result of capability {self.name} is not JSON: {answer[:80]!r}",
                    hint="its output_schema asks for JSON",
                ) from None
        _check(self._output, value, f"the result of capability {self.name}", "output_schema")
        return value

    def describe(self) -> dict[str, Any]:
        """What ``autonomic agents`` and the delegating model see of it."""
        return {
            "name": self.name,
            "description": self.description,
            "cost": self.cost,
            "latency": self.latency,
            "concurrency": self.concurrency,
            "compensation": self.compensation,
            "input_schema": dict(self.input_schema) if self.input_schema is not None else None,
            "output_schema": dict(self.output_schema) if self.output_schema is not None else None,
        }


def _check(validator: Any, value: Any, what: str, schema: str) -> None:
    if validator is None:
        return
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise InvalidInput(f"{what} breaks its {schema} at {where}: {error.message}")
