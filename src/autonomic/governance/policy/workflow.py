"""State-machine workflows: the agent decides *how* within a state, the workflow decides *where*.

A workflow has states; each state allows some tools and has exits to other states, optionally
guarded by a condition and by a required approval; some states are final (the run may only finish
there). Invariants - deterministic predicates over the run state - are checked at every transition.

The workflow is an action gate (``WorkflowGate``), first in the chain:

* a tool of the current state: no objection;
* a tool of a state one exit away: the call moves the workflow there, if the exit's condition
  holds and every invariant holds in the new state - else the call is refused (``BLOCK``) and no
  transition happens; an exit that requires approval makes the call wait for a human first;
* any other tool: a security violation - journaled, refused (0 executions), the run SUSPENDED.

Workflows are written in Python (``Workflow``, ``State``, ``Exit``, ``Invariant``) or YAML::

    workflow: reconciliation
    start: gather
    states:
      gather:
        tools: [sql_query]
        exits:
          - to: compute
            when: calls.sql_query >= 2
      compute:
        tools: [compute_differences]
        exits: [{to: adjust}, {to: report}]
      adjust:
        tools: [post_adjustment]
        exits: [{to: report}]
      report:
        tools: [file_report]
        final: true
    invariants:
      - name: adjust-after-compare
        check: state != 'adjust' or calls.compute_differences >= 1

``autonomic workflow check FILE`` checks one offline: unknown states and tools, unreachable
states, states with no exit that are not final.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autonomic.core.canonical import canonical_json
from autonomic.errors import InvalidInput, PolicyFileError
from autonomic.governance.action import ProposedAction
from autonomic.governance.decision import Decision, Verdict
from autonomic.governance.policy.expressions import Expression
from autonomic.governance.policy.source import Node, Source, line_of, load_yaml, read_file

Predicate = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class Exit:
    to: str
    when: Expression | None = None
    approval: bool = False
    line: int | None = None


@dataclass(frozen=True)
class State:
    name: str
    tools: frozenset[str] = frozenset()
    exits: tuple[Exit, ...] = ()
    final: bool = False
    line: int | None = None


@dataclass(frozen=True)
class Invariant:
    """A named predicate over the run state; an ``Expression`` or a Python callable."""

    name: str
    check: Expression | Predicate
    line: int | None = None

    def holds(self, context: Mapping[str, Any]) -> bool:
        try:
            return bool(self.check(context))
        except InvalidInput:
            return False  # an invariant that cannot be evaluated does not hold: fail closed

    @property
    def text(self) -> str:
        return self.check.text if isinstance(self.check, Expression) else self.name


@dataclass(frozen=True)
class Problem:
    line: int | None
    message: str


@dataclass(frozen=True)
class Workflow:
    name: str
    start: str
    states: tuple[State, ...]
    invariants: tuple[Invariant, ...] = ()
    source: str = "<python>"
    _by_name: dict[str, State] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, State] = {}
        for state in self.states:
            if state.name in by_name:
                raise PolicyFileError(
                    self.source, state.line, f"state {state.name!r} is defined twice"
                )
            by_name[state.name] = state
        object.__setattr__(self, "_by_name", by_name)
        if self.start not in by_name:
            raise PolicyFileError(
                self.source,
                None,
                f"workflow {self.name}: start state {self.start!r} is not defined",
                hint="states: " + ", ".join(by_name),
            )
        for state in self.states:
            for ex in state.exits:
                if ex.to not in by_name:
                    raise PolicyFileError(
                        self.source,
                        ex.line or state.line,
                        f"state {state.name}: exit to unknown state {ex.to!r}",
                        hint="states: " + ", ".join(by_name),
                    )

    def state(self, name: str | None) -> State:
        return self._by_name[name or self.start]

    def pin(self) -> dict[str, Any]:
        """What a run records at start: the workflow's name, start state and a digest."""
        shape = {
            s.name: {
                "tools": sorted(s.tools),
                "exits": [[e.to, e.when.text if e.when else None, e.approval] for e in s.exits],
                "final": s.final,
            }
            for s in self.states
        }
        text = canonical_json(
            {"start": self.start, "states": shape, "invariants": [i.text for i in self.invariants]}
        )
        return {
            "name": self.name,
            "start": self.start,
            "digest": hashlib.sha256(text.encode()).hexdigest()[:16],
        }

    def gate(self) -> WorkflowGate:
        return WorkflowGate(self)

    def final_states(self) -> list[str]:
        return [s.name for s in self.states if s.final]

    def may_finish(self, state: str | None) -> bool:
        return self.state(state).final

    def check_tools(self, known: set[str]) -> None:
        """Raise if a state allows a tool the agent does not have."""
        for problem in self.problems(known):
            if problem.message.startswith("unknown tool"):
                raise PolicyFileError(self.source, problem.line, problem.message)

    def problems(self, known_tools: Iterable[str] | None = None) -> list[Problem]:
        """What ``autonomic workflow check`` reports."""
        found: list[Problem] = []
        reachable = {self.start}
        frontier = [self.start]
        while frontier:
            for ex in self._by_name[frontier.pop()].exits:
                if ex.to not in reachable:
                    reachable.add(ex.to)
                    frontier.append(ex.to)
        for state in self.states:
            if state.name not in reachable:
                found.append(
                    Problem(state.line, f"state {state.name} is unreachable from {self.start}")
                )
            if not state.exits and not state.final:
                found.append(
                    Problem(
                        state.line,
                        f"state {state.name} has no exit and is not final: a run there can never finish",
                    )
                )
        if not self.final_states():
            found.append(Problem(None, "no state is final: no run can finish"))
        if known_tools is not None:
            known = set(known_tools)
            for state in self.states:
                for name in sorted(state.tools - known):
                    found.append(
                        Problem(
                            state.line,
                            f"unknown tool {name!r} in state {state.name} (known: {', '.join(sorted(known))})",
                        )
                    )
        return found

    @staticmethod
    def from_file(path: str | Path) -> Workflow:
        name, data = read_file(path)
        return parse_workflow(data, name)

    @staticmethod
    def from_text(text: str, path: str = "<workflow>") -> Workflow:
        return parse_workflow(load_yaml(text, path), path)


class WorkflowGate:
    """The workflow as an action gate. See the module docstring."""

    name = "workflow"

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow

    async def check(self, action: ProposedAction) -> Decision | None:
        wf = self.workflow
        _, state, contract = action.in_run()
        current = wf.state(state.workflow)
        tool = contract.name
        if tool in current.tools:
            return None
        exits = [e for e in current.exits if tool in wf.state(e.to).tools]
        if not exits:
            return Decision(
                Verdict.SUSPEND,
                f"tool {tool} is not allowed in state {current.name} of workflow {wf.name} "
                f"(allowed: {', '.join(sorted(current.tools)) or 'none'})",
                evidence={"state": current.name, "allowed": sorted(current.tools)},
            )
        context = action.context()
        open_exits = [e for e in exits if e.when is None or _true(e.when, context)]
        if not open_exits:
            conditions = "; ".join(
                f"{current.name} -> {e.to}: {e.when.text if e.when else ''}" for e in exits
            )
            return Decision(
                Verdict.BLOCK,
                f"tool {tool} belongs to a later state and its exit is not open yet ({conditions})",
                evidence={"state": current.name},
            )
        chosen = open_exits[0]
        after = dict(context) | {"state": chosen.to, "from": current.name, "to": chosen.to}
        broken = [inv for inv in wf.invariants if not inv.holds(after)]
        if broken:
            return Decision(
                Verdict.BLOCK,
                f"moving {current.name} -> {chosen.to} would violate invariant "
                + ", ".join(f"{i.name} ({i.text})" for i in broken)
                + "; the transition was not made",
                evidence={
                    "state": current.name,
                    "to": chosen.to,
                    "invariants": [i.name for i in broken],
                },
            )
        if chosen.approval:
            return Decision(
                Verdict.APPROVE,
                f"moving {current.name} -> {chosen.to} requires approval",
                evidence={"state": current.name, "to": chosen.to},
                workflow_to=chosen.to,
            )
        return Decision(
            Verdict.ALLOW,
            f"moves {current.name} -> {chosen.to}",
            evidence={"state": current.name, "to": chosen.to},
            workflow_to=chosen.to,
        )


def _true(expression: Expression, context: Mapping[str, Any]) -> bool:
    try:
        return bool(expression(context))
    except InvalidInput:
        return False


# -- YAML -----------------------------------------------------------------------------------------


def parse_workflow(data: Any, path: str) -> Workflow:
    src = Source(path)
    top = src.mapping(data, None, None, "a workflow file")
    src.check_keys(top, {"workflow", "start", "states", "invariants"}, "the workflow file")
    for key in ("workflow", "start", "states"):
        if key not in top:
            raise src.error(
                top,
                None,
                f"missing {key!r}",
                "a workflow needs workflow (its name), start and states",
            )
    states_node = src.mapping(top["states"], top, "states", "states")
    states = [_state(src, name, states_node[name], states_node) for name in states_node]
    invariants = _invariants(src, top.get("invariants", []), top)
    if str(top["start"]) not in states_node:
        raise src.error(
            top,
            "start",
            f"start state {top['start']!r} is not defined",
            "states: " + ", ".join(states_node),
        )
    return Workflow(
        name=str(top["workflow"]),
        start=str(top["start"]),
        states=tuple(states),
        invariants=tuple(invariants),
        source=path,
    )


def _state(src: Source, name: str, value: Any, parent: Node) -> State:
    if value is None:
        value = Node()
        value.line = line_of(parent, name) or 0
        value.key_lines = {}
    node = src.mapping(value, parent, name, f"state {name}")
    src.check_keys(node, {"tools", "exits", "final"}, f"state {name}")
    tools = node.get("tools", [])
    if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
        raise src.error(node, "tools", f"state {name}: tools must be a list of tool names")
    exits_data = node.get("exits", [])
    if not isinstance(exits_data, list):
        raise src.error(
            node, "exits", f"state {name}: exits must be a list", "write exits: [{to: next}]"
        )
    exits: list[Exit] = []
    for item in exits_data:
        if isinstance(item, str):
            exits.append(Exit(to=item, line=line_of(node, "exits")))
            continue
        ex = src.mapping(item, node, "exits", f"an exit of state {name}")
        src.check_keys(ex, {"to", "when", "approval"}, f"an exit of state {name}")
        if "to" not in ex:
            raise src.error(ex, None, f"an exit of state {name} has no 'to'", "write - to: STATE")
        when = None
        if "when" in ex:
            try:
                when = Expression(str(ex["when"]))
            except InvalidInput as exc:
                raise src.error(ex, "when", exc.message, exc.hint) from None
        approval = ex.get("approval", False)
        if not isinstance(approval, bool):
            raise src.error(ex, "approval", "approval must be true or false")
        exits.append(Exit(to=str(ex["to"]), when=when, approval=approval, line=line_of(ex)))
    final = node.get("final", False)
    if not isinstance(final, bool):
        raise src.error(node, "final", "final must be true or false")
    return State(
        name=name,
        tools=frozenset(tools),
        exits=tuple(exits),
        final=final,
        line=line_of(parent, name),
    )


def _invariants(src: Source, data: Any, top: Node) -> list[Invariant]:
    if not isinstance(data, list):
        raise src.error(
            top, "invariants", "invariants must be a list", "write - name: ... check: ..."
        )
    found: list[Invariant] = []
    for i, item in enumerate(data, start=1):
        node = src.mapping(item, top, "invariants", f"invariant {i}")
        src.check_keys(node, {"name", "check"}, f"invariant {i}")
        if "check" not in node:
            raise src.error(node, None, f"invariant {i} has no check", "write check: EXPRESSION")
        try:
            check = Expression(str(node["check"]))
        except InvalidInput as exc:
            raise src.error(node, "check", exc.message, exc.hint) from None
        found.append(
            Invariant(name=str(node.get("name", f"invariant-{i}")), check=check, line=line_of(node))
        )
    return found


def workflow_of(states: Sequence[State], **kwargs: Any) -> Workflow:
    """Python shorthand: ``workflow_of([State(...), ...], name=..., start=...)``."""
    return Workflow(states=tuple(states), **kwargs)
