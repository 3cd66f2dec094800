"""An agent definition: instructions, tools, model and turn budget, addressed by name and version."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from autonomic.errors import InvalidInput, NotFound
from autonomic.tools.contract import Tool
from autonomic.tools.registry import ToolRegistry

if TYPE_CHECKING:
    from autonomic.engine.planning import Planning
    from autonomic.governance.gate import Gate
    from autonomic.governance.policy.workflow import Workflow
    from autonomic.governance.runaway.budget import Budget


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
    planned before, else with ``planning.model`` (a small model; see ``autonomic.engine.planning``).
    ``None``: the agent starts acting at once."""
    registry: ToolRegistry = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_turns < 1:
            raise InvalidInput(f"agent {self.name}: max_turns must be at least 1")
        object.__setattr__(self, "registry", ToolRegistry(self.tools))
        object.__setattr__(self, "read_only", frozenset(self.read_only))
        unknown = sorted(self.read_only - {t.name for t in self.tools})
        if unknown:
            raise InvalidInput(
                f"agent {self.name}: read_only names unknown tool(s) {', '.join(unknown)}",
                hint="list only tools the agent has",
            )
        if self.workflow is not None:
            self.workflow.check_tools({t.name for t in self.tools})

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
