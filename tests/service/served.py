"""The service in process for tests: an app on a fresh store, an httpx client on its ASGI
transport, keys per tenant and role, and runs that wait for an approval (a governed payer agent
driven by a scripted model)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from autonomic.adapters.model.scripted import ScriptedModel
from autonomic.bootstrap import build_store
from autonomic.core.approval import Approval
from autonomic.core.envelope import new_event
from autonomic.core.event_types import EventTypes
from autonomic.core.run import Run, RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.governance.policy.risk import parse_policy_text
from autonomic.ports.bus import DeadLetter, RetryPolicy
from autonomic.service.app import create_app
from autonomic.service.runtime import Service
from autonomic.service.settings import ServiceSettings
from autonomic.tools.contract import tool

POLICY = """
approval:
  expires_after: 1h
rules:
  - name: big-payment
    tool: pay
    when: args.amount > 100
    risk: medium
    reason: payments above 100 need a second person
"""


PING = "test.service.ping"
EventTypes.default().declare(PING, {"type": "object"}, "a test event of the service tests")


@tool(idempotent=True)
def pay(to: str, amount: int) -> dict[str, Any]:
    """Pay ``amount`` to ``to``."""
    return {"paid": amount, "to": to}


def payer() -> Agent:
    return Agent(name="payer", instructions="pay people", tools=(pay,), model="scripted:payer")


@dataclass
class Served:
    service: Service
    client: httpx.AsyncClient
    url: str
    keys: dict[tuple[str, str, str], str] = field(default_factory=dict)

    async def key(self, tenant: str, role: str, name: str | None = None) -> dict[str, str]:
        """An ``Authorization`` header for a key of ``tenant`` and ``role`` (made once)."""
        name = name or f"{role}-{tenant}"
        if (tenant, role, name) not in self.keys:
            _, secret = await self.service.keys.create(
                tenant=tenant, role=role, name=name, by="test", expires_in=None
            )
            self.keys[tenant, role, name] = secret
        return {"Authorization": f"Bearer {self.keys[tenant, role, name]}"}

    def _payer_engine(self) -> Engine:
        """The payer agent on the service's store, its payment of 500 needing approval."""
        model = ScriptedModel(
            [
                {"tool_calls": [{"name": "pay", "arguments": {"to": "bob", "amount": 500}}]},
                {"content": "paid"},
            ]
        )
        return Engine(
            self.service.store,
            AgentRegistry([payer()]),
            lambda spec: model,
            gates=[parse_policy_text(POLICY).risk.gate()],
        )

    async def waiting_run(self, tenant: str, requester: str) -> tuple[Run, Approval]:
        """A run of ``tenant`` started by ``requester`` (a principal, ``name@tenant``), waiting
        for the approval of a payment of 500."""
        engine = self._payer_engine()
        run = await engine.run("payer", "pay bob", tenant=tenant, requester=requester)
        assert run.status is RunStatus.WAITING_FOR_HUMAN, run.status_reason
        (approval,) = await self.service.store.list_approvals(run_id=run.id)
        return run, approval

    async def finish(self, run_id: str) -> Run:
        """Drive a decided ``waiting_run`` to its end, as a worker would."""
        engine = self._payer_engine()
        return await engine.run_to_end(run_id)

    async def dead_letter(self, tenant: str) -> DeadLetter:
        """A dead letter of ``tenant``: a ping published for it, failed once by a group that
        gives up after one attempt."""
        bus = self.service.bus
        assert bus is not None
        event = new_event(PING, {"n": 1}, source="autonomic://test", tenant=tenant)
        await bus.publish([event])
        consumer = bus.consumer(
            f"g-{uuid.uuid4().hex[:8]}", [PING], name="m", retry=RetryPolicy(max_attempts=1)
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                for delivery in await consumer.poll(max_events=100, wait=0.2):
                    if delivery.event.id != event.id:
                        await consumer.ack(delivery)
                        continue
                    await consumer.fail(delivery, "cannot handle it")
                    (letter,) = [
                        x
                        for x in await bus.dead_letters(tenant=tenant, limit=10_000)
                        if x.event.id == event.id
                    ]
                    return letter
        finally:
            await consumer.close()
        raise AssertionError("the ping never arrived")


@asynccontextmanager
async def serving(url: str, routers: Any = (), **settings: Any) -> AsyncIterator[Served]:
    """The app on ``url`` (migrated first, ``routers`` mounted), its lifespan entered, a client."""
    store = build_store(url)
    await store.migrate()
    await store.close()
    settings.setdefault("session_secret", b"s" * 32)
    app = create_app(ServiceSettings(db=url, **settings), routers=routers)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Served(app.state.service, client, url)
