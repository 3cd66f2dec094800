from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from autonomic.adapters.sandbox.namespace import NamespaceSandbox
from autonomic.testing.egress_world import World, WorldUnavailable, egress_world
from autonomic.testing.sandbox import require_bwrap


@pytest.fixture
def sandbox() -> Iterator[NamespaceSandbox]:
    require_bwrap()
    sb = NamespaceSandbox()
    yield sb
    asyncio.run(sb.close())


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """Test hosts in a namespace of our own (``autonomic.testing.egress_world``), per module."""
    try:
        with egress_world() as built:
            yield built
    except WorldUnavailable as exc:
        pytest.skip(str(exc))
