"""Every commit is anchored in the same transaction, and the global chain holds when many
writers (several stores: several processes' worth of connections) commit at once."""

import asyncio

import pytest

from autonomic.audit.verify import verify_store
from autonomic.core.journal import GENESIS_HASH, EntryKind, pack
from autonomic.core.run import RunChanges
from autonomic.errors import StaleVersion
from autonomic.testing.store_conformance import make_run


def _entries(run_id, first, n, prev):
    out = []
    for seq in range(first, first + n):
        kind = EntryKind.RUN_STARTED if seq == 1 else EntryKind.MODEL_RESPONSE
        p = pack(run_id, seq, kind, {"seq": seq}, prev_hash=prev, created_at=1.0)
        out.append(p)
        prev = p.entry.hash
    return out, prev


async def _writer(store, runs, commits):
    async def one():
        run = make_run()
        first, prev = _entries(run.id, 1, 1, GENESIS_HASH)
        await store.create_run(run, first)
        version, seq = 1, 2
        for _ in range(commits):
            batch, prev = _entries(run.id, seq, 2, prev)
            version = await store.commit(
                run.id,
                expected_version=version,
                fence=None,
                entries=batch,
                changes=RunChanges(),
                now=2.0,
            )
            seq += 2

    await asyncio.gather(*(one() for _ in range(runs)))


def test_concurrent_writers_keep_one_chain(store_url, make_store):
    async def main():
        stores = [await make_store(store_url) for _ in range(3)]
        await asyncio.gather(*(_writer(s, runs=8, commits=5) for s in stores))
        report = await verify_store(stores[0])
        log = await stores[0].scan_audit_log()
        for s in stores:
            await s.close()
        return report, log

    report, log = asyncio.run(main())
    assert report.ok, report.breaks
    assert report.runs == 24
    assert report.entries == 24 * 11
    assert [row[0] for row in log] == list(range(len(log)))
    assert len(log) == 1 + 24 * 6  # genesis, then one anchor per create and per commit


def test_a_refused_commit_anchors_nothing(store_url, make_store):
    async def main():
        store = await make_store(store_url)
        run = make_run()
        first, prev = _entries(run.id, 1, 1, GENESIS_HASH)
        await store.create_run(run, first)
        batch, _ = _entries(run.id, 2, 1, prev)
        with pytest.raises(StaleVersion):
            await store.commit(
                run.id, expected_version=7, fence=None, entries=batch, changes=RunChanges(), now=2.0
            )
        log = await store.scan_audit_log()
        report = await verify_store(store)
        await store.close()
        return log, report

    log, report = asyncio.run(main())
    assert [row[1] for row in log] == ["genesis", "anchor"]
    assert report.ok


@pytest.mark.parametrize(
    "run_id", ["run_01HX", "a.b:c@d-e_f", "", 'quote"d', "back\\slash", "é-run", "tab\there"]
)
def test_an_anchor_names_its_run_as_json_whatever_the_id(run_id):
    """The anchor's first line carries the run id as a JSON string (plain ids are written
    without ``json.dumps``): ``verify`` reads back exactly the id, and the line is what
    ``json.dumps`` would have written."""
    import json

    from autonomic.core.audit import anchor_body, parse_anchor

    body = anchor_body(run_id, [(1, "run.started", "a" * 64, {"agent": "x"})])
    line = body.split("\n", 1)[0]
    assert line == f"1 {'a' * 64} {json.dumps(run_id)}"
    assert parse_anchor(body)[:2] == (run_id, [(1, "a" * 64)])
