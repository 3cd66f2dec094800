"""The Sandbox port's conformance suite against every backend (namespace also from a warm pool)."""

from __future__ import annotations

import asyncio

import pytest

from autonomic.adapters.sandbox import build_sandbox
from autonomic.adapters.sandbox.namespace import NamespaceSandbox
from autonomic.testing.egress_world import EgressVerdict, World, leftovers, probe_egress
from autonomic.testing.sandbox import require_backend, require_bwrap, sandbox_processes
from autonomic.testing.sandbox_conformance import CHECKS, Check, run_check


@pytest.mark.parametrize("pool_size", [0, 1], ids=["cold", "warm"])
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_namespace_conformance(check: Check, pool_size: int) -> None:
    require_bwrap()
    asyncio.run(run_check(check, lambda: NamespaceSandbox(pool_size=pool_size)))
    assert sandbox_processes() == []


@pytest.mark.parametrize(
    "backend",
    ["oci", "oci-runsc", pytest.param("microvm", marks=pytest.mark.microvm)],
)
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_backend_conformance(check: Check, backend: str) -> None:
    require_backend(backend)
    asyncio.run(run_check(check, lambda: build_sandbox(backend)))


@pytest.mark.parametrize(
    "backend",
    ["namespace", "oci", "oci-runsc", pytest.param("microvm", marks=pytest.mark.microvm)],
)
def test_egress_allow_lists_hold_on_every_backend(backend: str, world: World) -> None:
    """The allow-listed destination answers; another port, another private host, the metadata
    address, the router and the host's loopback (all served by namespaces the test made) do not."""
    if backend == "namespace":
        require_bwrap()
    else:
        require_backend(backend)
    sandbox = build_sandbox(backend, egress_uplink=world.name)

    async def probe() -> EgressVerdict:
        try:
            return await probe_egress(
                sandbox, world, wall_seconds=60.0 if backend == "microvm" else 20.0
            )
        finally:
            await sandbox.close()

    verdict = asyncio.run(probe())
    assert verdict.answers[verdict.allowed] == "hi", verdict.answers
    assert verdict.leaked == [], verdict.answers
    assert len(verdict.answers) == len(world.targets())
    assert verdict.held
    assert leftovers(world) == []


def test_the_egress_verdict_can_fail() -> None:
    leaked = EgressVerdict({"10.99.0.2:8080": "hi", "169.254.169.254:80": "hi"}, "10.99.0.2:8080")
    assert not leaked.held
    assert leaked.leaked == ["169.254.169.254:80"]
    shut = EgressVerdict({"10.99.0.2:8080": "TimeoutError"}, "10.99.0.2:8080")
    assert not shut.held
