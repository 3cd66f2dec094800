"""A paused worker wakes up after its run was taken over: fencing refuses its writes.

Worker A (a child process) drives a run and freezes itself (SIGSTOP) between a tool's effect and
the commit of its result. Worker B (this process, its clock moved past A's lease) claims the run,
which bumps the fence, and drives it to the end. Then A is woken (SIGCONT): its commit must be
refused with ``LeaseLost``, it must write nothing, and the journal must read as one execution.
Nothing sleeps: ``waitpid(WUNTRACED)`` says when A has stopped, and B's clock is shifted instead
of waiting for the lease to expire.

The second half pauses A around a slow tool's effect: paused before it, A checks its lease when it
wakes and never starts the effect; paused inside it (too late for any check), the system A writes
to refuses A's write because it carries a lower fence than the new holder's (``FencedSink``).
"""

import asyncio
import logging
import os
import signal
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from autonomic.adapters.model.scripted import FunctionModel, assistant_turn
from autonomic.bootstrap import build_store
from autonomic.core.journal import EntryKind
from autonomic.core.messages import ModelResponse, ToolCall
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine, new_run_id
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
from autonomic.testing.fenced_sink import FencedSink
from autonomic.tools.contract import ToolContext, tool

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


# -- a slow tool, a worker paused past its lease, and a system that refuses stale writers -------
#
# Worker A (a child) drives a run whose one call is a slow write to a ``FencedSink``. It is
# paused (SIGSTOP, which it sends itself at a chosen point, so the parent's ``waitpid`` says when)
# either before the effect or inside it. B (this process, its clock past A's lease) takes the run
# over; then A's clock is moved past its lease too (a file the parent writes before SIGCONT: the
# time A slept) and A is woken.

SLOW_TTL = 2.0
_paused = {"armed": False}
"""Set in the child only: the tool pauses its own process once, mid-effect."""


async def _post(entry: str, ctx: ToolContext) -> str:
    """A slow write: note that it started, (in the paused scenario) pause, then write."""
    append_jsonl(Path(ctx.metadata["started"]), {"pid": os.getpid(), "fence": ctx.fence})
    if _paused["armed"]:
        _paused["armed"] = False
        os.kill(os.getpid(), signal.SIGSTOP)  # the worker freezes mid-effect
    FencedSink(ctx.metadata["sink"]).write(ctx.fence, {"entry": entry, "pid": os.getpid()})
    return "posted"


def _post_agent(idempotent: bool) -> tuple[Agent, FunctionModel]:
    post = tool(name="post", idempotent=idempotent)(_post)

    def policy(messages, tools):
        if assistant_turn(messages) == 0:
            return ModelResponse(None, (ToolCall("c1", "post", '{"entry": "e1"}'),))
        return ModelResponse("posted it", ())

    agent = Agent(name="poster", instructions="post", tools=(post,), model="function:poster")
    return agent, FunctionModel(policy, name="function:poster")


class _SleptClock:
    """A's clock: real time, plus the time the parent says A slept (written before SIGCONT)."""

    def __init__(self, slept: Path) -> None:
        self.slept = slept

    def __call__(self) -> float:
        extra = float(self.slept.read_text()) if self.slept.exists() else 0.0
        return time.time() + extra


def _paused_zombie(url, tmp_path, *, idempotent, stop_before_effect):
    agent, model = _post_agent(idempotent)
    run_id = new_run_id()
    paths = {name: tmp_path / name for name in ("sink", "started", "slept", "events", "log")}
    metadata = {"sink": str(paths["sink"]), "started": str(paths["started"])}

    def engine(store, **options):
        return Engine(store, AgentRegistry([agent]), lambda spec: model, **options)

    def worker_a():
        _paused["armed"] = not stop_before_effect
        handler = logging.FileHandler(paths["log"])
        logging.getLogger("autonomic").addHandler(handler)
        faults = StopAt("before_effect", 1, events=paths["events"]) if stop_before_effect else None

        async def go():
            store = build_store(url)
            try:
                a = engine(
                    store, lease_ttl=SLOW_TTL, clock=_SleptClock(paths["slept"]), faults=faults
                )
                final = await a.run("poster", "post e1", run_id=run_id, metadata=metadata)
                append_jsonl(paths["events"], {"event": "returned", "status": final.status.value})
            finally:
                await store.close()

        asyncio.run(go())
        return 0

    asyncio.run(_migrate(url))
    pid = fork_child(worker_a)
    with _child_reaped(pid):
        stopped = wait_child(pid, until_stopped=True)
        assert stopped.stopped, str(stopped)
        assert stopped.signal == signal.SIGSTOP

        async def worker_b():
            store = build_store(url)
            try:
                b = engine(store, lease_ttl=SLOW_TTL, clock=lambda: time.time() + SLOW_TTL + 1)
                claimed = await b.claim(run_id)
                assert claimed is not None, "B could not take the run over"
                return claimed, await b.drive(claimed)
            finally:
                await store.close()

        claimed, b_final = asyncio.run(worker_b())
        paths["slept"].write_text(str(SLOW_TTL + 1))
        os.kill(pid, signal.SIGCONT)
        a_exit = wait_child(pid)
    return {
        "pid": pid,
        "run_id": run_id,
        "claimed": claimed,
        "b_final": b_final,
        "a_exit": a_exit,
        "sink": FencedSink(paths["sink"]),
        "started": read_jsonl(paths["started"]),
        "events": read_jsonl(paths["events"]),
        "log": paths["log"].read_text() if paths["log"].exists() else "",
    }


async def _migrate(url):
    store = build_store(url)
    try:
        await store.migrate()
    finally:
        await store.close()


def test_a_zombie_paused_before_its_effect_never_starts_it(store_url, tmp_path):
    z = _paused_zombie(store_url, tmp_path, idempotent=False, stop_before_effect=True)
    assert z["a_exit"].code == 0, str(z["a_exit"])
    assert z["claimed"].lease.fence == 2
    # B found the call started (its intent committed) without a result: in doubt, not redone
    assert z["b_final"].status is RunStatus.WAITING_FOR_HUMAN
    assert "in doubt" in (z["b_final"].status_reason or "")
    # A, woken past its lease, checked it before the effect: nothing started, anywhere
    assert z["started"] == []
    assert z["sink"].records() == []
    names = [e["event"] for e in z["events"]]
    assert names[names.index("continued") + 1 :] == ["returned"], z["events"]
    # and A's log says so, naming the run and the fence it held
    assert z["run_id"] in z["log"], z["log"]
    assert "fence 1" in z["log"]
    assert "lost its lease" in z["log"]


def test_a_fenced_sink_refuses_the_write_of_a_zombie_woken_mid_effect(store_url, tmp_path):
    """The effect had started when A froze: no lease check can stop it any more. B re-runs the
    (idempotent) call under fence 2; A's late write under fence 1 is refused by the sink."""
    z = _paused_zombie(store_url, tmp_path, idempotent=True, stop_before_effect=False)
    assert z["a_exit"].code == 0, str(z["a_exit"])
    assert z["b_final"].status is RunStatus.COMPLETED, z["b_final"].status_reason
    assert [(r["pid"], r["fence"]) for r in z["started"]] == [(z["pid"], 1), (os.getpid(), 2)]
    records = z["sink"].records()
    assert [(r["fence"], r["accepted"]) for r in records] == [(2, True), (1, False)]
    assert records[1]["pid"] == z["pid"]
    assert len(z["sink"].accepted()) == 1  # one effect, the new holder's
    assert z["run_id"] in z["log"], z["log"]
    assert "fence 1" in z["log"]
