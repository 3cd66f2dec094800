"""The Sandbox port's conformance suite against every backend (namespace also from a warm pool)."""

from __future__ import annotations

import asyncio

import pytest

from autonomic.adapters.sandbox import build_sandbox
from autonomic.adapters.sandbox.namespace import NamespaceSandbox
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
