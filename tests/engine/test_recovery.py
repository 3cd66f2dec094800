"""Recovery after a crash at one chosen point, on every store: no randomness, one scenario each.

A child process drives a run of the crash harness's agent and dies (SIGKILL) at a fault point found
in an uncrashed reference run; this process resumes the run and checks the harness's invariants
plus what the scenario is about. Plan of the harness, by tool call (``k`` idempotent, ``b`` not):
turn 1 k1 | turn 2 b1 | turn 3 k2 k3 | turn 4 b2 k4 | turn 5 k5 b3 | turn 6 k6 | turn 7 b4 | ...
"""

import asyncio
import json
import os
import signal
import time
from contextlib import contextmanager

import pytest

from autonomic.bootstrap import build_store
from autonomic.core.entries import ToolIntent
from autonomic.core.journal import EntryKind
from autonomic.core.run import RunStatus
from autonomic.core.state import fold
from autonomic.engine.executor import new_run_id, owner_is_dead
from autonomic.engine.faults import CrashAt, NoFaults
from autonomic.engine.session import RunSession
from autonomic.engine.step import model_turn
from autonomic.errors import UserError
from autonomic.testing.crash import (
    BLIND,
    KEYED,
    CrashKit,
    StopAt,
    TrialFiles,
    crash_trial,
    drive_in_child,
    fork_child,
    keyed_write,
    reference_run,
    resume_trial,
    spawn_driver,
    step_results,
    wait_child,
)
from autonomic.tools.contract import ToolContext


@pytest.fixture
def reference(store_url, tmp_path):
    return reference_run(store_url, tmp_path / "reference")


def _attempts(trial, op):
    return [r for r in trial.effects if r["op"] == op and r["event"] == "attempt"]


def _applied(trial, op):
    return [r for r in trial.effects if r["op"] == op and r["event"] == "applied"]


def _intent(trial, call_id):
    (intent,) = [
        e.payload
        for e in trial.entries
        if e.kind is EntryKind.TOOL_INTENT and e.payload["call_id"] == call_id
    ]
    return intent


def _result(trial, call_id):
    (result,) = [
        e.payload
        for e in trial.entries
        if e.kind is EntryKind.TOOL_RESULT and e.payload["call_id"] == call_id
    ]
    return result


@contextmanager
def _child_reaped(pid):
    """Make sure the child is gone (killed and reaped) when the test ends, however it ends."""
    try:
        yield
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


# -- a non-idempotent call that started: a human decides ------------------------------------------


@pytest.mark.parametrize("effect_happened", [False, True], ids=["before-effect", "after-effect"])
def test_a_started_non_idempotent_call_sends_the_run_to_a_human_in_doubt(
    store_url, tmp_path, reference, effect_happened
):
    if effect_happened:  # b1 ran; its result was never committed
        point, count = "after_effect", 2
    else:  # b1's intent is committed (write-ahead), b1 has not run
        point, count = "after_commit", reference.occurrence("after_commit", tools_run=1, last=True)
    trial = crash_trial(store_url, point, count, reference=reference, directory=tmp_path / "t")

    assert trial.crashed
    assert not trial.violations, trial.violations
    assert trial.status is RunStatus.WAITING_FOR_HUMAN
    assert "in doubt" in trial.reason
    assert "call_2_1" in trial.reason
    last = trial.entries[-1]
    assert last.kind is EntryKind.TRANSITION
    assert last.payload["to"] == RunStatus.WAITING_FOR_HUMAN.value
    evidence = last.payload["in_doubt"]
    assert evidence == _intent(trial, "call_2_1")
    assert evidence["tool"] == BLIND
    assert evidence["arguments"] == {"op": "b1", "value": 5}
    assert evidence["key"] == f"{trial.run_id}:7"
    assert step_results(trial.entries) == reference.results[:1]  # k1 only; b1 has no result
    attempts = _attempts(trial, "b1")
    assert [r["key"] for r in attempts] == ([evidence["key"]] if effect_happened else [])
    assert not _attempts(trial, "k2")  # nothing after the call in doubt ran


# -- an idempotent call that started: re-run with its key ----------------------------------------


def _die_with_a_committed_idempotent_intent(url, kit, run_id, files, *, apply_effect):
    """A worker that commits turn 1 with k1's intent (write-ahead), maybe runs k1, then dies.

    The engine commits an idempotent intent together with its result, so a crash never leaves
    this state by itself; a write-ahead worker (or a future commit policy) does.
    """

    def body():
        async def go():
            store = build_store(url)
            engine = kit.engine(store)
            await kit.start(engine, run_id, files)
            run = await engine.claim(run_id)
            state = fold(run_id, await store.load_journal(run_id))
            session = RunSession(
                store, run, state, clock=time.time, faults=NoFaults(), lease_ttl=engine.lease_ttl
            )
            await session.transition(RunStatus.RUNNING, "claimed", worker=engine.owner)
            specs = [t.spec() for t in kit.agent.tools]
            response = await kit.model.complete(session.state.messages, specs)
            session.stage(model_turn(response, 1, 0.0))
            (call,) = response.tool_calls
            arguments = json.loads(call.arguments)
            key = f"{run_id}:{session.next_seq}"
            session.stage(
                ToolIntent(call.id, KEYED, keyed_write.version, arguments, key, idempotent=True)
            )
            await session.flush()
            if apply_effect:
                ctx = ToolContext(
                    run_id=run_id,
                    call_id=call.id,
                    idempotency_key=key,
                    metadata={"sink": str(files.sink)},
                )
                await keyed_write.invoke(arguments, ctx)
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(go())
        return 0

    return wait_child(fork_child(body))


@pytest.mark.parametrize("effect_happened", [False, True], ids=["before-effect", "after-effect"])
def test_a_committed_idempotent_intent_is_re_run_once_with_its_key(
    store_url, tmp_path, reference, effect_happened
):
    kit = CrashKit()
    files = TrialFiles.create(tmp_path / "t")
    run_id = new_run_id()
    child = _die_with_a_committed_idempotent_intent(
        store_url, kit, run_id, files, apply_effect=effect_happened
    )
    assert child.killed, str(child)
    trial = resume_trial(store_url, run_id, child=child, reference=reference, files=files, kit=kit)

    assert not trial.violations, trial.violations
    assert trial.status is RunStatus.COMPLETED
    key = _intent(trial, "call_1_1")["key"]  # the one intent, written before the crash
    assert key == f"{run_id}:4"
    assert [r["key"] for r in _attempts(trial, "k1")] == [key] * (2 if effect_happened else 1)
    assert [r["key"] for r in _applied(trial, "k1")] == [key]
    assert _result(trial, "call_1_1")["replayed"] is True
    assert step_results(trial.entries) == reference.results
    assert trial.model_calls[1] == 1  # turn 1 was committed: the model is not asked again


@pytest.mark.parametrize(
    ("op", "step"),
    [("k1", 1), ("k4", 6)],
    ids=["turn-not-committed", "turn-committed-intent-not"],
)
def test_a_crash_after_an_idempotent_effect_re_runs_it_under_the_same_key(
    store_url, tmp_path, reference, op, step
):
    trial = crash_trial(
        store_url, "after_effect", step, reference=reference, directory=tmp_path / "t"
    )
    assert trial.crashed
    assert trial.status is RunStatus.COMPLETED
    (first,) = [r for r in _attempts(trial, op) if r["pid"] == trial.child.pid]
    call_id = first["call_id"]
    assert _intent(trial, call_id)["key"] == first["key"]
    assert [r["key"] for r in _applied(trial, op)] == [first["key"]]
    assert not trial.violations, trial.violations


# -- model calls ---------------------------------------------------------------------------------


@pytest.mark.parametrize("turn", [2, 7])
def test_a_crash_before_a_turn_is_committed_asks_the_model_again_for_that_turn_only(
    store_url, tmp_path, reference, turn
):
    # Crash at the first commit after the model answered turn ``turn`` (turns 2 and 7 open with a
    # non-idempotent call, so no effect of the turn precedes that commit): the answer is lost,
    # every earlier turn is committed.
    count = reference.occurrence("before_commit", model_calls=turn)
    trial = crash_trial(
        store_url, "before_commit", count, reference=reference, directory=tmp_path / "t"
    )

    assert trial.crashed
    assert not trial.violations, trial.violations
    assert trial.status is RunStatus.COMPLETED
    committed = [
        e.payload["turn"]
        for e in trial.entries[: trial.committed_before_resume]
        if e.kind is EntryKind.MODEL_RESPONSE
    ]
    assert committed == list(range(1, turn))
    final_turn = len(CrashKit().plan) + 1
    assert trial.model_calls == {t: 2 if t == turn else 1 for t in range(1, final_turn + 1)}


# -- taking over a dead worker's lease -----------------------------------------------------------


def test_a_dead_owners_lease_is_taken_over_at_once_and_a_live_ones_is_not(
    store_url, tmp_path, make_store
):
    async def migrate():
        await (await make_store(store_url)).close()

    asyncio.run(migrate())
    kit = CrashKit()
    files = TrialFiles.create(tmp_path / "t")
    run_id = new_run_id()
    # The child claims the run (fence 1), commits PENDING -> RUNNING, then freezes.
    pid = spawn_driver(store_url, kit, run_id, files, StopAt("after_commit", 1), lease_ttl=3600)
    with _child_reaped(pid):
        assert wait_child(pid, until_stopped=True).stopped

        async def inspect_and_try():
            store = build_store(store_url)
            try:
                run = await store.get_run(run_id)
                engine = kit.engine(store)
                with pytest.raises(UserError, match="leased by"):
                    await engine.run_to_end(run_id)
                return run, engine.owner
            finally:
                await store.close()

        held, _ = asyncio.run(inspect_and_try())
        assert held.status is RunStatus.RUNNING
        assert held.lease.owner.split(":")[1] == str(pid)
        assert held.lease.expires_at > time.time() + 3000  # far from expiring
        assert not owner_is_dead(held.lease.owner)

        os.kill(pid, signal.SIGKILL)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # dead but not reaped: a zombie
        assert owner_is_dead(held.lease.owner)

        async def take_over():
            store = build_store(store_url)
            try:
                engine = kit.engine(store)
                final = await engine.run_to_end(run_id)
                return final, await store.load_journal(run_id), engine.owner
            finally:
                await store.close()

        final, entries, new_owner = asyncio.run(take_over())
        assert wait_child(pid).killed

    assert final.status is RunStatus.COMPLETED
    assert final.lease.fence == held.lease.fence + 1
    (recovery,) = [e for e in entries if e.kind is EntryKind.RECOVERY]
    assert recovery.payload["worker"] == new_owner
    assert recovery.payload["fence"] == held.lease.fence + 1
    assert recovery.payload["pending_calls"] == []
    assert files.model_calls(run_id) == {t: 1 for t in range(1, len(kit.plan) + 2)}


def test_a_run_whose_worker_finished_normally_needs_no_recovery(store_url, tmp_path, reference):
    files = TrialFiles.create(tmp_path / "t")
    run_id = new_run_id()
    child = drive_in_child(store_url, CrashKit(), run_id, files, CrashAt("after_effect", 99))
    assert child.code == 0, str(child)
    trial = resume_trial(store_url, run_id, child=child, reference=reference, files=files)
    assert not trial.violations, trial.violations
    assert trial.status is RunStatus.COMPLETED
    assert not [e for e in trial.entries if e.kind is EntryKind.RECOVERY]
    assert trial.committed_before_resume == len(trial.entries)


# -- two non-idempotent calls in one turn: the first result rides with the second intent ---------


@pytest.mark.parametrize("grouped_commit_landed", [False, True], ids=["before", "after"])
def test_a_crash_around_a_result_riding_with_the_next_intent_leaves_one_call_in_doubt(
    store_url, tmp_path, reference, grouped_commit_landed
):
    """Turn 9 proposes b5 and b6, both non-idempotent: b5's result is committed with b6's
    decision and intent, one commit (issue 17 item 2). Killed after b5's effect, before that
    commit: b5 is in doubt, as when its result had a commit of its own. Killed right after it:
    b5's result is kept and b6 is in doubt, never started."""
    b5 = len(step_results(reference.entries)) - 1  # tool calls made once b5 ran (13 of 14)
    grouped = [h for h in reference.hits if h.point == "after_commit" and h.tools_run == b5]
    assert len(grouped) == 1  # b5's result and b6's intent: one commit, not two
    if grouped_commit_landed:
        point, count = "after_commit", grouped[0].occurrence
    else:
        point, count = "after_effect", reference.occurrence("after_effect", tools_run=b5)
    trial = crash_trial(store_url, point, count, reference=reference, directory=tmp_path / "t")

    assert trial.crashed
    assert not trial.violations, trial.violations
    assert trial.status is RunStatus.WAITING_FOR_HUMAN
    doubted = "call_9_2" if grouped_commit_landed else "call_9_1"
    assert doubted in trial.reason
    kept = b5 if grouped_commit_landed else b5 - 1
    assert step_results(trial.entries) == reference.results[:kept]
    assert len(_attempts(trial, "b5")) == 1
    assert not _attempts(trial, "b6")
