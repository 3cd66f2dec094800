"""Bulk reads hold the cyclic collector, and always give it back as they found it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from autonomic.adapters.store.rows import entries_from_rows
from autonomic.core import state as state_module
from autonomic.core.bulk import BULK, bulk_allocation
from autonomic.core.journal import EntryKind
from autonomic.core.state import RunState, fold


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_a_bulk_block_holds_the_collector_and_gives_it_back() -> None:
    with bulk_allocation(BULK):
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), bulk_allocation(BULK):
        raise RuntimeError("a decode failed")
    assert gc.isenabled()


def test_a_small_read_leaves_the_collector_alone() -> None:
    with bulk_allocation(BULK - 1):
        assert gc.isenabled()


def test_nested_and_already_held_blocks_leave_it_as_they_found_it() -> None:
    with bulk_allocation(BULK):
        with bulk_allocation(BULK):
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    with bulk_allocation(BULK):
        pass
    assert not gc.isenabled()


def _rows(n: int) -> list[tuple[int, str, str, str, float]]:
    return [
        (i, EntryKind.TRANSITION.value, '{"from":"RUNNING","to":"RUNNING"}', "0" * 64, 1.0)
        for i in range(1, n + 1)
    ]


def test_decoding_and_folding_a_long_journal_hold_it(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    original = RunState.apply

    def watched(self: RunState, entry: object) -> None:
        seen.append(gc.isenabled())
        original(self, entry)  # type: ignore[arg-type]

    monkeypatch.setattr(state_module.RunState, "apply", watched)
    short = entries_from_rows("run_x", _rows(3), {})
    fold("run_x", short)
    assert seen == [True] * 3
    seen.clear()
    long = entries_from_rows("run_x", _rows(BULK), {})
    fold("run_x", long)
    assert seen == [False] * BULK
    assert gc.isenabled()


def test_rows_are_decoded_with_the_collector_held(monkeypatch: pytest.MonkeyPatch) -> None:
    from autonomic.adapters.store import rows as rows_module

    seen: list[bool] = []
    loads = rows_module.json.loads

    def watched(text: str) -> object:
        seen.append(gc.isenabled())
        return loads(text)

    monkeypatch.setattr(rows_module.json, "loads", watched)
    entries_from_rows("run_x", _rows(BULK), {})
    assert set(seen) == {False}
    assert gc.isenabled()
