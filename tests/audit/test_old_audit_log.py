"""An audit log written by the release before the compact anchors still verifies and reads the
same (``fixtures/README.md``): its spelled-out anchors, its act, its signed checkpoint - and a
log that goes on with compact anchors after them verifies whole."""

import asyncio
import gzip
import json
import shutil
import sqlite3
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from autonomic.adapters.model.scripted import ScriptedModel
from autonomic.audit.checkpoint import load_public_key, signer, verifier
from autonomic.audit.verify import verify_store
from autonomic.bootstrap import build_store
from autonomic.core.audit import anchor_summary, is_compact
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.tools.contract import tool

FIXTURES = Path(__file__).parent / "fixtures"
OLD = "audit-log-0.2"


def _database(tmp_path: Path) -> Path:
    db = tmp_path / "old.db"
    with gzip.open(FIXTURES / f"{OLD}.db.gz", "rb") as src, db.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    return db


@tool
def add_one(n: int) -> int:
    """Add one."""
    return n + 1


def test_an_old_audit_log_verifies_and_reads_as_its_release_read_it(tmp_path):
    expected = json.loads((FIXTURES / f"{OLD}.expected.json").read_text())
    public = load_public_key(FIXTURES / f"{OLD}.public_key.pem")

    async def main():
        store = build_store(f"sqlite:///{_database(tmp_path)}")
        await store.migrate()
        report = await verify_store(store, verify_signature=verifier(public))
        log = await store.scan_audit_log()
        await store.close()
        return report, log

    report, log = asyncio.run(main())
    assert report.to_dict() == expected["report"]
    anchors = {
        str(pos): (run_id, body) for pos, kind, run_id, body, _, _ in log if kind == "anchor"
    }
    assert anchors.keys() == expected["anchors"].keys()
    assert not any(is_compact(body) for _, body in anchors.values())  # the old form, all of them
    for pos, (run_id, body) in anchors.items():
        assert anchor_summary(body, run_id) == expected["anchors"][pos], pos
        assert anchor_summary(body) == expected["anchors"][pos], pos  # it names its run itself


def test_an_old_audit_log_goes_on_with_compact_anchors_and_verifies_whole(tmp_path):
    """Today's release appends compact anchors after the old ones (a new run, and an old run's
    run advancing): both forms in one log, one chain, and every break still found."""
    turns = [{"tool_calls": [{"name": "add_one", "arguments": {"n": 1}}]}, {"content": "done"}]

    async def main():
        store = build_store(f"sqlite:///{_database(tmp_path)}")
        await store.migrate()
        before = len(await store.scan_audit_log())
        agent = Agent(name="auditor", instructions="x", tools=(add_one,))
        engine = Engine(store, AgentRegistry([agent]), lambda spec: ScriptedModel(turns))
        run = await engine.start("auditor", "again", requester="rita")
        await engine.run_to_end(run.id)
        key = Ed25519PrivateKey.generate()  # a checkpoint of a head kept as raw bytes
        await store.append_checkpoint(signer(key))
        old, new = (
            verifier(load_public_key(FIXTURES / f"{OLD}.public_key.pem")),
            verifier(key.public_key()),
        )
        report = await verify_store(store, verify_signature=lambda cp: old(cp) or new(cp))
        log = await store.scan_audit_log()
        await store.close()
        return before, report, log, run.id

    before, report, log, run_id = asyncio.run(main())
    assert report.ok, report.breaks
    assert report.checkpoints == 2
    # SQLite keeps a new record's hash as its 32 bytes, an old one's as hex; both read as hex
    conn = sqlite3.connect(tmp_path / "old.db")
    types = dict(conn.execute("SELECT pos, typeof(hash) FROM audit_log").fetchall())
    conn.close()
    assert {types[pos] for pos, *_ in log[:before]} == {"text"}
    assert {types[pos] for pos, *_ in log[before:]} == {"blob"}
    assert all(len(row[4]) == 64 and int(row[4], 16) >= 0 for row in log)
    assert report.runs == 4
    new = [(rid, body) for _, kind, rid, body, _, _ in log[before:] if kind == "anchor"]
    assert new
    assert all(is_compact(body) for _, body in new)
    summaries = [anchor_summary(body, rid) for rid, body in new]
    assert {s["run"] for s in summaries} == {run_id}
    kinds = [e["kind"] for s in summaries for e in s["entries"]]
    assert kinds[0] == "run.started"
    assert "tool.intent" in kinds
    assert "tool.result" in kinds
