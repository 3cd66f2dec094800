"""The coordinator, on both stores: a graph of subtasks handed to child runs in parallel and
aggregated; a model's graph validated and a bad one replaced by the template (nothing it did not
validate runs); failures retried, reassigned, skipped, or the graph aborted - with compensation of
the completed subtasks newest first, each exactly once, also across a crash; an operator's abort
of a coordinator; a ReAct turn that delegates several subtasks waits for all of them at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from autonomic.bootstrap import build_store
from autonomic.core.coordination import Coordination, OnFailure
from autonomic.core.entries import CompensationStep, SubtaskStep
from autonomic.core.journal import Entry
from autonomic.core.messages import Message, ModelResponse, ToolCall, ToolSpec
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.engine.faults import CrashAt
from autonomic.engine.worker import Worker
from autonomic.errors import InvalidInput
from autonomic.ports.store import Store
from autonomic.testing.coordination import Ledger, kit_engine, orphans
from autonomic.testing.crash import fork_child, wait_child
from autonomic.testing.delegation import observations, resolver

CHAIN = {
    "nodes": [
        {"id": "a", "uses": "work.step", "inputs": {"n": 0}},
        {"id": "b", "uses": "work.step", "inputs": {"n": 1}, "after": ["a"]},
        {"id": "c", "uses": "work.step", "inputs": {"n": 2}, "after": ["b"]},
    ]
}


def _go(url: str, scenario: Callable[[Store], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        store = build_store(url)
        await store.migrate()
        try:
            return await scenario(store)
        finally:
            await store.close()

    return asyncio.run(go())


async def _drain(engine: Engine) -> None:
    await Worker(engine, concurrency=4, poll_interval=0.01).run(until_idle=True)


def _subtasks(journal: Sequence[Entry], phase: str | None = None) -> list[SubtaskStep]:
    return [
        e.body
        for e in journal
        if isinstance(e.body, SubtaskStep) and (phase is None or e.body.phase == phase)
    ]


def test_independent_subtasks_are_handed_off_together_and_their_results_aggregated(
    store_url: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"

    async def scenario(store: Store) -> None:
        engine = kit_engine(store, ledger)
        run = await engine.start("lead", {"job": "all of it"})
        await _drain(engine)
        done = await store.get_run(run.id)
        assert done.status is RunStatus.COMPLETED, done.status_reason
        assert done.output == {f"s3_{i}": {"n": 15 + i} for i in range(5)}  # the sinks
        assert sorted(Ledger(ledger).applied()) == list(range(20))  # each effect once
        journal = await store.load_journal(run.id)
        first = next(i for i, e in enumerate(journal) if isinstance(e.body, SubtaskStep)
                     and e.body.phase == "result")  # fmt: skip
        layer0 = [s.node for s in _subtasks(journal[:first], "dispatch")]
        assert layer0 == [f"s0_{i}" for i in range(5)]  # all five before any result
        seqs = [e.seq for e in journal[:first] if isinstance(e.body, SubtaskStep)
                and e.body.phase == "dispatch"]  # fmt: skip
        assert seqs == list(range(seqs[0], seqs[0] + 5))  # one commit, nothing between
        # every dispatch waited for its dependencies' results
        seen: set[str] = set()
        for body in _subtasks(journal):
            if body.phase == "result" and body.ok:
                seen.add(str(body.node))
            if body.phase == "dispatch" and str(body.node).startswith("s1_"):
                assert {"s0_0", "s0_1"} & seen or body.node != "s1_0"
        assert await orphans(store, run.id) == []

    _go(store_url, scenario)


PROPOSALS = {
    "cycle": (
        {"nodes": [
            {"id": "x", "uses": "work.step", "inputs": {"n": 7}, "after": ["y"]},
            {"id": "y", "uses": "work.step", "inputs": {"n": 8}, "after": ["x"]},
        ]},
        "cycle",
    ),
    "unknown capability": (
        {"nodes": [{"id": "x", "uses": "rm.rf", "inputs": {"n": 7}}]},
        "not known",
    ),
    "literal breaks the input schema": (
        {"nodes": [{"id": "x", "uses": "work.step", "inputs": {"n": "seven"}}]},
        "invalid",
    ),
    "output does not fit the next input": (
        {"nodes": [
            {"id": "x", "uses": "work.step", "inputs": {"n": 7}},
            {"id": "y", "uses": "work.step", "inputs": {"n": {"$ref": "x"}}},
        ]},
        "does not fit",
    ),
    "garbage": ("Sure! First I will audit the files, then report.", "not JSON"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(PROPOSALS))
def test_a_proposed_graph_that_does_not_validate_is_replaced_by_the_template(
    sqlite_url: str, tmp_path: Path, case: str
) -> None:
    proposal, reason = PROPOSALS[case]
    ledger = tmp_path / "ledger"
    answer = proposal if isinstance(proposal, str) else json.dumps(proposal)

    async def scenario(store: Store) -> None:
        engine = kit_engine(store, ledger, graph=CHAIN, plan=answer)
        run = await engine.start("lead", "three steps")
        await _drain(engine)
        done = await store.get_run(run.id)
        assert done.status is RunStatus.COMPLETED, done.status_reason
        (graph,) = _subtasks(await store.load_journal(run.id), "graph")
        assert graph.source == "template"
        assert reason in str(graph.rejected), graph.rejected
        assert sorted(Ledger(ledger).applied()) == [0, 1, 2]  # only what the template holds

    _go(sqlite_url, scenario)


def test_a_valid_proposed_graph_is_followed(sqlite_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    proposal = {"nodes": [
        {"id": "p", "uses": "work.step", "inputs": {"n": 40}},
        {"id": "q", "uses": "work.step", "inputs": {"n": {"$ref": "p.n"}}},
    ]}  # fmt: skip

    async def scenario(store: Store) -> None:
        plan = "```json\n" + json.dumps(proposal) + "\n```"
        engine = kit_engine(store, ledger, graph=CHAIN, plan=plan)
        run = await engine.start("lead", "two steps")
        await _drain(engine)
        done = await store.get_run(run.id)
        assert done.status is RunStatus.COMPLETED, done.status_reason
        assert done.output == {"n": 40}  # q took p's n
        (graph,) = _subtasks(await store.load_journal(run.id), "graph")
        assert graph.source == "model"
        assert graph.rejected is None
        assert sorted(Ledger(ledger).applied()) == [40, 40]

    _go(sqlite_url, scenario)


def test_a_subtask_answering_garbage_is_retried_then_reassigned(
    store_url: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    one = {"nodes": [{"id": "only", "uses": "work.step", "inputs": {"n": 5}}]}

    async def scenario(store: Store) -> None:
        engine = kit_engine(
            store, ledger, graph=one, garbage=("hand-a",), hands=("hand-a", "hand-b"),
            on_failure=OnFailure(retries=1, reassign=True),
        )  # fmt: skip
        run = await engine.start("lead", "one step")
        await _drain(engine)
        done = await store.get_run(run.id)
        assert done.status is RunStatus.COMPLETED, done.status_reason
        journal = await store.load_journal(run.id)
        assert [s.agent for s in _subtasks(journal, "dispatch")] == ["hand-a", "hand-a", "hand-b"]
        errors = [s.error for s in _subtasks(journal, "result") if not s.ok]
        assert [e["code"] for e in errors if e] == ["capability_output_invalid"] * 2
        assert await orphans(store, run.id) == []

    _go(store_url, scenario)


def test_abort_fails_the_graph_naming_the_subtask_and_runs_nothing_after_it(
    store_url: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"

    async def scenario(store: Store) -> None:
        engine = kit_engine(
            store, ledger, graph=CHAIN, failing=frozenset({1}),
            on_failure=OnFailure(retries=0, reassign=False, then="abort"),
        )  # fmt: skip
        run = await engine.start("lead", "three steps")
        await _drain(engine)
        done = await store.get_run(run.id)
        assert done.status is RunStatus.FAILED
        assert "subtask b (work.step) failed" in str(done.status_reason)
        assert Ledger(ledger).applied() == [0]  # c never ran; nothing undone
        assert Ledger(ledger).applied("undo") == []
        assert await orphans(store, run.id) == []

    _go(store_url, scenario)


def test_continue_leaves_the_failed_subtask_and_what_needs_it_out(
    sqlite_url: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    graph = {"nodes": [
        {"id": "a", "uses": "work.step", "inputs": {"n": 0}},
        {"id": "b", "uses": "work.step", "inputs": {"n": 1}},
        {"id": "c", "uses": "work.step", "inputs": {"n": 2}, "after": ["b"]},
    ]}  # fmt: skip

    async def scenario(store: Store) -> None:
        engine = kit_engine(
            store, ledger, graph=graph, failing=frozenset({1}),
            on_failure=OnFailure(retries=0, reassign=False, then="continue"),
        )  # fmt: skip
        run = await engine.start("lead", "three steps")
        await _drain(engine)
        done = await store.get_run(run.id)
        assert done.status is RunStatus.COMPLETED, done.status_reason
        assert done.output == {"a": {"n": 0}}
        assert "2 left out (b, c)" in str(done.status_reason)
        skipped = _subtasks(await store.load_journal(run.id), "skipped")
        assert sorted(str(s.node) for s in skipped) == ["b", "c"]

    _go(sqlite_url, scenario)


def test_compensate_undoes_completed_subtasks_newest_first_each_once(
    store_url: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"

    async def scenario(store: Store) -> None:
        engine = kit_engine(
            store, ledger, graph=CHAIN, failing=frozenset({2}),
            on_failure=OnFailure(retries=0, reassign=False, then="compensate"),
        )  # fmt: skip
        run = await engine.start("lead", "three steps")
        await _drain(engine)
        done = await store.get_run(run.id)
        assert done.status is RunStatus.FAILED
        assert "compensated 2 subtask(s)" in str(done.status_reason), done.status_reason
        assert Ledger(ledger).applied() == [0, 1]
        assert Ledger(ledger).applied("undo") == [1, 0]  # reverse dependency order
        journal = await store.load_journal(run.id)
        undo = [e.body for e in journal if isinstance(e.body, CompensationStep)]
        assert [(u.phase, u.step) for u in undo] == [
            ("requested", "c"), ("intent", "b"), ("result", "b"), ("intent", "a"),
            ("result", "a"),
        ]  # fmt: skip
        assert await orphans(store, run.id) == []

    _go(store_url, scenario)


@pytest.mark.parametrize(
    ("point", "count"), [("compensated", 1), ("compensated", 2), ("after_commit", 12)]
)
def test_a_coordinator_killed_while_compensating_undoes_each_subtask_once(
    store_url: str, tmp_path: Path, point: str, count: int
) -> None:
    ledger = tmp_path / "ledger"
    failing = OnFailure(retries=0, reassign=False, then="compensate")

    async def enqueue(store: Store) -> str:
        engine = kit_engine(store, ledger, graph=CHAIN, failing=frozenset({2}), on_failure=failing)
        return (await engine.start("lead", "three steps")).id

    run_id = _go(store_url, enqueue)

    def doomed() -> int:
        async def work(store: Store) -> None:
            engine = kit_engine(
                store, ledger, graph=CHAIN, failing=frozenset({2}), on_failure=failing,
                faults=CrashAt(point, count),
            )  # fmt: skip
            await Worker(engine, concurrency=1, poll_interval=0.01).run(until_idle=True)

        _go(store_url, work)
        return 0

    ended = wait_child(fork_child(doomed))
    assert ended.killed, f"the worker was not killed at {point} #{count}: {ended}"

    async def recover(store: Store) -> None:
        engine = kit_engine(
            store, ledger, graph=CHAIN, failing=frozenset({2}), on_failure=failing, lease_ttl=0.2
        )
        for _ in range(50):  # until the dead worker's leases have run out and all is done
            await _drain(engine)
            if (await store.get_run(run_id)).status.terminal:
                break
            await asyncio.sleep(0.1)
        done = await store.get_run(run_id)
        assert done.status is RunStatus.FAILED, done.status_reason
        assert "compensated 2 subtask(s)" in str(done.status_reason)
        assert Ledger(ledger).applied("undo") == [1, 0]
        assert await orphans(store, run_id) == []

    _go(store_url, recover)


def test_an_operator_abort_compensates_what_the_coordinator_completed(
    sqlite_url: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"

    async def scenario(store: Store) -> None:
        engine = kit_engine(store, ledger, graph=CHAIN)
        run = await engine.start("lead", "three steps")
        for _ in range(2):  # a, then b: each a child and a reopening of the lead
            lead = await engine.claim(run.id)
            assert lead is not None
            await engine.drive(lead)
            (child,) = [c for c in await store.children(run.id) if not c.status.terminal]
            claimed = await engine.claim(child.id)
            assert claimed is not None
            await engine.drive(claimed)
        lead = await engine.claim(run.id)
        assert lead is not None
        await engine.drive(lead)  # records b, hands c off, waits
        assert (await store.get_run(run.id)).status is RunStatus.WAITING_FOR_CHILD
        await engine.abort(run.id, "wrong repository", by="ops@default")
        await _drain(engine)
        done = await store.get_run(run.id)
        assert done.status is RunStatus.CANCELLED, done.status_reason
        assert "aborted by ops@default: wrong repository" in str(done.status_reason)
        assert Ledger(ledger).applied("undo") == [1, 0]
        assert await orphans(store, run.id) == []

    _go(sqlite_url, scenario)


def test_an_aggregate_that_breaks_the_output_schema_fails_the_run(
    sqlite_url: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    schema = {"type": "object", "required": ["total"]}

    async def scenario(store: Store) -> None:
        engine = kit_engine(store, ledger, graph=CHAIN, output_schema=schema)
        run = await engine.start("lead", "three steps")
        await _drain(engine)
        done = await store.get_run(run.id)
        assert done.status is RunStatus.FAILED
        assert "breaks the workflow's output_schema" in str(done.status_reason)
        assert "'total' is a required property" in str(done.status_reason)

    _go(sqlite_url, scenario)


def test_a_template_using_an_unknown_capability_fails_the_run_with_the_reason(
    sqlite_url: str, tmp_path: Path
) -> None:
    graph = {"nodes": [{"id": "x", "uses": "no.such", "inputs": {"n": 1}}]}

    async def scenario(store: Store) -> None:
        engine = kit_engine(store, tmp_path / "ledger", graph=graph)
        run = await engine.start("lead", "x")
        await _drain(engine)
        done = await store.get_run(run.id)
        assert done.status is RunStatus.FAILED
        assert "no.such" in str(done.status_reason)
        assert "not known" in str(done.status_reason)
        assert await store.children(run.id) == []

    _go(sqlite_url, scenario)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"plan": False}, "needs a template"),
        ({"template": {"nodes": [{"id": "a", "after": ["a"]}]}}, "cycle"),
        ({"template": {"nodes": []}}, "non-empty"),
        ({"output_schema": {"type": "nope"}}, "not a JSON schema"),
    ],
)
def test_a_bad_coordination_is_refused_where_it_is_declared(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        Coordination(**kwargs)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"then": "retry"}, "is not one of"),
        ({"retries": -1}, "0 to 10"),
        ({"delay": 99}, "0 to 60"),
    ],
)
def test_a_bad_failure_policy_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        OnFailure(**kwargs)
    assert message in str(raised.value)


PARTS = 8
"""More hand-offs in one turn than the loop guard allows repeats: a fan-out is not a loop."""


def test_a_turn_delegating_several_subtasks_hands_them_all_off_before_waiting(
    sqlite_url: str,
) -> None:
    def fan(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
        seen = observations(messages)
        if not seen:
            calls = tuple(
                ToolCall(f"d{i}", "delegate", json.dumps({"to": "helper", "task": f"part {i}"}))
                for i in range(PARTS)
            )
            return ModelResponse(None, calls)
        return ModelResponse(json.dumps(sorted(o["output"] for o in seen)))

    def helper(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
        task = next(m.content for m in messages if m.role.value == "user")
        return ModelResponse(f"did {task}")

    async def scenario(store: Store) -> None:
        engine = Engine(
            store,
            AgentRegistry([
                Agent("boss", "split it", model="fn:boss", delegates_to=["helper"]),
                Agent("helper", "do a part", model="fn:helper"),
            ]),
            resolver({"boss": fan, "helper": helper}),
        )  # fmt: skip
        run = await engine.start("boss", "three parts", metadata={"budget": {"cost": 0.8}})
        claimed = await engine.claim(run.id)
        assert claimed is not None
        waiting = await engine.drive(claimed)
        assert waiting.status is RunStatus.WAITING_FOR_CHILD, waiting.status_reason
        assert f"{PARTS} child run(s)" in str(waiting.status_reason)
        kids = await store.children(run.id)
        assert len(kids) == PARTS  # all exist while it waits
        assert {c.metadata["budget"]["cost"] for c in kids} == {0.05}  # half of 0.8, by 8
        await _drain(engine)
        done = await store.get_run(run.id)
        assert done.status is RunStatus.COMPLETED, done.status_reason
        assert json.loads(str(done.output)) == sorted(f"did part {i}" for i in range(PARTS))

    _go(sqlite_url, scenario)


def test_a_subtask_in_flight_when_the_graph_is_compensated_is_aborted_before_the_undo(
    store_url: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    graph = {"nodes": [
        {"id": "a", "uses": "work.step", "inputs": {"n": 0}},
        {"id": "b", "uses": "work.step", "inputs": {"n": 1}},
        {"id": "c", "uses": "work.step", "inputs": {"n": 2}},
    ]}  # fmt: skip

    async def scenario(store: Store) -> None:
        engine = kit_engine(
            store, ledger, graph=graph, failing=frozenset({1}),
            on_failure=OnFailure(retries=0, reassign=False, then="compensate"),
        )  # fmt: skip
        run = await engine.start("lead", "three at once")
        lead = await engine.claim(run.id)
        assert lead is not None
        await engine.drive(lead)  # a, b and c handed off together
        kids = {c.id: c for c in await store.children(run.id)}
        assert len(kids) == 3
        journal = await store.load_journal(run.id)
        ids = {s.node: s.key for s in _subtasks(journal, "dispatch")}
        from autonomic.engine.delegation import child_run_id

        for node in ("a", "b"):  # a completes, b fails; c never starts
            claimed = await engine.claim(child_run_id(run.id, str(ids[node])))
            assert claimed is not None
            await engine.drive(claimed)
        lead = await engine.claim(run.id)  # b's failure woke it: c is still PENDING
        assert lead is not None
        await engine.drive(lead)
        await _drain(engine)
        done = await store.get_run(run.id)
        assert done.status is RunStatus.FAILED, done.status_reason
        assert "compensated 1 subtask(s)" in str(done.status_reason)
        c = await store.get_run(child_run_id(run.id, str(ids["c"])))
        assert c.status is RunStatus.CANCELLED  # stopped before it did anything
        assert Ledger(ledger).applied() == [0]
        assert Ledger(ledger).applied("undo") == [0]
        assert await orphans(store, run.id) == []

    _go(store_url, scenario)


def test_a_failed_compensation_suspends_and_a_forced_resume_tries_it_again(
    sqlite_url: str, tmp_path: Path
) -> None:
    ledger, refuse = tmp_path / "ledger", tmp_path / "refuse-undo"
    refuse.touch()

    async def scenario(store: Store) -> None:
        engine = kit_engine(
            store, ledger, graph=CHAIN, failing=frozenset({2}), undo_refused_while=refuse,
            on_failure=OnFailure(retries=0, reassign=False, then="compensate"),
        )  # fmt: skip
        run = await engine.start("lead", "three steps")
        await _drain(engine)
        stuck = await store.get_run(run.id)
        assert stuck.status is RunStatus.SUSPENDED
        assert "compensating subtask b (work.step) with work.undo failed" in str(
            stuck.status_reason
        )
        refuse.unlink()  # the operator mended what made the undo fail
        await engine.reopen(run.id, "undo fixed, try again", by="ops@default")
        await _drain(engine)
        done = await store.get_run(run.id)
        assert done.status is RunStatus.FAILED, done.status_reason
        assert "compensated 2 subtask(s)" in str(done.status_reason)
        assert Ledger(ledger).applied("undo") == [1, 0]
        assert await orphans(store, run.id) == []

    _go(sqlite_url, scenario)


def test_children_handed_off_together_share_one_part_of_the_budget(
    sqlite_url: str, tmp_path: Path
) -> None:
    graph = {"nodes": [{"id": f"n{i}", "uses": "work.step", "inputs": {"n": i}} for i in range(4)]}

    async def scenario(store: Store) -> None:
        engine = kit_engine(store, tmp_path / "ledger", graph=graph)
        budget = {"cost": 1.0, "tokens": 8000, "wall_seconds": 600}
        run = await engine.start("lead", "four at once", metadata={"budget": budget})
        await _drain(engine)
        assert (await store.get_run(run.id)).status is RunStatus.COMPLETED
        shares = [c.metadata["budget"] for c in await store.children(run.id)]
        # half of the budget for the four together, not half each; each has the time
        assert shares == [{"cost": 0.125, "tokens": 1000, "wall_seconds": 300.0}] * 4

    _go(sqlite_url, scenario)
