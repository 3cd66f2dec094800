"""The agents this service runs, and their health in the caller's tenant."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent
from autonomic.errors import NotFound
from autonomic.service.auth import authenticate
from autonomic.service.authz import Action, Resource
from autonomic.service.identity import Identity
from autonomic.service.runtime import Service, current_service
from autonomic.service.schemas import AGENT_NAME, AgentOut
from autonomic.service.scope import TenantScope

router = APIRouter(tags=["agents"])

Who = Annotated[Identity, Depends(authenticate)]
Svc = Annotated[Service, Depends(current_service)]
RECENT = 50
"""Health is read from an agent's last runs in the tenant."""


async def _health(scope: TenantScope, agent: Agent) -> dict[str, Any]:
    """Counts of the agent's recent runs by status; ``degraded`` when more than half of those
    that ended failed or were suspended, ``idle`` with none."""
    runs = await scope.runs(agent=agent.name, limit=RECENT)
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status.value] = counts.get(run.status.value, 0) + 1
    ended = [r for r in runs if r.status.terminal or r.status is RunStatus.SUSPENDED]
    bad = sum(1 for r in ended if r.status in (RunStatus.FAILED, RunStatus.SUSPENDED))
    state = "idle" if not runs else "degraded" if ended and bad * 2 > len(ended) else "healthy"
    return {"state": state, "recent_runs": len(runs), "by_status": counts}


def _out(agent: Agent, health: dict[str, Any]) -> AgentOut:
    return AgentOut(
        name=agent.name,
        version=agent.key[1],
        model=agent.model,
        tools=[t.ref for t in agent.tools],
        health=health,
    )


@router.get("/agents", response_model=list[AgentOut])
async def list_agents(identity: Who, service: Svc) -> list[AgentOut]:
    service.authorize(identity, Action.READ, Resource.tenant_of(identity))
    scope = service.scope(identity)
    registry = service.engine.agents
    return [
        _out(registry.get(name), await _health(scope, registry.get(name)))
        for name in registry.names()
    ]


@router.get("/agents/{name}", response_model=AgentOut)
async def get_agent(
    name: Annotated[str, Path(pattern=AGENT_NAME)], identity: Who, service: Svc
) -> AgentOut:
    service.authorize(identity, Action.READ, Resource.tenant_of(identity))
    if name not in service.engine.agents.names():
        raise NotFound(f"no agent {name}", hint="GET /agents lists them")
    agent = service.engine.agents.get(name)
    return _out(agent, await _health(service.scope(identity), agent))
