"""The service's parts, built once per app and shared by every request: ``Service``.

A route reaches it with ``service_of(request)`` (or ``Depends(current_service)``). It holds the store,
the engine (which starts, cancels and reopens runs; workers drive them), the approval desk, the key
desk, the authorizer and the OIDC verifier. ``Service.scope(identity)`` is the only way a route
reads runs, journals and approvals: a view of the store scoped to the identity's tenant.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

from autonomic.bootstrap import build_credentials
from autonomic.engine.executor import Engine
from autonomic.errors import ConfigError
from autonomic.governance.approvals import ApprovalDesk
from autonomic.ports.bus import Bus
from autonomic.ports.store import Store
from autonomic.service.settings import ServiceSettings
from autonomic.service.spend_cache import SpendCache

if TYPE_CHECKING:
    from autonomic.service.authz import Action, Authorizer, Resource
    from autonomic.service.identity import Identity
    from autonomic.service.keys import KeyDesk
    from autonomic.service.oidc import OidcVerifier
    from autonomic.service.scope import TenantScope


@dataclass
class Service:
    """Everything a request handler needs (see the module docstring)."""

    settings: ServiceSettings
    store: Store
    engine: Engine
    desk: ApprovalDesk
    keys: KeyDesk
    authorizer: Authorizer
    oidc: OidcVerifier | None = None
    bus: Bus | None = None
    clock: Callable[[], float] = time.time
    started_at: float = field(default_factory=time.time)
    spending: SpendCache = field(default_factory=SpendCache)
    """Runs' costs by version, shared by every request of this process (``spend_cache``)."""

    def scope(self, identity: Identity) -> TenantScope:
        """The store as ``identity`` may see it: its tenant only (an admin: every tenant)."""
        from autonomic.service.scope import TenantScope

        return TenantScope(self.store, identity, self.bus, self.spending)

    def authorize(self, identity: Identity, action: Action, resource: Resource) -> None:
        """Refuse unless ``identity`` may do ``action`` on ``resource``: another tenant's object
        raises ``NotFound`` (404, existence does not leak), a role without the right
        ``Forbidden`` (403). See ``authz.py`` and the policy file."""
        self.authorizer.authorize(identity, action, resource)


def service_of(request: Request) -> Service:
    """The ``Service`` of the app serving ``request`` (set by ``create_app``'s lifespan)."""
    service = getattr(request.app.state, "service", None)
    if service is None:  # pragma: no cover - only if the lifespan did not run
        from autonomic.errors import StoreUnavailable

        raise StoreUnavailable("the service is not started", hint="start it with autonomic serve")
    assert isinstance(service, Service)
    return service


async def current_service(request: Request) -> Service:
    """``service_of`` as a FastAPI dependency. A coroutine on purpose: FastAPI runs a plain
    function dependency in its thread pool, a thread hop per request (and a queue behind the
    pool's 40 threads under load) for what is an attribute read."""
    return service_of(request)


Closer = Callable[[], Awaitable[None]]


async def build_service(settings: ServiceSettings) -> tuple[Service, list[Closer]]:
    """Open the store and build every part; also what to close, in order of opening."""
    from autonomic.adapters.store.keys import SqlKeyStore
    from autonomic.adapters.store.sql import SqlStore
    from autonomic.bootstrap import (
        build_agents,
        build_model,
        build_plan_cache,
        build_runaway,
        build_store,
        build_telemetry,
        bus_url,
        open_bus,
    )
    from autonomic.service.authz import Authorizer
    from autonomic.service.keys import KeyDesk

    authorizer = Authorizer(settings.authz_policy)  # a bad policy file fails before anything opens
    oidc = None
    if settings.oidc is not None:
        from autonomic.service.oidc import OidcVerifier

        oidc = OidcVerifier(settings.oidc)
    closers: list[Closer] = []
    store = build_store(settings.db)
    closers.append(store.close)
    try:
        if settings.db.startswith("sqlite"):
            await store.migrate()
        else:
            await store.verify()
        if not isinstance(store, SqlStore):  # pragma: no cover - every store we build is one
            raise ConfigError(f"the service needs a SQL store, not {type(store).__name__}")
        registry = build_agents(list(settings.agents))
        gates = []
        if settings.policy:
            from autonomic.engine.agent import govern_agents
            from autonomic.governance.policy.risk import load_policy

            loaded = load_policy(settings.policy)
            registry = govern_agents(registry, loaded)
            gates.append(loaded.risk.gate())
        runaway = build_runaway()
        closers.append(runaway.close)
        engine = Engine(
            store,
            registry,
            build_model,
            plan_cache=build_plan_cache(),
            runaway=runaway,
            gates=gates,
            credentials=build_credentials(settings.credentials),
            hooks=build_telemetry(),
        )
        closers.append(engine.aclose)
        bus = open_bus(bus_url(settings.bus), store)  # connects on first use
        closers.append(bus.aclose)
    except BaseException:
        for close in reversed(closers):
            await close()
        raise
    service = Service(
        settings=settings,
        store=store,
        engine=engine,
        desk=ApprovalDesk(store),
        keys=KeyDesk(SqlKeyStore(store), cache_ttl=settings.key_cache_ttl),
        authorizer=authorizer,
        oidc=oidc,
        bus=bus,
    )
    return service, closers
