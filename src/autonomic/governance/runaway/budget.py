"""Run budgets: turns, tokens, cost, wall-clock time and calls per tool, checked before acting.

The check adds the action's *estimate* to what the run has used and suspends if the sum would pass
a limit. So a run stops before the call that would overrun, not after it, and never exceeds a
token or cost budget by more than the error of one call's estimate. Exceeding a budget suspends
(never fails) the run: a human extends the budget and resumes it. Per-tenant daily budgets live in
``tenant.py`` because they are shared between workers and need an atomic counter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autonomic.core.state import RunState
from autonomic.errors import InvalidInput
from autonomic.governance.action import ActionKind, ProposedAction
from autonomic.governance.decision import Finding, Verdict
from autonomic.governance.runaway.state import GuardState


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits for one run; ``None`` means unlimited.

    Args:
        turns: model calls.
        tokens: prompt + completion tokens over all model calls.
        cost: money over all calls (the gateway's currency, usually USD).
        wall_seconds: time since the run started.
        tool_calls: calls per tool name; ``"*"`` limits every tool not named.
    """

    turns: int | None = None
    tokens: int | None = None
    cost: float | None = None
    wall_seconds: float | None = None
    tool_calls: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("turns", "tokens", "cost", "wall_seconds"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InvalidInput(
                    f"budget: {name} must be >= 0, got {value}",
                    hint="leave it unset (None) for no limit",
                )
        for tool, limit in self.tool_calls.items():
            if limit < 0:
                raise InvalidInput(f"budget: tool_calls[{tool!r}] must be >= 0, got {limit}")

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Budget:
        """From configuration (YAML/JSON); unknown keys are an error that names them."""
        known = {"turns", "tokens", "cost", "wall_seconds", "tool_calls"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInput(
                f"budget: unknown key(s) {', '.join(unknown)}",
                hint=f"known keys are {', '.join(sorted(known))}",
            )
        try:
            return Budget(
                turns=None if data.get("turns") is None else int(data["turns"]),
                tokens=None if data.get("tokens") is None else int(data["tokens"]),
                cost=None if data.get("cost") is None else float(data["cost"]),
                wall_seconds=None
                if data.get("wall_seconds") is None
                else float(data["wall_seconds"]),
                tool_calls={str(k): int(v) for k, v in dict(data.get("tool_calls") or {}).items()},
            )
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"budget: {exc}", hint="limits are numbers") from None


def _over(what: str, limit: float, used: float, estimate: float, unit: str, knob: str) -> Finding:
    return Finding(
        check="budget",
        code=f"budget.{what}",
        verdict=Verdict.SUSPEND,
        reason=(
            f"{what.replace('_', ' ')} budget: {used:g}{unit} used + {estimate:g}{unit} "
            f"estimated would pass the limit of {limit:g}{unit}; "
            f"raise {knob} and resume the run"
        ),
        evidence={"limit": limit, "used": used, "estimate": estimate},
    )


class BudgetGuard:
    """Suspends an action that would take the run past one of its ``Budget`` limits."""

    name = "budget"

    def __init__(self, budget: Budget) -> None:
        self.budget = budget

    def check(self, action: ProposedAction, state: GuardState) -> list[Finding]:
        b = self.budget
        found: list[Finding] = []
        est = action.estimate
        if b.wall_seconds is not None and state.started_at is not None and action.now:
            elapsed = action.now - state.started_at
            if elapsed > b.wall_seconds:
                found.append(
                    _over("wall_clock", b.wall_seconds, round(elapsed, 3), 0, "s", "wall_seconds")
                )
        if action.kind is ActionKind.MODEL_CALL and b.turns is not None and state.turns >= b.turns:
            found.append(_over("turns", b.turns, state.turns, 1, "", "turns"))
        if b.tokens is not None and state.tokens + est.tokens > b.tokens:
            found.append(_over("tokens", b.tokens, state.tokens, est.tokens, "", "tokens"))
        if b.cost is not None and state.cost + est.cost > b.cost:
            found.append(_over("cost", b.cost, round(state.cost, 6), est.cost, "", "cost"))
        if action.kind is ActionKind.TOOL_CALL:
            limit = b.tool_calls.get(action.tool, b.tool_calls.get("*"))
            used = state.tool_calls.get(action.tool, 0)
            if limit is not None and used >= limit:
                finding = _over("tool_calls", limit, used, 1, "", f"tool_calls[{action.tool!r}]")
                found.append(
                    Finding(
                        finding.check,
                        finding.code,
                        finding.verdict,
                        f"{action.tool}: {finding.reason}",
                        {**finding.evidence, "tool": action.tool},
                    )
                )
        return found


def pinned_budget(agent: Budget | None, override: Any) -> dict[str, Any]:
    """The budget a run pins: the agent's, overridden key by key by the run's ``budget`` mapping.
    Validated here (unknown keys, negative or non-numeric limits), at the entry point."""
    base: dict[str, Any] = {}
    if agent is not None:
        base = {
            "turns": agent.turns,
            "tokens": agent.tokens,
            "cost": agent.cost,
            "wall_seconds": agent.wall_seconds,
            "tool_calls": dict(agent.tool_calls) or None,
        }
    if override is not None and not isinstance(override, Mapping):
        raise InvalidInput(
            f"budget: expected a mapping of limits, got {type(override).__name__}",
            hint='e.g. metadata={"budget": {"tokens": 20000, "tool_calls": {"cleanup": 2}}}',
        )
    merged = {**base, **dict(override or {})}
    Budget.from_dict(merged)  # raises InvalidInput naming what is wrong
    return {k: v for k, v in merged.items() if v is not None}


UNLIMITED = Budget()
"""The budget of a run that pinned none: no limit at all (``run_budget`` returns this object)."""
_PARSED: dict[int, tuple[Mapping[str, Any], dict[str, Any], Budget]] = {}
"""Parsed budgets by the identity of the run state's dict (kept, so its id is not reused) and
checked equal to a copy, so a dict changed in place is parsed again: asked twice per step."""


def run_budget(state: RunState) -> Budget:
    """The run's pinned budget (validated when the run started or was reopened)."""
    data = state.budget
    if not data:
        return UNLIMITED
    cached = _PARSED.get(id(data))
    if cached is not None and cached[0] is data and cached[1] == data:
        return cached[2]
    budget = Budget.from_dict(data)
    if len(_PARSED) >= 1024:
        _PARSED.clear()
    _PARSED[id(data)] = (
        data,
        {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()},
        budget,
    )
    return budget
