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
def test_a_compact_anchor_leaves_its_run_to_the_record_and_the_hash_covers_it(run_id):
    """A compact anchor's first line is the first seq and the chain hashes in base64, with no
    run: the record's ``run_id`` column names it, and the record's digest covers it whatever the
    id (the verifier's short and full paths agree), so moving the anchor to another run breaks
    the log."""
    import base64

    from autonomic.core.audit import (
        GENESIS_HASH as LOG_GENESIS,
    )
    from autonomic.core.audit import (
        anchor_body,
        parse_anchor,
        record_digest,
        record_hash,
    )
    from autonomic.core.verification import BreakKind, LogChecker

    hashes = ["a" * 64, "0123456789abcdef" * 4]
    body = anchor_body(
        run_id, [(1, "run.started", hashes[0], {"agent": "x"}), (2, "transition", hashes[1], {})]
    )
    line = body.split("\n", 1)[0]
    raw = bytes.fromhex("".join(hashes))
    assert line == f"1 {base64.b64encode(raw).decode().rstrip('=')}"
    assert parse_anchor(body, run_id)[:2] == (run_id, [(1, hashes[0]), (2, hashes[1])])
    assert record_digest("anchor", run_id, body) != record_digest("anchor", run_id + "x", body)
    stored = record_hash(LOG_GENESIS, 1, "anchor", record_digest("anchor", run_id, body))
    genesis = (0, "genesis", None, "{}", LOG_GENESIS, 1.0)
    log = LogChecker()
    log.feed([genesis, (1, "anchor", run_id, body, stored, 2.0)])
    assert log.first_break is None
    assert log.anchored == {run_id: hashes}
    moved = LogChecker()
    moved.feed([genesis, (1, "anchor", run_id + "x", body, stored, 2.0)])
    assert moved.first_break is not None
    assert (moved.first_break.kind, moved.first_break.position) == (BreakKind.LOG_EDITED, 1)


def test_an_anchor_is_compact_and_reads_back_whole_as_every_older_form_does():
    """Issue 17: the compact anchor keeps in its JSON neither the run nor a seq nor an intent's
    usual ``run_id:seq`` key, spells its usual keys and kinds with a letter, its digests in
    base64 and a result's ``ok: true`` not at all; it reads back the same dict as the form
    written before the compaction (run and hex hashes in the first line) and the first
    release's (all in the JSON), and an unusual key or a failed result is kept."""
    import json

    from autonomic.core.audit import AuditNote, anchor_body, anchor_summary
    from autonomic.core.canonical import canonical_json

    run = "run_1"
    intent = {"tool": "pay", "version": "1", "key": "run_1:2", "arguments": {"cents": 5}}
    other = dict(intent, key="elsewhere:9")
    entries = [
        (2, "tool.intent", "a" * 64, intent),
        (3, "tool.intent", "b" * 64, other),
        (4, "tool.result", "c" * 64, {"tool": "pay", "ok": True, "output": 1}),
        (5, "tool.result", "d" * 64, {"tool": "pay", "ok": False, "error": {"code": "x"}}),
        (6, "model.response", "e" * 64, {"tool_calls": [{"name": "pay"}]}),
        (7, "recovery", "f" * 64, {}),
    ]
    body = anchor_body(run, entries, AuditNote(levels={"pay": "basic"}))
    _line, text = body.split("\n", 1)
    assert run not in body
    written = json.loads(text)
    assert isinstance(written, list)
    assert written[0] == {"a": written[0]["a"], "k": "i", "t": "pay", "v": "1"}
    assert len(written[0]["a"]) == 43
    assert written[1]["key"] == "elsewhere:9"
    assert "ok" not in written[2]
    assert written[3]["ok"] is False
    assert written[5] == {"k": "recovery"}  # a kind without a letter, as it is
    got = anchor_summary(body, run)
    assert got["run"] == run
    assert [(e["seq"], e["hash"]) for e in got["entries"]] == [(s, h) for s, _, h, _ in entries]
    assert [e.get("key") for e in got["entries"]] == ["run_1:2", "elsewhere:9"] + [None] * 4
    assert [e["kind"] for e in got["entries"]] == [k for _, k, _, _ in entries]
    assert got["entries"][2]["ok"] is True
    assert got["entries"][3]["ok"] is False
    assert got["entries"][4]["chose"] == ["pay"]
    # the form written between issue 17's first cut and the compaction reads the same
    spelled = [{k: v for k, v in e.items() if k not in ("seq", "hash")} for e in got["entries"]]
    del spelled[0]["key"]
    hexes = "".join(h for _, _, h, _ in entries)
    middle = f'2 {hexes} "{run}"\n{canonical_json({"entries": spelled})}'
    assert anchor_summary(middle) == got
    # and so does the first release's: the run, each seq and every key in the JSON too
    first = [dict(e, seq=s) for e, (s, *_) in zip(spelled, entries, strict=True)]
    first[0]["key"] = "run_1:2"
    oldest = f'2 {hexes} "{run}"\n{canonical_json({"entries": first, "run": run})}'
    assert anchor_summary(oldest) == got


def test_an_anchor_writes_what_it_keeps_whole_canonically():
    """The summary's own dicts are written in the order ``_summary`` builds them (no sorting:
    a third of the anchor's encoding), but a value from outside (a ``full`` audit level's
    arguments, a transition's budget, an operator's act) is written as canonical JSON, so the
    same value always gives the same text; and every form reads back the same dict."""
    import json

    from autonomic.core.audit import AuditAct, AuditNote, anchor_body, anchor_summary

    intent = {"tool": "pay", "version": "1", "key": "run_1:2", "arguments": {"z": 1, "a": 2}}
    full = anchor_body("run_1", [(2, "tool.intent", "a" * 64, intent)], AuditNote({"pay": "full"}))
    assert '"arguments":{"a":2,"z":1}' in full
    assert list(json.loads(full.split("\n", 1)[1])[0]) == sorted(
        ["k", "t", "audit", "v", "arguments"]
    )
    budget = {"tokens": 5, "cost": 1}
    moved = anchor_body("run_1", [(3, "transition", "b" * 64, {"from": "A", "budget": budget})])
    assert '"budget":{"cost":1,"tokens":5}' in moved
    basic = anchor_body("run_1", [(2, "tool.intent", "a" * 64, intent)], AuditNote({}))
    assert list(json.loads(basic.split("\n", 1)[1])[0]) == ["k", "t", "v", "a"]
    act = AuditAct("budget.raise", "ops", {"z": 1, "a": 2})
    acted = anchor_body("run_1", [(3, "transition", "b" * 64, {})], AuditNote(act=act))
    assert '"detail":{"a":2,"z":1}' in acted
    for body in (full, moved, basic, acted):
        assert anchor_summary(body, "run_1")["entries"]


def test_a_settled_result_keeps_who_settled_it_at_every_audit_level():
    """A result an operator settled names who did, whatever the tool's audit level (the
    summary's fast path for ``full`` once returned before it)."""
    from autonomic.core.audit import AuditNote, anchor_body, anchor_summary

    result = {"tool": "pay", "ok": True, "output": {"paid": 5}, "settled": {"by": "ops"}}
    for level in ("full", "basic", "none"):
        body = anchor_body(
            "run_1", [(4, "tool.result", "c" * 64, result)], AuditNote({"pay": level})
        )
        entry = anchor_summary(body, "run_1")["entries"][0]
        assert entry["settled_by"] == "ops", level
        assert ("output" in entry) is (level == "full")
        assert ("output_sha256" in entry) is (level == "basic")
