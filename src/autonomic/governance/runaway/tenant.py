"""Per-tenant daily budgets, shared by every worker through an atomic ``Counters`` port.

``TenantLedger.reserve(action)`` is the async half of the pre-action check (the pure half is
``Guards.check``): it reserves the action's estimate against the tenant's counters for the current
UTC day, atomically, and answers with a ``Verdict`` — SUSPEND with the limit, the usage and the
estimate when a limit would be passed. After the call, ``settle`` replaces the estimate by what was
really used. Counters expire at the end of the UTC day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from autonomic.errors import InvalidInput
from autonomic.governance.action import ActionKind, ProposedAction
from autonomic.governance.decision import Decision, Finding, Verdict
from autonomic.ports.counters import Counters


@dataclass(frozen=True, slots=True)
class TenantBudget:
    """Daily limits for one tenant; ``None`` means unlimited."""

    turns: int | None = None
    tokens: int | None = None
    cost: float | None = None
    tool_calls: int | None = None

    def limits(self) -> dict[str, float]:
        return {
            name: float(value)
            for name in ("turns", "tokens", "cost", "tool_calls")
            if (value := getattr(self, name)) is not None
        }


def day_window(now: float) -> tuple[str, float]:
    """The UTC day of ``now`` (``YYYY-MM-DD``) and the epoch second at which it ends."""
    day = dt.datetime.fromtimestamp(now, dt.UTC).date()
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
    return day.isoformat(), end.timestamp()


def _amounts(action: ProposedAction) -> dict[str, float]:
    est = action.estimate
    amounts = {"tokens": float(est.tokens), "cost": est.cost}
    if action.kind is ActionKind.MODEL_CALL:
        amounts["turns"] = 1.0
    elif action.kind is ActionKind.TOOL_CALL:
        amounts["tool_calls"] = 1.0
    return amounts


class TenantLedger:
    """Reserves and settles each action's usage against its tenant's daily budget."""

    def __init__(
        self,
        counters: Counters,
        budgets: Mapping[str, TenantBudget],
        *,
        default: TenantBudget | None = None,
        prefix: str = "autonomic:budget",
    ) -> None:
        if not prefix.replace(":", "").strip():
            raise InvalidInput("tenant ledger: empty key prefix", hint="use autonomic:budget")
        self.counters = counters
        self.budgets = dict(budgets)
        self.default = default or TenantBudget()
        self.prefix = prefix

    def key(self, tenant: str, now: float) -> tuple[str, float]:
        day, end = day_window(now)
        return f"{self.prefix}:{tenant}:{day}", end

    async def reserve(self, action: ProposedAction) -> Decision:
        """Reserve the estimate, or answer SUSPEND naming the limit, usage and estimate."""
        budget = self.budgets.get(action.tenant, self.default)
        key, end = self.key(action.tenant, action.now)
        amounts = _amounts(action)
        limits = {k: v for k, v in budget.limits().items() if k in amounts}
        result = await self.counters.reserve(key, amounts, limits, expires_at=end)
        if result.granted:
            return Decision.of_findings((), risk=action.risk)
        findings = [
            Finding(
                "tenant_budget",
                f"tenant_budget.{name}",
                Verdict.SUSPEND,
                f"tenant {action.tenant}: daily {name} budget {limits[name]:g} would be passed "
                f"({result.used.get(name, 0.0):g} used today + {amounts[name]:g} estimated); "
                "raise the tenant's daily budget or resume the run tomorrow",
                {
                    "tenant": action.tenant,
                    "day": key.rsplit(":", 1)[-1],
                    "limit": limits[name],
                    "used": result.used.get(name, 0.0),
                    "estimate": amounts[name],
                },
            )
            for name in result.exceeded
        ]
        return Decision.of_findings(findings, risk=action.risk)

    async def settle(self, action: ProposedAction, *, tokens: int, cost: float) -> dict[str, float]:
        """Replace the reserved estimate by the real usage (the difference may be negative)."""
        key, end = self.key(action.tenant, action.now)
        delta = {
            "tokens": float(tokens - action.estimate.tokens),
            "cost": cost - action.estimate.cost,
        }
        return await self.counters.adjust(key, delta, expires_at=end)
