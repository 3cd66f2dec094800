"""Routing a hand-off by capability: the cheapest, then fastest agent offering it, skipping agents
whose circuit is open; refusals say why. And agent health read from runs."""

from __future__ import annotations

from typing import Any

import pytest

from autonomic.core.run import Lease, Run, RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.delegation import Delegation
from autonomic.engine.health import health, percentile
from autonomic.errors import InvalidInput
from autonomic.ports.breakers import BreakerState
from autonomic.tools.capability import Capability


class Circuits:
    """Breaker states by key (what routing asks a real ``Circuits``)."""

    def __init__(self, open_: set[str]) -> None:
        self.open = open_

    def state(self, key: str) -> BreakerState:
        return BreakerState(key, "open" if key in self.open else "closed", 0, 30.0)


def _delegation(open_: set[str] = frozenset()) -> tuple[Delegation, Agent]:  # type: ignore[assignment]
    review = "code.review"
    agents = [
        Agent("cheap", "x", capabilities=[Capability(review, cost=0.01, latency=9)]),
        Agent("fast", "x", capabilities=[Capability(review, cost=0.05, latency=1)]),
        Agent("pricey", "x", capabilities=[Capability(review, cost=0.05, latency=5)]),
    ]
    boss = Agent("boss", "x", delegates_to=[review, "cheap"])

    async def start(*args: Any, **kwargs: Any) -> Run:
        raise AssertionError("routing creates nothing")

    registry = AgentRegistry([*agents, boss])
    return Delegation(None, registry, start, Circuits(set(open_))), boss  # type: ignore[arg-type]


def test_routing_picks_the_cheapest_then_fastest_and_skips_open_circuits() -> None:
    delegation, boss = _delegation()
    assert delegation.route(boss, {"to": "code.review", "task": "a.py"})["agent"] == "cheap"
    delegation, boss = _delegation({"agent:cheap"})
    routed = delegation.route(boss, {"to": "code.review", "task": "a.py"})
    assert routed["agent"] == "fast"
    assert routed["capability"] == "code.review"


def test_routing_refuses_when_every_agent_with_the_capability_is_open() -> None:
    delegation, boss = _delegation({"agent:cheap", "agent:fast", "agent:pricey"})
    with pytest.raises(InvalidInput, match="open circuit"):
        delegation.route(boss, {"to": "code.review", "task": "a.py"})


def _run(agent: str, status: RunStatus, seconds: float, capability: str | None = None) -> Run:
    return Run(
        id="run_" + "0" * 32,
        agent=agent,
        agent_version="1",
        model="scripted:",
        status=status,
        version=1,
        lease=Lease(None, 0.0, 0),
        created_at=100.0,
        updated_at=100.0 + seconds,
        capability=capability,
    )


def test_health_counts_success_latency_and_in_flight_per_agent_and_capability() -> None:
    runs = [
        _run("unit", RunStatus.COMPLETED, 1.0, "work"),
        _run("unit", RunStatus.COMPLETED, 3.0, "work"),
        _run("unit", RunStatus.FAILED, 2.0, "work"),
        _run("unit", RunStatus.SUSPENDED, 10.0, "work"),
        _run("unit", RunStatus.RUNNING, 0.0, "work"),
        _run("boss", RunStatus.WAITING_FOR_CHILD, 0.0),
    ]
    rows = {(h.agent, h.capability): h for h in health(runs, breakers={"unit": "open"})}
    unit = rows[("unit", "work")]
    assert (unit.runs, unit.ended, unit.succeeded, unit.in_flight) == (5, 4, 2, 1)
    assert unit.success_rate == 0.5
    assert unit.p50 == 2.0
    assert unit.p95 == 10.0
    assert unit.breaker == "open"
    assert rows[("boss", "-")].success_rate is None
    assert rows[("boss", "-")].in_flight == 1


def test_percentiles_by_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.95) == 5.0
    assert percentile([float(i) for i in range(1, 101)], 0.95) == 95.0
