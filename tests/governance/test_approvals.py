"""Approvals end to end on both stores: wait without a worker, approve, reject, time out."""

import asyncio

import pytest

from autonomic.core.approval import ApprovalStatus
from autonomic.core.journal import EntryKind
from autonomic.core.run import RunStatus
from autonomic.errors import ApprovalRefused
from governed import LEDGER, call, desk, engine, open_store


def test_medium_action_waits_without_a_lease_and_runs_once_after_approval(store_url):
    turns = [
        {"tool_calls": [call("pay", to="ann", amount=50)]},
        {"tool_calls": [call("pay", to="bob", amount=500)]},
        {"content": "done"},
    ]

    async def go():
        store = await open_store(store_url)
        eng = engine(store, turns)
        run = await eng.run("payer", "pay", requester="rita")
        assert run.status is RunStatus.WAITING_FOR_HUMAN
        row = await store.get_run(run.id)
        assert row.lease.owner is None, "waiting holds no worker"
        pending = await desk(store).pending()
        assert [p.tool for p in pending] == ["pay@1"]
        approval = pending[0]
        assert approval.arguments == {"to": "bob", "amount": 500}
        with pytest.raises(ApprovalRefused, match="requested run"):
            await desk(store).approve(approval.id, by="rita")
        decided = await desk(store).approve(approval.id, by="carl", reason="ok")
        assert decided.status is ApprovalStatus.APPROVED
        assert (await store.get_run(run.id)).status is RunStatus.RUNNING
        final = await eng.run_to_end(run.id)
        entries = await store.load_journal(run.id)
        await store.close()
        return final, entries

    final, entries = asyncio.run(go())
    assert final.status is RunStatus.COMPLETED
    kinds = [e.kind for e in entries]
    assert kinds.count(EntryKind.DECISION) == 2
    verdicts = [e.payload["verdict"] for e in entries if e.kind is EntryKind.DECISION]
    assert verdicts == ["allow", "needs_approval"]
    results = [e.payload for e in entries if e.kind is EntryKind.TOOL_RESULT]
    assert [r["ok"] for r in results] == [True, True]
    keys = [e.payload["key"] for e in entries if e.kind is EntryKind.TOOL_INTENT]
    assert all(len(LEDGER[k]) == 1 for k in keys)
