"""Abort with compensation, on both stores: a run's completed consequential steps are undone
newest first, each exactly once and journaled - also when the worker is SIGKILLed at random
points during compensation and another worker finishes it."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.bootstrap import build_store
from autonomic.core.entries import EntryKind
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.engine.faults import CrashAt, Faults
from autonomic.errors import InvalidInput
from autonomic.governance.runaway.budget import Budget
from autonomic.testing.crash import RaiseAt, SimulatedCrash, fork_child, wait_child
from autonomic.testing.crash.kit import append_jsonl, read_jsonl
from autonomic.tools.contract import ToolContext, tool


def sink(ctx: ToolContext) -> Path:
    return Path(str(ctx.metadata["sink"]))


@tool(idempotent=True)
def unbook(booking: str, ctx: ToolContext) -> dict[str, str]:
    """Cancel a booking (dedups on the idempotency key, like a real idempotent API)."""
    seen = {r["key"] for r in read_jsonl(sink(ctx)) if r["op"] == "unbook"}
    if ctx.idempotency_key not in seen:
        append_jsonl(sink(ctx), {"op": "unbook", "booking": booking, "key": ctx.idempotency_key})
    return {"cancelled": booking}


@tool(compensate=unbook)
def book(item: str, ctx: ToolContext) -> dict[str, str]:
    """Book an item."""
    append_jsonl(sink(ctx), {"op": "book", "item": item, "key": ctx.idempotency_key})
    return {"booking": f"b-{item}"}


@tool(idempotent=True)
def lookup(item: str) -> str:
    """Read something."""
    return f"{item} is available"


@tool
def notify(text: str) -> str:
    """Send a message (no way to unsend it)."""
    return "sent"


@tool
def ship(item: str) -> str:
    """Ship (the run's budget forbids it: the run suspends here)."""
    return "shipped"


CALLS = (
    ("book", {"item": "a"}),
    ("lookup", {"item": "a"}),
    ("book", {"item": "b"}),
    ("notify", {"text": "booked"}),
    ("book", {"item": "c"}),
    ("ship", {"item": "c"}),
)


def model(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    done = sum(1 for m in messages if m.role is Role.TOOL)
    if done >= len(CALLS):
        return ModelResponse(content="all done", model="m")
    name, arguments = CALLS[done]
    return ModelResponse(
        content=None, tool_calls=(ToolCall(f"c{done}", name, json.dumps(arguments)),), model="m"
    )


AGENT = Agent(
    name="booker",
    instructions="Book things.",
    tools=(book, unbook, lookup, notify, ship),
    model="function:booker",
    read_only=frozenset({"lookup"}),
    budget=Budget(tool_calls={"ship": 0}),
)


def engine(store: Any, faults: Faults | None = None, **kw: Any) -> Engine:
    models = {"function:booker": FunctionModel(model, name="function:booker")}
    extra: dict[str, Any] = {"faults": faults} if faults is not None else {}
    return Engine(store, AgentRegistry([AGENT]), models.__getitem__, **extra, **kw)


async def suspended_run(store: Any, path: Path, run_id: str) -> None:
    run = await engine(store).run(
        "booker", "book a, b, c", run_id=run_id, metadata={"sink": str(path)}
    )
    assert run.status is RunStatus.SUSPENDED, run.status_reason


def check_compensated(path: Path, entries: Sequence[Any]) -> None:
    records = read_jsonl(path)
    assert [r["item"] for r in records if r["op"] == "book"] == ["a", "b", "c"]
    undone = [r["booking"] for r in records if r["op"] == "unbook"]
    assert undone == ["b-c", "b-b", "b-a"]  # each exactly once, newest first
    comp = [e.payload for e in entries if e.kind is EntryKind.COMPENSATION]
    results = [c for c in comp if c["phase"] == "result"]
    assert [(c["of"], c["ok"]) for c in results] == [("book", True)] * 3
    assert len({c["step"] for c in results}) == 3
    skipped = [c for c in comp if c["phase"] == "skipped"]
    assert [c["of"] for c in skipped] == ["notify"]  # lookup is read-only: nothing to undo


def test_an_aborted_run_is_compensated_newest_first_and_cancelled(store_url, make_store, tmp_path):
    path = tmp_path / "sink.jsonl"

    async def main():
        store = await make_store(store_url)
        try:
            await suspended_run(store, path, "run_abort")
            eng = engine(store)
            aborting = await eng.abort("run_abort", "customer withdrew", compensate=True, by="ops")
            assert aborting.status is RunStatus.RUNNING
            again = await eng.abort("run_abort", "twice", compensate=True)  # the request stands
            claimed = await eng.claim("run_abort")
            assert claimed is not None
            final = await eng.drive(claimed)
            with pytest.raises(InvalidInput, match="a finished run cannot be aborted"):
                await eng.abort("run_abort", "again")
            return again, final, await store.load_journal("run_abort")
        finally:
            await store.close()

    again, final, entries = asyncio.run(main())
    assert again.status is RunStatus.RUNNING
    assert final.status is RunStatus.CANCELLED
    assert final.status_reason == (
        "aborted by ops: customer withdrew; compensated 3 step(s), 1 without a compensating action"
    )
    check_compensated(path, entries)
    requested = next(e.payload for e in entries if e.kind is EntryKind.COMPENSATION)
    assert requested == {"phase": "requested", "by": "ops", "reason": "customer withdrew"}
    # the compensating calls were never model turns: the conversation ended where it was
    assert [e.kind for e in entries].count(EntryKind.MODEL_RESPONSE) == len(CALLS)


def test_a_run_with_nothing_to_undo_is_cancelled_at_once(sqlite_url, make_store, tmp_path):
    async def main():
        store = await make_store(sqlite_url)
        try:
            eng = engine(store)
            run = await eng.start("booker", "nothing yet", metadata={"sink": str(tmp_path / "s")})
            return await eng.abort(run.id, "changed my mind")
        finally:
            await store.close()

    run = asyncio.run(main())
    assert run.status is RunStatus.CANCELLED
    assert run.status_reason is not None
    assert "nothing to undo" in run.status_reason


def test_a_failed_compensation_suspends_the_run_naming_the_step(sqlite_url, make_store, tmp_path):
    path = tmp_path / "sink.jsonl"

    async def main():
        store = await make_store(sqlite_url)
        try:
            await suspended_run(store, path, "run_fail")
            eng = engine(store)
            await eng.abort("run_fail", "stop", compensate=True)
            path.unlink()
            path.mkdir()  # the sink is unwritable: unbook fails
            claimed = await eng.claim("run_fail")
            assert claimed is not None
            stuck = await eng.drive(claimed)
            path.rmdir()
            await eng.reopen("run_fail", "sink repaired")
            claimed = await eng.claim("run_fail")
            assert claimed is not None
            return stuck, await eng.drive(claimed), await store.load_journal("run_fail")
        finally:
            await store.close()

    stuck, final, _entries = asyncio.run(main())
    assert stuck.status is RunStatus.SUSPENDED
    assert stuck.status_reason is not None
    assert stuck.status_reason.startswith("compensating book (step 5:0) with unbook failed")
    assert final.status is RunStatus.CANCELLED
    undone = [r["booking"] for r in read_jsonl(path) if r["op"] == "unbook"]
    assert undone == ["b-c", "b-b", "b-a"]


def test_an_agent_refuses_a_compensation_it_cannot_make():
    with pytest.raises(InvalidInput, match="compensated by unbook, which is not one of its tools"):
        Agent(name="x", instructions="x", tools=(book,))

    @tool(name="unbook")
    def unsafe_unbook(booking: str) -> str:
        return booking

    with pytest.raises(InvalidInput, match="is not idempotent"):
        Agent(name="x", instructions="x", tools=(book, unsafe_unbook))


def test_a_crash_in_compensation_resumes_without_undoing_twice_in_process(
    store_url, make_store, tmp_path
):
    """In-process crashes (the journal a dead worker leaves) at every commit of compensation."""
    for n in range(1, 9):
        path = tmp_path / f"sink{n}.jsonl"

        async def main(n: int = n, path: Path = path) -> list[Any]:
            store = await make_store(store_url)
            try:
                run_id = f"run_crash{n}"
                await suspended_run(store, path, run_id)
                await engine(store).abort(run_id, "stop", compensate=True)
                first = engine(store, RaiseAt("after_commit", n))
                claimed = await first.claim(run_id)
                assert claimed is not None
                try:
                    await first.drive(claimed)
                except SimulatedCrash:
                    later = engine(store, clock=lambda: time.time() + 3600)
                    claimed = await later.claim(run_id)
                    if claimed is not None:  # None: it crashed after its last commit
                        await later.drive(claimed)
                assert (await store.get_run(run_id)).status is RunStatus.CANCELLED
                return await store.load_journal(run_id)
            finally:
                await store.close()

        check_compensated(path, asyncio.run(main()))


POINTS = ("before_commit", "after_commit", "before_effect", "compensated")


@pytest.mark.parametrize("seed", range(4))
def test_sigkill_at_random_points_during_compensation_undoes_each_step_once(
    store_url, make_store, tmp_path, seed
):
    rng = random.Random(seed)
    path = tmp_path / "sink.jsonl"
    run_id = f"run_kill{seed}"

    async def prepare() -> None:
        store = await make_store(store_url)
        try:
            await suspended_run(store, path, run_id)
            await engine(store).abort(run_id, "stop", compensate=True)
        finally:
            await store.close()

    asyncio.run(prepare())
    kills = 0
    for _ in range(6):  # each child is killed or finishes; the run always ends
        point, count = rng.choice(POINTS), rng.randint(1, 3)

        def body(point: str = point, count: int = count) -> int:
            async def go() -> None:
                store = build_store(store_url)
                try:
                    eng = engine(store, CrashAt(point, count))
                    claimed = await eng.claim(run_id)
                    if claimed is not None:
                        await eng.drive(claimed)
                finally:
                    await store.close()

            asyncio.run(go())
            return 0

        ended = wait_child(fork_child(body))
        kills += ended.killed
        assert ended.killed or ended.code == 0, ended

        async def status() -> RunStatus:
            store = build_store(store_url)
            try:
                return (await store.get_run(run_id)).status
            finally:
                await store.close()

        if asyncio.run(status()) is RunStatus.CANCELLED:
            break

    async def final() -> tuple[Any, list[Any]]:
        store = build_store(store_url)
        try:
            eng = engine(store)
            run = await store.get_run(run_id)
            if not run.status.terminal:
                claimed = await eng.claim(run_id)
                assert claimed is not None
                run = await eng.drive(claimed)
            return run, await store.load_journal(run_id)
        finally:
            await store.close()

    run, entries = asyncio.run(final())
    assert kills >= 1  # every point is reached at least three times: the first child dies
    assert run.status is RunStatus.CANCELLED
    check_compensated(path, entries)


def test_a_running_run_is_aborted_when_its_worker_is_gone(store_url, make_store, tmp_path):
    """RUNNING under a lease (its worker died after 2 commits): the request is journaled without
    a status change, and the next worker to take the run compensates instead of acting."""
    path = tmp_path / "sink.jsonl"

    async def main():
        store = await make_store(store_url)
        try:
            eng = engine(store, RaiseAt("step_done", 3))
            with pytest.raises(SimulatedCrash):
                await eng.run("booker", "book", run_id="run_live", metadata={"sink": str(path)})
            assert (await store.get_run("run_live")).status is RunStatus.RUNNING
            aborting = await engine(store).abort("run_live", "stop", compensate=True)
            later = engine(store, clock=lambda: time.time() + 3600)
            claimed = await later.claim("run_live")
            assert claimed is not None
            return aborting, await later.drive(claimed), await store.load_journal("run_live")
        finally:
            await store.close()

    aborting, final, entries = asyncio.run(main())
    assert aborting.status is RunStatus.RUNNING
    assert final.status is RunStatus.CANCELLED
    records = read_jsonl(path)
    assert [r["item"] for r in records if r["op"] == "book"] == ["a", "b"]
    assert [r["booking"] for r in records if r["op"] == "unbook"] == ["b-b", "b-a"]
    # no model turn after the abort: the run never acted again
    kinds = [e.kind for e in entries]
    assert EntryKind.MODEL_RESPONSE not in kinds[kinds.index(EntryKind.COMPENSATION) :]
