"""An agent definition: instructions, tools, model and turn budget, addressed by name and version."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from autonomic.core.run import Run
from autonomic.errors import InvalidInput, NotFound, PolicyFileError
from autonomic.governance.policy.tool_policy import apply_tool_policy
from autonomic.tools.contract import Tool
from autonomic.tools.emit import EMIT_TOOL, emit_tool
from autonomic.tools.registry import ToolRegistry

if TYPE_CHECKING:
    from autonomic.governance.gate import Gate
    from autonomic.governance.policy.risk import Policy
    from autonomic.governance.policy.workflow import Workflow
    from autonomic.governance.runaway.budget import Budget


PLANNING_INSTRUCTIONS = """You plan the work of an agent before it starts. Below are the agent's
instructions and tools, then the task as a pattern: values that vary between tasks of this kind
are placeholders (<n> a number, <date>, <text> a quoted value, <id>, <email>). Write a plan for
every task of this pattern: short imperative steps in order, naming the tool each step uses.
Keep placeholders as they are; never invent values. Answer with JSON only:
{"steps": ["first step", "second step"]} with at most {max_steps} steps."""

GRAPH_PLANNING_INSTRUCTIONS = """You plan the work of an agent before it starts. Below are the agent's
instructions and tools, then the task as a pattern: values that vary between tasks of this kind
are placeholders (<n> a number, <date>, <text> a quoted value, <id>, <email>). Write a plan for
every task of this pattern as a dependency graph: each step has an id, what to do, the tool it
uses, and the ids of the steps it needs first; steps that need nothing from each other may run at
the same time. Keep placeholders as they are; never invent values. Answer with JSON only:
{"steps": [{"id": "a", "do": "first step", "tool": "tool_name", "after": []},
{"id": "b", "do": "second step", "tool": "tool_name", "after": ["a"]}]} with at most {max_steps}
steps."""

SCORING_INSTRUCTIONS = """You judge plans an agent may follow. Below are the agent's instructions
and tools, the task as a pattern, and one candidate plan. Score how well the plan would do the
task: correct, complete, no unnecessary or risky steps, independent steps kept independent.
Answer with JSON only: {"score": a number from 0 to 10, "reason": "one sentence"}."""

PlanScorer: TypeAlias = Callable[[tuple[str, ...], Mapping[str, Any] | None], float]
"""Scores a candidate plan (its steps in order, and its graph when it is one): higher is better."""


@dataclass(frozen=True)
class Planning:
    """An agent's planning phase.

    Args:
        model: the model spec that plans (a small model, e.g. ``gateway:providers.yaml#small``);
            ``None`` plans with the agent's own model.
        cache_ttl: seconds a plan is reused for the same task pattern; ``None`` never caches
            (every run plans).
        max_steps: the longest plan accepted; a longer answer is rejected as nonsense.
        instructions: the planner's system prompt (``{max_steps}`` is filled in);
            ``GRAPH_PLANNING_INSTRUCTIONS`` asks for a dependency graph (a list is a chain, and
            both are always accepted).
        candidates: Tree-of-Thoughts: how many candidate plans to generate and score before
            one is committed (1: plan once, no scoring).
        scorer: a Python function that scores a candidate (``PlanScorer``); with neither it
            nor ``scorer_model``, candidates are scored by the planning model.
        scorer_model: the model spec that scores candidates (``SCORING_INSTRUCTIONS``).
    """

    model: str | None = None
    cache_ttl: float | None = 3600.0
    max_steps: int = 10
    instructions: str = PLANNING_INSTRUCTIONS
    candidates: int = 1
    scorer: PlanScorer | None = None
    scorer_model: str | None = None

    def __post_init__(self) -> None:
        if self.cache_ttl is not None and not self.cache_ttl > 0:
            raise InvalidInput(
                f"planning cache_ttl must be a positive number of seconds, got {self.cache_ttl}",
                hint="use cache_ttl=None to plan every run without the cache",
            )
        if not 1 <= self.max_steps <= 50:
            raise InvalidInput(f"planning max_steps must be 1 to 50, got {self.max_steps}")
        if not self.instructions.strip():
            raise InvalidInput("planning instructions are empty")
        if not 1 <= self.candidates <= 10:
            raise InvalidInput(f"planning candidates must be 1 to 10, got {self.candidates}")
        if self.scorer is not None and self.scorer_model is not None:
            raise InvalidInput(
                "planning has both a scorer function and a scorer_model",
                hint="give one: a function scores offline, a model scores with a call",
            )

    def pin(self, default_model: str) -> dict[str, Any]:
        """What a run records when it starts, so any worker plans it the same way."""
        pinned: dict[str, Any] = {
            "model": self.model or default_model,
            "cache_ttl": self.cache_ttl,
            "max_steps": self.max_steps,
            "instructions": self.instructions,
        }
        if self.candidates > 1:
            if self.scorer is not None:
                scorer = f"function:{getattr(self.scorer, '__qualname__', 'scorer')}"
            else:
                scorer = f"model:{self.scorer_model or pinned['model']}"
            pinned.update(candidates=self.candidates, scorer=scorer)
        return pinned


@dataclass(frozen=True)
class Agent:
    """What to run. ``model`` is a model spec (see ``autonomic.bootstrap.build_model``).

    A run records the agent's name, version, model and tool versions when it starts, so a worker
    that resumes it later rebuilds the same agent.
    """

    name: str
    instructions: str
    tools: Sequence[Tool] = ()
    model: str = "scripted:"
    version: str = "1"
    max_turns: int = 20
    workflow: Workflow | None = None
    """A state machine the agent's tool calls must follow (``autonomic.governance.policy.workflow``)."""
    gates: Sequence[Gate] = ()
    """The agent's own action gates (its risk policy, say), consulted after its workflow and
    before the engine's; they travel with the agent, so every worker that resumes it applies them."""
    budget: Budget | None = None
    """The run budget (turns, tokens, cost, wall clock, calls per tool); a run's
    ``metadata["budget"]`` overrides it key by key. Exceeding it suspends the run."""
    read_only: frozenset[str] = frozenset()
    """Names of tools that change nothing: the loop guard lets reads repeat more (polling). Tools
    not named here are treated as side-effecting (the stricter choice)."""
    planning: Planning | None = None
    """Plan before the first turn: from the plan cache when a task of the same pattern was
    planned before, else with ``planning.model`` (a small model; ``autonomic.engine.planning``).
    ``None``: the agent starts acting at once."""
    check: Callable[[Run], None] | None = None
    """Validates a run's input and metadata before every drive (the first and each resume): raise
    ``RunInputError`` saying what is missing or wrong and how to give it. The engine suspends the
    run with that one line - an operator gives what is missing and resumes it - instead of the
    bad input surfacing steps later as a ``TypeError`` in the agent's code."""
    expected_actions: frozenset[str] | None = None
    """The consequential tools the agent expects to call for its tasks: with a provenance policy
    on the engine, another consequential tool proposed after untrusted content entered the run
    needs approval (a run with a plan expects the tools its plan names as well). ``None``: the
    agent declares nothing (only a plan pins its actions)."""
    handles: Sequence[str] = ()
    """Event types this agent handles: a worker on a bus (``autonomic worker --bus``) starts a
    run of it for each such event, the event's ``data`` as its task (``engine/inbox.py``)."""
    emits: Sequence[str] = ()
    """Event types this agent may emit: it gets the ``emit_event`` tool (``tools/emit.py``)."""
    registry: ToolRegistry = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_turns < 1:
            raise InvalidInput(f"agent {self.name}: max_turns must be at least 1")
        object.__setattr__(self, "handles", tuple(self.handles))
        object.__setattr__(self, "emits", tuple(self.emits))
        if self.emits and not any(t.name == EMIT_TOOL for t in self.tools):
            object.__setattr__(self, "tools", (*self.tools, emit_tool(self.emits)))
        object.__setattr__(self, "registry", ToolRegistry(self.tools))
        object.__setattr__(self, "read_only", frozenset(self.read_only))
        unknown = sorted(self.read_only - {t.name for t in self.tools})
        if unknown:
            raise InvalidInput(
                f"agent {self.name}: read_only names unknown tool(s) {', '.join(unknown)}",
                hint="list only tools the agent has",
            )
        for t in self.tools:
            if t.compensate is None:
                continue
            undo = next((u for u in self.tools if u.name == t.compensate), None)
            if undo is None or not undo.idempotent:
                problem = "is not one of its tools" if undo is None else "is not idempotent"
                raise InvalidInput(
                    f"agent {self.name}: tool {t.name} is compensated by {t.compensate}, which "
                    f"{problem}",
                    hint="give the agent the compensating tool, declared idempotent=True (it is "
                    "called again with the same key after a crash)",
                )
        if self.workflow is not None:
            self.workflow.check_tools({t.name for t in self.tools})
        if self.expected_actions is not None:
            if isinstance(self.expected_actions, str):  # type: ignore[unreachable]
                raise InvalidInput(
                    f"agent {self.name}: expected_actions must be a list of tool names, "
                    f"not the string {self.expected_actions!r}"
                )
            expected = frozenset(self.expected_actions)
            object.__setattr__(self, "expected_actions", expected)
            missing = sorted(expected - {t.name for t in self.tools})
            if missing:
                raise InvalidInput(
                    f"agent {self.name}: expected_actions names unknown tool(s) "
                    f"{', '.join(missing)}",
                    hint="list only tools the agent has",
                )

    def with_tools(self, tools: Sequence[Tool]) -> Agent:
        """The same agent with other tool contracts (a policy file's overrides, a new version)."""
        return Agent(
            name=self.name,
            instructions=self.instructions,
            tools=tuple(tools),
            model=self.model,
            version=self.version,
            max_turns=self.max_turns,
            workflow=self.workflow,
            gates=self.gates,
            budget=self.budget,
            read_only=self.read_only & {t.name for t in tools},
            planning=self.planning,
            check=self.check,
            expected_actions=(
                self.expected_actions & {t.name for t in tools}
                if self.expected_actions is not None
                else None
            ),
            handles=self.handles,
            emits=self.emits,
        )


class AgentRegistry:
    """Agents a process can run or resume, by name."""

    def __init__(self, agents: Iterable[Agent] = ()) -> None:
        self._agents: dict[str, Agent] = {}
        for agent in agents:
            self.add(agent)

    def add(self, agent: Agent) -> None:
        self._agents[agent.name] = agent

    def get(self, name: str) -> Agent:
        try:
            return self._agents[name]
        except KeyError:
            known = ", ".join(sorted(self._agents)) or "none"
            raise NotFound(
                f"unknown agent {name!r} (known: {known})",
                hint="load it with --agent module:attribute or AUTONOMIC_AGENTS",
            ) from None

    def names(self) -> list[str]:
        return sorted(self._agents)


def govern_agents(registry: AgentRegistry, policy: Policy) -> AgentRegistry:
    """Every agent of ``registry`` with ``policy``'s tool overrides applied to the tools it has.

    A ``tools:`` entry that names no tool of any agent (and declares none) is an error naming
    its line: a typo must not silently leave a tool ungoverned."""
    known = {t.name for name in registry.names() for t in registry.get(name).tools}
    for name, fields in policy.tools.items():
        if name not in known and "function" not in fields:
            raise PolicyFileError(
                policy.path,
                policy.tool_lines.get(name),
                f"policy for unknown tool {name!r}",
                hint="tools of the loaded agents: " + (", ".join(sorted(known)) or "none"),
            )
    governed = AgentRegistry()
    for name in registry.names():
        agent = registry.get(name)
        mine = {k: v for k, v in policy.tools.items() if k in {t.name for t in agent.tools}}
        tools = apply_tool_policy(
            agent.tools,
            mine,
            path=policy.path,
            lines=policy.tool_lines,
        )
        governed.add(agent.with_tools(tools) if mine else agent)
    return governed
