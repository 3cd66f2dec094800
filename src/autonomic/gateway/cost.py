"""Cost accounting: what each call cost, summed per run and per tenant, and a pre-call estimate.

The ledger is a plain object the engine feeds (or the gateway feeds itself when a call carries a
run id / tenant in its ``CallContext``). It holds no I/O: the journal stays the source of truth,
and a ledger can be rebuilt by folding the ``cost_usd`` and usage of recorded model responses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from autonomic.core.messages import Usage


@dataclass(slots=True)
class Spend:
    """Calls, tokens and dollars accumulated for one run, tenant or provider."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, usage: Usage, cost_usd: float) -> None:
        self.calls += 1
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cost_usd += cost_usd

    def to_dict(self) -> dict[str, float | int]:
        return {
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 6),
        }


@dataclass(slots=True)
class CostLedger:
    """Spend per run, per tenant and per provider."""

    runs: dict[str, Spend] = field(default_factory=dict)
    tenants: dict[str, Spend] = field(default_factory=dict)
    providers: dict[str, Spend] = field(default_factory=dict)

    def record(
        self,
        *,
        provider: str,
        usage: Usage,
        cost_usd: float,
        run_id: str | None = None,
        tenant: str | None = None,
    ) -> None:
        """Add one call's usage and cost to its run, tenant and provider."""
        self.providers.setdefault(provider, Spend()).add(usage, cost_usd)
        if run_id is not None:
            self.runs.setdefault(run_id, Spend()).add(usage, cost_usd)
        if tenant is not None:
            self.tenants.setdefault(tenant, Spend()).add(usage, cost_usd)

    def run(self, run_id: str) -> Spend:
        return self.runs.get(run_id, Spend())

    def tenant(self, tenant: str) -> Spend:
        return self.tenants.get(tenant, Spend())


class Estimate(NamedTuple):
    """Before a call: prompt tokens and the most it can cost on any provider it may use
    (prompt plus each provider's output cap, at that provider's prices)."""

    input_tokens: int
    max_cost_usd: float
