"""Bulk allocation: hold the cyclic garbage collector while many long-lived objects are made.

Reading a long run back (its journal rows decoded, the entries folded, a snapshot decoded)
allocates tens of thousands of dicts, lists and entries that all live on. Each allocation burst
triggers collections that walk what was allocated so far. Measured for a 5,000-step run (15,007
entries): a snapshot's decoding 234 -> 64 ms with the collector held; in a fresh process, the
fold of the journal 325-460 -> 247-268 ms (``load_journal`` itself, about 300 ms on SQLite, moved
within the noise). Nothing made in these blocks forms a reference cycle, so holding the collector
frees nothing late; it runs again as soon as the block ends. Small reads (the common case: a
step's few entries) are not worth the two calls.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

__all__ = ["BULK", "bulk_allocation"]

BULK: Final = 512
"""From how many rows or entries a read holds the collector (below it, it costs more than it saves)."""


@contextmanager
def bulk_allocation(count: int = BULK) -> Iterator[None]:
    """Hold the collector for the block when ``count`` objects of a read are at least ``BULK``.

    Synchronous blocks only: the collector is global to the interpreter, so an ``await`` inside
    would hold it for whatever else runs meanwhile. Nests: an inner block leaves it as it found it.
    """
    if count < BULK or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
