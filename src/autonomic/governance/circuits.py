"""Circuit breakers at tool, agent and workflow level, wired into the engine.

A tool whose calls keep failing, an agent whose runs keep failing, or a workflow whose runs keep
being suspended (invariant or allow-list violations) is a dependency that is broken *now*: calling
it again mostly burns budget and time. ``Circuits`` keeps one breaker per key (``tool:NAME``,
``agent:NAME``, ``workflow:NAME``) over ``autonomic.governance.breakers.Breakers`` (purgatory):

* **tools** - only tools whose contract declares ``breaker=BreakerThresholds(...)``. The breaker
  opens after ``min_calls`` *consecutive* failed calls (a raise or a timeout after the contract's
  retries; a bad argument or an invalid output says nothing about the tool's health), stays open
  ``open_seconds``, then lets one probe call through (half-open) and closes on its success.
  purgatory counts consecutive failures, so ``failure_rate``/``window`` are read as
  ``failure_rate=1.0`` over the last ``min_calls`` calls: a stricter, simpler rule.
  While open, the ``breaker`` gate refuses the call *before its intent*: the refusal is a journaled
  ``decision`` (``BLOCK``: the model is told why and may go on; or ``SUSPEND`` for an idempotent
  tool when ``idempotent="suspend"``: the run waits, as a row, until an operator resumes it).
* **agents** - a new run of an agent whose last ``agent_threshold`` runs in this process ended
  FAILED is suspended at its first step with the circuit's state in the transition entry.
* **workflows** - likewise for an agent with a workflow whose last ``workflow_threshold`` runs ended
  SUSPENDED or FAILED.

**Replay safety.** Breaker state lives in memory and changes with time, so nothing is decided from
it twice: a refusal is journaled (the ``decision`` entry, or the transition) and replayed from the
journal on resume; an allow is not journaled, which is safe because nothing has happened yet when
the gate is asked - a call whose intent is journaled is finished by recovery without asking again.

**Scope.** Breakers are per process (per ``Engine``): ``snapshot()`` is this worker's view; each
worker of a fleet learns of a broken dependency from its own calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

from autonomic.core.entries import ToolResult
from autonomic.core.run import RunStatus
from autonomic.errors import CircuitOpen, InvalidInput
from autonomic.governance.action import ProposedAction
from autonomic.governance.breakers import Breakers, BreakerState
from autonomic.governance.decision import Decision, Verdict
from autonomic.tools.contract import Tool

GATE_NAME = "breaker"

OnOpen = Literal["block", "suspend"]


class _Failed(Exception):
    """Marks an outcome the breaker counts (a failed call, a failed run); never escapes."""


def _counts(exc: BaseException) -> bool:
    return isinstance(exc, _Failed)


def tool_key(name: str) -> str:
    return f"tool:{name}"


def agent_key(name: str) -> str:
    return f"agent:{name}"


def workflow_key(name: str) -> str:
    return f"workflow:{name}"


@dataclass(frozen=True, slots=True)
class RunLimits:
    """Breaker settings for agents or workflows: consecutive bad runs, then seconds open."""

    threshold: int
    reset_after: float

    def __post_init__(self) -> None:
        if self.threshold < 1 or self.reset_after <= 0:
            raise InvalidInput(
                f"circuit: threshold must be >= 1 and reset_after > 0, got {self.threshold}, "
                f"{self.reset_after}",
                hint="e.g. Circuits(agents=RunLimits(threshold=5, reset_after=60))",
            )


class Circuits:
    """The engine's breakers (``Engine(..., circuits=Circuits(...))``).

    Args:
        agents: when an agent's circuit opens (``None``: no agent-level breaker).
        workflows: when a workflow's circuit opens (``None``: no workflow-level breaker).
        idempotent: what an open tool breaker does to a call of an idempotent tool:
            ``"block"`` (refuse, the model goes on) or ``"suspend"`` (the run waits for an operator,
            who resumes it once the dependency is back). Other tools are always blocked.
    """

    def __init__(
        self,
        *,
        agents: RunLimits | None = None,
        workflows: RunLimits | None = None,
        idempotent: OnOpen = "block",
    ) -> None:
        if idempotent not in ("block", "suspend"):
            raise InvalidInput(
                f"circuit: idempotent must be 'block' or 'suspend', got {idempotent!r}"
            )
        self.agents = agents if agents is not None else RunLimits(5, 60.0)
        self.workflows = workflows if workflows is not None else RunLimits(3, 300.0)
        self.idempotent = idempotent
        self.tools = Breakers(counts=_counts)
        self._agents = Breakers(
            threshold=self.agents.threshold, reset_after=self.agents.reset_after, counts=_counts
        )
        self._workflows = Breakers(
            threshold=self.workflows.threshold,
            reset_after=self.workflows.reset_after,
            counts=_counts,
        )

    def _all(self) -> tuple[Breakers, ...]:
        return (self.tools, self._agents, self._workflows)

    def snapshot(self) -> dict[str, BreakerState]:
        """Every circuit used in this process, by key (``tool:``, ``agent:``, ``workflow:``)."""
        out: dict[str, BreakerState] = {}
        for breakers in self._all():
            out.update(breakers.snapshot())
        return dict(sorted(out.items()))

    def state(self, key: str) -> BreakerState:
        return self._breakers(key).state(key)

    def expire(self, key: str) -> None:
        """Let an open circuit's half-open probe through now (operator "try again now")."""
        self._breakers(key).expire(key)

    def _breakers(self, key: str) -> Breakers:
        kind = key.partition(":")[0]
        return {"tool": self.tools, "agent": self._agents}.get(kind, self._workflows)

    def gate(self) -> BreakerGate:
        return BreakerGate(self)

    async def call(
        self, tool: Tool, call_id: str, body: Callable[[], Awaitable[tuple[ToolResult, bool]]]
    ) -> tuple[ToolResult, bool]:
        """Run one tool call (``body`` returns its result and whether it failed for health
        reasons) under the tool's breaker; a call refused here (a probe already in flight) gets a
        ``circuit_open`` refusal, nothing executed."""
        limits = tool.breaker
        if limits is None:
            return await body()
        key = tool_key(tool.name)
        outcome: tuple[ToolResult, bool] | None = None
        try:
            async with self.tools.guard(
                key, threshold=limits.min_calls, reset_after=max(limits.open_seconds, 1e-3)
            ):
                outcome = await body()
                if outcome[1]:
                    raise _Failed
        except _Failed:
            pass
        except CircuitOpen as exc:
            refused = ToolResult.failed(
                call_id,
                tool.name,
                exc.code,
                f"{exc}; {exc.hint}; nothing was executed",
                refused=True,
            )
            return refused._replace(circuit=self.tools.state(key).to_dict()), False
        assert outcome is not None
        return outcome

    async def guard_run(
        self,
        agent: str,
        workflow: str | None,
        body: Callable[[], Awaitable[RunStatus]],
    ) -> BreakerState | None:
        """Drive a new run under its agent's (and workflow's) circuit: ``body`` drives it and
        returns the status it stopped in. A run that ends FAILED counts against its agent, one that
        ends SUSPENDED or FAILED against its workflow.

        Returns the open circuit that refused the run - ``body`` never ran, and the caller suspends
        the run with ``refusal(circuit)`` - else ``None``. Only a run that has not taken a step yet
        belongs here: a run resumed halfway is finished whatever its agent's health."""
        keys = [(self._agents, agent_key(agent))]
        if workflow is not None:
            keys.append((self._workflows, workflow_key(workflow)))
        for breakers, key in keys:
            if breakers.is_open(key):
                return breakers.state(key)
        wf_cm: AbstractAsyncContextManager[None] = (
            self._workflows.guard(workflow_key(workflow)) if workflow is not None else nullcontext()
        )
        status: RunStatus | None = None
        try:
            async with self._agents.guard(agent_key(agent)):
                try:
                    async with wf_cm:
                        status = await body()
                        if status in (RunStatus.SUSPENDED, RunStatus.FAILED):
                            raise _Failed
                except _Failed:
                    pass
                if status is RunStatus.FAILED:
                    raise _Failed
        except _Failed:
            pass
        except CircuitOpen as exc:  # a probe of this circuit is already running elsewhere
            if status is None:
                return self._breakers(exc.key).state(exc.key)
            raise
        return None


def refusal(circuit: BreakerState) -> tuple[str, dict[str, Any]]:
    """Why a new run was refused by ``circuit``, and the evidence for its transition."""
    kind = circuit.key.partition(":")[0]
    why = "runs failed" if kind == "agent" else "runs were suspended or failed"
    return (
        f"circuit {circuit.key} is {circuit.state.replace('_', '-')}: its last "
        f"{circuit.failures} {why}; new runs are refused for {circuit.retry_in:.0f}s more "
        "(resume this run with `autonomic resume RUN --force` once the cause is fixed)",
        {"circuit": circuit.to_dict()},
    )


class BreakerGate:
    """Refuses a call while its tool's circuit is open (or a half-open probe is in flight)."""

    name = GATE_NAME

    def __init__(self, circuits: Circuits) -> None:
        self.circuits = circuits

    async def check(self, action: ProposedAction) -> Decision | None:
        tool = action.contract
        if tool is None or tool.breaker is None:
            return None
        key = tool_key(tool.name)
        if not self.circuits.tools.is_open(key):
            return None
        state = self.circuits.tools.state(key)
        suspend = tool.idempotent and self.circuits.idempotent == "suspend"
        wait = (
            f"next probe in {state.retry_in:.1f}s"
            if state.state == "open"
            else "a probe call is in flight"
        )
        return Decision(
            Verdict.SUSPEND if suspend else Verdict.BLOCK,
            f"circuit {key} is {state.state.replace('_', '-')} after {state.failures} "
            f"consecutive failed calls; {wait}",
            gate=GATE_NAME,
            evidence={"code": "circuit_open", "circuit": state.to_dict()},
        )
