"""``verify`` with the journals checked elsewhere finds exactly what it finds alone.

``autonomic audit verify`` sums up every run's journal chain in a child process for a big
store (``cli/journal_check.py``) while it reads the log; the summaries stand in for the rows
only when they match the anchors, and a run that does not is read again and judged as before.
These tests hold the split to the plain pass, tampering by tampering, and check that a child
that fails changes nothing but the time.
"""

from __future__ import annotations

import asyncio
import random
import sys

import pytest
from test_tampering import seed

from autonomic.audit.verify import Report, journal_chains, verify_store
from autonomic.cli import journal_check
from autonomic.cli.journal_check import chains_elsewhere
from autonomic.testing.tampering import JOURNAL_KINDS, LOG_KINDS, Tamperer

TRIALS = 120


def counts(report: Report) -> tuple[int, int, int]:
    """What a verify read: runs, entries, log records."""
    return report.runs, report.entries, report.records


def test_the_split_pass_reports_what_the_plain_one_does(store_url, make_store):
    async def main() -> int:
        rng = random.Random(23)
        store = await make_store(store_url)
        await seed(store, rng, runs=16)
        plain = await verify_store(store)
        split = await verify_store(store, chains=journal_chains(store))
        assert plain.ok, plain.breaks
        assert split.ok, split.breaks
        assert counts(split) == counts(plain)
        tamperer = Tamperer(store_url)
        tamperer.drop_triggers()
        kinds = JOURNAL_KINDS + LOG_KINDS
        found = 0
        try:
            for trial in range(TRIALS):
                done = tamperer.tamper(rng, kinds[trial % len(kinds)])
                plain = await verify_store(store)
                split = await verify_store(store, chains=journal_chains(store))
                assert split.breaks == plain.breaks, (trial, done, plain.breaks, split.breaks)
                assert (split.runs, split.entries) == (plain.runs, plain.entries), (trial, done)
                found += bool(split.breaks)
                tamperer.restore()
        finally:
            tamperer.close()
            await store.close()
        return found

    assert asyncio.run(main()) == TRIALS  # every tampering found, the same way


def test_the_child_process_gives_the_same_report(
    store_url, make_store, monkeypatch: pytest.MonkeyPatch
):
    async def here(*_: object, **__: object) -> None:
        raise AssertionError("the child's answer was not used")

    async def main() -> None:
        store = await make_store(store_url)
        await seed(store, random.Random(5), runs=8)
        assert await chains_elsewhere(store, store_url) is None  # a short log: no child
        monkeypatch.setattr("autonomic.audit.verify.journal_chains", here)  # no fallback
        child = await chains_elsewhere(store, store_url, split_from=0)
        assert child is not None
        split = await verify_store(store, chains=child)
        plain = await verify_store(store)
        assert split.ok, split.breaks
        assert plain.ok, plain.breaks
        assert counts(split) == counts(plain)
        await store.close()

    asyncio.run(main())


def test_a_child_that_fails_changes_nothing_but_the_time(
    store_url, make_store, monkeypatch: pytest.MonkeyPatch
):
    async def main() -> None:
        store = await make_store(store_url)
        await seed(store, random.Random(6), runs=8)
        tamperer = Tamperer(store_url)
        tamperer.drop_triggers()
        try:
            done = tamperer.tamper(random.Random(1), JOURNAL_KINDS[0])
            plain = await verify_store(store)
            monkeypatch.setattr(journal_check.sys, "executable", "/bin/false")
            failing = await chains_elsewhere(store, store_url, split_from=0)
            assert failing is not None
            split = await verify_store(store, chains=failing)
            assert plain.breaks, done
            assert split.breaks == plain.breaks, (done, plain.breaks, split.breaks)
        finally:
            monkeypatch.setattr(journal_check.sys, "executable", sys.executable)
            tamperer.close()
            await store.close()

    asyncio.run(main())
