"""The service with the console mounted, in process: sign in as a key, read a page, post a form."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from served import POLICY, Served, payer

from autonomic.adapters.model.scripted import ScriptedModel
from autonomic.bootstrap import build_store
from autonomic.core.run import Run
from autonomic.engine.agent import AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.governance.policy.risk import parse_policy_text
from autonomic.service.app import create_app
from autonomic.service.console import console_router
from autonomic.service.settings import ServiceSettings

CSRF = re.compile(r'name="csrf" value="([0-9A-Za-z_-]+)"')


@dataclass
class Console:
    served: Served
    transport: httpx.ASGITransport

    def anonymous(self) -> httpx.AsyncClient:
        """A browser with no session (its own cookie jar)."""
        return httpx.AsyncClient(transport=self.transport, base_url="http://testserver")

    async def browser(self, tenant: str, role: str, name: str | None = None) -> httpx.AsyncClient:
        """A browser signed in to the console with a key of ``tenant`` and ``role``."""
        header = await self.served.key(tenant, role, name)
        secret = header["Authorization"].removeprefix("Bearer ")
        client = self.anonymous()
        answer = await client.post("/console/signin", data={"key": secret, "next": ""})
        assert answer.status_code == 303, answer.text
        return client

    async def finish(self, run_id: str) -> Run:
        """Drive a decided ``waiting_run`` to its end, as a worker would."""
        model = ScriptedModel(
            [
                {"tool_calls": [{"name": "pay", "arguments": {"to": "bob", "amount": 500}}]},
                {"content": "paid"},
            ]
        )
        engine = Engine(
            self.served.service.store,
            AgentRegistry([payer()]),
            lambda spec: model,
            gates=[parse_policy_text(POLICY).risk.gate()],
        )
        return await engine.run_to_end(run_id)


@asynccontextmanager
async def consoled(url: str, **settings: Any) -> AsyncIterator[Console]:
    """The app with the console on ``url`` (migrated first), its lifespan entered."""
    store = build_store(url)
    await store.migrate()
    await store.close()
    settings.setdefault("session_secret", b"c" * 32)
    app = create_app(ServiceSettings(db=url, **settings), routers=[console_router()])
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Console(Served(app.state.service, client, url), transport)


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no CSRF token"
    return found.group(1)
