"""Agent health: how each agent (and each capability it serves) has been doing lately.

Read from the runs themselves - their status and how long they took - so any process can tell,
and joined with the breaker state the caller knows (a worker's live circuits, or what the
journals recorded when a circuit refused something). Routing by capability
(``engine/delegation.py``) skips agents whose circuit is open; ``autonomic agents`` lists this.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from autonomic.core.run import Run, RunStatus

ANY = "-"
"""The capability column of runs not delegated for a capability (an agent's own runs)."""


@dataclass(frozen=True, slots=True)
class Health:
    """One agent (and capability) over its recent runs.

    Args:
        agent: the agent's name.
        capability: the capability its child runs served (``-``: runs of no capability).
        runs: recent runs counted.
        ended: of those, how many ended (completed, failed, cancelled) or suspended.
        succeeded: of those, how many completed.
        in_flight: running, pending or waiting now.
        p50: median seconds from creation to end of the ended runs (``None``: none ended).
        p95: 95th percentile of the same.
        breaker: the agent's circuit: ``closed``, ``open`` or ``half_open``.
    """

    agent: str
    capability: str
    runs: int
    ended: int
    succeeded: int
    in_flight: int
    p50: float | None
    p95: float | None
    breaker: str = "closed"

    @property
    def success_rate(self) -> float | None:
        """Completed over ended (``None`` while nothing ended)."""
        return self.succeeded / self.ended if self.ended else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "capability": self.capability,
            "runs": self.runs,
            "ended": self.ended,
            "succeeded": self.succeeded,
            "in_flight": self.in_flight,
            "success_rate": self.success_rate,
            "p50_seconds": self.p50,
            "p95_seconds": self.p95,
            "breaker": self.breaker,
        }


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank; ``None`` for none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, round(q * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def health(
    runs: Iterable[Run],
    *,
    agents: Iterable[str] = (),
    breakers: Mapping[str, str] | None = None,
) -> list[Health]:
    """Health per (agent, capability) over ``runs``; ``agents`` with no runs get a row too.
    ``breakers``: circuit state by agent name (closed when not named)."""
    groups: dict[tuple[str, str], list[Run]] = {(a, ANY): [] for a in agents}
    for run in runs:
        groups.setdefault((run.agent, run.capability or ANY), []).append(run)
    out: list[Health] = []
    for (agent, capability), members in sorted(groups.items()):
        if not members and any(k[0] == agent and k[1] != ANY for k in groups):
            continue  # the agent shows under its capabilities
        ended = [r for r in members if r.status.terminal or r.status is RunStatus.SUSPENDED]
        seconds = [max(0.0, r.updated_at - r.created_at) for r in ended]
        out.append(
            Health(
                agent=agent,
                capability=capability,
                runs=len(members),
                ended=len(ended),
                succeeded=sum(1 for r in ended if r.status is RunStatus.COMPLETED),
                in_flight=len(members) - len(ended),
                p50=percentile(seconds, 0.5),
                p95=percentile(seconds, 0.95),
                breaker=(breakers or {}).get(agent, "closed"),
            )
        )
    return out
