"""Random tamperings made directly in the database, with the triggers dropped: ``verify`` names
every one with its kind and position, and says nothing about an untampered database.

CI runs ``TRIALS`` trials per store (500 + 500 = 1,000 across the kinds); ``--slow`` runs
``SLOW_TRIALS`` per store."""

import asyncio
import random

import pytest

from autonomic.audit.verify import verify_store
from autonomic.core.audit import AuditAct, AuditNote
from autonomic.core.journal import GENESIS_HASH, EntryKind, pack
from autonomic.core.run import RunChanges
from autonomic.testing.store_conformance import make_run
from autonomic.testing.tampering import JOURNAL_KINDS, LOG_KINDS, Tamperer

TRIALS = 500
SLOW_TRIALS = 2_000


async def seed(store, rng: random.Random, runs: int = 24) -> None:
    """Runs of 3 to 12 entries written in commits of 1 to 3 entries, some with operator acts."""
    for r in range(runs):
        run = make_run()
        n = rng.randint(3, 12)
        packed, prev = [], GENESIS_HASH
        for seq in range(1, n + 1):
            kind = EntryKind.RUN_STARTED if seq == 1 else EntryKind.MODEL_RESPONSE
            p = pack(
                run.id,
                seq,
                kind,
                {"run": r, "seq": seq, "x": rng.random()},
                prev_hash=prev,
                created_at=1.0 + seq,
            )
            packed.append(p)
            prev = p.entry.hash
        first = rng.randint(1, 2)
        await store.create_run(run, packed[:first])
        version, at = 1, first
        while at < n:
            k = min(rng.randint(1, 3), n - at)
            act = AuditAct("run.cancel", "alice", {"why": "test"}) if rng.random() < 0.2 else None
            version = await store.commit(
                run.id,
                expected_version=version,
                fence=None,
                entries=packed[at : at + k],
                changes=RunChanges(),
                now=2.0,
                audit=AuditNote(act=act),
            )
            at += k


@pytest.mark.parametrize(
    "trials",
    [pytest.param(TRIALS, id="ci"), pytest.param(SLOW_TRIALS, id="slow", marks=pytest.mark.slow)],
)
def test_every_tampering_is_found_with_its_kind_and_position(store_url, make_store, trials):
    async def main():
        rng = random.Random(16)
        store = await make_store(store_url)
        await seed(store, rng)
        clean = await verify_store(store)
        assert clean.ok, clean.breaks
        tamperer = Tamperer(store_url)
        tamperer.drop_triggers()
        found: dict[str, int] = {}
        kinds = JOURNAL_KINDS + LOG_KINDS
        try:
            for trial in range(trials):
                action = kinds[trial % len(kinds)]
                done = tamperer.tamper(rng, action)
                report = await verify_store(store)
                assert report.breaks, f"trial {trial}: {done} went unnoticed"
                first = report.breaks[0]
                assert (first.kind, first.position) == (done.expected, done.position), (
                    trial,
                    done,
                    report.breaks,
                )
                if done.run_id is not None:
                    assert first.run_id == done.run_id
                    assert len(report.breaks) == 1, report.breaks
                found[action] = found.get(action, 0) + 1
                tamperer.restore()
                if trial % 50 == 0:
                    again = await verify_store(store)
                    assert again.ok, (trial, done, again.breaks)
        finally:
            tamperer.close()
            await store.close()
        return found

    found = asyncio.run(main())
    assert sum(found.values()) == trials
    assert set(found) == set(JOURNAL_KINDS + LOG_KINDS)


def test_untampered_logs_raise_no_alarm(store_url, make_store):
    async def main():
        store = await make_store(store_url)
        for seed_ in range(5):
            await seed(store, random.Random(seed_), runs=10)
            report = await verify_store(store)
            assert report.ok, report.breaks
        await store.close()
        return report

    report = asyncio.run(main())
    assert report.runs == 50
    assert report.records > 50
