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


def test_an_anchor_keeps_once_what_its_first_line_holds_and_reads_back_whole():
    """Issue 17: the anchor's JSON no longer repeats the run, each entry's seq, or an intent's
    key when it is the usual ``run_id:seq`` (the first line holds the run and the seqs); an
    anchor written before reads back the same, and an unusual key is kept."""
    import json

    from autonomic.core.audit import anchor_body, anchor_summary
    from autonomic.core.canonical import canonical_json

    run = "run_1"
    intent = {"tool": "pay", "version": "1", "key": "run_1:2", "arguments": {"cents": 5}}
    other = dict(intent, key="elsewhere:9")
    entries = [
        (2, "tool.intent", "a" * 64, intent),
        (3, "tool.intent", "b" * 64, other),
        (4, "tool.result", "c" * 64, {"tool": "pay", "ok": True, "output": 1}),
    ]
    body = anchor_body(run, entries)
    written = json.loads(body.split("\n", 1)[1])
    assert "run" not in written
    assert all("seq" not in e for e in written["entries"])
    assert "key" not in written["entries"][0]
    assert written["entries"][1]["key"] == "elsewhere:9"
    got = anchor_summary(body)
    assert got["run"] == run
    assert [(e["seq"], e["hash"]) for e in got["entries"]] == [
        (2, "a" * 64),
        (3, "b" * 64),
        (4, "c" * 64),
    ]
    assert [e.get("key") for e in got["entries"]] == ["run_1:2", "elsewhere:9", None]
    # an anchor as releases before issue 17 wrote it reads back the same
    old = dict(written, run=run)
    old["entries"] = [
        dict(e, seq=s) for e, (s, *_) in zip(written["entries"], entries, strict=True)
    ]
    old["entries"][0]["key"] = "run_1:2"
    line = body.split("\n", 1)[0]
    assert anchor_summary(f"{line}\n{canonical_json(old)}") == got
