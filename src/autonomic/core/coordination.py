"""What a coordinator is told: the graph to fall back on, the output to produce, what to do
when a subtask fails.

A coordinator agent (``Agent(coordination=Coordination(...))``) does not call tools itself: it
decomposes its task into a dependency graph of subtasks, each asking for a *capability* that
other agents declare (``tools/capability.py``), hands every subtask whose inputs are ready to a
child run, and aggregates what comes back (``engine/coordinator.py``). This module holds the
declaration, checked when the agent is defined so a mistake fails at import, not in a worker.

**Failure propagation** (``OnFailure``), declared for the workflow and, where it differs, per
capability (a capability's own ``on_failure``, or the workflow's ``on_failure_for``): a failed
subtask is first *retried* (a new child run; up to ``retries`` times, waiting the retry
policy's delay), then *reassigned* (once to each other healthy agent with the capability, when
``reassign``), and if it still fails the graph either *aborts* (``then="abort"``: the children
in flight are cancelled and the run fails, naming the subtask), or *compensates*
(``then="compensate"``: the same, but first every completed subtask is undone by its
capability's ``compensation``, newest first - a reverse dependency order - each exactly once),
or *continues* (``then="continue"``: the subtask and every subtask that needs it are left out;
the aggregate sees only what completed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import jsonschema.exceptions

from autonomic.core.graph import MAX_NODES, Graph, parse_graph
from autonomic.errors import GraphInvalid, InvalidInput

__all__ = ["TASK", "THEN", "Coordination", "OnFailure", "sinks_of"]

TASK = "task"
"""What a subtask's input references to take the coordinator's own task: ``{"$ref": "task"}``
(or ``{"$ref": "task.field"}``)."""

THEN = ("abort", "compensate", "continue")


@dataclass(frozen=True)
class OnFailure:
    """What happens when a subtask fails (see the module docstring).

    Args:
        retries: further child runs of the same agent before giving up on it (0: none).
        delay: seconds before each retry (doubled each time).
        reassign: then try each other agent with the capability once (healthy ones first).
        then: ``abort``, ``compensate`` or ``continue`` once nothing is left to try.
    """

    retries: int = 1
    delay: float = 0.0
    reassign: bool = True
    then: str = "abort"

    def __post_init__(self) -> None:
        if self.retries < 0 or self.retries > 10:
            raise InvalidInput(f"on_failure retries must be 0 to 10, got {self.retries}")
        if self.delay < 0 or self.delay > 60:
            raise InvalidInput(f"on_failure delay must be 0 to 60 seconds, got {self.delay}")
        if self.then not in THEN:
            raise InvalidInput(
                f"on_failure then={self.then!r} is not one of {', '.join(THEN)}",
                hint="abort stops the graph, compensate undoes what completed first, continue "
                "leaves the subtask and what needs it out",
            )

    def wait(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt`` (2, 3, ...) on the same agent."""
        return float(self.delay * 2 ** max(0, attempt - 2))


@dataclass(frozen=True)
class Coordination:
    """A coordinator's declaration.

    Args:
        template: the graph to follow when no model plans, or when the model's proposal does
            not validate (JSON as ``core/graph.parse_graph`` reads it, or a ``Graph``). Inputs
            may reference the coordinator's task as ``{"$ref": "task"}``.
        plan: ask the agent's model for a graph first (``False``: always the template).
        output_schema: JSON schema the aggregated output must fit (``None``: anything).
        aggregate: the run's output from the completed subtasks' outputs by node id
            (default: the output of the one node nothing waits for, else those of all such
            nodes that completed, by id).
        on_failure: the workflow's failure policy.
        on_failure_for: per capability, where it differs from the workflow's.
        max_nodes: the largest graph accepted.
    """

    template: Graph | Mapping[str, Any] | list[Any] | None = None
    plan: bool = True
    output_schema: Mapping[str, Any] | None = None
    aggregate: Callable[[Mapping[str, Any]], Any] | None = None
    on_failure: OnFailure = field(default_factory=OnFailure)
    on_failure_for: Mapping[str, OnFailure] = field(default_factory=dict)
    max_nodes: int = MAX_NODES
    _template: Graph | None = field(default=None, init=False, repr=False, compare=False)
    _output: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.template is None and not self.plan:
            raise InvalidInput(
                "a coordination that does not plan needs a template graph",
                hint="give template={...} or plan=True",
            )
        if isinstance(self.template, Graph):
            graph: Graph | None = Graph(self.template.nodes, frozenset({TASK}))
        elif self.template is not None:
            try:
                graph = parse_graph(
                    self.template, max_nodes=self.max_nodes, given=frozenset({TASK})
                )
                graph.layers()
            except GraphInvalid as exc:
                raise InvalidInput(
                    f"the coordination's template graph is invalid: {exc.message}"
                ) from None
        else:
            graph = None
        object.__setattr__(self, "_template", graph)
        if self.output_schema is not None:
            try:
                cls = jsonschema.validators.validator_for(self.output_schema)
                cls.check_schema(dict(self.output_schema))
            except jsonschema.exceptions.SchemaError as exc:
                raise InvalidInput(
                    f"the coordination's output_schema is not a JSON schema: {exc.message}"
                ) from None
            object.__setattr__(self, "_output", cls(self.output_schema))

    @property
    def template_graph(self) -> Graph | None:
        """The template as a ``Graph`` (structure checked; capabilities checked per run)."""
        return self._template

    def failure_policy(self, capability: str | None, declared: OnFailure | None) -> OnFailure:
        """The policy for a subtask of ``capability``: the workflow's per-capability one, else
        the capability's own (``declared``), else the workflow's."""
        if capability is not None and capability in self.on_failure_for:
            return self.on_failure_for[capability]
        return declared if declared is not None else self.on_failure

    def output(self, outputs: Mapping[str, Any], graph: Graph) -> Any:
        """The run's output from ``outputs`` (node id -> output), checked against the output
        schema; ``InvalidInput`` saying where it breaks it."""
        if self.aggregate is not None:
            value = self.aggregate(dict(outputs))
        else:
            ends = sinks_of(graph)
            value = (
                outputs.get(ends[0])
                if len(ends) == 1
                else {n: outputs[n] for n in ends if n in outputs}
            )
        if self._output is not None:
            error = jsonschema.exceptions.best_match(self._output.iter_errors(value))
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
                raise InvalidInput(
                    f"the aggregated output breaks the workflow's output_schema at {where}: "
                    f"{error.message[:200]}"
                )
        return value


def sinks_of(graph: Graph) -> list[str]:
    """The nodes no other node waits for, in graph order: what a graph produces."""
    needed = {d for n in graph.nodes for d in n.needs}
    return [n.id for n in graph.nodes if n.id not in needed]
