from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from autonomic.adapters.sandbox.namespace import NamespaceSandbox
from autonomic.testing.sandbox import require_bwrap


@pytest.fixture
def sandbox() -> Iterator[NamespaceSandbox]:
    require_bwrap()
    sb = NamespaceSandbox()
    yield sb
    asyncio.run(sb.close())
