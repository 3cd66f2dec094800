"""A paused worker wakes up after its run was taken over: fencing refuses its writes.

Worker A (a child process) drives a run and freezes itself (SIGSTOP) between a tool's effect and
the commit of its result. Worker B (this process, its clock moved past A's lease) claims the run,
which bumps the fence, and drives it to the end. Then A is woken (SIGCONT): its commit must be
refused with ``LeaseLost``, it must write nothing, and the journal must read as one execution.
Nothing sleeps: ``waitpid(WUNTRACED)`` says when A has stopped, and B's clock is shifted instead
of waiting for the lease to expire.
"""

import asyncio
import os
import signal
import time
from collections import Counter
from contextlib import contextmanager

from autonomic.bootstrap import build_store
from autonomic.core.journal import EntryKind
from autonomic.core.run import RunStatus
from autonomic.engine.executor import new_run_id
from autonomic.errors import LeaseLost
from autonomic.testing.crash import (
    CrashKit,
    StopAt,
    TrialFiles,
    append_jsonl,
    chain_problems,
    fork_child,
    kinds,
    read_jsonl,
    reference_run,
    step_results,
    wait_child,
)

LEASE_TTL = 60.0


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


def _worker_a(url, kit, run_id, files, faults, events):
    """The body of worker A: drive the run, logging every commit it attempts and how it ended."""

    def body():
        async def go():
            store = build_store(url)
            commit = store.commit

            async def logged_commit(*args, **kwargs):
                try:
                    version = await commit(*args, **kwargs)
                except LeaseLost as exc:
                    append_jsonl(events, {"event": "lease_lost", "message": str(exc)})
                    raise
                except Exception as exc:
                    append_jsonl(events, {"event": "refused", "error": type(exc).__name__})
                    raise
                append_jsonl(events, {"event": "committed", "version": version})
                return version

            store.commit = logged_commit
            try:
                engine = kit.engine(store, faults=faults, lease_ttl=LEASE_TTL)
                await kit.start(engine, run_id, files)
                final = await engine.run_to_end(run_id)
                append_jsonl(events, {"event": "returned", "status": final.status.value})
            finally:
                await store.close()

        asyncio.run(go())
        return 0

    return body


def _zombie_run(url, tmp_path, stop_at_effect):
    """Run the scenario; A freezes right after the ``stop_at_effect``-th tool effect."""
    kit = CrashKit()
    reference = reference_run(url, tmp_path / "reference", kit)  # also migrates
    files = TrialFiles.create(tmp_path / "zombie")
    events = tmp_path / "worker-a.jsonl"
    run_id = new_run_id()
    faults = StopAt("after_effect", stop_at_effect, events=events)
    pid = fork_child(_worker_a(url, kit, run_id, files, faults, events))
    with _child_reaped(pid):
        stopped = wait_child(pid, until_stopped=True)
        assert stopped.stopped, str(stopped)
        assert stopped.signal == signal.SIGSTOP

        async def worker_b():
            store = build_store(url)
            try:
                held = await store.get_run(run_id)
                engine = kit.engine(
                    store, lease_ttl=LEASE_TTL, clock=lambda: time.time() + LEASE_TTL + 1
                )
                claimed = await engine.claim(run_id)
                assert claimed is not None, "B could not claim the run"
                final = await engine.drive(claimed)
                return held, claimed, final, engine.owner
            finally:
                await store.close()

        held, claimed, final, b_owner = asyncio.run(worker_b())
        os.kill(pid, signal.SIGCONT)
        a_exit = wait_child(pid)

    async def read_back():
        store = build_store(url)
        try:
            return await store.get_run(run_id), await store.load_journal(run_id)
        finally:
            await store.close()

    run, entries = asyncio.run(read_back())
    return {
        "reference": reference,
        "files": files,
        "events": read_jsonl(events),
        "run_id": run_id,
        "pid": pid,
        "held": held,
        "claimed": claimed,
        "b_final": final,
        "b_owner": b_owner,
        "a_exit": a_exit,
        "run": run,
        "entries": entries,
    }


def test_a_woken_zombie_is_fenced_off_and_the_run_reads_as_one_execution(store_url, tmp_path):
    # k6 (turn 6, the 9th tool call) is the only call of its turn: after its effect, A's next
    # step is the turn's commit.
    z = _zombie_run(store_url, tmp_path, stop_at_effect=9)
    reference, files, events, run_id = z["reference"], z["files"], z["events"], z["run_id"]

    # B took the run over: a new fence, and B drove it to the end.
    assert z["held"].status is RunStatus.RUNNING
    assert z["held"].lease.owner.split(":")[1] == str(z["pid"])
    assert z["claimed"].lease.fence == z["held"].lease.fence + 1
    assert z["b_final"].status is RunStatus.COMPLETED

    # A, woken, tried to commit once, was refused with LeaseLost, and wrote nothing more.
    assert z["a_exit"].code == 0, str(z["a_exit"])
    names = [e["event"] for e in events]
    woke = names.index("continued")
    assert names[woke - 1] == "stopping"
    after = names[woke + 1 :]
    assert after == ["point", "lease_lost", "returned"], events
    assert events[woke + 1]["point"] == "before_commit"
    assert "committed" not in after
    assert events[-1]["status"] == RunStatus.COMPLETED.value  # what A read back: B's outcome

    # The journal is one execution: the reference's steps and kinds, plus B's recovery entry.
    run, entries = z["run"], z["entries"]
    assert run.status is RunStatus.COMPLETED
    assert run.output == reference.output
    assert chain_problems(entries) == []
    assert step_results(entries) == reference.results
    assert kinds(entries) == reference.kinds
    (recovery,) = [e for e in entries if e.kind is EntryKind.RECOVERY]
    assert recovery.payload["worker"] == z["b_owner"]
    assert recovery.payload["fence"] == z["claimed"].lease.fence

    # The sink: no key applied twice; A's effects are the nine it made before it froze.
    effects = files.effects()
    applied = Counter(r["key"] for r in effects if r["event"] == "applied")
    assert max(applied.values()) == 1
    a_ops = [r["op"] for r in effects if r["pid"] == z["pid"] and r["event"] == "attempt"]
    assert a_ops == [s.op for s in CrashKit().steps[:9]]
    # The model: turns A had committed were never asked again; any other at most once by each.
    calls = files.model_calls(run_id)
    by_a = {
        e.payload["turn"]
        for e in entries
        if e.kind is EntryKind.MODEL_RESPONSE and e.seq <= recovery.payload["journal_seq"]
    }
    assert by_a >= set(range(1, 6))  # turns 1-5 at least were committed before A froze
    assert set(calls) == set(range(1, len(CrashKit().plan) + 2))
    assert all(calls[t] == 1 for t in by_a), calls
    assert all(calls[t] <= 2 for t in calls), calls


def test_a_zombie_and_its_successor_apply_no_operation_twice(store_url, tmp_path):
    # k2 is the first of two idempotent calls of turn 3: A freezes after k2's effect.
    z = _zombie_run(store_url, tmp_path, stop_at_effect=3)
    assert z["run"].status is RunStatus.COMPLETED
    applied = Counter(r["op"] for r in z["files"].effects() if r["event"] == "applied")
    assert max(applied.values()) == 1, applied
