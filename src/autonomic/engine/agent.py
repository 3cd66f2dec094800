"""An agent definition: instructions, tools, model and turn budget, addressed by name and version."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from autonomic.core.coordination import Coordination
from autonomic.core.run import Run
from autonomic.engine.fingerprint import computed_version
from autonomic.errors import InvalidInput, NotFound, PolicyFileError
from autonomic.governance.policy.tool_policy import apply_tool_policy
from autonomic.tools.capability import Capability
from autonomic.tools.contract import Tool
from autonomic.tools.delegate import DELEGATE_TOOL, delegate_tool
from autonomic.tools.emit import EMIT_TOOL, emit_tool
from autonomic.tools.registry import ToolRegistry

if TYPE_CHECKING:
    from autonomic.governance.gate import Gate
    from autonomic.governance.policy.risk import Policy
    from autonomic.governance.policy.workflow import Workflow
    from autonomic.governance.runaway.budget import Budget


_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")

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
    that resumes it later rebuilds the same agent; only a worker that registered that version
    drives it (docs/release-safety.md). ``version``: the author's name for this version
    (``"2024-06-rc1"``); ``None`` (the default) computes one, a short hash of the instructions,
    tools and policy (``engine/fingerprint.py``), so any change to them is a new version.
    """

    name: str
    instructions: str
    tools: Sequence[Tool] = ()
    model: str = "scripted:"
    version: str | None = None
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
    capabilities: Sequence[Capability] = ()
    """What other agents may delegate to this one (``tools/capability.py``): schemas, cost,
    latency and a fleet-wide concurrency limit each (docs/multi-agent.md)."""
    delegates_to: Sequence[str] = ()
    """Agents (by name) or capabilities (by name) this agent may hand subtasks to: it gets the
    ``delegate`` tool (``tools/delegate.py``); each child is a run of its own."""
    parallel_tools: bool = True
    """Act the idempotent calls a model proposes in one turn concurrently (their decisions,
    intents and results are journaled in the model's order all the same); ``False``: one after
    the other. Calls of non-idempotent tools always run one at a time, each write-ahead."""
    coordination: Coordination | None = None
    """Make this agent a coordinator (``core/coordination.py``, ``engine/coordinator.py``): it
    plans its task as a dependency graph of subtasks over the capabilities it may use
    (``delegates_to``, or every registered one when that is empty), hands the ready ones to
    child runs in parallel and aggregates their results; it calls no tools itself."""
    registry: ToolRegistry = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_turns < 1:
            raise InvalidInput(f"agent {self.name}: max_turns must be at least 1")
        if self.version is not None and (
            not isinstance(self.version, str) or not _VERSION.fullmatch(self.version)
        ):
            raise InvalidInput(
                f"agent {self.name}: version {self.version!r} is not a version name",
                hint="use letters, digits and . _ - + (at most 64), or leave it out to have "
                "one computed from the instructions, tools and policy",
            )
        object.__setattr__(self, "handles", tuple(self.handles))
        object.__setattr__(self, "emits", tuple(self.emits))
        object.__setattr__(self, "capabilities", tuple(self.capabilities))
        if isinstance(self.delegates_to, str):
            raise InvalidInput(
                f"agent {self.name}: delegates_to must be a list of names, "
                f"not the string {self.delegates_to!r}"
            )
        object.__setattr__(self, "delegates_to", tuple(self.delegates_to))
        names = [c.name for c in self.capabilities]
        if len(set(names)) != len(names):
            raise InvalidInput(f"agent {self.name}: a capability is declared twice ({names})")
        if self.delegates_to and not any(t.name == DELEGATE_TOOL for t in self.tools):
            object.__setattr__(self, "tools", (*self.tools, delegate_tool(self.delegates_to)))
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
        if self.version is None:
            object.__setattr__(self, "version", computed_version(self))

    @property
    def key(self) -> tuple[str, str]:
        """``(name, version)``: what a run pins and a worker registers."""
        return self.name, str(self.version)

    def with_tools(self, tools: Sequence[Tool]) -> Agent:
        """The same agent with other tool contracts (a policy file's overrides). It keeps its
        version: an operator's policy file governs every version alike, and must not strand the
        runs in flight by making their version disappear from the fleet."""
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
            capabilities=self.capabilities,
            delegates_to=self.delegates_to,
            coordination=self.coordination,
            parallel_tools=self.parallel_tools,
        )

    def capability(self, name: str) -> Capability | None:
        """The capability ``name`` this agent declares, if it does."""
        return next((c for c in self.capabilities if c.name == name), None)


class AgentRegistry:
    """Agents a process can run or resume, by name and version.

    Several versions of one agent may be registered side by side: runs pinned to each are
    driven by it. A new run without a version gets the name's *current* version: the one added
    last, unless it was added with ``current=False``."""

    def __init__(self, agents: Iterable[Agent] = ()) -> None:
        self._agents: dict[tuple[str, str], Agent] = {}
        self._current: dict[str, str] = {}
        for agent in agents:
            self.add(agent)

    def add(self, agent: Agent, *, current: bool = True) -> None:
        """Register ``agent`` (its version replaces an agent of the same name and version);
        ``current``: new runs of its name start on it (always, for the first of a name)."""
        name, version = agent.key
        self._agents[(name, version)] = agent
        if current or name not in self._current:
            self._current[name] = version

    def get(self, name: str, version: str | None = None) -> Agent:
        """The agent ``name`` at ``version`` (``None``: its current version)."""
        if name not in self._current:
            known = ", ".join(sorted(self._current)) or "none"
            raise NotFound(
                f"unknown agent {name!r} (known: {known})",
                hint="load it with --agent module:attribute or AUTONOMIC_AGENTS",
            )
        wanted = self._current[name] if version is None else version
        try:
            return self._agents[(name, wanted)]
        except KeyError:
            have = ", ".join(self.versions(name))
            raise NotFound(
                f"agent {name!r} has no version {wanted!r} here (registered: {have})",
                hint=f"run a worker that registers {name}@{wanted}, or move the run onto a "
                "registered version: autonomic resume RUN --force --agent-version VERSION",
            ) from None

    def has(self, name: str, version: str) -> bool:
        return (name, version) in self._agents

    def names(self) -> list[str]:
        return sorted(self._current)

    def versions(self, name: str) -> list[str]:
        """The versions of ``name`` registered here, sorted."""
        return sorted(v for n, v in self._agents if n == name)

    def keys(self) -> list[tuple[str, str]]:
        """Every ``(name, version)`` registered: what this process may drive."""
        return sorted(self._agents)

    def all(self) -> list[Agent]:
        """Every registered agent, every version."""
        return [self._agents[k] for k in self.keys()]


def govern_agents(registry: AgentRegistry, policy: Policy) -> AgentRegistry:
    """Every agent of ``registry`` with ``policy``'s tool overrides applied to the tools it has.

    A ``tools:`` entry that names no tool of any agent (and declares none) is an error naming
    its line: a typo must not silently leave a tool ungoverned."""
    known = {t.name for agent in registry.all() for t in agent.tools}
    for name, fields in policy.tools.items():
        if name not in known and "function" not in fields:
            raise PolicyFileError(
                policy.path,
                policy.tool_lines.get(name),
                f"policy for unknown tool {name!r}",
                hint="tools of the loaded agents: " + (", ".join(sorted(known)) or "none"),
            )
    governed = AgentRegistry()
    for agent in registry.all():
        mine = {k: v for k, v in policy.tools.items() if k in {t.name for t in agent.tools}}
        tools = apply_tool_policy(
            agent.tools,
            mine,
            path=policy.path,
            lines=policy.tool_lines,
        )
        current = registry.get(agent.name).version == agent.version
        governed.add(agent.with_tools(tools) if mine else agent, current=current)
    return governed
