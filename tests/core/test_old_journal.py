"""A journal written by release 0.1 still reads: every run folds to the state 0.1 computed.

The fixture (``fixtures/README.md``) holds every entry kind 0.1 wrote; the expected values were
computed by 0.1's own fold, timeline and spend. If an entry type's decoding drifts from what 0.1
wrote - a renamed key, a default that differs, a field dropped - a run here folds differently.
"""

import asyncio
import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from autonomic.bootstrap import build_store
from autonomic.core.entries import EntryKind
from autonomic.core.journal import record
from autonomic.core.state import RunState, fold
from autonomic.core.timeline import spend, summarise

FIXTURES = Path(__file__).parent / "fixtures"


def _state(s: RunState) -> dict[str, Any]:
    return {
        "status": s.status.value,
        "turns": s.turns,
        "usage": s.usage.to_dict(),
        "last_seq": s.last_seq,
        "last_hash": s.last_hash,
        "output": s.output,
        "tools": list(s.tools),
        "max_turns": s.max_turns,
        "finished_turn": s.finished_turn,
        "requester": s.requester,
        "workflow": s.workflow,
        "calls": s.calls,
        "outputs": s.outputs,
        "started_at": s.started_at,
        "budget": s.budget,
        "intent_counts": s.intent_counts,
        "tool_cost": s.tool_cost,
        "loop_ack_seq": s.loop_ack_seq,
        "taint": s.taint,
        "model_cost": s.model_cost,
        "model_calls": s.model_calls,
        "compressions": s.compressions,
        "planning": s.planning,
        "plan": s.plan.to_payload() if s.plan is not None else None,
        "reopened": s.reopened,
        "messages": [m.to_dict() for m in s.messages],
        # 0.2 keys calls by position (turn, index), 0.1 by the server's id: the same calls
        "decisions": sorted(d.call_id for d in s.decisions.values()),
        "approvals": sorted(a.call_id for a in s.approvals.values()),
        "intents": sorted(i.call_id for i in s.intents.values()),
        "results": sorted(r.call_id for r in s.results.values()),
        "pending": [[p.call.id, p.intent is not None] for p in s.pending_calls()],
        "guard_steps": s.guard_steps,
    }


@pytest.fixture(scope="module")
def journals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Any]]:
    path = tmp_path_factory.mktemp("old") / "journal-0.1.db"
    with gzip.open(FIXTURES / "journal-0.1.db.gz") as src, path.open("wb") as dst:
        shutil.copyfileobj(src, dst)

    async def load() -> dict[str, list[Any]]:
        store = build_store(f"sqlite:///{path}")
        try:
            # a reader of an older schema is told to migrate (adapters/store/schema.py); the
            # copy is migrated as `autonomic migrate` would (0008 added columns to runs)
            await store.migrate()
            runs = await store.list_runs(limit=100)
            return {run.id: await store.load_journal(run.id) for run in runs}
        finally:
            await store.close()

    return asyncio.run(load())


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    with gzip.open(FIXTURES / "journal-0.1.expected.json.gz") as f:
        data: dict[str, Any] = json.load(f)
    return data


NEWER_KINDS = {
    EntryKind.SETTLEMENT,
    EntryKind.PLAN_CANDIDATE,
    EntryKind.PLAN_SCORE,
    EntryKind.COMPENSATION,
    EntryKind.SUBTASK,
}
"""Kinds added after 0.1: 0.1 never wrote them, so the fixture cannot hold them."""


def test_the_fixture_holds_every_entry_kind(journals):
    kinds = {e.kind for entries in journals.values() for e in entries}
    assert kinds == set(EntryKind) - NEWER_KINDS


def test_every_old_run_folds_to_the_state_the_old_release_computed(journals, expected):
    assert set(journals) == set(expected)
    for run_id, entries in journals.items():
        want = expected[run_id]
        assert _state(fold(run_id, entries)) == want["state"], run_id
        assert [summarise(e) for e in entries] == want["timeline"], run_id
        assert spend(entries) == want["spend"], run_id


def test_every_old_entry_re_encodes_to_the_bytes_it_was_hashed_from(journals):
    """Decode then encode is the identity on every stored payload: a new entry of the same
    content hashes as 0.1's did, and nothing a typed value drops was ever written."""
    for entries in journals.values():
        prev = "0" * 64
        for e in entries:
            again = record(e.run_id, e.seq, e.body, prev_hash=prev, created_at=e.created_at)
            assert again.entry.payload == e.payload, (e.kind, e.seq)
            assert again.entry.hash == e.hash, (e.kind, e.seq)
            prev = e.hash
