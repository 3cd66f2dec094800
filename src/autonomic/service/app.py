"""``create_app(settings) -> FastAPI``: the service's one composition point.

The app's lifespan opens the store (a SQLite file is migrated; PostgreSQL is verified, as
``autonomic migrate`` upgrades it), builds the engine, the approval and key desks, the Cedar
authorizer and the OIDC verifier, and puts them on ``app.state.service`` (``runtime.Service``);
with ``settings.workers`` it also runs worker loops in the process. Routes live in
``service/routes/``, one module per noun; each takes ``Depends(authenticate)`` and calls
``service.authorize`` before it answers.

Interface for more pages (the console): build an ``APIRouter`` whose handlers take
``identity: Identity = Depends(authenticate)`` and ``service: Service = Depends(current_service)``,
read only through ``service.scope(identity)``, act only after ``service.authorize(...)``, and pass
it in ``create_app(settings, routers=[...])`` (``autonomic serve`` mounts the console's).

Tests drive the app in process with httpx's ``ASGITransport`` inside
``async with app.router.lifespan_context(app):``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from fastapi import APIRouter, FastAPI

from autonomic.service import problems
from autonomic.service.guard import Guard
from autonomic.service.metrics import Measure
from autonomic.service.settings import ServiceSettings

API_VERSION = "1"


def create_app(settings: ServiceSettings, *, routers: Sequence[APIRouter] = ()) -> FastAPI:
    """The service as an ASGI app (see the module docstring)."""
    from autonomic.service.routes import (
        agents,
        approvals,
        dead_letters,
        events,
        keys,
        kpis,
        runs,
        system,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from autonomic.service.runtime import build_service

        # ``autonomic serve`` builds the service before the server starts (``prebuilt``), so a
        # bad store URL or agent is its one-line error, not a traceback from inside the server
        built = getattr(app.state, "prebuilt", None)
        app.state.prebuilt = None
        service, closers = built if built is not None else await build_service(settings)
        app.state.service = service
        workers: list[asyncio.Task[object]] = []
        stoppers = []
        if settings.workers:
            from autonomic.engine.worker import Worker

            worker = Worker(service.engine, concurrency=settings.workers, poll_interval=0.2)
            stoppers.append(worker.stop)
            workers.append(asyncio.create_task(worker.run()))
        try:
            yield
        finally:
            for stop in stoppers:
                stop()
            if workers:
                await asyncio.gather(*workers, return_exceptions=True)
            for close in reversed(closers):
                await close()
            app.state.service = None

    app = FastAPI(
        title="autonomic",
        version=API_VERSION,
        summary="Durable, governed AI agent runs: start, watch, approve.",
        lifespan=lifespan,
    )
    problems.install(app)
    for module in (runs, approvals, agents, events, dead_letters, kpis, keys, system):
        app.include_router(module.router)
    for router in routers:
        app.include_router(router)
    app.add_middleware(Measure)
    app.add_middleware(Guard, max_body_bytes=settings.max_body_bytes)
    return app
