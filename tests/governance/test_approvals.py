"""Approvals end to end on both stores: wait without a worker, approve, reject, time out."""

import asyncio

import pytest
from governed import LEDGER, call, desk, engine, open_store

from autonomic.core.approval import ApprovalStatus
from autonomic.core.journal import EntryKind
from autonomic.core.run import RunStatus
from autonomic.errors import ApprovalRefused


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


class Clock:
    """A clock the test moves (no sleeping)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _waiting_run(store_url, turns, *, policy=None, clock=None):
    async def go():
        store = await open_store(store_url)
        kwargs = {"clock": clock} if clock else {}
        eng = engine(store, turns, **({"policy": policy} if policy else {}), **kwargs)
        run = await eng.run("payer", "pay", requester="rita")
        assert run.status is RunStatus.WAITING_FOR_HUMAN
        [approval] = await store.list_approvals(run_id=run.id)
        return store, eng, run, approval

    return go()


BIG = [
    {"tool_calls": [call("pay", to="bob", amount=500)]},
    {"content": "done"},
]


def test_a_rejection_refuses_the_action_and_the_run_goes_on(store_url):
    async def go():
        store, eng, run, approval = await _waiting_run(store_url, BIG)
        await desk(store).deny(approval.id, by="carl", reason="not this month")
        final = await eng.run_to_end(run.id)
        entries = await store.load_journal(run.id)
        shown = await store.get_approval(approval.id)
        await store.close()
        return final, entries, shown

    final, entries, shown = asyncio.run(go())
    assert final.status is RunStatus.COMPLETED
    assert shown.status is ApprovalStatus.REJECTED
    [result] = [e.payload for e in entries if e.kind is EntryKind.TOOL_RESULT]
    assert result["error"]["code"] == "approval_rejected"
    assert "not this month" in result["error"]["message"]
    assert not [e for e in entries if e.kind is EntryKind.TOOL_INTENT], "0 executions"
    [event] = [e.payload for e in entries if e.kind is EntryKind.APPROVAL]
    assert (event["event"], event["by"]) == ("rejected", ["carl"])


def test_expiry_denies_by_default_as_a_timeout_not_a_rejection(store_url):
    clock = Clock()

    async def go():
        store, eng, run, _approval = await _waiting_run(store_url, BIG, clock=clock)
        d = desk(store, clock=clock)
        assert await d.sweep() == [], "nothing is due yet"
        clock.now += 3601  # the policy's window is 1h
        [expired] = await d.sweep()
        final = await eng.run_to_end(run.id)
        entries = await store.load_journal(run.id)
        await store.close()
        return expired, final, entries

    expired, final, entries = asyncio.run(go())
    assert expired.status is ApprovalStatus.TIMEOUT
    assert expired.decided_by == ()
    assert final.status is RunStatus.COMPLETED
    [event] = [e.payload for e in entries if e.kind is EntryKind.APPROVAL]
    assert event["event"] == "timeout"
    [result] = [e.payload for e in entries if e.kind is EntryKind.TOOL_RESULT]
    assert result["error"]["code"] == "approval_timeout"
    assert not [e for e in entries if e.kind is EntryKind.TOOL_INTENT]


ESCALATING = """
approval:
  group: controllers
  approvers: [carl, cleo]
  quorum: 2
  expires_after: 10h
  escalate_after: 1h
  escalation_group: managers
  escalation_approvers: [mona]
rules:
  - name: big
    tool: pay
    when: args.amount > 100
    risk: medium
"""


def test_quorum_groups_and_escalation(store_url):
    clock = Clock()

    async def go():
        store, eng, run, approval = await _waiting_run(
            store_url, BIG, policy=ESCALATING, clock=clock
        )
        d = desk(store, clock=clock)
        with pytest.raises(ApprovalRefused, match="not in approver group 'controllers'"):
            await d.approve(approval.id, by="mona")
        first = await d.approve(approval.id, by="carl")
        assert first.status is ApprovalStatus.PENDING, "quorum is two"
        with pytest.raises(ApprovalRefused, match="voted on approval"):
            await d.approve(approval.id, by="carl")
        assert (await store.get_run(run.id)).status is RunStatus.WAITING_FOR_HUMAN
        clock.now += 3601
        [escalated] = await d.sweep()
        assert escalated.escalated
        assert escalated.current_group() == "managers"
        with pytest.raises(ApprovalRefused, match="not in approver group 'managers'"):
            await d.approve(approval.id, by="cleo")
        done = await d.approve(approval.id, by="mona", reason="fine")
        final = await eng.run_to_end(run.id)
        entries = await store.load_journal(run.id)
        await store.close()
        return done, final, entries

    done, final, entries = asyncio.run(go())
    assert done.status is ApprovalStatus.APPROVED
    assert done.decided_by == ("carl", "mona")
    assert final.status is RunStatus.COMPLETED
    events = [e.payload["event"] for e in entries if e.kind is EntryKind.APPROVAL]
    assert events == ["vote", "escalated", "approved"]


def test_an_approval_is_bound_to_its_arguments(store_url):
    """A re-proposal with changed arguments is a new step that needs its own approval, and an
    approver shown other arguments cannot spend the approval on these."""
    turns = [
        {"tool_calls": [call("pay", to="bob", amount=500)]},
        {"tool_calls": [call("pay", to="bob", amount=5000)]},
        {"content": "done"},
    ]

    async def go():
        store, eng, run, first = await _waiting_run(store_url, turns)
        d = desk(store)
        with pytest.raises(ApprovalRefused, match="bound to other arguments"):
            await d.approve(first.id, by="carl", binding="0" * 64)
        await d.approve(first.id, by="carl", binding=first.binding)
        waiting = await eng.run_to_end(run.id)
        assert waiting.status is RunStatus.WAITING_FOR_HUMAN, "5000 needs its own approval"
        approvals = await store.list_approvals(run_id=run.id)
        entries = await store.load_journal(run.id)
        await store.close()
        return approvals, entries

    approvals, entries = asyncio.run(go())
    assert [a.arguments["amount"] for a in approvals] == [500, 5000]
    assert approvals[0].binding != approvals[1].binding
    assert [
        e.payload["arguments"]["amount"] for e in entries if e.kind is EntryKind.TOOL_INTENT
    ] == [500]


def test_high_risk_is_blocked_with_zero_executions(store_url):
    turns = [{"tool_calls": [call("wipe", table="ledger")]}, {"content": "done"}]

    async def go():
        store = await open_store(store_url)
        LEDGER.pop("wipe", None)
        final = await engine(store, turns).run("payer", "wipe")
        entries = await store.load_journal(final.id)
        await store.close()
        return final, entries

    final, entries = asyncio.run(go())
    assert final.status is RunStatus.COMPLETED
    [decision] = [e.payload for e in entries if e.kind is EntryKind.DECISION]
    assert (decision["verdict"], decision["risk"]) == ("blocked", "HIGH")
    assert "irreversible" in decision["explanation"]
    assert "wipe" not in LEDGER


def test_decisions_replay_and_are_never_asked_again(store_url):
    """Change the policy after the decision: the journaled decision stands; the gate is not
    consulted again for that call."""
    asked: list[str] = []

    class CountingGate:
        name = "counting"

        async def check(self, action):
            asked.append(action.call_id)

    async def go():
        store, _eng, run, approval = await _waiting_run(store_url, BIG)
        await desk(store).approve(approval.id, by="carl")
        lenient = engine(store, BIG, policy="rules: []\n")
        lenient.gates.add(CountingGate())
        final = await lenient.run_to_end(run.id)
        entries = await store.load_journal(run.id)
        await store.close()
        return final, entries

    final, entries = asyncio.run(go())
    assert final.status is RunStatus.COMPLETED
    assert asked == [], "0 re-asks on replay"
    assert len([e for e in entries if e.kind is EntryKind.DECISION]) == 1


def test_forcing_a_waiting_run_open_does_not_skip_its_approval(store_url):
    async def go():
        store, eng, run, _ = await _waiting_run(store_url, BIG)
        await eng.reopen(run.id, "operator pressed resume --force")
        again = await eng.run_to_end(run.id)
        approvals = await store.list_approvals(run_id=run.id)
        entries = await store.load_journal(run.id)
        await store.close()
        return again, approvals, entries

    again, approvals, entries = asyncio.run(go())
    assert again.status is RunStatus.WAITING_FOR_HUMAN
    assert [a.status for a in approvals] == [ApprovalStatus.PENDING], "the same approval, once"
    assert not [e for e in entries if e.kind is EntryKind.TOOL_INTENT]


def test_an_idle_worker_expires_due_approvals_and_finishes_the_run(store_url):
    from autonomic.engine.worker import Worker

    clock = Clock()

    async def go():
        store, eng, run, approval = await _waiting_run(store_url, BIG, clock=clock)
        assert await Worker(eng).run(until_idle=True) == [], "nothing due: nothing to do"
        clock.now += 3601
        finished = await Worker(eng).run(until_idle=True)
        shown = await store.get_approval(approval.id)
        await store.close()
        return run, finished, shown

    run, finished, shown = asyncio.run(go())
    assert shown.status is ApprovalStatus.TIMEOUT
    assert [(r.id, r.status) for r in finished] == [(run.id, RunStatus.COMPLETED)]


def test_approvals_of_a_cancelled_run_cannot_be_decided_and_expire_quietly(store_url):
    clock = Clock()

    async def go():
        store, eng, run, approval = await _waiting_run(store_url, BIG, clock=clock)
        await eng.cancel(run.id, "not needed")
        with pytest.raises(ApprovalRefused, match="is CANCELLED"):
            await desk(store, clock=clock).approve(approval.id, by="carl")
        before = len(await store.load_journal(run.id))
        clock.now += 3601
        [expired] = await desk(store, clock=clock).sweep()
        after = len(await store.load_journal(run.id))
        await store.close()
        return expired, before, after

    expired, before, after = asyncio.run(go())
    assert expired.status is ApprovalStatus.TIMEOUT
    assert before == after, "a finished run's journal gets nothing more"


def test_the_engine_refuses_an_approval_whose_binding_is_not_what_it_would_run(store_url):
    """A forged approval entry (written around the desk, for other arguments) executes nothing:
    the engine recomputes the binding of what it is about to run."""
    from autonomic.core.approval import binding_hash
    from autonomic.core.journal import pack
    from autonomic.core.run import RunChanges
    from autonomic.core.state import fold

    async def go():
        store, eng, run, approval = await _waiting_run(store_url, BIG)
        row = await store.get_run(run.id)
        state = fold(run.id, await store.load_journal(run.id))
        forged = binding_hash("pay@1", {"to": "mallory", "amount": 500}, run.id, approval.step)
        event = pack(
            run.id,
            state.last_seq + 1,
            EntryKind.APPROVAL,
            {
                "approval_id": approval.id,
                "call_id": approval.call_id,
                "event": "approved",
                "status": "approved",
                "binding": forged,
                "by": ["mallory"],
                "reason": "forged",
            },
            prev_hash=state.last_hash,
            created_at=row.updated_at,
        )
        reopen = pack(
            run.id,
            state.last_seq + 2,
            EntryKind.TRANSITION,
            {"from": "WAITING_FOR_HUMAN", "to": "RUNNING", "reason": "forged"},
            prev_hash=event.entry.hash,
            created_at=row.updated_at,
        )
        await store.commit(
            run.id,
            expected_version=row.version,
            fence=None,
            entries=[event, reopen],
            changes=RunChanges(status=RunStatus.RUNNING, status_reason="forged"),
            now=row.updated_at,
        )
        final = await eng.run_to_end(run.id)
        entries = await store.load_journal(run.id)
        await store.close()
        return final, entries

    final, entries = asyncio.run(go())
    assert final.status is RunStatus.COMPLETED
    [result] = [e.payload for e in entries if e.kind is EntryKind.TOOL_RESULT]
    assert result["error"]["code"] == "approval_mismatch"
    assert not [e for e in entries if e.kind is EntryKind.TOOL_INTENT], "0 executions"
